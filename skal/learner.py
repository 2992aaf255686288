"""ActiveLearner: the scikit-learn meta-estimator of skal.

The learner's parts live in modules named for them: its fitted state and the
interface persistence uses (:mod:`skal._state`), the checks of its samples and
the recognition of its pool (:mod:`skal._samples`), how it trains (seeding,
interrupts, warm starts: :mod:`skal._training`) and its ``save`` / ``load``
methods (:mod:`skal._saving`).
"""

import numbers
import threading
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin
from sklearn.metrics import accuracy_score
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted
from torch.utils.data import Subset

from . import _saving
from ._bookkeeping import LABELED_ROW, SKIPPED_ROW, UNLABELED_ROW, subset
from ._data import check_array_like, check_device, check_same_length, check_targets, is_dataset, named_errors
from ._samples import (check_fit_samples, check_labels, check_marker, check_n, check_rows, check_samples,
                       finite_candidates, labeled_data, own_pool, require_pool, resolve_classes, split_pool,
                       transform)
from ._state import Fitted, LabeledSet, fitted_attribute, fitted_state, install, pool_rows_attribute, template
from ._training import (QUERY, TRAIN, configured_net, current_selector, derive_seed, final_net, fit_seeded,
                        reference_mask, retrain, selector_for_query)
from ._warm import WARM_START_OPTIONS
from .net import ActiveNet
from .selectors import Margin
from .semi import pool_fit

__all__ = ["ActiveLearner"]

