"""Semi-supervised training parts: the net also learns from the pool's unlabeled rows.

:class:`FixMatch` (images) and :class:`PseudoLabel` (any features) are
training parts (:mod:`skal.parts`) added to a net's ``callbacks`` by hand, so
they compose with any selector::

    net = ActiveNet(SmallCNN, ..., callbacks=[("semi", FixMatch())])
    learner = ActiveLearner(net, selector=Margin(), unlabeled=skal.UNLABELED)
    learner.fit(X_pool, y_marked)           # y_marked: UNLABELED where no label yet
    learner.teach(X_pool, labels, rows=idx)

They read the unlabeled rows of the learner's pool (the ``X`` of a ``fit``
that marks rows ``UNLABELED``): while :class:`~skal.ActiveLearner` trains in
``fit`` and in ``teach(..., rows=)``, it lends the net a view of those rows
(never a copy; labeled and skipped rows are not in it), and at each training
batch the part gathers ``ratio`` times the batch's size of them, moves them to
the net's device and adds its loss term. Without a pool (a net fitted on
arrays, a ``teach`` without ``rows``, ``refit()``) a part warns and trains
exactly as without it.
"""

import math
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import Interval
from torch.utils.data import Dataset, default_collate

from ._bookkeeping import UNLABELED_ROW, Rows
from ._data import _features
from ._pool import first_output
from .losses import pseudo_label_loss
from .parts import TrainingPart
from .transforms import strong_augment, weak_augment

__all__ = ["FixMatch", "PseudoLabel"]

_POOL_KEY = "_skal_unlabeled_pool"


class _PoolView:
    """Rows ``rows`` of a pool, gathered a batch at a time (a view: the pool is never copied).

    ``transform``: a Pipeline's fitted transformers, applied to each gathered
    batch (they are fitted by the time the net trains).
    """

    def __init__(self, data, rows, transform=None):
        self.data, self.rows, self.transform = data, np.asarray(rows, dtype=np.int64), transform

    def __len__(self):
        return len(self.rows)

    def gather(self, positions, device):
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        if isinstance(self.data, Dataset):
            values = default_collate([_features(self.data[int(row)]) for row in rows])
        elif self.transform is not None:
            values = self.transform.transform(_safe_indexing(self.data, rows))
            values = values.toarray() if hasattr(values, "toarray") else np.asarray(values)
        else:
            values = Rows(self.data, rows).chunk(0, len(rows))
        values = torch.as_tensor(values)
        if values.dtype == torch.float64:
            values = values.float()
        return values.to(device)


def reads_pool(estimator):
    """Whether ``estimator``'s net (an ActiveNet or a Pipeline ending in one) has a part reading the pool."""
    net = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    entries = [cb for _, cb in getattr(net, "callbacks_", [])]
    if isinstance(net.callbacks, (list, tuple)):  # or None, or skorch's "disable"
        entries += [cb[1] if isinstance(cb, tuple) else cb for cb in net.callbacks]
    return any(isinstance(cb, PoolPart) or (isinstance(cb, type) and issubclass(cb, PoolPart))
               for cb in entries)


def pool_fit(fit, estimator, X, pool):
    """``fit`` wrapped so that ``estimator``'s pool-reading parts see ``X``'s unlabeled rows while it runs.

    Parameters
    ----------
    fit : callable
        ``fit(X_train, y)``, e.g. ``estimator.fit``.
    estimator : skal.ActiveNet or Pipeline ending in one
    X : the learner's pool, or None
        The dataset of ``fit`` (the rows' positions are its rows).
    pool : PoolState or None
        Which of its rows are unlabeled.

    Returns
    -------
    callable
        ``fit`` itself when there is no pool or no part reads it.
    """
    if X is None or pool is None or not reads_pool(estimator):
        return fit
    net = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    transform = estimator[:-1] if isinstance(estimator, Pipeline) else None
    view = _PoolView(X, pool.rows(UNLABELED_ROW), transform)

    def fit_with_pool(X_train, y):
        net.__dict__[_POOL_KEY] = view  # not skorch's setattr: no parameter, never saved
        try:
            return fit(X_train, y)
        finally:
            net.__dict__.pop(_POOL_KEY, None)

    return fit_with_pool


