"""BADGE: k-means++ seeding on last-layer gradient embeddings."""

from numbers import Integral

import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval, StrOptions

from .._data import take
from ..distributed import is_sharded
from . import _sharded
from ..kmeans import kmeans_plusplus_outer
from .base import BaseSelector, _generator, _pool_indices

__all__ = ["BADGE"]


class BADGE(BaseSelector):
    """Batch Active learning by Diverse Gradient Embeddings.

    Each pool sample is represented by the gradient of the cross-entropy
    loss, taken at the net's own predicted label ``yhat = argmax_c p_c``,
    with respect to the weights of the last linear layer:

    ``g(x) = (p(x) - e_yhat) ⊗ h(x)``,

    where ``p`` is the softmax and ``h`` the penultimate embedding, the input
    of that layer (ActiveNet's ``embedding_layer="auto"``; with a named
    ``embedding_layer`` ``h`` is that layer's output instead). Its norm grows
    with the uncertainty ``1 - p_yhat`` and with ``|h|``. The batch is then
    chosen by k-means++ seeding on the ``g``'s: each next pick is drawn with
    probability proportional to its squared distance ``D^2`` to the nearest
    pick so far, which favours samples that are both uncertain (large
    ``|g|``) and unlike those already chosen. As in the authors' released
    code, the labeled set plays no part and the first pick is the sample
    with the largest ``|g|`` (``first="norm"``; the paper names k-means++
    seeding, whose first center is uniform, ``first="random"``).

    The ``d C``-wide embeddings are never formed: since ``<g_i, g_j> =
    <a_i, a_j> <h_i, h_j>`` with ``a = p - e_yhat``,

    ``||g_i - g_j||^2 = |a_i|^2 |h_i|^2 + |a_j|^2 |h_j|^2 - 2 <a_i, a_j> <h_i, h_j>``,

    so the selector keeps only ``a`` (``N x C``) and ``h`` (``N x d``) on the
    net's device and each pick costs ``O(N (C + d))``
    (:func:`skal.kmeans.kmeans_plusplus_outer`), instead of ``N d C`` memory
    (2 GB for 100,000 samples of ResNet-18's 512-d embedding and 10 classes,
    in float32) and ``O(N d C)`` per pick. All draws come from a
    ``torch.Generator`` on the device, seeded by the query's ``random_state``.

    ``return_scores=True`` reports each pick's ``D^2`` at the time it was
    picked (the first pick: its ``|g|^2``); a batch is a set, so it is
    returned ordered by that value, largest first.

    Parameters
    ----------
    first : {"norm", "random"}, default="norm"
        The first pick: the largest gradient embedding (BADGE's code) or a
        uniform draw (k-means++ as Arthur and Vassilvitskii define it).
    subset : int or None, default=None
        Run on a random subset of this many pool samples per query; None uses
        the whole pool, as the paper does.

    See Also
    --------
    skal.kmeans.kmeans_plusplus_outer : The seeding, on factored rows.
    CoreSet : Diversity alone, by k-center greedy on the embeddings.

    References
    ----------
    .. [1] Ash, Zhang, Krishnamurthy, Langford and Agarwal, "Deep Batch Active
       Learning by Diverse, Uncertain Gradient Lower Bounds", ICLR 2020.
    .. [2] Arthur and Vassilvitskii, "k-means++: The Advantages of Careful
       Seeding", SODA 2007.

    Examples
    --------
    >>> import numpy as np
    >>> from skal import ActiveLearner, ActiveNet
    >>> from skal.models import MLP
    >>> from skal.selectors import BADGE
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(80, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> learner = ActiveLearner(ActiveNet(MLP, max_epochs=3, verbose=0), BADGE(),
    ...                         random_state=0).fit(X[:30], y[:30])
    >>> idx, scores = learner.query(X[30:], n=5, return_scores=True)
    >>> len(set(idx.tolist())), bool(np.all(np.diff(scores) <= 0))
    (5, True)
    """

    _parameter_constraints = {
        "first": [StrOptions({"norm", "random"})],
        "subset": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, first="norm", subset=None):
        self.first = first
        self.subset = subset

    def select(self, net, X_pool, n, *, random_state=None, labeled=None):
        self._validate_params()
        if is_sharded():
            return _sharded.badge_select(self, net, X_pool, n, random_state, labeled)
        candidates = self._draw_subset(len(X_pool), n, random_state)
        if candidates is not None:
            X_pool = take(X_pool, candidates)
        a, h = gradient_embedding_factors(net, X_pool)
        _check_finite_factors(a, h)
        indices, d2 = kmeans_plusplus_outer(a, h, n, first=self.first,
                                            generator=_generator(a.device, random_state))
        return _largest_first(indices, d2, candidates)


def _check_finite_factors(a, h):
    """Raise unless the gradient embedding factors ``a`` and ``h`` of the pool are finite."""
    if not (torch.isfinite(a).all() and torch.isfinite(h).all()):
        raise ValueError(
            "BADGE: the net's outputs or embeddings of the pool are NaN or infinite; the "
            "net's outputs are not finite (did training diverge?)."
        )


def _largest_first(indices, d2, candidates):
    """The picks as pool indices and their ``D^2``, as ``select`` returns them: largest first."""
    order = torch.sort(d2, descending=True, stable=True).indices
    return _pool_indices(indices[order], candidates), d2[order].cpu().numpy()


def gradient_embedding_factors(net, X):
    """``(a, h)`` for every sample of ``X``, on the net's device, in eval mode.

    ``a = softmax(z) - onehot(argmax z)`` (shape ``(N, C)``) and ``h`` the
    embedding (``(N, d)``): ``a h^T`` is the gradient of ``CE(z, argmax z)``
    with respect to the weight of the last linear layer ``z = W h + b``.
    """
    n_classes = []

    def factors(Xb):
        logits, features = net.forward_tapped(Xb, embedding=True)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        probs = torch.softmax(logits, dim=1)
        a = probs - F.one_hot(probs.argmax(1), probs.shape[1]).to(probs.dtype)
        n_classes.append(a.shape[1])
        return torch.cat([a, features["embedding"].to(a.dtype)], dim=1)

    both = net.map_pool(factors, X)
    return both[:, :n_classes[0]], both[:, n_classes[0]:]
