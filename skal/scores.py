"""Pure tensor functions that turn logits into informativeness scores.

Every function takes tensors on any device and returns a tensor on the same
device; none of them copies to the host. Probabilities are computed from
``log_softmax`` in at least float32, so tiny differences (DISAL's KL between two
late epochs) do not vanish in half precision.
"""

import math

import torch
import torch.nn.functional as F

__all__ = ["entropy", "margin", "margin_at", "least_confidence", "kl_divergence",
           "mutual_information", "top_n"]


def _log_probs(logits):
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    return F.log_softmax(logits, dim=1)


def entropy(logits):
    """Shannon entropy ``-sum_c p_c log p_c`` of ``softmax(logits)`` per row.

    Parameters
    ----------
    logits : torch.Tensor of shape (n_samples, n_classes)
        Unnormalised class scores; the softmax is taken here.

    Returns
    -------
    torch.Tensor of shape (n_samples,)
        Entropy in nats, in ``[0, log(n_classes)]``.

    Examples
    --------
    >>> import torch
    >>> from skal.scores import entropy
    >>> entropy(torch.zeros(1, 4))  # uniform over 4 classes: log 4
    tensor([1.3863])
    """
    log_p = _log_probs(logits)
    return -(log_p.exp() * log_p).sum(dim=1)


def margin(logits):
    """Difference between the two largest class probabilities per row.

    A small margin means an uncertain prediction. With a single class the
    margin is 1 (nothing to confuse).

    Parameters
    ----------
    logits : torch.Tensor of shape (n_samples, n_classes)
        Unnormalised class scores; the softmax is taken here.

    Returns
    -------
    torch.Tensor of shape (n_samples,)
        ``p_(1) - p_(2)`` in ``[0, 1]``.

    Examples
    --------
    >>> import torch
    >>> from skal.scores import margin
    >>> margin(torch.log(torch.tensor([[0.6, 0.3, 0.1]])))
    tensor([0.3000])
    """
    probs = _log_probs(logits).exp()
    if probs.shape[1] < 2:
        return torch.ones(probs.shape[0], dtype=probs.dtype, device=probs.device)
    top2 = probs.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def least_confidence(logits):
    """One minus the largest class probability per row.

    Parameters
    ----------
    logits : torch.Tensor of shape (n_samples, n_classes)
        Unnormalised class scores; the softmax is taken here.

    Returns
    -------
    torch.Tensor of shape (n_samples,)
        ``1 - max_c p_c`` in ``[0, 1 - 1/n_classes]``.

    Examples
    --------
    >>> import torch
    >>> from skal.scores import least_confidence
    >>> least_confidence(torch.log(torch.tensor([[0.7, 0.2, 0.1]])))
    tensor([0.3000])
    """
    return 1.0 - _log_probs(logits).exp().amax(dim=1)


def kl_divergence(logits_p, logits_q):
    """Per-row ``KL(softmax(logits_p) || softmax(logits_q))``, accurate when tiny.

    DISAL compares the predictions of two consecutive epochs at a low learning
    rate, where the divergence can be 1e-7 or less. The
    textbook ``sum_c p_c (log p_c - log q_c)`` then subtracts two nearly equal
    log-probabilities of size ~1 and float32 rounding (~1e-7) swamps the
    result. This function works with the logit difference instead: with
    ``d = logits_p - logits_q`` centred under ``q``,

    ``KL = sum_c p_c d_c - log1p(sum_c q_c expm1(d_c))``,

    whose terms are first order in ``d`` and whose error is therefore relative
    to ``|d|``, not to 1. Rows where that form overflows (``d`` beyond ~80,
    very different distributions, where precision is no issue) fall back to
    the textbook form.

    Parameters
    ----------
    logits_p, logits_q : torch.Tensor of shape (n_samples, n_classes)
        Unnormalised class scores of the two distributions ``p`` and ``q``.

    Returns
    -------
    torch.Tensor of shape (n_samples,)
        Divergences in nats, in at least float32.

    Examples
    --------
    >>> import torch
    >>> from skal.scores import kl_divergence
    >>> p = torch.log(torch.tensor([[0.5, 0.5]]))
    >>> q = torch.log(torch.tensor([[0.9, 0.1]]))
    >>> kl_divergence(p, q)
    tensor([0.5108])
    """
    log_p = _log_probs(logits_p)
    log_q = _log_probs(logits_q)
    p, q = log_p.exp(), log_q.exp()
    d = logits_p.to(log_p.dtype) - logits_q.to(log_q.dtype)
    d = d - (q * d).sum(dim=1, keepdim=True)
    small = (p * d).sum(dim=1) - torch.log1p((q * torch.expm1(d)).sum(dim=1))
    plain = (p * (log_p - log_q)).sum(dim=1)
    return torch.where(torch.isfinite(small), small, plain)