class PoolPart(TrainingPart):
    """Base of the parts that train on the unlabeled rows of the learner's pool.

    A subclass implements ``_unlabeled_loss(net, X_unlabeled)``; this class
    finds the pool the learner lends the net, draws the rows of each batch
    (every unlabeled row once per pass, in a seeded random order, as
    FixMatch's unlabeled loader), and weighs the term.
    """

    reads_pool = True
    _parameter_constraints = {
        "ratio": [Interval(Integral, 1, None, closed="left")],
        "threshold": [Interval(Real, 0, 1, closed="both")],
        "weight": [Interval(Real, 0, None, closed="left")],
        "random_state": [Interval(Integral, 0, 2**63 - 1, closed="both"), None],
    }

    def initialize(self):
        self.view_, self.generator_, self.order_, self.cursor_, self.epoch_ = None, None, None, 0, 0
        self.n_unlabeled_seen_, self.n_confident_ = 0, None
        return super().initialize()

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.epoch_, self.cursor_, self.order_, self.n_unlabeled_seen_, self.n_confident_ = 0, 0, None, 0, None
        view = net.__dict__.get(_POOL_KEY)
        if view is None or len(view) == 0 or not self.weight:
            self.view_ = self.generator_ = None
            if view is None:
                warnings.warn(
                    f"{type(self).__name__}: the net sees no unlabeled rows, so it trains as without "
                    "this part. The rows come from an ActiveLearner's pool, in fit(X, y) with "
                    "y marking unlabeled rows (unlabeled=skal.UNLABELED) and in teach(X, y, rows=).",
                    UserWarning, stacklevel=2)
            return
        self.view_ = view
        # the seed is drawn only when there are rows to read, so that a part without
        # them leaves torch's random state (and so the training) exactly as it was
        seed = self.random_state
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        self.generator_ = torch.Generator().manual_seed(int(seed))

    def on_epoch_end(self, net, **kwargs):
        self.epoch_ += 1

    def on_train_end(self, net, X=None, y=None, **kwargs):
        # no reference to the pool, nor its row order, outlives the fit
        self.view_ = self.generator_ = self.order_ = None

    def __getstate__(self):
        state = super().__getstate__()
        state["view_"] = state["generator_"] = state["order_"] = None
        return state

    def current_weight(self, net):
        """The weight of the unlabeled term in this epoch."""
        return self.weight

    def _next_rows(self, n):
        """``n`` positions in the view: a seeded permutation, renewed at each pass."""
        taken = []
        while n > 0:
            if self.order_ is None or self.cursor_ == len(self.order_):
                self.order_ = torch.randperm(len(self.view_), generator=self.generator_).numpy()
                self.cursor_ = 0
            step = min(n, len(self.order_) - self.cursor_)
            taken.append(self.order_[self.cursor_:self.cursor_ + step])
            self.cursor_ += step
            n -= step
        return np.concatenate(taken)

    def loss(self, net, logits, y_true):
        if self.view_ is None:
            return None
        weight = self.current_weight(net)
        X_unlabeled = self.view_.gather(self._next_rows(self.ratio * len(logits)), logits.device)
        self.n_unlabeled_seen_ += len(X_unlabeled)
        term = self._unlabeled_loss(net, X_unlabeled)
        return None if term is None else weight * term

    def _count(self, target_logits):
        confident = (torch.softmax(target_logits.float(), dim=1).max(dim=1).values >= self.threshold)
        count = confident.sum()
        self.n_confident_ = count if self.n_confident_ is None else self.n_confident_ + count
        return confident

    def _unlabeled_loss(self, net, X_unlabeled):
        raise NotImplementedError


