"""ActiveLearner: the scikit-learn meta-estimator of skal."""

import copy
import numbers
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from torch.utils.data import Subset

from ._bookkeeping import LABELED_ROW, SKIPPED_ROW, UNLABELED, UNLABELED_ROW, PoolState, fingerprint, subset
from ._data import (
    FeaturesDataset,
    check_array_like,
    check_same_length,
    check_targets,
    is_dataset,
    materialize,
    named_errors,
    sample_shape,
)
from .callbacks import DivergenceCheck
from .net import ActiveNet
from .selectors import Margin
from .selectors.base import LabeledData
from .semi import lend_pool, lent_pool, pool_fit

__all__ = ["ActiveLearner"]

_TRAIN, _QUERY = 0, 1
_TRANSFORM_CHUNK = 65536  # pool rows per Pipeline transform call


@dataclass(frozen=True)
class _LabeledSet:
    """Every labeled sample with its label, cycle, reference flag and pool row; replaced, never changed.

    ``row`` is the sample's row in the learner's pool, -1 for a sample from elsewhere.
    """

    X: np.ndarray
    y: np.ndarray
    cycle: np.ndarray
    reference: np.ndarray
    row: np.ndarray

    def added(self, X, y, cycle, rows=None):
        rows = np.full(len(y), -1, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        return _LabeledSet(np.concatenate([self.X, X]), np.concatenate([self.y, y]),
                           np.concatenate([self.cycle, np.full(len(y), cycle, dtype=np.int64)]),
                           np.concatenate([self.reference, np.zeros(len(y), dtype=bool)]),
                           np.concatenate([self.row, rows]))


@dataclass(frozen=True)
class _Fitted:
    """Everything ``fit`` makes, in one value: the learner changes it in one assignment.

    ``template`` is the ``estimator`` parameter as it was when ``estimator`` was
    last configured, so that a later ``set_params`` is seen and applied.
    """

    estimator: object
    selector: object
    template: object
    classes: np.ndarray
    labeled: _LabeledSet
    seed: int
    n_features_in: int
    feature_names_in: object
    stale: bool = False
    pool: PoolState | None = None


def _fitted_attribute(field, name, doc):
    def get(self):
        state = self.__dict__.get("_fitted")
        if state is None:
            raise AttributeError(f"{type(self).__name__} is not fitted: {name} exists after fit.")
        value = getattr(state, field) if "." not in field else getattr(state.labeled, field.split(".")[1])
        if value is None:
            raise AttributeError(f"{name} was not set: fit saw no feature names.")
        return value

    return property(get, doc=doc)


class _FeatureProbe(BaseEstimator):
    """Takes the ``n_features_in_`` / ``feature_names_in_`` that ``validate_data`` sets."""


class ActiveLearner(ClassifierMixin, MetaEstimatorMixin, BaseEstimator):
    """Active learning with a deep net, as a scikit-learn classifier.

    The learner trains a clone of ``estimator`` on the labeled data, asks its
    ``selector`` which pool samples to label next (:meth:`query`), and retrains
    when labels arrive (:meth:`teach`). It keeps the labeled set, so labels are
    never lost, and it clones, pickles and cross-validates like any
    scikit-learn classifier.

    Every method changes the learner in one step: after an exception
    (KeyboardInterrupt included) raised anywhere inside ``fit``, ``teach``,
    ``refit`` or ``load``, the learner is exactly as before, or (``teach``)
    holds the new labels with its previous model marked stale. Its methods may
    be called from several threads: each learner serialises its own calls.

    Parameters
    ----------
    estimator : skal.ActiveNet or Pipeline ending in one
        The net to train; never modified (``fit`` trains a clone, given the
        selector's training parts and ``classes`` set to the encoded labels
        ``0 .. n_classes-1``). With a Pipeline, ``query`` passes the pool
        through its transformers first (once, in chunks), and selectors see
        the transformed samples. Changed with ``set_params`` after ``fit``, it
        takes effect at the next :meth:`teach` or :meth:`refit`.
    selector : selector, default=Margin()
        The query strategy, from :mod:`skal.selectors`; cloned at ``fit``.
        The default is the one with the best measured gain over random
        sampling (see "Which selector should I use?" in the documentation).
        Changed after ``fit``, it takes effect at the next :meth:`query` when
        it needs the same training, else at the next :meth:`teach` or
        :meth:`refit` (``query`` refuses until then).

        .. versionchanged:: 0.2
           The default was ``DISAL()``; it lost to random sampling on
           Fashion-MNIST in both regimes measured.

    classes : array-like or None, default=None
        All labels the task has. ``None`` takes the labels seen in ``fit``.
        Declare them when a class may first appear in :meth:`teach`.
    warm_start : bool, default=False
        ``False``: every :meth:`teach` retrains from a fresh initialisation,
        as DISAL and ISAL do. ``True``: continue from the current weights
        (``partial_fit``), as TiDAL and LL4AL do.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, batch shuffling and every random choice
        of the selector (ties, subsets). With an int, CPU runs are
        reproducible; torch's global random state is left as it was.
    unlabeled : int, float, str or None, default=None
        The label that marks, in the ``y`` given to :meth:`fit`, the rows of
        the dataset not labeled yet; ``skal.UNLABELED`` (-1) follows
        scikit-learn's semi-supervised convention, ``float("nan")`` scikit-
        activeml's. With marked rows the learner keeps the bookkeeping of the
        dataset (see :meth:`fit`). None: every label in ``y`` is a label
        (so that, say, -1 in binary ``{-1, 1}`` labels is never taken for a
        marker).

    Attributes
    ----------
    estimator_ : skal.ActiveNet or Pipeline
        The net (or pipeline) trained on the current labeled set.
    selector_ : selector
        The fitted clone of ``selector`` the net was trained for.
    classes_ : ndarray of shape (n_classes,)
        The sorted class labels.
    X_labeled_ : ndarray of shape (n_labeled, ...)
        Every labeled sample, from ``fit`` and each ``teach``, as float32.
    y_labeled_ : ndarray of shape (n_labeled,)
        Their labels, as given.
    labeled_cycle_ : ndarray of shape (n_labeled,), dtype int64
        The cycle in which each sample arrived: 0 for ``fit``, k for the k-th
        ``teach``.
    n_features_in_ : int
        Number of features (the size of axis 1) seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names seen in ``fit``, when it was given a DataFrame.

    See Also
    --------
    skal.ActiveNet : The skorch net it drives.
    skal.selectors : The query strategies.

    Examples
    --------
    >>> import numpy as np
    >>> from skal import ActiveLearner, ActiveNet
    >>> from skal.models import MLP
    >>> from skal.selectors import Entropy
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2)).astype(np.float32)
    >>> y = (X[:, 0] + X[:, 1] > 0).astype(int)
    >>> net = ActiveNet(MLP, max_epochs=5, lr=0.1, verbose=0)
    >>> learner = ActiveLearner(net, selector=Entropy(), random_state=0)
    >>> learner = learner.fit(X[:20], y[:20])
    >>> idx = learner.query(X[20:], n=5)
    >>> learner = learner.teach(X[20:][idx], y[20:][idx])
    >>> learner.X_labeled_.shape, int(learner.labeled_cycle_.max())
    ((25, 2), 1)
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict_proba"])],
        "selector": [HasMethods(["select", "training_needs"])],
        "classes": ["array-like", None],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "unlabeled": [numbers.Integral, numbers.Real, str, None],
    }

    def __init__(self, estimator, selector=Margin(), *, classes=None, warm_start=False, random_state=None,
                 unlabeled=None):
        self.estimator = estimator
        self.selector = selector
        self.classes = classes
        self.warm_start = warm_start
        self.random_state = random_state
        self.unlabeled = unlabeled

    # read-only views of the one fitted state (see the class docstring's Attributes)
    estimator_ = _fitted_attribute("estimator", "estimator_",
                                   "The net (or pipeline) trained on the current labeled set.")
    selector_ = _fitted_attribute("selector", "selector_",
                                  "The fitted clone of ``selector`` the net was trained for.")
    classes_ = _fitted_attribute("classes", "classes_", "The sorted class labels.")
    X_labeled_ = _fitted_attribute("labeled.X", "X_labeled_",
                                   "Every labeled sample, from ``fit`` and each ``teach``, as float32.")
    y_labeled_ = _fitted_attribute("labeled.y", "y_labeled_", "Their labels, as given.")
    labeled_cycle_ = _fitted_attribute(
        "labeled.cycle", "labeled_cycle_",
        "The cycle in which each sample arrived: 0 for ``fit``, k for the k-th ``teach``.")
    n_features_in_ = _fitted_attribute("n_features_in", "n_features_in_",
                                       "Number of features (the size of axis 1) seen in ``fit``.")
    feature_names_in_ = _fitted_attribute("feature_names_in", "feature_names_in_",
                                          "Column names seen in ``fit``, when it was given a DataFrame.")

    def __sklearn_is_fitted__(self):
        return self.__dict__.get("_fitted") is not None

    # --- state --------------------------------------------------------------------

    @contextmanager
    def _serialised(self):
        # one lock per learner (setdefault is atomic), left out of pickles and clones
        with self.__dict__.setdefault("_lock", threading.RLock()):
            yield

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns __dict__ itself
        state.pop("_lock", None)
        return state

    def _state(self):
        check_is_fitted(self)
        return self._fitted

    def _commit(self, fitted):
        # One attribute assignment: an interrupt lands before or after it, never inside.
        self._fitted = fitted

    def _pool_rows(self, kind):
        state = self._state()
        return None if state.pool is None else state.pool.rows(kind)

    @property
    def labeled_rows_(self):
        """Rows of the pool that are labeled (None without a pool)."""
        return self._pool_rows(LABELED_ROW)

    @property
    def skipped_rows_(self):
        """Rows of the pool marked by :meth:`skip` (None without a pool)."""
        return self._pool_rows(SKIPPED_ROW)

    @property
    def unlabeled_rows_(self):
        """Rows of the pool that :meth:`query` may still return (None without a pool)."""
        return self._pool_rows(UNLABELED_ROW)

    @property
    def stale_(self):
        """Whether ``estimator_`` predates the last labels (a failed teach); refit() renews it."""
        return self._state().stale

    # --- fitting ------------------------------------------------------------------------

    def fit(self, X, y):
        """Train a fresh clone of ``estimator`` on the initial labeled set.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W), or Dataset
            The initial labeled samples; converted to float32. A torch
            Dataset (items ``x`` or ``(x, label)``) is read into an array.
            Or a whole dataset to label (the pool), with ``y`` marking the
            rows not labeled yet: see ``y``.
        y : array-like of shape (n_samples,)
            Their labels. With the ``unlabeled`` parameter set (e.g. to
            ``skal.UNLABELED``, -1, scikit-learn's semi-supervised marker),
            rows whose label is that marker are not labeled yet: the learner
            then trains on the others and keeps the bookkeeping of the pool
            ``X`` (which rows are labeled, skipped or not yet labeled; one byte
            per row, no copy of ``X``), so that :meth:`query` on ``X`` never
            returns a labeled or skipped row, and :meth:`teach` takes labels
            by row (``rows=``).

        Returns
        -------
        self : ActiveLearner
            The fitted learner; any previous labeled set is replaced. If
            ``fit`` raises, the learner is exactly as it was.
        """
        with self._serialised():
            self._validate_params()
            if not isinstance(_final_net(self.estimator), ActiveNet):
                raise TypeError(
                    "estimator must be a skal.ActiveNet or a Pipeline ending in one, got "
                    f"{type(self.estimator).__name__}."
                )
            check_array_like(X, "X")
            nan_marker = isinstance(self.unlabeled, float) and np.isnan(self.unlabeled)
            y = check_targets(y, allow_nan=nan_marker)
            X_pool, (X, y, pool, rows) = X, self._split_pool(X, y)
            X, n_features, names = self._check_fit_samples(X)
            check_same_length(X, y)
            with named_errors("y"):
                check_classification_targets(y)
            classes = self._resolve_classes(y)
            selector = self._current_selector(X.shape[1:], classes)

            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            reference = _reference_mask(y, selector.training_needs().reference, seed)
            net = self._configured_net(selector, classes)
            train = ~reference
            _fit_seeded(pool_fit(net.fit, net, X_pool, pool), X[train], np.searchsorted(classes, y[train]),
                        _derive_seed(seed, 0, _TRAIN), _final_net(net).device, "the learner was not fitted")
            labeled = _LabeledSet(X, y, np.zeros(len(y), dtype=np.int64), reference, rows)
            self._commit(_Fitted(net, selector, _template(self.estimator), classes, labeled, seed,
                                 n_features, names, pool=pool))
            return self

    def _split_pool(self, X, y):
        """``(labeled X, their y, pool state or None, their pool rows)``: ``y == UNLABELED`` marks a pool."""
        marked = _unlabeled(y, self.unlabeled)
        if marked.any() and self.classes is not None and _unlabeled(np.asarray(self.classes), self.unlabeled).any():
            raise ValueError(f"unlabeled={self.unlabeled!r} is also one of classes: choose a marker "
                             "that is not a label.")
        rows = np.flatnonzero(~marked)
        if not marked.any():
            return X, y, None, np.full(len(y), -1, dtype=np.int64)
        check_same_length(X, y)
        if len(rows) == 0:
            raise ValueError(
                f"y: every row is unlabeled ({self.unlabeled!r}), so there is nothing to train on; "
                "label a first batch (e.g. the rows skal.initial.initial_batch(X, n) chooses).")
        labeled_X = Subset(X, rows.tolist()) if is_dataset(X) else _safe_indexing(X, rows)
        shape = tuple(sample_shape(X, "X")) if is_dataset(X) else tuple(np.shape(X)[1:])
        status = np.where(marked, UNLABELED_ROW, LABELED_ROW).astype(np.int8)
        return labeled_X, y[rows], PoolState(status, fingerprint(X), shape), rows

    def _check_fit_samples(self, X):
        """``(X as float32, n_features_in_, feature_names_in_)`` without touching the learner."""
        if is_dataset(X):
            if len(X) == 0:
                raise ValueError("X is empty: it needs at least one sample.")
            X = materialize(X, "X")
        probe = _FeatureProbe()
        with named_errors("X"):
            X = validate_data(probe, _untracked(X), allow_nd=True, dtype=np.float32, order="C", copy=True)
        return X, probe.n_features_in_, getattr(probe, "feature_names_in_", None)

    def _resolve_classes(self, y):
        if self.classes is None:
            return unique_labels(y)
        classes = np.asarray(self.classes)
        if classes.ndim != 1 or len(classes) == 0:
            raise ValueError(f"classes must be a non-empty 1-d array-like, got shape {classes.shape}.")
        unique = np.unique(classes)
        if len(unique) != len(classes):
            raise ValueError("classes contains duplicate labels.")
        _check_labels(y, unique)
        return unique

    def _current_selector(self, sample_shape, classes):
        """A validated clone of the ``selector`` parameter."""
        selector = clone(self.selector)
        if hasattr(selector, "_parameter_constraints"):
            selector._validate_params()
        selector.check_labeled(sample_shape, classes)
        return selector

    def _configured_net(self, selector, classes):
        """A clone of ``estimator`` whose net runs ``selector``'s training parts, for ``classes``."""
        estimator = clone(self.estimator)
        net = _final_net(estimator)
        net.set_params(classes=np.arange(len(classes)), callbacks=_with_parts(net.callbacks, selector))
        return estimator

    # --- the active-learning loop --------------------------------------------------------

    def query(self, X_pool, n, return_scores=False):
        """Choose the ``n`` pool samples that the selector rates most informative.

        Parameters
        ----------
        X_pool : array-like of shape (n_pool, ...) or torch Dataset
            Unlabeled samples with the training data's feature shape (and
            column names, for a DataFrame). A Dataset (items ``x`` or
            ``(x, label)``; labels are ignored) is streamed, never copied.
            The learner's own pool (the ``X`` of a ``fit`` that marked rows
            ``UNLABELED``, recognised by its length, sample shape and a
            checksum of some rows): only its unlabeled rows are candidates,
            and the indices are its rows.
        n : int
            How many to choose, ``1 <= n <= n_pool`` (the pool's unlabeled
            rows, for the learner's pool).
        return_scores : bool, default=False
            Also return each choice's score.

        Returns
        -------
        indices : ndarray of shape (n,), dtype int64
            Distinct row indices into ``X_pool``, most informative first.
        scores : ndarray of shape (n,)
            Only with ``return_scores=True``: the chosen samples' scores in
            the same order, higher = more informative.
        """
        with self._serialised():
            state = self._state()
            if state.stale:
                raise RuntimeError(
                    "The model is stale: training on the labels of the last teach failed, so "
                    "estimator_ is the previous model. Fix the cause and call refit() before querying."
                )
            X_pool = self._check_samples(X_pool, "X_pool", stream=True)
            candidates = self._candidates(state, X_pool, "X_pool")
            n = _check_n(n, len(X_pool) if candidates is None else len(candidates),
                         "len(X_pool)" if candidates is None else "the pool's unlabeled rows")
            if not isinstance(return_scores, (bool, np.bool_)):
                raise TypeError(f"return_scores must be a bool, got {type(return_scores).__name__}.")
            selector = self._selector_for_query(state)
            cycle = int(state.labeled.cycle[-1])
            pool = X_pool if candidates is None else subset(X_pool, candidates)
            indices, scores = selector.select(
                _final_net(state.estimator), self._transform(state, pool, "X_pool"), n,
                random_state=_derive_seed(state.seed, cycle, _QUERY), labeled=self._labeled_data(state),
            )
            indices = np.asarray(indices, dtype=np.int64)
            if candidates is not None:
                indices = candidates[indices]
            return (indices, np.asarray(scores)) if return_scores else indices

    def _is_pool(self, state, X):
        """Whether ``X`` is the learner's pool; a ValueError if it nearly is."""
        pool = state.pool
        if pool is None or len(X) != pool.n_rows:
            return False
        shape = tuple(sample_shape(X)) if is_dataset(X) else tuple(np.shape(X)[1:])
        if shape != pool.sample_shape:
            return False
        if fingerprint(X) != pool.fingerprint:
            raise ValueError(
                f"X_pool has the {pool.n_rows} rows of the learner's pool but other contents (its "
                "checksum of sample rows differs): pass the dataset the learner was fitted on, in "
                "the same order, so that labeled and skipped rows are left out.")
        return True

    def _candidates(self, state, X, name):
        """The pool's unlabeled rows when ``X`` is the learner's pool, else None."""
        if not self._is_pool(state, X):
            return None
        return state.pool.rows(UNLABELED_ROW)

    def _selector_for_query(self, state):
        """The ``selector`` parameter's clone, if the net was trained for what it needs."""
        selector = self._current_selector(state.labeled.X.shape[1:], state.classes)
        if not _same_training(selector, state.selector):
            raise ValueError(
                f"selector was changed after the net was trained, to {selector!r}, which needs "
                f"other training than {state.selector!r} (its training parts or reference set); "
                "call refit() (or teach) to train for it, or fit() to start again."
            )
        return selector

    def teach(self, X, y, *, rows=None):
        """Add labeled samples and retrain.

        The labels are stored in one step before training starts, so they stay
        in the learner even if training raises (the previous model is then
        kept, marked stale). Invalid input raises before anything changes.

        Parameters
        ----------
        X : array-like of shape (n_new, ...) or torch Dataset
            Newly labeled samples, with the training data's feature shape
            (e.g. ``torch.utils.data.Subset(pool, idx)``). With ``rows``: the
            learner's pool, whose rows ``rows`` are labeled.
        y : array-like of shape (n_new,)
            Their labels, each one of ``classes_``.
        rows : array-like of int, default=None
            Label rows of the learner's pool by index (``X`` is then the
            pool; see :meth:`fit`). A row already labeled is refused (so a
            label is never lost or silently replaced); a skipped row may be
            labeled.

        Returns
        -------
        self : ActiveLearner
        """
        with self._serialised():
            state = self._state()
            pool = state.pool
            X_pool = X if rows is not None else None
            if rows is not None:
                rows = self._check_rows(state, X, rows, "rows")
                labeled_now = rows[pool.status[rows] == LABELED_ROW]
                if len(labeled_now):
                    raise ValueError(f"rows: {labeled_now[:10].tolist()} are labeled already; a label "
                                     "is never replaced (fit again to correct labels).")
                X = Subset(X, rows.tolist()) if is_dataset(X) else _safe_indexing(X, rows)
            X = self._check_samples(X, "X")
            y = check_targets(y)
            check_same_length(X, y, y_name="y" if rows is None else "y (for rows)")
            _check_labels(y, state.classes)
            labeled = state.labeled.added(X, y, int(state.labeled.cycle[-1]) + 1, rows)
            if rows is not None:
                pool = pool.with_status(rows, LABELED_ROW)
            self._commit(replace(state, labeled=labeled, pool=pool, stale=True))
            with lend_pool(self, X_pool):
                return self.refit()

    def skip(self, rows):
        """Mark rows of the learner's pool that cannot be labeled: never queried or trained on.

        Nothing is retrained. :meth:`unskip` makes them candidates again;
        :meth:`teach` with ``rows=`` may still label them.

        Parameters
        ----------
        rows : array-like of int
            Rows of the pool (see :meth:`fit`) that are not labeled.

        Returns
        -------
        self : ActiveLearner
        """
        with self._serialised():
            state = self._state()
            rows = self._check_rows(state, None, rows, "rows")
            labeled = rows[state.pool.status[rows] == LABELED_ROW]
            if len(labeled):
                raise ValueError(f"rows: {labeled[:10].tolist()} are labeled; only unlabeled rows can "
                                 "be skipped.")
            self._commit(replace(state, pool=state.pool.with_status(rows, SKIPPED_ROW)))
            return self

    def unskip(self, rows=None):
        """Make skipped rows of the pool candidates for :meth:`query` again.

        Parameters
        ----------
        rows : array-like of int or None, default=None
            Skipped rows to reset; None resets every skipped row.

        Returns
        -------
        self : ActiveLearner
        """
        with self._serialised():
            state = self._state()
            pool = self._require_pool(state)
            rows = pool.rows(SKIPPED_ROW) if rows is None else self._check_rows(state, None, rows, "rows")
            not_skipped = rows[pool.status[rows] != SKIPPED_ROW]
            if len(not_skipped):
                raise ValueError(f"rows: {not_skipped[:10].tolist()} are not skipped.")
            self._commit(replace(state, pool=pool.with_status(rows, UNLABELED_ROW)))
            return self

    @staticmethod
    def _require_pool(state):
        if state.pool is None:
            raise ValueError(
                "The learner has no pool: rows are rows of the dataset given to fit with the "
                f"`unlabeled` marker (e.g. skal.UNLABELED, {UNLABELED}) in y for the rows not labeled yet.")
        return state.pool

    def _check_rows(self, state, X, rows, name):
        """``rows`` as distinct int64 positions of the pool (and ``X`` checked to be it)."""
        pool = self._require_pool(state)
        if X is not None and not self._is_pool(state, X):
            raise ValueError(f"X: with {name}=, X must be the learner's pool (the dataset of fit, "
                             f"{pool.n_rows} rows of shape {pool.sample_shape}).")
        values = np.asarray(rows)
        if values.ndim != 1 or values.dtype.kind not in "iu" or len(values) == 0:
            raise ValueError(f"{name} must be a non-empty 1-d array of row indices, got "
                             f"{values.dtype} of shape {values.shape}.")
        if values.min() < 0 or values.max() >= pool.n_rows:
            raise ValueError(f"{name} must be in [0, {pool.n_rows}) (the pool's rows), got "
                             f"{int(values.min())} .. {int(values.max())}.")
        if len(np.unique(values)) != len(values):
            raise ValueError(f"{name} holds a row more than once.")
        return values.astype(np.int64)

    def refit(self):
        """Retrain on the whole labeled set, as the last :meth:`teach` would have.

        :meth:`teach` calls it. If training raises (a callback, a diverged
        loss, an interrupt), the learner is exactly as before: after a
        ``teach``, the labels stay and the previous model is kept in
        ``estimator_``, marked stale, and :meth:`query` refuses to run on it;
        call ``refit()`` (after fixing the cause, e.g. ``set_params``) to
        train again with the same seed the failed attempt used. Parameters of
        ``estimator`` and ``selector`` changed since the last training take
        effect here.

        Returns
        -------
        self : ActiveLearner
        """
        with self._serialised():
            state = self._state()
            selector = self._current_selector(state.labeled.X.shape[1:], state.classes)
            if selector.training_needs().reference != state.selector.training_needs().reference:
                raise ValueError(
                    "selector: its reference set differs from the one held out at fit "
                    f"({selector.training_needs().reference} vs "
                    f"{state.selector.training_needs().reference}); call fit() to start again."
                )
            net = self._retrain(state, selector)
            self._commit(replace(state, estimator=net, selector=selector,
                                 template=_template(self.estimator), stale=False))
            return self

    def _retrain(self, state, selector):
        """A net trained on the labeled set; the learner is untouched until it succeeds."""
        labeled = state.labeled
        X, y = labeled.X[~labeled.reference], labeled.y[~labeled.reference]
        cycle = int(labeled.cycle[-1])
        if self.warm_start:
            net = copy.deepcopy(state.estimator)
            # Nothing reads the per-batch records of earlier cycles, and kept they would
            # grow with every cycle of a long campaign (and be deep-copied each teach).
            for epoch in _final_net(net).history:
                epoch["batches"] = []
            self._apply_changes(state, net, selector)
            if isinstance(net, Pipeline):
                # the fitted transformers stay; the net continues on their output
                def fit(X, y):
                    _final_net(net).partial_fit(_as_float32(net[:-1].transform(X)), y)
            else:
                fit = net.partial_fit
        else:
            net = self._configured_net(selector, state.classes)
            fit = net.fit
        fit = pool_fit(fit, net, lent_pool(self), state.pool)
        _fit_seeded(fit, X, np.searchsorted(state.classes, y), _derive_seed(state.seed, cycle, _TRAIN),
                    _final_net(net).device,
                    "the previous model is kept, marked stale; call refit() to train again")
        return net

    def _apply_changes(self, state, net, selector):
        """Set on the warm net what changed in ``estimator`` and ``selector`` since it was trained."""
        if isinstance(self.estimator, Pipeline) != isinstance(state.template, Pipeline) or (
                isinstance(self.estimator, Pipeline)
                and not _same(self.estimator[:-1].get_params(), state.template[:-1].get_params())):
            raise ValueError("estimator: the Pipeline's transformers changed after fit; with "
                             "warm_start=True the fitted ones are kept, so call fit() to start again.")
        new, old = _final_net(self.estimator).get_params(), _final_net(state.template).get_params()
        changed = {key: value for key, value in new.items()
                   if key != "callbacks" and not key.startswith("callbacks__")
                   and not (key in old and _same(value, old[key]))}
        fixed = [key for key in changed if key in ("module", "classes") or key.startswith(_REBUILDS)]
        if fixed:
            raise ValueError(
                f"estimator__{fixed[0]} changed after fit: with warm_start=True the trained "
                "weights cannot carry over to a different module or head; call fit() to start again."
            )
        old_parts = [(name, type(part)) for name, part in state.selector.training_needs().parts]
        new_parts = [(name, type(part)) for name, part in selector.training_needs().parts]
        if old_parts != new_parts:
            raise ValueError(
                f"selector: {selector!r} needs the training parts {[n for n, _ in new_parts]}, the "
                f"net was trained with {[n for n, _ in old_parts]}; with warm_start=True the trained "
                "net cannot take other parts, so call fit() to start again."
            )
        target = _final_net(net)
        if changed:
            target.set_params(**changed)
        user = _final_net(self.estimator).callbacks
        if not _same(user, _final_net(state.template).callbacks) or not _same(
                selector.training_needs().parts, state.selector.training_needs().parts):
            target.set_params(callbacks=_with_parts(user, selector))
            # skorch's set_params stores callbacks but rebuilds callbacks_ only in
            # initialize(), which partial_fit skips on a fitted net
            target._initialize_callbacks()

    # --- labeled data as the selectors see it ---------------------------------------------

    def _labeled_data(self, state):
        labeled = state.labeled
        y = np.searchsorted(state.classes, labeled.y)
        train, ref = ~labeled.reference, labeled.reference
        X = self._transform(state, labeled.X, "X_labeled_")
        return LabeledData(X[train], y[train], X[ref], y[ref], state.classes)

    @staticmethod
    def _transform(state, X, name):
        """X as the net sees it: through a Pipeline's transformers, once, in chunks."""
        if not isinstance(state.estimator, Pipeline):
            return X
        if is_dataset(X):
            raise TypeError(f"{name}: a torch Dataset cannot go through a Pipeline's transformers; "
                            "pass an array, or use an ActiveNet as the estimator.")
        transformers = state.estimator[:-1]
        parts = [transformers.transform(X[start:start + _TRANSFORM_CHUNK])
                 for start in range(0, len(X), _TRANSFORM_CHUNK)]
        return _as_float32(np.concatenate(parts))

    # --- persistence --------------------------------------------------------------------------

    def save(self, path):
        """Save the fitted learner to one file, without pickle.

        The parameters go to JSON (classes and functions by import path), the
        labeled set to ``.npy`` arrays, every tensor of the net (weights,
        heads, optimizer state, snapshot, training dynamics) to safetensors,
        and a Pipeline's fitted transformers to :mod:`skops.io`. The file is
        written to a temporary name in the target's directory and moved into
        place when complete, so an interrupted save leaves the previous one
        intact. A symlink is written through to its target; an existing file
        keeps its permissions, a new one gets the usual ones (umask).

        Parameters
        ----------
        path : str or path-like
            Target file (conventionally ``*.skal``): a regular file or a new
            name, never a directory, device, fifo or socket.

        Raises
        ------
        TypeError
            If something cannot be stored without pickle (a lambda, an object
            without ``get_params``, labels that are not str, int, float or
            bool); the message names it, and nothing is written.
            :meth:`check_savable` finds these before training.

        See Also
        --------
        load : The inverse.
        check_savable : The same checks, without writing.
        """
        from ._persistence import save

        with self._serialised():
            check_is_fitted(self)
            save(self, _check_path(path))

    def check_savable(self):
        """Check that :meth:`save` can store this learner, without training or writing.

        Encodes the parameters (and, once fitted, the whole fitted state) as
        :meth:`save` would. Works on an unfitted learner, so a set-up that
        cannot be saved fails before hours of training, not after.

        Returns
        -------
        untrusted : list of str
            The classes and functions the save would name beyond the default
            trust list of :meth:`load` (e.g. a module class of your own): pass
            them as ``trusted=`` to :meth:`load`, or load with ``like=``.

        Raises
        ------
        TypeError
            Naming the first parameter (or fitted attribute) that cannot be
            saved.

        See Also
        --------
        save : Writes the file.
        skal.get_untrusted_types : The same list, read from a file.

        Examples
        --------
        >>> from skal import ActiveLearner, ActiveNet
        >>> from skal.models import MLP
        >>> ActiveLearner(ActiveNet(MLP)).check_savable()
        []
        >>> ActiveLearner(ActiveNet(MLP, train_transform=lambda x: x)).check_savable()
        Traceback (most recent call last):
        ...
        TypeError: cannot save estimator.train_transform: <function <lambda> at ...> is not importable (a lambda, or defined inside a function); define it at module level, or use joblib.dump.
        """
        from ._persistence import check_savable

        with self._serialised():
            return check_savable(self)

    @classmethod
    def load(cls, path, *, trusted=None, like=None):
        """Load a learner written by :meth:`save`; runs no pickle and nothing untrusted.

        Every class and function that the file names is looked up in a trust
        list (torch modules, optimizers and LR schedulers; skorch callbacks and
        ``ValidSplit``; scikit-learn estimators; skal's classes; a few named
        functions such as :func:`skal.models.resnet18_cifar`) and checked to
        be of the kind its parameter needs before anything is imported or
        built. Tensors are read by safetensors, arrays without pickle, a
        Pipeline's transformers by :mod:`skops.io`. Sizes are checked before
        anything is inflated. The learner is built whole before it is returned.

        Parameters
        ----------
        path : str or path-like
        trusted : list of str, class or function, default=None
            Names (as :func:`skal.get_untrusted_types` lists them, e.g.
            ``"mypkg.nets.MyNet"``) or objects to trust beyond the default list.
        like : ActiveLearner, default=None
            Restore the saved state onto a clone of this learner instead of
            rebuilding the parameters from the file, which then names nothing
            that is imported (skorch's ``initialize()`` + ``load_params``
            pattern). For a module class defined in a script (``__main__``):
            build the same learner in code and pass it here. Its parameters are
            used as they are; the saved weights, labeled set and fitted state
            must fit it.

        Returns
        -------
        ActiveLearner
            Fitted, with the same labeled set, cycles, seed and weights: a
            campaign resumed from it continues exactly as if uninterrupted.

        Raises
        ------
        ValueError
            If the file is not a valid save (the message names the member at
            fault), names something that is not trusted (it names it), or does
            not fit ``like`` (it names what differs: a tensor's key or shape,
            the classes, the optimizer).

        See Also
        --------
        skal.get_untrusted_types : What a file names beyond the default list.

        Examples
        --------
        >>> import numpy as np, tempfile, os
        >>> from skal import ActiveLearner, ActiveNet
        >>> from skal.models import MLP
        >>> from skal.selectors import Entropy
        >>> X = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
        >>> y = (X[:, 0] > 0).astype(int)
        >>> learner = ActiveLearner(ActiveNet(MLP, max_epochs=2, verbose=0), Entropy(),
        ...                         random_state=0).fit(X, y)
        >>> path = os.path.join(tempfile.mkdtemp(), "campaign.skal")
        >>> learner.save(path)
        >>> loaded = ActiveLearner.load(path)
        >>> bool(np.array_equal(loaded.predict_proba(X), learner.predict_proba(X)))
        True
        >>> same = ActiveLearner.load(path, like=ActiveLearner(ActiveNet(MLP, max_epochs=2), Entropy()))
        >>> bool(np.array_equal(same.predict_proba(X), learner.predict_proba(X)))
        True
        """
        from ._persistence import load

        return load(cls, _check_path(path), trusted=trusted, like=like)

    # --- prediction -----------------------------------------------------------------------------

    def predict_proba(self, X):
        """Class probabilities of the trained net.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) or torch Dataset

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.

        Raises
        ------
        ValueError
            If the net's outputs are not finite (training diverged).
        """
        with self._serialised():
            state = self._state()
            X = self._check_samples(X, "X", stream=True)
            proba = state.estimator.predict_proba(X)
            if not np.isfinite(proba).all():
                raise ValueError("The net's outputs are NaN or infinite for some samples of X, so "
                                 "there is no prediction; did training diverge?")
            return proba.astype(np.float64)

    def predict(self, X):
        """Most probable class of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) or torch Dataset

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Accuracy of :meth:`predict` on ``X`` against ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) or torch Dataset
        y : array-like of shape (n_samples,)
            True labels.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        float
            The (weighted) fraction of correct predictions.
        """
        check_is_fitted(self)
        y = check_targets(y)
        y_pred = self.predict(X)
        check_same_length(y_pred, y)
        if sample_weight is not None:
            with named_errors("sample_weight"):
                sample_weight = _check_sample_weight(sample_weight, y_pred)
        return float(accuracy_score(y, y_pred, sample_weight=sample_weight))

    # --- validation helpers -----------------------------------------------------------------------

    def _check_samples(self, X, name, stream=False):
        """Validated samples: a float32 array, or for ``stream`` a Dataset left unread.

        Arrays and DataFrames go through scikit-learn's ``validate_data(reset=False)``,
        as in ``predict``: the feature count and column names must be those of ``fit``.
        """
        check_array_like(X, name)
        expected = self._state().labeled.X.shape[1:]
        if is_dataset(X):
            if len(X) == 0:
                raise ValueError(f"{name} is empty: it needs at least one sample.")
            shape = sample_shape(X, name)
            _check_feature_shape((len(X), *shape), expected, name)
            if stream:
                return FeaturesDataset(X, name=name, shape=shape)
            X = materialize(X, name)
        with named_errors(name):
            X = validate_data(self, _untracked(X), reset=False, allow_nd=True, dtype=np.float32,
                              ensure_min_samples=0)
        if X.shape[0] == 0:
            raise ValueError(f"{name} is empty: it needs at least one sample.")
        _check_feature_shape(X.shape, expected, name)
        return X


# Parameters whose change rebuilds the module or a head (skorch re-initialises them).
_REBUILDS = ("module__", "loss_predictor__", "dynamics_predictor__")


def _with_parts(callbacks, selector):
    """``callbacks`` plus the learner's divergence check and the selector's training parts.

    Added by name; an entry of the same name that the user gave is kept instead.
    """
    callbacks = list(callbacks or [])
    taken = {_callback_name(cb) for cb in callbacks}
    added = [("divergence_check", DivergenceCheck()), *selector.training_needs().parts]
    return callbacks + [(name, cb) for name, cb in added if name not in taken]


def _callback_name(callback):
    """The name skorch gives an entry of ``callbacks``: a tuple's first element, else the class name."""
    return callback[0] if isinstance(callback, tuple) else type(callback).__name__


def _same_training(a, b):
    """Whether selectors ``a`` and ``b`` need the same training (parts and reference)."""
    need_a, need_b = a.training_needs(), b.training_needs()
    return need_a.reference == need_b.reference and _same(need_a.parts, need_b.parts)


def _same(a, b):
    """Parameter equality: estimators by type and parameters, arrays by value, others by ==."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and bool(np.all(a == b))
    if hasattr(a, "get_params") and not isinstance(a, type):
        return _same(a.get_params(deep=False), b.get_params(deep=False))
    try:
        return bool(a == b)
    except Exception:  # a value whose == is not a bool (e.g. a tensor)
        return a is b


def _template(value):
    """``clone(value)``, except that parameters which are not estimators stay the same objects.

    ``_apply_changes`` finds what ``set_params`` replaced since training by comparing the
    ``estimator`` parameter with this template: a module instance, a transform or a function
    has no equality but identity, which ``clone``'s deep copies would lose (every warm-start
    teach would then see a module instance as changed, and refuse).
    """
    if type(value) is dict:
        return {key: _template(item) for key, item in value.items()}
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(_template(item) for item in value)
    if not hasattr(value, "get_params") or isinstance(value, type):
        return value
    return type(value)(**{key: _template(item) for key, item in value.get_params(deep=False).items()})


def _untracked(X):
    """A tensor's values as numpy (scikit-learn's checks cannot read a tensor needing grad)."""
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    return X


def _check_labels(y, classes, name="y"):
    unknown = set(y.tolist()) - set(classes.tolist())
    if unknown:
        raise ValueError(
            f"{name} contains labels not in classes_: {sorted(map(repr, unknown))}; "
            "declare every label with the `classes` parameter."
        )


def _check_feature_shape(shape, expected, name):
    shape = tuple(shape)
    if shape[1:] != tuple(expected):
        raise ValueError(
            f"{name} has samples of shape {shape[1:]}, but the learner was fitted on "
            f"samples of shape {tuple(expected)}."
        )


def _final_net(estimator):
    """The net: ``estimator`` itself, or a Pipeline's last step."""
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def _as_float32(X):
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    return X.astype(np.float32, copy=False)