def mutual_information(logits):
    """BALD's mutual information ``I[y; w | x]`` per sample, from Monte Carlo draws of the logits.

    With ``p_t = softmax(logits[t])`` the prediction of the ``t``-th of ``T``
    stochastic forward passes (MC dropout: one dropout mask per pass),

    ``I = H[mean_t p_t] - mean_t H[p_t]``,

    the entropy of the mean prediction minus the mean entropy of the draws
    (Houlsby et al., 2011; Gal, Islam and Ghahramani, 2017, the BALD
    acquisition function). It is large when the draws are each confident but
    disagree. ``log mean_t p_t`` is taken as ``logsumexp_t log p_t - log T``,
    so a class that every draw gives a tiny probability costs no precision.
    Rounding can leave a true zero (identical draws) at about ``-1e-7``;
    the result is clamped at 0, its exact lower bound.

    Parameters
    ----------
    logits : torch.Tensor of shape (n_draws, n_samples, n_classes)
        Unnormalised class scores of each draw; the softmax is taken here.

    Returns
    -------
    torch.Tensor of shape (n_samples,)
        Mutual information in nats, in ``[0, log(n_classes)]``, in at least
        float32.

    References
    ----------
    .. [1] Houlsby, Huszar, Ghahramani and Lengyel, "Bayesian Active Learning
       for Classification and Preference Learning", arXiv:1112.5745, 2011.
    .. [2] Gal, Islam and Ghahramani, "Deep Bayesian Active Learning with Image
       Data", ICML 2017.

    Examples
    --------
    Two confident draws that disagree carry ``log 2`` nats; two that agree, none:

    >>> import torch
    >>> from skal.scores import mutual_information
    >>> sure = torch.log(torch.tensor([[1.0, 1e-9], [1e-9, 1.0]]))
    >>> mutual_information(torch.stack([sure, sure.flip(1)]))  # draws disagree on both samples
    tensor([0.6931, 0.6931])
    >>> mutual_information(torch.stack([sure, sure]))
    tensor([0., 0.])
    """
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape (n_draws, n_samples, n_classes), got "
                         f"{tuple(logits.shape)}.")
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    log_p = F.log_softmax(logits, dim=2)
    mean_entropy = -(log_p.exp() * log_p).sum(dim=2).mean(dim=0)
    log_mean = torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])
    entropy_of_mean = -(log_mean.exp() * log_mean).sum(dim=1)
    return (entropy_of_mean - mean_entropy).clamp_min(0)


def top_n(scores, n, *, generator=None):
    """Positions of the ``n`` largest scores, largest first, ties broken at random.

    Ties are broken by a random permutation drawn from ``generator`` followed
    by a stable sort, so equal scores come out in a uniformly random but
    reproducible order.

    Parameters
    ----------
    scores : torch.Tensor of shape (n_samples,)
        Scores to rank, highest first.
    n : int
        Number of positions to return, ``1 <= n <= n_samples``.
    generator : torch.Generator, default=None
        Source of the tie-breaking permutation; must live on ``scores.device``.

    Returns
    -------
    torch.Tensor of shape (n,), dtype int64
        Positions into ``scores``, on ``scores.device``.

    Examples
    --------
    >>> import torch
    >>> from skal.scores import top_n
    >>> top_n(torch.tensor([0.1, 0.9, 0.5]), 2)
    tensor([1, 2])
    """
    perm = torch.randperm(scores.shape[0], generator=generator, device=scores.device)
    order = torch.sort(scores[perm], descending=True, stable=True).indices[:n]
    return perm[order]


def margin_at(logits, labels):
    """``p_label - max_{c != label} p_c`` per row, for given labels.

    TiDAL's margin score: the predicted training dynamics' probability of the
    backbone's predicted class against its strongest rival. Negative when
    another class is more probable than ``label``.

    Parameters
    ----------
    logits : torch.Tensor of shape (n_samples, n_classes)
        Unnormalised class scores; the softmax is taken here.
    labels : torch.Tensor of shape (n_samples,), dtype int64
        The class ``label`` of each row at which the margin is taken.

    Returns
    -------
    torch.Tensor of shape (n_samples,)

    Examples
    --------
    >>> import torch
    >>> from skal.scores import margin_at
    >>> margin_at(torch.log(torch.tensor([[0.5, 0.3, 0.2]])), torch.tensor([1]))
    tensor([-0.2000])
    """
    probs = _log_probs(logits).exp()
    if probs.shape[1] < 2:
        return torch.ones(probs.shape[0], dtype=probs.dtype, device=probs.device)
    labels = labels.view(-1, 1)
    own = probs.gather(1, labels).squeeze(1)
    rivals = probs.scatter(1, labels, float("-inf")).amax(dim=1)
    return own - rivals
