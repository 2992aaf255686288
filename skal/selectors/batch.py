"""Batch rules: how a score-based selector turns pool scores into a batch of ``n``.

The papers take the ``n`` highest scores (:class:`TopK`). When a score is
spatially correlated, neighbours score alike and a top-``n`` batch piles into
one region (or one class) of the input space. Two remedies, each a small
clonable object passed as a selector's ``batch`` parameter:

* :class:`StochasticBatch` samples the batch without replacement with
  probabilities given by the scores (power, soft-rank or softmax
  acquisition, after Kirsch et al., 2023), through the Gumbel-top-k trick;
* :class:`ClusterBatch` takes the ``factor * n`` highest-scoring candidates,
  clusters their embeddings with k-means and picks round-robin across the
  clusters (in the spirit of Citovsky et al., 2021).

Every rule runs on the scores' device and draws only from the query's seed.
"""

import math
from numbers import Integral, Real

import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions

from ..kmeans import kmeans
from ..scores import top_n

__all__ = ["BatchRule", "TopK", "StochasticBatch", "ClusterBatch", "resolve_batch"]


class BatchRule(BaseEstimator):
    """Base class of batch rules.

    Subclasses implement :meth:`pick`. A rule is a scikit-learn-style object:
    ``__init__`` only stores parameters, so selectors holding one clone and
    compare, and a search over :class:`~skal.model_selection.CampaignEstimator`
    tunes them (``learner__selector__batch__beta``).

    See Also
    --------
    TopK, StochasticBatch, ClusterBatch : The rules skal provides.

    Examples
    --------
    A rule that takes every other position of the top ``2 n``, passed to a
    selector as its ``batch``:

    >>> import torch
    >>> from skal.selectors import BatchRule, Entropy
    >>> from skal.scores import top_n
    >>> class EveryOther(BatchRule):
    ...     def pick(self, scores, n, *, generator=None, embed=None):
    ...         return top_n(scores, min(2 * n, len(scores)), generator=generator)[::2][:n]
    >>> EveryOther().pick(torch.tensor([0.9, 0.8, 0.7, 0.6]), 2)
    tensor([0, 2])
    >>> selector = Entropy(batch=EveryOther())
    """

    def pick(self, scores, n, *, generator=None, embed=None):
        """Choose ``n`` distinct positions from ``scores``.

        Parameters
        ----------
        scores : torch.Tensor of shape (n_pool,)
            Finite scores, higher = more informative.
        n : int
            Batch size, ``1 <= n <= n_pool``.
        generator : torch.Generator, default=None
            Every random draw comes from it (on ``scores.device``).
        embed : callable, default=None
            ``embed(positions) -> Tensor (len(positions), d)``: penultimate
            embeddings of pool samples, computed only when a rule calls it.

        Returns
        -------
        torch.Tensor of shape (n,), dtype int64
            Distinct positions into ``scores``, on ``scores.device``.
        """
        raise NotImplementedError


class TopK(BatchRule):
    """The ``n`` highest scores, ties broken by the query seed: the papers' rule.

    Examples
    --------
    >>> import torch
    >>> from skal.selectors import TopK
    >>> TopK().pick(torch.tensor([0.1, 0.9, 0.5, 0.7]), 2)
    tensor([1, 3])
    """

    def pick(self, scores, n, *, generator=None, embed=None):
        return top_n(scores, n, generator=generator)