def _reference_mask(y, fraction, seed):
    """Boolean mask of a stratified, seeded held-out split of ``y`` (all False if no fraction)."""
    mask = np.zeros(len(y), dtype=bool)
    if not fraction:
        return mask
    n_reference = int(round(fraction * len(y)))
    if not 1 <= n_reference < len(y):
        raise ValueError(
            f"The selector holds out a reference fraction {fraction} of the {len(y)} labeled "
            "samples, which leaves no reference or no training sample; label more samples."
        )
    try:
        _, held_out = train_test_split(np.arange(len(y)), test_size=n_reference, stratify=y,
                                       random_state=seed)
    except ValueError as error:
        raise ValueError(
            f"Cannot hold out a stratified reference set of {n_reference} of the {len(y)} "
            f"labeled samples: {error} Label more samples per class, or pass the selector "
            "its own reference set."
        ) from error
    mask[held_out] = True
    return mask


def _check_path(path):
    """``path`` as a str; a TypeError names it when it is not a path."""
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}.") from None


def _check_n(n, n_pool, what="len(X_pool)"):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be an integer, got {type(n).__name__}.")
    if not 1 <= n <= n_pool:
        raise ValueError(f"n must be in [1, {what}] = [1, {n_pool}], got {n}.")
    return int(n)