class FixMatch(PoolPart):
    """FixMatch (Sohn et al., 2020): confident pseudo-labels of a weak view teach the strong view.

    At each training batch of ``B`` labeled samples, ``ratio * B`` unlabeled
    rows of the learner's pool get a weak and a strong augmentation; the
    net's prediction on the weak view (no gradient) gives hard pseudo-labels,
    and those with a confidence of at least ``threshold`` are the targets of
    a cross-entropy on the strong view (:func:`skal.losses.pseudo_label_loss`,
    the paper's eq. 4). The term, times ``weight``, is added to the batch's
    loss. The forwards run in training mode (the paper's); when no
    pseudo-label is confident the strong view is not run (the term is 0).
    For images only (batches of shape ``(n, C, H, W)``); for other features
    use :class:`PseudoLabel`.

    Parameters
    ----------
    ratio : int, default=7
        Unlabeled rows per labeled row in each batch (the paper's mu = 7).
    threshold : float, default=0.95
        Confidence a pseudo-label needs (the paper's tau = 0.95).
    weight : float, default=1.0
        Weight of the unlabeled term (the paper's lambda_u = 1). 0 trains as
        without the part.
    weak, strong : callable or None, default=None
        ``f(X, generator) -> X'``, the two views of a batch on the net's
        device, drawing their randomness from the CPU ``torch.Generator``.
        None: :func:`skal.transforms.weak_augment` (flip and translation, the
        paper's weak view) and :func:`skal.transforms.strong_augment`.
    flip : bool, default=True
        Whether the default views flip images horizontally. False for images
        whose label a mirror can change (digits, characters): the views keep
        the translation and the strong view's photometric changes and Cutout.
        Ignored by a ``weak`` or ``strong`` callable.
    random_state : int or None, default=None
        Seeds the order of the unlabeled rows and the augmentations. None:
        a seed drawn from torch's random state at the start of each fit (so
        :class:`~skal.ActiveLearner`'s ``random_state`` fixes it).

    Attributes
    ----------
    n_unlabeled_seen_ : int
        Unlabeled rows read in the current fit.
    n_confident_ : torch.Tensor or None
        How many of them had a confident pseudo-label (on the net's device).

    References
    ----------
    .. [1] K. Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning
       with Consistency and Confidence", NeurIPS 2020.

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> from skal import ActiveLearner, ActiveNet
    >>> from skal.models import MLP
    >>> from skal.semi import FixMatch
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 1, 4, 4)).astype(np.float32)
    >>> y = (X[:, 0, 0, 0] > 0).astype(np.int64)
    >>> y_marked = np.where(np.arange(60) < 10, y, skal.UNLABELED)
    >>> net = ActiveNet(MLP, module__num_classes=2, module__in_features=16, max_epochs=2,
    ...                 verbose=0, callbacks=[("semi", FixMatch(threshold=0.5))])
    >>> learner = ActiveLearner(net, unlabeled=skal.UNLABELED, random_state=0).fit(X, y_marked)
    >>> learner.estimator_.parts_["semi"].n_unlabeled_seen_  # 7 per labeled row, per epoch
    140
    """

    _parameter_constraints = {**PoolPart._parameter_constraints,
                              "weak": [callable, None], "strong": [callable, None],
                              "flip": ["boolean"]}

    def __init__(self, ratio=7, threshold=0.95, weight=1.0, weak=None, strong=None, flip=True,
                 random_state=None):
        self.ratio = ratio
        self.threshold = threshold
        self.weight = weight
        self.weak = weak
        self.strong = strong
        self.flip = flip
        self.random_state = random_state

    def _unlabeled_loss(self, net, X_unlabeled):
        weak = (self.weak(X_unlabeled, self.generator_) if self.weak
                else weak_augment(X_unlabeled, self.generator_, flip=self.flip))
        strong = (self.strong(X_unlabeled, self.generator_) if self.strong
                  else strong_augment(X_unlabeled, self.generator_, flip=self.flip))
        with torch.no_grad():
            target = first_output(net.infer(weak))
        if not bool(self._count(target).any()):  # one host sync; skips a forward and backward
            return None
        return pseudo_label_loss(target, first_output(net.infer(strong)), self.threshold)


