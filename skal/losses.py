"""Pure tensor losses and the training-dynamics update used by ActiveNet."""

import torch.nn.functional as F

__all__ = ["dynamic_kl_loss", "running_mean_update"]


def dynamic_kl_loss(logits, target_probs):
    """DISAL's dynamic loss ``KL(f_bar || softmax(logits))``, averaged over the batch.

    This is eq. 13 of the DISAL paper: the running mean ``f_bar`` of a sample's
    past predictions is the (detached) target and the gradient flows only
    through the current logits.

    Parameters
    ----------
    logits : torch.Tensor of shape (batch_size, n_classes)
        Current training-forward logits.
    target_probs : torch.Tensor of shape (batch_size, n_classes)
        Running-mean probabilities ``f_bar``; detached here.

    Returns
    -------
    torch.Tensor
        Scalar ``(1/B) sum_i sum_c f_bar_ic (log f_bar_ic - log softmax(z_i)_c)``.

    Examples
    --------
    >>> import torch
    >>> from skal.losses import dynamic_kl_loss
    >>> dynamic_kl_loss(torch.zeros(2, 2), torch.full((2, 2), 0.5))
    tensor(0.)
    """
    log_q = F.log_softmax(logits.float(), dim=1)
    return F.kl_div(log_q, target_probs.detach().to(log_q.dtype), reduction="batchmean")


def running_mean_update(mean, value, epoch):
    """Eq. 12 of DISAL: fold ``value`` into a running mean over epochs.

    ``epoch`` is the 0-based epoch within the current fit, so epoch 0 returns
    ``value`` itself (old values are overwritten when a new fit starts).

    Parameters
    ----------
    mean : torch.Tensor
        Mean over epochs ``0 .. epoch-1``.
    value : torch.Tensor
        Observation of epoch ``epoch``, same shape as ``mean``.
    epoch : int
        0-based epoch index.

    Returns
    -------
    torch.Tensor
        ``(mean * epoch + value) / (epoch + 1)``.

    Examples
    --------
    >>> import torch
    >>> from skal.losses import running_mean_update
    >>> running_mean_update(torch.tensor([0.2]), torch.tensor([0.8]), 1)
    tensor([0.5000])
    """
    return (mean * epoch + value) / (epoch + 1)
