"""TiDAL: learning the training dynamics."""

from numbers import Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from .. import scores
from ..parts import DynamicsHeadTraining
from .base import ScoreSelector, TrainingNeeds, shared_docs

__all__ = ["TiDAL"]


@shared_docs
class TiDAL(ScoreSelector):
    """Training-dynamics-aware active learning.

    Training side: :class:`skal.parts.DynamicsHeadTraining` adds a
    training-dynamics head (:class:`skal.heads.TrainingDynamicsHead`) on the
    backbone's multi-level features, trained with ``KL(p_bar || q)`` towards
    :class:`skal.parts.TrainingDynamics` (the running mean of each labeled
    sample's training softmax, the same one DISAL's loss uses). The
    query predicts the dynamics ``q`` of a random subset of the pool and
    scores it by its entropy (largest first) or by its margin at the
    backbone's predicted class (smallest first).

    Parameters
    ----------
    weight : float, default=1.0
        Weight of the head's KL loss (the paper's lambda = 1).
    score : {"entropy", "margin"}, default="entropy"
        ``"entropy"``: ``H(q)``, largest first (the paper's default).
        ``"margin"``: ``q[y_hat] - max_{c != y_hat} q[c]`` with ``y_hat`` the
        backbone's argmax, smallest first.
    subset : int or None, default=10000
        Score a fresh random subset of this many pool samples per query (the
        paper's 10,000); None scores the whole pool.
    {batch}

    See Also
    --------
    skal.parts.DynamicsHeadTraining : Its training side.
    LL4AL : The same head architecture predicting the loss.
    DISAL : Reads the same training-dynamics buffer through the dynamic loss.

    References
    ----------
    .. [1] Kye et al., "TiDAL: Learning Training Dynamics for Active Learning",
       ICCV 2023.

    Examples
    --------
    >>> from skal.selectors import TiDAL
    >>> TiDAL(score="margin").training_needs().parts
    (('dynamics_head', DynamicsHeadTraining()),)
    """

    _parameter_constraints = {
        **ScoreSelector._parameter_constraints,
        "weight": [Interval(Real, 0, None, closed="neither")],
        "score": [StrOptions({"entropy", "margin"})],
    }

    def __init__(self, weight=1.0, score="entropy", subset=10000,
                 batch="topk"):
        self.weight = weight
        self.score = score
        self.subset = subset
        self.batch = batch

    def training_needs(self):
        return TrainingNeeds(parts=(("dynamics_head", DynamicsHeadTraining(weight=self.weight)),))

    def _score_batch(self, net, X_batch):
        logits, features = net.forward_tapped(X_batch, levels=True)
        with torch.inference_mode():
            q_logits = net.dynamics_predictor_(features["levels"])
            if self.score == "entropy":
                return scores.entropy(q_logits)
            return -scores.margin_at(q_logits, logits.argmax(dim=1))