class PseudoLabel(PoolPart):
    """Confident pseudo-labels with a ramped weight, for any features (tabular, text embeddings).

    At each training batch of ``B`` labeled samples, the net predicts
    ``ratio * B`` unlabeled rows of the learner's pool; predictions with a
    confidence of at least ``threshold`` become hard targets of a
    cross-entropy on the same output (:func:`skal.losses.pseudo_label_loss`;
    the targets are detached), weighted by ``weight`` times a Gaussian ramp
    ``exp(-5 (1 - t / T)^2)`` over the first ``T = ramp_up * max_epochs``
    epochs of each fit. This is Lee's (2013) pseudo-labelling with FixMatch's
    confidence threshold: FixMatch without augmentations (Sohn et al. 2020,
    section 2.2), so it needs no knowledge of the data, and the ramp keeps
    the first epochs' unreliable predictions from teaching the net (Lee
    2013; Laine and Aila 2017). Chosen over mean-teacher consistency because
    it needs no second copy of the weights nor a noise model of the
    features, and shares FixMatch's parameters. With ``noise``, the targets
    come from the clean rows (no gradient) and the cross-entropy is taken on
    the rows plus Gaussian noise (a perturbation for features without a
    natural augmentation).

    Parameters
    ----------
    ratio : int, default=7
        Unlabeled rows per labeled row in each batch (FixMatch's mu = 7).
    threshold : float, default=0.95
        Confidence a pseudo-label needs (FixMatch's tau = 0.95).
    weight : float, default=1.0
        Weight of the unlabeled term after the ramp (FixMatch's lambda_u = 1).
        0 trains as without the part.
    ramp_up : float in [0, 1], default=0.25
        Fraction of ``max_epochs`` over which the weight rises (Laine and
        Aila's 80 of 300 epochs, rounded); 0: the full weight from the start.
    noise : float, default=0.0
        Standard deviation of the Gaussian noise on the student's input; 0
        (Lee's method): one forward, the targets taken from its own output.
    random_state : int or None, default=None
        Seeds the order of the unlabeled rows and the noise. None: a seed
        drawn from torch's random state at the start of each fit.

    Attributes
    ----------
    n_unlabeled_seen_ : int
        Unlabeled rows read in the current fit.
    n_confident_ : torch.Tensor or None
        How many of them had a confident pseudo-label.

    References
    ----------
    .. [1] D.-H. Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised
       Learning Method for Deep Neural Networks", ICML 2013 Workshop.
    .. [2] K. Sohn et al., "FixMatch", NeurIPS 2020 (the threshold, eq. 2).
    .. [3] S. Laine and T. Aila, "Temporal Ensembling for Semi-Supervised
       Learning", ICLR 2017 (the Gaussian ramp).

    Examples
    --------
    >>> from skal.semi import PseudoLabel
    >>> part = PseudoLabel(ramp_up=0.5).initialize()
    >>> class Net:
    ...     max_epochs = 10
    >>> round(part.current_weight(Net()), 4)  # epoch 0 of a 5-epoch ramp: exp(-5)
    0.0067
    """

    _parameter_constraints = {**PoolPart._parameter_constraints,
                              "ramp_up": [Interval(Real, 0, 1, closed="both")],
                              "noise": [Interval(Real, 0, None, closed="left")]}

    def __init__(self, ratio=7, threshold=0.95, weight=1.0, ramp_up=0.25, noise=0.0, random_state=None):
        self.ratio = ratio
        self.threshold = threshold
        self.weight = weight
        self.ramp_up = ramp_up
        self.noise = noise
        self.random_state = random_state

    def current_weight(self, net):
        ramp = self.ramp_up * net.max_epochs
        if ramp and self.epoch_ < ramp:
            return self.weight * math.exp(-5.0 * (1.0 - self.epoch_ / ramp) ** 2)
        return self.weight

    def _unlabeled_loss(self, net, X_unlabeled):
        if not self.noise:
            logits = first_output(net.infer(X_unlabeled))
            self._count(logits.detach())
            return pseudo_label_loss(logits, logits, self.threshold)
        with torch.no_grad():
            target = first_output(net.infer(X_unlabeled))
        self._count(target)
        noise = torch.randn(X_unlabeled.shape, generator=self.generator_).to(X_unlabeled)
        return pseudo_label_loss(target, first_output(net.infer(X_unlabeled + self.noise * noise)),
                                 self.threshold)
