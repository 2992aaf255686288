"""LL4AL: learning to predict the loss."""

import torch

from ..parts import LossPredictionHeadTraining
from .base import ScoreSelector, TrainingNeeds, shared_docs

__all__ = ["LL4AL"]


@shared_docs
class LL4AL(ScoreSelector):
    """Learning Loss for Active Learning: query the samples with the largest predicted loss.

    Training side: :class:`skal.parts.LossPredictionHeadTraining` adds a
    loss-prediction head (:class:`skal.heads.LossPredictionHead`) on the
    backbone's multi-level features (the net's ``feature_layers``, ResNet's
    ``layer1..layer4`` by default), trained with a pairwise ranking hinge on
    the per-sample cross-entropy losses; from ``stop_grad_epoch`` on its
    gradient no longer reaches the backbone. The query scores a random subset
    of the pool by the head's predicted loss (eval mode) and takes the largest.

    Parameters
    ----------
    weight : float, default=1.0
        Weight of the ranking loss (the paper's lambda = 1).
    margin : float, default=1.0
        Hinge margin (the paper's xi = 1).
    stop_grad_epoch : int, float or None, default=0.6
        Epoch of each fit (0-based) from which the head's gradient is detached
        from the backbone; a float in (0, 1) is a fraction of the net's
        ``max_epochs``: 0.6 is the paper's epoch 120 of 200. None: never.
    subset : int or None, default=10000
        Score a fresh random subset of this many pool samples per query (the
        paper's 10,000); None scores the whole pool.
    {batch}

    See Also
    --------
    skal.parts.LossPredictionHeadTraining : Its training side.
    TiDAL : The same head architecture predicting training dynamics.

    References
    ----------
    .. [1] Yoo and Kweon, "Learning Loss for Active Learning", CVPR 2019.

    Examples
    --------
    >>> from skal.selectors import LL4AL
    >>> LL4AL().training_needs().parts
    (('loss_head', LossPredictionHeadTraining()),)
    """

    _parameter_constraints = {**ScoreSelector._parameter_constraints,
                              **LossPredictionHeadTraining._parameter_constraints}

    def __init__(self, weight=1.0, margin=1.0, stop_grad_epoch=0.6, subset=10000,
                 batch="topk"):
        self.weight = weight
        self.margin = margin
        self.stop_grad_epoch = stop_grad_epoch
        self.subset = subset
        self.batch = batch

    def training_needs(self):
        return TrainingNeeds(parts=(("loss_head", LossPredictionHeadTraining(
            weight=self.weight, margin=self.margin, stop_grad_epoch=self.stop_grad_epoch)),))

    def _score_batch(self, net, X_batch):
        _, features = net.forward_tapped(X_batch, levels=True)
        with torch.inference_mode():
            return net.loss_predictor_(features["levels"]).float()
