"""DISAL: dynamic influence scoring between the last two epochs."""

from numbers import Real

from sklearn.utils._param_validation import Interval, StrOptions

from ..parts import DynamicLoss, EpochSnapshot
from ..scores import kl_divergence
from .base import ScoreSelector, TrainingNeeds, shared_docs

__all__ = ["DISAL"]


@shared_docs
class DISAL(ScoreSelector):
    """Dynamic Influence Scoring for Active Learning.

    Scores each pool sample by ``KL(f_{T-1}(x) || f_T(x))``, the divergence
    between the predictions of the weights after the second-to-last epoch and
    after the last one, computed in float32 from ``log_softmax`` on the net's
    device, and picks the largest.

    Training side (:mod:`skal.parts`): :class:`~skal.parts.DynamicLoss` (the
    dynamic KL loss with weight ``weight``, DISAL eq. 13-14, which reads the
    per-sample :class:`~skal.parts.TrainingDynamics`) and
    :class:`~skal.parts.EpochSnapshot` (the weights of epoch ``T-1``).

    Parameters
    ----------
    weight : float, default=1.0
        Weight ``lambda`` of the dynamic loss (DISAL eq. 14; 1.0 was best in
        the paper's Table 3). 0 trains without it: DISAL's "w/o D" ablation.
    mode : {"kl", "literal"}, default="kl"
        ``"kl"`` picks the largest KL divergence, the reading of the paper
        argued on the DISAL page of the documentation (its eq. 9-10 carry two
        sign slips that cancel, and its text and Fig. 6 describe picking
        uncertain boundary samples). ``"literal"`` keeps eq. 15's literal
        ordering, the largest ``-KL`` (smallest divergence first), for
        ablations.
    {batch}

    See Also
    --------
    skal.parts.DynamicLoss, skal.parts.EpochSnapshot : Its training side.

    References
    ----------
    .. [1] DISAL, "Tracing Training Progress: Dynamic Influence Based Selection
       for Active Learning", eq. 12-15 and Algorithm 1.

    Examples
    --------
    >>> from skal.selectors import DISAL
    >>> [name for name, _ in DISAL().training_needs().parts]
    ['dynamic_loss', 'snapshot']
    >>> [name for name, _ in DISAL(weight=0).training_needs().parts]
    ['snapshot']
    >>> DISAL(mode="literal").get_params()
    {'batch': 'topk', 'mode': 'literal', 'weight': 1.0}
    """

    _parameter_constraints = {
        **ScoreSelector._parameter_constraints,
        "weight": [Interval(Real, 0, None, closed="left")],
        "mode": [StrOptions({"kl", "literal"})],
    }

    def __init__(self, weight=1.0, mode="kl", batch="topk"):
        self.weight = weight
        self.mode = mode
        self.batch = batch

    def training_needs(self):
        parts = [("dynamic_loss", DynamicLoss(weight=self.weight))] if self.weight else []
        return TrainingNeeds(parts=(*parts, ("snapshot", EpochSnapshot())))

    def score_pool(self, net, X_pool, *, random_state=None, labeled=None):
        self._validate_params()  # an unknown mode must not score as "literal"
        try:
            snapshot = net.get_part(EpochSnapshot)
        except LookupError:
            raise ValueError("DISAL needs the weights of epoch T-1: train the net with an "
                             "EpochSnapshot part (ActiveLearner adds it).") from None
        previous = snapshot.module(net)  # a copy: the net's own module is never swapped
        sign = 1.0 if self.mode == "kl" else -1.0
        return net.map_pool(
            lambda Xb: sign * kl_divergence(net.logits(Xb, module=previous), net.logits(Xb)), X_pool)