def _unlabeled(y, marker):
    """Rows of ``y`` whose label is ``marker`` (NaN matches NaN); none for ``marker=None``."""
    y = np.asarray(y)
    if marker is None:
        return np.zeros(len(y), dtype=bool)
    if isinstance(marker, float) and np.isnan(marker):
        if y.dtype.kind == "f":
            return np.isnan(y)
        return np.array([isinstance(v, float) and v != v for v in y.tolist()], dtype=bool)
    if y.dtype == object:
        return np.array([type(v) is not bool and v == marker for v in y.tolist()], dtype=bool)
    try:
        return np.asarray(y == marker, dtype=bool).reshape(len(y))
    except (TypeError, ValueError):
        return np.zeros(len(y), dtype=bool)


def _derive_seed(seed, cycle, purpose):
    """An independent 31-bit seed for one (cycle, purpose) of a campaign."""
    return int(np.random.SeedSequence([seed, cycle, purpose]).generate_state(1)[0] >> 1)


# torch draws weight initialisation, shuffling and dropout from one random state
# per process; two threads training at once (joblib's threading or Dask's thread
# workers) would interleave their draws, so seeded training is serialised.
_TORCH_RNG_LOCK = threading.RLock()


@contextmanager
def _torch_seeded(seed, device):
    """Seed torch for one training run and restore its global state afterwards."""
    with _TORCH_RNG_LOCK:
        with _forked_and_seeded(seed, device):
            yield