class StochasticBatch(BatchRule):
    """Sample the batch with probabilities given by the scores (stochastic acquisition).

    Draws ``n`` pool samples without replacement, each next draw choosing
    sample ``i`` with probability proportional to ``w_i`` among those left
    (successive sampling, the Plackett-Luce model), via the Gumbel-top-k
    trick: the ``n`` largest ``log w_i + g_i`` with ``g_i`` i.i.d. standard
    Gumbel. The weights follow Kirsch et al. (2023):

    * ``"softrank"``: ``w_i = r_i^{-beta}`` with ``r_i`` the rank of ``i``'s
      score (1 = highest; ties ordered by the seed); uses only the order, so
      any score works;
    * ``"power"``: ``w_i = s_i^beta``; scores must be non-negative (entropy,
      least confidence, DISAL's KL); for ``beta > 0`` a score of 0 is never
      drawn while positive ones remain;
    * ``"softmax"``: ``w_i = exp(beta s_i)``; depends on the scores' scale.

    ``beta=0`` is uniform random sampling; ``beta -> inf`` tends to top-k.

    Parameters
    ----------
    mode : {"softrank", "power", "softmax"}, default="softrank"
        How scores become weights.
    beta : float, default=1.0
        Inverse temperature (the paper's default).

    References
    ----------
    .. [1] Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron and Gal,
       "Stochastic Batch Acquisition: A Simple Baseline for Deep Active
       Learning", TMLR 2023.

    Examples
    --------
    >>> import torch
    >>> from skal.selectors import StochasticBatch
    >>> rule = StochasticBatch(beta=1.0)
    >>> picks = rule.pick(torch.arange(10.0), 3, generator=torch.Generator().manual_seed(0))
    >>> len(set(picks.tolist()))
    3
    """

    _parameter_constraints = {
        "mode": [StrOptions({"softrank", "power", "softmax"})],
        "beta": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, mode="softrank", beta=1.0):
        self.mode = mode
        self.beta = beta

    def log_weights(self, scores, generator=None):
        """Unnormalised log-probabilities ``log w_i`` of :meth:`pick`'s successive draws.

        Parameters
        ----------
        scores : torch.Tensor of shape (n_pool,)
        generator : torch.Generator, default=None
            Orders tied scores for ``"softrank"``.

        Returns
        -------
        torch.Tensor of shape (n_pool,)
            float64 for float64 scores, else float32.
        """
        self._validate_params()
        if not torch.isfinite(scores).all():
            raise ValueError("StochasticBatch needs finite scores; got NaN or infinite values.")
        # ranks and weights in at least float32 (bfloat16 has 8 bits of mantissa)
        scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
        if self.mode == "softrank":
            order = top_n(scores, scores.shape[0], generator=generator)
            ranks = torch.empty_like(scores)
            ranks[order] = torch.arange(1, scores.shape[0] + 1, device=scores.device,
                                        dtype=scores.dtype)
            return -self.beta * torch.log(ranks)
        if self.mode == "power":
            low = scores.min()
            if low < -1e-6 * scores.abs().max():
                raise ValueError(
                    f"StochasticBatch(mode='power') needs non-negative scores, got a minimum of "
                    f"{low.item():.3g}; use mode='softrank' for scores that can be negative "
                    "(e.g. Margin's)."
                )
            if self.beta == 0:
                return torch.zeros_like(scores)
            return self.beta * torch.log(scores.clamp_min(0))
        return self.beta * scores

    def pick(self, scores, n, *, generator=None, embed=None):
        log_w = self.log_weights(scores, generator=generator)
        uniform = torch.rand(scores.shape[0], generator=generator, device=scores.device,
                             dtype=log_w.dtype)
        gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(log_w.dtype).tiny)))
        return top_n(log_w + gumbel, n, generator=generator)


