"""CoreSet: k-center greedy on the penultimate embeddings."""

from numbers import Integral

import torch
from sklearn.utils._param_validation import Interval

from .._data import take
from ..distributed import is_sharded
from . import _sharded
from ..kcenter import kcenter_greedy
from .base import SUBSET_CONSTRAINT, BaseSelector, _generator, _pool_indices, embeddings

__all__ = ["CoreSet"]


class CoreSet(BaseSelector):
    """Core-set selection by k-center greedy on the net's penultimate embeddings.

    The labeled samples are the initial centers; each step picks the pool
    sample farthest (Euclidean) from its nearest center and makes it a center.
    Embeddings are the input of the module's last linear layer (or
    ``ActiveNet(embedding_layer=...)``), computed in eval mode, chunk by chunk,
    on the net's device, where the greedy loop also runs: memory is
    ``O((n_pool + n_labeled) d)``, never an ``n x n`` matrix.
    ``return_scores=True`` reports each pick's distance to its nearest center
    when it was picked (non-increasing).

    Parameters
    ----------
    subset : int or None, default=None
        Run on a random subset of this many pool samples per query (TiDAL's
        code uses 10,000); None uses the whole pool, as ISAL's and the
        original code do.
    chunk_size : int, default=8192
        Rows per tile of the pool-to-labeled distance computation: temporary
        memory is one ``chunk_size x min(chunk_size, n_labeled)`` tile plus
        ``O(chunk_size d)``.

    See Also
    --------
    skal.kcenter.kcenter_greedy : The greedy selection itself.

    References
    ----------
    .. [1] Sener and Savarese, "Active Learning for Convolutional Neural
       Networks: A Core-Set Approach", ICLR 2018.

    Examples
    --------
    >>> from skal.selectors import CoreSet
    >>> CoreSet(subset=10000)
    CoreSet(subset=10000)
    """

    _parameter_constraints = {
        "subset": SUBSET_CONSTRAINT,
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, subset=None, chunk_size=8192):
        self.subset = subset
        self.chunk_size = chunk_size

    def select(self, net, X_pool, n, *, random_state=None, labeled=None):
        if is_sharded():
            return _sharded.coreset_select(self, net, X_pool, n, random_state, labeled)
        candidates = self._draw_subset(len(X_pool), n, random_state)
        if candidates is not None:
            X_pool = take(X_pool, candidates)
        pool = embeddings(net, X_pool)
        centers = _labeled_centers(net, labeled)
        _check_finite_embeddings(pool, centers)
        indices, distances = kcenter_greedy(
            pool, n, centers=centers, chunk_size=self.chunk_size,
            generator=_generator(pool.device, random_state),
        )
        return _pool_indices(indices, candidates), distances.cpu().numpy()


def _labeled_centers(net, labeled):
    """The embeddings of the labeled set, training and reference rows (None if it has none)."""
    if labeled is None:
        return None
    parts = [embeddings(net, X) for X in (labeled.X, labeled.X_reference) if len(X)]
    return torch.cat(parts) if parts else None


def _check_finite_embeddings(pool, centers):
    """Raise unless the embeddings of the pool and of the labeled set (``centers``) are finite."""
    for name, values in (("pool", pool), ("labeled set", centers)):
        if values is not None and not torch.isfinite(values).all():
            raise ValueError(
                f"CoreSet: the net's embeddings of the {name} are NaN or infinite; the "
                "net's outputs are not finite (did training diverge?)."
            )