@contextmanager
def _forked_and_seeded(seed, device):
    device = torch.device(device or "cpu")
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(cuda[0]):
                torch.cuda.manual_seed(seed)
        yield


def _fit_seeded(fit, X, y, seed, device, consequence):
    with _torch_seeded(seed, device), _interrupt_watch() as watch:
        fit(X, y)
    if watch.interrupted:
        # skorch ends training quietly on KeyboardInterrupt and keeps the partly trained
        # net; after a real Ctrl-C a learner must not take that for a finished one
        raise KeyboardInterrupt(f"Training was interrupted (Ctrl-C); {consequence}.")


class _InterruptWatch:
    interrupted = False


@contextmanager
def _interrupt_watch():
    """Tell a real Ctrl-C from the KeyboardInterrupt by which a callback stops training.

    skorch's callbacks (EarlyStopping) stop training by raising KeyboardInterrupt,
    which skorch catches, as it catches Ctrl-C. Signals reach only the main thread,
    so there a SIGINT handler notes a real one; elsewhere every KeyboardInterrupt
    is a callback's.
    """
    watch = _InterruptWatch()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield watch  # SIG_IGN / SIG_DFL: Ctrl-C raises no KeyboardInterrupt
        return

    def handler(signum, frame):
        # uninstalled first, so that a Ctrl-C landing in the finally below cannot leave it installed
        signal.signal(signal.SIGINT, previous)
        try:
            previous(signum, frame)
        except KeyboardInterrupt:
            watch.interrupted = True
            raise

    try:  # installed inside the try: an interrupt on any line still restores the previous one
        signal.signal(signal.SIGINT, handler)
        yield watch
    finally:
        signal.signal(signal.SIGINT, previous)
