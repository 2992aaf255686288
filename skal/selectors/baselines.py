"""The classic baselines: random sampling and the three uncertainty scores."""

import torch

from .. import distributed, scores
from .base import ScoreSelector, _generator, shared_docs

__all__ = ["Random", "Entropy", "Margin", "LeastConfidence"]


class Random(ScoreSelector):
    """Uniform random sampling, without any forward pass.

    Each pool sample gets a uniform random priority in ``[0, 1)``; the ``n``
    largest are chosen, which is a uniformly random subset. The priorities are
    what ``return_scores=True`` reports.

    Examples
    --------
    >>> import numpy as np
    >>> from skal.selectors import Random
    >>> idx, scores = Random().select(None, np.zeros((10, 2)), 3, random_state=0)
    >>> len(set(idx.tolist()))
    3
    """

    def score_pool(self, net, X_pool, *, random_state=None, labeled=None):
        device = torch.device(net.device) if net is not None else torch.device("cpu")
        generator = _generator(device, random_state)
        shard = distributed.current()
        if shard is None:
            return torch.rand(len(X_pool), generator=generator, device=device)
        # sharded: the whole pool's priorities, drawn alike on every process; this one's rows
        return torch.rand(shard.n_total, generator=generator, device=device)[shard.start:shard.stop]


@shared_docs
class Entropy(ScoreSelector):
    """Maximum-entropy sampling: the largest predictive entropy first.

    Score: ``H(p) = -sum_c p_c log p_c`` of the net's softmax, in eval mode.

    Parameters
    ----------
    {batch}

    Examples
    --------
    >>> from skal.selectors import Entropy
    >>> Entropy()
    Entropy()
    """

    def __init__(self, batch="topk"):
        self.batch = batch

    def _score_batch(self, net, X_batch):
        return scores.entropy(net.logits(X_batch))


@shared_docs
class Margin(ScoreSelector):
    """Smallest-margin sampling: the smallest gap between the top two classes first.

    Score: ``-(p_(1) - p_(2))``, so that higher is more informative.

    Parameters
    ----------
    {batch}

    Examples
    --------
    >>> from skal.selectors import Margin
    >>> Margin()
    Margin()
    """

    def __init__(self, batch="topk"):
        self.batch = batch

    def _score_batch(self, net, X_batch):
        return -scores.margin(net.logits(X_batch))


@shared_docs
class LeastConfidence(ScoreSelector):
    """Least-confidence sampling: the smallest top-class probability first.

    Score: ``1 - max_c p_c``.

    Parameters
    ----------
    {batch}

    Examples
    --------
    >>> from skal.selectors import LeastConfidence
    >>> LeastConfidence()
    LeastConfidence()
    """

    def __init__(self, batch="topk"):
        self.batch = batch

    def _score_batch(self, net, X_batch):
        return scores.least_confidence(net.logits(X_batch))
