"""DISAL: dynamic influence scoring between the last two epochs."""

from sklearn.utils._param_validation import StrOptions

from ..scores import kl_divergence
from .base import ScoreSelector, TrainingNeeds

__all__ = ["DISAL"]


class DISAL(ScoreSelector):
    """Dynamic Influence Scoring for Active Learning.

    Scores each pool sample by ``KL(f_{T-1}(x) || f_T(x))``, the divergence
    between the predictions of the weights after the second-to-last epoch and
    after the last one, computed in float32 from ``log_softmax`` on the net's
    device, and picks the largest. It needs the net to keep the epoch ``T-1``
    snapshot; the training side of DISAL, the dynamic loss, is
    :class:`~skal.ActiveNet`'s ``dynamic_weight`` (1.0 by default).

    Parameters
    ----------
    mode : {"kl", "literal"}, default="kl"
        ``"kl"`` picks the largest KL divergence, the reading of the paper
        argued on the DISAL page of the documentation (its eq. 9-10 carry two
        sign slips that cancel, and its text and Fig. 6 describe picking
        uncertain boundary samples). ``"literal"`` keeps eq. 15's literal
        ordering, the largest ``-KL`` (smallest divergence first), for
        ablations.
    batch : {"topk", "stochastic", "cluster"} or BatchRule, default="topk"
        How the scores become a batch of ``n``: the ``n`` highest (the
        papers' rule), a score-weighted random sample
        (:class:`~skal.selectors.StochasticBatch`) or the best of clustered
        candidates (:class:`~skal.selectors.ClusterBatch`).

    See Also
    --------
    skal.ActiveNet : Keeps the snapshot and adds the dynamic loss.

    References
    ----------
    .. [1] DISAL, "Tracing Training Progress: Dynamic Influence Based Selection
       for Active Learning", eq. 12-15 and Algorithm 1.

    Examples
    --------
    >>> from skal.selectors import DISAL
    >>> DISAL().training_needs().net_params()
    {'snapshot': True}
    >>> DISAL(mode="literal").get_params()
    {'batch': 'topk', 'mode': 'literal'}
    """

    _parameter_constraints = {"mode": [StrOptions({"kl", "literal"})]}

    def __init__(self, mode="kl", batch="topk"):
        self.mode = mode
        self.batch = batch

    def training_needs(self):
        return TrainingNeeds(snapshot=True)

    def score_pool(self, net, X_pool, *, random_state=None, labeled=None):
        self._validate_params()
        if getattr(net, "snapshot_", None) is None:
            raise ValueError(
                "DISAL needs the weights of epoch T-1: train the net with snapshot=True "
                "(ActiveLearner does this) for at least one epoch, or at least two when the "
                "module has lazy layers (such as skal.models.MLP's), whose weights do not "
                "exist before the first batch."
            )
        return super().score_pool(net, X_pool, random_state=random_state, labeled=labeled)

    def _score_batch(self, net, X_batch):
        kl = kl_divergence(net.logits(X_batch, state=net.snapshot_), net.logits(X_batch))
        return kl if self.mode == "kl" else -kl