# the names by which earlier code (and tests) reached the seeding helpers
_TRAIN, _QUERY, _derive_seed = TRAIN, QUERY, derive_seed


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
    warm_start : bool or "continue", default=False
        ``False``: every :meth:`teach` retrains from a fresh initialisation,
        as DISAL and ISAL do. ``True``: start from the current weights (the
        module's and the heads'), as TiDAL's and LL4AL's code do, with a new
        optimizer, learning-rate schedule and epoch count. ``"continue"``:
        skorch's ``partial_fit``, which carries over the optimizer's state
        and resumes an ``LRScheduler`` at the epochs already trained.

        .. versionchanged:: 0.3
           ``True`` restarts the optimizer and schedule (was ``"continue"``).
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
    X_labeled_ : ndarray of shape (n_labeled, ...) or DataFrame
        Every labeled sample, from ``fit`` and each ``teach``, as float32 (with
        a Pipeline, a DataFrame or array of strings as given, rows appended).
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
        "warm_start": ["boolean", StrOptions(WARM_START_OPTIONS)],
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
    estimator_ = fitted_attribute("estimator", "estimator_",
                                   "The net (or pipeline) trained on the current labeled set.")
    selector_ = fitted_attribute("selector", "selector_",
                                  "The fitted clone of ``selector`` the net was trained for.")
    classes_ = fitted_attribute("classes", "classes_", "The sorted class labels.")
    X_labeled_ = fitted_attribute("labeled.X", "X_labeled_",
                                   "Every labeled sample, from ``fit`` and each ``teach``, as float32.")
    y_labeled_ = fitted_attribute("labeled.y", "y_labeled_", "Their labels, as given.")
    labeled_cycle_ = fitted_attribute(
        "labeled.cycle", "labeled_cycle_",
        "The cycle in which each sample arrived: 0 for ``fit``, k for the k-th ``teach``.")
    n_features_in_ = fitted_attribute("n_features_in", "n_features_in_",
                                       "Number of features (the size of axis 1) seen in ``fit``.")
    feature_names_in_ = fitted_attribute("feature_names_in", "feature_names_in_",
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
        return fitted_state(self)

    def _commit(self, fitted):
        # One attribute assignment: an interrupt lands before or after it, never inside.
        install(self, fitted)

    labeled_rows_ = pool_rows_attribute(LABELED_ROW, "Rows of the pool that are labeled (None without a pool).")
    skipped_rows_ = pool_rows_attribute(SKIPPED_ROW, "Rows of the pool marked by :meth:`skip` (None without a pool).")
    unlabeled_rows_ = pool_rows_attribute(
        UNLABELED_ROW, "Rows of the pool that :meth:`query` may still return (None without a pool).")

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
            The initial labeled samples; converted to float32 (with a
            Pipeline, a DataFrame is kept as given for its transformers). A torch
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
            if not isinstance(final_net(self.estimator), ActiveNet):
                raise TypeError(
                    "estimator must be a skal.ActiveNet or a Pipeline ending in one, got "
                    f"{type(self.estimator).__name__}."
                )
            check_marker(self.unlabeled)
            check_device(final_net(self.estimator).device)
            check_array_like(X, "X")
            nan_marker = isinstance(self.unlabeled, float) and np.isnan(self.unlabeled)
            y = check_targets(y, allow_nan=nan_marker)
            X_given, (X, y, pool, rows) = X, split_pool(X, y, self.unlabeled, self.classes)
            X, n_features, names = check_fit_samples(X, None if pool is None else rows,
                                                     as_given=isinstance(self.estimator, Pipeline))
            check_same_length(X, y)
            with named_errors("y"):
                check_classification_targets(y)
            classes = resolve_classes(y, self.classes)
            selector = current_selector(self.selector, X.shape[1:], classes)

            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            reference = reference_mask(y, selector.training_needs().reference, seed)
            net = configured_net(self.estimator, selector, classes)
            train = ~reference
            fit_seeded(pool_fit(net.fit, net, X_given, pool), _safe_indexing(X, np.flatnonzero(train)),
                       np.searchsorted(classes, y[train]),
                       derive_seed(seed, 0, TRAIN), final_net(net).device, "the learner was not fitted")
            labeled = LabeledSet(X, y, np.zeros(len(y), dtype=np.int64), reference, rows)
            self._commit(Fitted(net, selector, template(self.estimator), classes, labeled, seed,
                                n_features, names, pool=pool))
            return self

    # --- the active-learning loop --------------------------------------------------------

    def query(self, X_pool, n, return_scores=False, *, non_finite="raise", other_dataset=False):
        """Choose the ``n`` pool samples that the selector rates most informative.

        Parameters
        ----------
        X_pool : array-like of shape (n_pool, ...) or torch Dataset
            Unlabeled samples with the training data's feature shape (and
            column names, for a DataFrame). A Dataset (items ``x`` or
            ``(x, label)``; labels are ignored) is streamed, never copied.
            For a learner that keeps a pool (``fit`` with rows marked
            ``unlabeled``): that pool, recognised by its length, sample shape
            and a checksum of every row, or that pool with rows appended at
            its end (new unlabeled rows, see :meth:`extend_pool`). Only its
            unlabeled rows are candidates, and the indices are its rows.
            Anything else is refused, unless ``other_dataset=True``.
        n : int
            How many to choose, ``1 <= n <= n_pool`` (the pool's unlabeled
            rows, for the learner's pool).
        return_scores : bool, default=False
            Also return each choice's score.
        non_finite : {"raise", "leave_out"}, default="raise"
            What to do with candidate rows holding NaN or infinity: refuse,
            naming them (mark them with :meth:`skip` to go on), or leave them
            out of the candidates (for a Dataset pool, this reads every
            candidate item once more).
        other_dataset : bool, default=False
            ``X_pool`` is another dataset than the learner's pool, on purpose:
            every row is a candidate and the pool's bookkeeping is left alone.

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
            if non_finite not in ("raise", "leave_out"):
                raise ValueError(f"non_finite must be 'raise' or 'leave_out', got {non_finite!r}.")
            if not isinstance(other_dataset, (bool, np.bool_)):
                raise TypeError(f"other_dataset must be a bool, got {type(other_dataset).__name__}.")
            X_pool = check_samples(self, state, X_pool, "X_pool", stream=True, finite=False)
            pool = own_pool(state, X_pool, "X_pool", other_dataset)
            rows = None if pool is None else pool.rows(UNLABELED_ROW)
            if isinstance(state.estimator, Pipeline):  # checked as the net sees them, after the transformers
                candidates = transform(state, X_pool if rows is None else subset(X_pool, rows), "X_pool")
                kept = finite_candidates(candidates, None, non_finite, pool is not None)
                if kept is not None:
                    candidates, rows = candidates[kept], kept if rows is None else rows[kept]
            else:
                rows = finite_candidates(X_pool, rows, non_finite, pool is not None)
                candidates = X_pool if rows is None else subset(X_pool, rows)
            n = check_n(n, len(X_pool) if rows is None else len(rows),
                        "len(X_pool)" if pool is None else "the pool's unlabeled rows")
            if not isinstance(return_scores, (bool, np.bool_)):
                raise TypeError(f"return_scores must be a bool, got {type(return_scores).__name__}.")
            selector = selector_for_query(self.selector, state)
            cycle = int(state.labeled.cycle[-1])
            indices, scores = selector.select(
                final_net(state.estimator), candidates, n,
                random_state=derive_seed(state.seed, cycle, QUERY), labeled=labeled_data(state),
            )
            indices = np.asarray(indices, dtype=np.int64)
            if rows is not None:
                indices = rows[indices]
            if pool is not None and pool is not state.pool:
                self._commit(replace(state, pool=pool))  # the pool grew: its new rows are kept
            return (indices, np.asarray(scores)) if return_scores else indices

    def extend_pool(self, X):
        """Take rows appended at the end of the learner's pool as new unlabeled rows.

        :meth:`query` and :meth:`teach` (``rows=``) recognise a grown pool by
        themselves; call this to :meth:`skip` a new row before either.

        Parameters
        ----------
        X : array-like or torch Dataset
            The learner's pool with zero or more rows appended at its end
            (its first rows unchanged, in the same order).

        Returns
        -------
        self : ActiveLearner

        Raises
        ------
        ValueError
            If the learner keeps no pool, or X is not its pool with rows
            appended (the message names the rows that differ).
        """
        with self._serialised():
            state = self._state()
            require_pool(state)
            X = check_samples(self, state, X, "X", stream=True, finite=False)
            pool = own_pool(state, X, "X")
            if pool is not state.pool:
                self._commit(replace(state, pool=pool))
            return self

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
            learner's pool (or the pool with rows appended, see
            :meth:`extend_pool`), whose rows ``rows`` are labeled.
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
            pool, X_pool = state.pool, X if rows is not None else None  # semi-supervised parts read it
            if rows is not None:
                require_pool(state)
                check_array_like(X, "X")
                pool = own_pool(state, check_samples(self, state, X, "X", stream=True, finite=False), "X")
                rows = check_rows(pool, rows, "rows")
                labeled_now = rows[pool.status[rows] == LABELED_ROW]
                if len(labeled_now):
                    raise ValueError(f"rows: {labeled_now[:10].tolist()} are labeled already; a label "
                                     "is never replaced (fit again to correct labels).")
                X = Subset(X, rows.tolist()) if is_dataset(X) else _safe_indexing(X, rows)
            X = check_samples(self, state, X, "X", rows=rows)
            y = check_targets(y)
            check_same_length(X, y, y_name="y" if rows is None else "y (for rows)")
            check_labels(y, state.classes)
            labeled = state.labeled.added(X, y, int(state.labeled.cycle[-1]) + 1, rows)
            if rows is not None:
                pool = pool.with_status(rows, LABELED_ROW)
            self._commit(replace(state, labeled=labeled, pool=pool, stale=True))
            return self._refit(X_pool)

    def skip(self, rows):
        """Mark rows of the learner's pool that cannot be labeled: never queried or trained on.

        Nothing is retrained. :meth:`unskip` makes them candidates again;
        :meth:`teach` with ``rows=`` may still label them. A row holding NaN
        or infinity, which :meth:`query` refuses, is skipped like any other.

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
            rows = check_rows(require_pool(state), rows, "rows")
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
            pool = require_pool(state)
            rows = pool.rows(SKIPPED_ROW) if rows is None else check_rows(pool, rows, "rows")
            not_skipped = rows[pool.status[rows] != SKIPPED_ROW]
            if len(not_skipped):
                raise ValueError(f"rows: {not_skipped[:10].tolist()} are not skipped.")
            self._commit(replace(state, pool=pool.with_status(rows, UNLABELED_ROW)))
            return self

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
        return self._refit(None)

    def _refit(self, X_pool):
        """:meth:`refit`, with the pool ``X_pool`` (or None) lent to parts that train on it."""
        with self._serialised():
            state = self._state()
            selector = current_selector(self.selector, state.labeled.X.shape[1:], state.classes)
            if selector.training_needs().reference != state.selector.training_needs().reference:
                raise ValueError(
                    "selector: its reference set differs from the one held out at fit "
                    f"({selector.training_needs().reference} vs "
                    f"{state.selector.training_needs().reference}); call fit() to start again."
                )
            net = retrain(state, self.estimator, selector, self.warm_start, X_pool)
            self._commit(replace(state, estimator=net, selector=selector,
                                 template=template(self.estimator), stale=False))
            return self

    # --- persistence: the methods and their documentation are in skal/_saving.py ------------

    save = _saving.save
    check_savable = _saving.check_savable
    load = classmethod(_saving.load)

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
            X = check_samples(self, state, X, "X", stream=True)
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
