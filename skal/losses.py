"""Pure tensor losses of the training parts (skal.parts)."""

import torch
import torch.nn.functional as F

__all__ = ["dynamic_kl_loss", "loss_ranking_loss", "dynamics_prediction_loss", "pseudo_label_loss"]


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


def loss_ranking_loss(predicted, target, margin=1.0):
    """LL4AL's pairwise ranking hinge between predicted and true per-sample losses.

    The batch is split into pairs ``(i, m-1-i)`` for ``i < m/2``, where ``m`` is
    the batch size rounded down to even (an odd batch leaves out its last
    sample; LL4AL's reference code refuses odd batches). For each pair
    with sign ``s = +1`` if ``target_i > target_j`` else ``-1``, the loss is
    ``max(0, margin - s (predicted_i - predicted_j))``, averaged over pairs.
    ``target`` is detached: only the prediction learns from it.

    Parameters
    ----------
    predicted : torch.Tensor of shape (batch_size,)
        Output of the loss-prediction head.
    target : torch.Tensor of shape (batch_size,)
        The per-sample training losses.
    margin : float, default=1.0
        The hinge margin (the paper's xi = 1).

    Returns
    -------
    torch.Tensor
        Scalar loss; zero for a batch of fewer than two samples.

    References
    ----------
    .. [1] Yoo and Kweon, "Learning Loss for Active Learning", CVPR 2019, eq. 2.

    Examples
    --------
    >>> import torch
    >>> from skal.losses import loss_ranking_loss
    >>> loss_ranking_loss(torch.tensor([0.0, 3.0]), torch.tensor([2.0, 1.0]))
    tensor(4.)
    """
    half = predicted.shape[0] // 2
    if half == 0:
        return predicted.sum() * 0.0
    m = 2 * half
    pred_diff = predicted[:half] - predicted[half:m].flip(0)
    target = target.detach()
    sign = torch.where(target[:half] > target[half:m].flip(0), 1.0, -1.0).to(predicted.dtype)
    return torch.clamp(margin - sign * pred_diff, min=0).mean()


def dynamics_prediction_loss(head_logits, target_probs):
    """TiDAL's loss ``KL(p_bar || q)``, ``q = softmax(head_logits)``, averaged over the batch.

    The same form as :func:`dynamic_kl_loss`, with the TD head's output in
    place of the backbone's; ``p_bar`` is the net's training-dynamics buffer.

    Parameters
    ----------
    head_logits : torch.Tensor of shape (batch_size, n_classes)
        The training-dynamics head's output for the batch.
    target_probs : torch.Tensor of shape (batch_size, n_classes)
        The batch's rows of the training-dynamics buffer ``p_bar``; treated
        as constants (no gradient flows into them).

    Returns
    -------
    torch.Tensor
        Scalar loss, ``sum_c p_bar_c (log p_bar_c - log q_c)`` averaged over
        the batch.

    References
    ----------
    .. [1] Kye et al., "TiDAL: Learning Training Dynamics for Active
       Learning", ICCV 2023.

    Examples
    --------
    >>> import torch
    >>> from skal.losses import dynamics_prediction_loss
    >>> dynamics_prediction_loss(torch.zeros(1, 2), torch.tensor([[0.5, 0.5]]))
    tensor(0.)
    """
    return dynamic_kl_loss(head_logits, target_probs)


def pseudo_label_loss(target_logits, logits, threshold=0.95):
    """Cross-entropy towards confident hard pseudo-labels, averaged over all rows (FixMatch eq. 2).

    ``(1/n) sum_b 1[max softmax(t_b) >= threshold] CE(logits_b, argmax t_b)``:
    rows below the threshold count in ``n`` but add nothing, as in Sohn et
    al. (2020), eq. 2 (there ``t`` is the weak view's output and ``logits``
    the strong view's); the targets are detached.

    Parameters
    ----------
    target_logits : torch.Tensor of shape (n, n_classes)
        The outputs the pseudo-labels come from; detached here.
    logits : torch.Tensor of shape (n, n_classes)
        The outputs trained towards them.
    threshold : float, default=0.95
        The confidence a pseudo-label needs (the paper's tau).

    Returns
    -------
    torch.Tensor
        A scalar (0 for an empty batch).

    Examples
    --------
    >>> import torch
    >>> from skal.losses import pseudo_label_loss
    >>> target = torch.tensor([[10.0, 0.0], [0.0, 0.1]])  # only row 0 is confident
    >>> round(float(pseudo_label_loss(target, torch.zeros(2, 2))), 4)  # log(2) / 2
    0.3466
    """
    if len(logits) == 0:
        return logits.sum() * 0.0
    probs = F.softmax(target_logits.detach().float(), dim=1)
    confidence, labels = probs.max(dim=1)
    mask = (confidence >= threshold).to(logits.dtype)
    return (F.cross_entropy(logits.float(), labels, reduction="none") * mask).mean()