class ClusterBatch(BatchRule):
    """Diverse batches: cluster the top candidates, then pick round-robin across clusters.

    Takes the ``ceil(factor * n)`` highest-scoring pool samples as candidates,
    clusters their penultimate embeddings (the input of the module's last
    linear layer, as for :class:`~skal.selectors.CoreSet`) into
    ``n_clusters`` groups with seeded k-means++ / Lloyd's on the net's device,
    and fills the batch round by round: each round takes the best remaining
    candidate of every cluster, clusters visited in the order of their best
    candidate's score. With the default ``n_clusters = n`` the batch is the
    best candidate of each cluster (clusters left empty by k-means are made up
    for in the next round). ``factor=1`` is top-k.

    Parameters
    ----------
    factor : float, default=10
        Candidates per batch slot (at least 1).
    n_clusters : int or None, default=None
        Number of clusters; None uses the batch size ``n``.
    max_iter : int, default=20
        Lloyd's iterations at most.

    References
    ----------
    .. [1] Citovsky, DeSalvo, Gentile, Karydas, Rajagopalan, Rostamizadeh and
       Kumar, "Batch Active Learning at Scale", NeurIPS 2021 (Cluster-Margin:
       margin candidates, clustered, sampled round-robin from the smallest
       cluster up; here clusters are formed among the candidates only and
       visited best-score first).

    Examples
    --------
    >>> import torch
    >>> from skal.selectors import ClusterBatch
    >>> points = torch.tensor([[0.0], [0.1], [0.2], [9.0]])
    >>> scores = torch.tensor([0.9, 0.8, 0.7, 0.1])
    >>> ClusterBatch(factor=2).pick(scores, 2, embed=lambda pos: points[pos],
    ...                             generator=torch.Generator().manual_seed(0))
    tensor([0, 3])
    """

    _parameter_constraints = {
        "factor": [Interval(Real, 1, None, closed="left")],
        "n_clusters": [Interval(Integral, 1, None, closed="left"), None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, factor=10, n_clusters=None, max_iter=20):
        self.factor = factor
        self.n_clusters = n_clusters
        self.max_iter = max_iter

    def pick(self, scores, n, *, generator=None, embed=None):
        self._validate_params()
        m = min(scores.shape[0], max(n, math.ceil(self.factor * n)))
        candidates = top_n(scores, m, generator=generator)
        if m == n:
            return candidates
        if embed is None:
            raise ValueError("ClusterBatch needs the candidates' embeddings (embed=...).")
        k = min(self.n_clusters or n, m)
        features = embed(candidates).float()
        labels, _ = kmeans(features, k, max_iter=self.max_iter, generator=generator)
        return candidates[round_robin(labels, k)[:n]]


def round_robin(labels, k):
    """Visit order of items sorted best first and grouped into ``k`` clusters.

    Round ``r`` takes the ``r``-th best item of every cluster that has one,
    clusters ordered by the position of their best item.

    Parameters
    ----------
    labels : torch.Tensor of shape (m,), int64
        Cluster of each item; items are listed best first.
    k : int
        Number of clusters (some may be empty).

    Returns
    -------
    torch.Tensor of shape (m,), int64
        A permutation of ``0 .. m-1``.

    Examples
    --------
    >>> import torch
    >>> from skal.selectors.batch import round_robin
    >>> round_robin(torch.tensor([0, 0, 1, 0, 1]), 2)
    tensor([0, 2, 1, 4, 3])
    """
    m = labels.shape[0]
    grouped = torch.sort(labels, stable=True).indices  # by cluster, best first within
    counts = torch.bincount(labels, minlength=k)
    starts = torch.cumsum(counts, 0) - counts
    sorted_labels = labels[grouped]
    within = torch.arange(m, device=labels.device) - starts[sorted_labels]
    best = grouped[starts.clamp_max(m - 1)]  # position of each cluster's best item
    key = within * m + best[sorted_labels]
    return grouped[torch.argsort(key)]


_RULES = {"topk": TopK, "stochastic": StochasticBatch, "cluster": ClusterBatch}


def resolve_batch(batch):
    """The :class:`BatchRule` a selector's ``batch`` parameter stands for.

    Parameters
    ----------
    batch : {"topk", "stochastic", "cluster"} or BatchRule
        A name (the rule with its defaults) or a configured rule.

    Returns
    -------
    BatchRule

    Examples
    --------
    >>> from skal.selectors.batch import resolve_batch
    >>> resolve_batch("stochastic")
    StochasticBatch()
    """
    if isinstance(batch, BatchRule):
        return batch
    if isinstance(batch, str) and batch in _RULES:
        return _RULES[batch]()
    raise ValueError(
        f"batch must be one of {sorted(_RULES)} or a BatchRule instance (TopK(), "
        f"StochasticBatch(...), ClusterBatch(...)); got {batch!r}."
    )
