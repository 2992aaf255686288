"""BALD: mutual information between the label and the weights, by MC dropout."""

from collections.abc import Mapping
from contextlib import contextmanager
from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from torch import nn

from ..scores import mutual_information
from .. import distributed
from .base import ScoreSelector, _generator

__all__ = ["BALD"]

# torch's own dropout layers, by how their mask is shaped and applied
_ELEMENTWISE = (nn.Dropout, nn.AlphaDropout)
_CHANNELWISE = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.FeatureAlphaDropout)
_ALPHA = (nn.AlphaDropout, nn.FeatureAlphaDropout)
# SELU's alpha * scale: a dropped unit of alpha dropout is set to -this before the affine map
_SELU_NEGATIVE_SATURATION = 1.7580993408473766
# input dimensions at which a channel-wise layer sees an unbatched input (one channel axis first)
_UNBATCHED_DIM = {nn.Dropout1d: 2, nn.Dropout3d: 4}


class BALD(ScoreSelector):
    """Bayesian Active Learning by Disagreement, with Monte Carlo dropout.

    Scores each pool sample by the mutual information between its label and
    the weights, estimated from ``T = n_samples`` stochastic forward passes
    with dropout on:

    ``I[y; w | x] = H[mean_t p_t(x)] - mean_t H[p_t(x)]``

    (:func:`skal.scores.mutual_information`), and queries the largest. Every
    other layer stays in eval mode, so batch norm uses its running
    statistics. The ``T`` passes of a group of pool samples run as one
    forward pass of the group repeated ``T`` times along the batch dimension,
    on the net's device: each pool batch of ``B`` samples
    (:meth:`skal.ActiveNet.map_pool`, ``iterator_valid__batch_size``) is
    scored in groups of ``max(1, B // T)`` samples, so a forward pass holds
    about ``B`` rows (at least ``T``), as plain inference does, and a query
    costs about ``T`` forward passes over the pool.

    The dropout masks are drawn from a ``torch.Generator`` seeded, for each
    pool batch, from the query's ``random_state`` and the batch's position in
    the pool (so a query sharded over processes, :mod:`skal.distributed`,
    draws the same masks), never from torch's global random state: while
    the query runs, each dropout layer of the module (with ``p > 0``) stays in
    eval mode and a forward hook replaces its output by the dropped-out input,
    with torch's own rule for that layer type (element-wise for
    ``nn.Dropout`` and ``nn.AlphaDropout``, one mask per sample and channel
    for ``nn.Dropout1d/2d/3d`` and ``nn.FeatureAlphaDropout``). The hooks are
    removed and every submodule's train/eval flag restored afterwards, also
    on error. The module needs at least one such layer: the built-in models
    take a ``dropout`` argument (``ActiveNet(..., module__dropout=0.5)``).
    Dropout applied through ``torch.nn.functional`` inside a module's
    ``forward`` is not seen.

    Parameters
    ----------
    n_samples : int, default=20
        Stochastic forward passes ``T`` per pool sample (at least 2). 20 is
        what baal's MC-dropout examples use; Gal et al.'s released code uses
        100, BADGE's BALD baseline 10. The cost of a query grows linearly in
        ``T``; the Monte Carlo error of the score falls as ``1/sqrt(T)``.
    subset : int or None, default=None
        Score a fresh random subset of this many pool samples per query;
        None scores the whole pool. Gal et al.'s code draws 2,000.
    batch : {"topk", "stochastic", "cluster"} or BatchRule, default="topk"
        How the scores become a batch of ``n``: the ``n`` highest (the
        papers' rule), a score-weighted random sample
        (:class:`~skal.selectors.StochasticBatch`) or the best of clustered
        candidates (:class:`~skal.selectors.ClusterBatch`).

    See Also
    --------
    skal.scores.mutual_information : The score.
    Entropy : The entropy of a single deterministic prediction.

    References
    ----------
    .. [1] Houlsby, Huszar, Ghahramani and Lengyel, "Bayesian Active Learning
       for Classification and Preference Learning", arXiv:1112.5745, 2011.
    .. [2] Gal, Islam and Ghahramani, "Deep Bayesian Active Learning with Image
       Data", ICML 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from skal import ActiveLearner, ActiveNet
    >>> from skal.models import MLP
    >>> from skal.selectors import BALD
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(80, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> net = ActiveNet(MLP, module__dropout=0.5, max_epochs=3, verbose=0)
    >>> learner = ActiveLearner(net, BALD(n_samples=10), random_state=0).fit(X[:30], y[:30])
    >>> idx, scores = learner.query(X[30:], n=5, return_scores=True)
    >>> len(set(idx.tolist())), bool(np.all(np.diff(scores) <= 0)), bool(scores[-1] >= 0)
    (5, True, True)
    """

    _parameter_constraints = {
        "n_samples": [Interval(Integral, 2, None, closed="left")],
        "subset": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, n_samples=20, subset=None, batch="topk"):
        self.n_samples = n_samples
        self.subset = subset
        self.batch = batch

    def select(self, net, X_pool, n, *, random_state=None, labeled=None):
        self._validate_params()  # before the subset is drawn
        return super().select(net, X_pool, n, random_state=random_state, labeled=labeled)

    def score_pool(self, net, X_pool, *, random_state=None, labeled=None):
        self._validate_params()
        device = torch.device(net.device)
        # a stream of its own: the base class breaks ties with _generator(device, random_state)
        seed = None if random_state is None else _purpose_seed(random_state)
        generator = _generator(device, seed)
        # each pool batch draws its masks from a seed of its own, keyed by the batch's position
        # in the whole pool: a sharded query's processes draw the single process's masks
        base = int(np.random.SeedSequence().generate_state(1)[0]) if seed is None else seed
        batch = [distributed.batch_offset()]
        T = self.n_samples

        def score(Xb):
            generator.manual_seed(_batch_seed(base, batch[0]))
            batch[0] += 1
            # groups of B // T samples: a forward pass has about B rows, as plain inference has
            size = _batch_len(Xb)
            piece = max(1, size // T)
            parts = []
            for start in range(0, size, piece):
                logits = net.logits(_repeat(_rows(Xb, start, start + piece), T))
                parts.append(mutual_information(logits.reshape(T, -1, logits.shape[-1])))
            return torch.cat(parts)

        with _mc_dropout(net.module_, generator):
            return net.map_pool(score, X_pool)


def _purpose_seed(random_state):
    return int(np.random.SeedSequence([int(random_state), 0xBA1D]).generate_state(1)[0])


def _batch_seed(base, batch):
    return int(np.random.SeedSequence([base, batch]).generate_state(1)[0])


def _batch_len(Xb):
    if isinstance(Xb, Mapping):
        return _batch_len(next(iter(Xb.values())))
    return _batch_len(Xb[0]) if isinstance(Xb, (tuple, list)) else len(Xb)


def _rows(Xb, start, stop):
    if isinstance(Xb, Mapping):
        return {key: _rows(value, start, stop) for key, value in Xb.items()}
    if isinstance(Xb, (tuple, list)):
        return type(Xb)(_rows(value, start, stop) for value in Xb)
    return Xb[start:stop]


def _repeat(Xb, times):
    """The batch stacked ``times`` times along dimension 0 (copy ``t`` is rows ``t*B:(t+1)*B``)."""
    if isinstance(Xb, Mapping):
        return {key: _repeat(value, times) for key, value in Xb.items()}
    if isinstance(Xb, (tuple, list)):
        return type(Xb)(_repeat(value, times) for value in Xb)
    return Xb.repeat(times, *([1] * (Xb.ndim - 1)))


@contextmanager
def _mc_dropout(module, generator):
    """Inside the block, the module's dropout layers drop out with masks from ``generator``.

    Raises ``ValueError`` if the module has no dropout layer with ``p > 0``;
    restores every submodule's train/eval flag and removes the hooks on exit.
    """
    layers = [m for m in module.modules()
              if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    if not layers:
        raise ValueError(
            "BALD needs dropout: the module has no torch.nn dropout layer with p > 0 to sample "
            "weights with. Give it one, e.g. ActiveNet(SmallCNN, module__dropout=0.5) for the "
            "built-in models (skal.models.MLP, SmallCNN, resnet18_cifar)."
        )
    known = _ELEMENTWISE + _CHANNELWISE
    unknown = [type(m).__name__ for m in layers if not isinstance(m, known)]
    if unknown:
        raise TypeError(f"BALD cannot sample masks for the dropout layer type {unknown[0]}; "
                        f"it knows torch's own: {', '.join(c.__name__ for c in known)}.")
    flags = [(m, m.training) for m in module.modules()]

    def hook(layer, args, output):
        return _dropped(layer, args[0], generator)

    handles = []
    try:
        handles = [layer.register_forward_hook(hook) for layer in layers]
        yield
    finally:
        for handle in handles:
            handle.remove()
        for m, training in flags:
            m.training = training


def _dropped(layer, x, generator):
    """``x`` through ``layer`` in training mode, with the mask drawn from ``generator``."""
    p = float(layer.p)
    if p == 1.0:
        return x * 0.0
    if isinstance(layer, _CHANNELWISE):
        channel_axes = 1 if x.ndim == _UNBATCHED_DIM.get(type(layer)) else 2
        shape = x.shape[:channel_axes] + (1,) * (x.ndim - channel_axes)
    else:
        shape = x.shape
    keep = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1 - p, generator=generator)
    if not isinstance(layer, _ALPHA):
        return x * (keep / (1 - p))
    # torch's alpha dropout: a * (x keep + alpha' (1 - keep)) + b, mean and variance kept
    alpha = _SELU_NEGATIVE_SATURATION
    a = ((alpha * alpha * p + 1) * (1 - p)) ** -0.5
    return x * (keep * a) + ((keep - 1) * (alpha * a) + alpha * a * p)
