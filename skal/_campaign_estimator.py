"""CampaignEstimator: a query strategy as a scikit-learn estimator that model selection can score."""

import copy
import dataclasses
import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin
from sklearn.metrics import accuracy_score
from sklearn.utils import check_array, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ._campaign import (check_budget, check_labels, configured, draw_repeats, normalised_auc,
                        run_campaign)
from ._data import check_array_like, check_same_length, check_targets, is_dataset, named_errors
from .learner import ActiveLearner

__all__ = ["CampaignEstimator"]


class CampaignEstimator(ClassifierMixin, MetaEstimatorMixin, BaseEstimator):
    """One simulated active-learning campaign as a classifier, so model selection scores strategies.

    ``fit(X, y)`` runs a whole campaign on the training data with ``y`` as
    the annotator: a random initial set of ``initial_size`` samples (seeded
    by ``random_state``), then ``n_cycles`` rounds in which the learner
    queries ``query_size`` samples of the rest, is taught their labels and
    retrains. ``score(X, y)`` evaluates the campaign on held-out data: the
    final model's accuracy, or the area under the accuracy-vs-labels curve
    of every cycle's model. So :class:`~sklearn.model_selection.GridSearchCV`,
    :func:`~sklearn.model_selection.cross_validate` and
    :class:`~sklearn.model_selection.RandomizedSearchCV` compare what a
    strategy does with its labels, over the folds, with nested names
    (``learner__selector``, ``learner__selector__batch``,
    ``learner__estimator__lr``). A plain :class:`~skal.ActiveLearner`'s
    ``fit`` + ``score`` measures only the initial model and cannot do this.

    Parameters
    ----------
    learner : ActiveLearner
        The strategy: selector, net and ``warm_start``. Cloned at ``fit``;
        its ``random_state`` is replaced by one drawn from ``random_state``,
        and ``classes`` (when None) by the labels of ``y``.
    initial_size : int
        Size of the random initial labeled set.
    query_size : int
        Samples queried per cycle.
    n_cycles : int
        Query/teach cycles after the initial fit.
    scoring : {"final", "auc"}, default="final"
        What :meth:`score` returns: the final model's accuracy, or the
        normalised area under the accuracy-vs-labeled-count curve (the
        trapezoid divided by the labeled range: the curve's average height,
        as :attr:`~skal.model_selection.ActiveLearningCurve.auc`). ``"auc"`` keeps every cycle's
        model (see Notes).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial set and the learner. Two fits with the same int
        on the same data run the same campaign (on CPU, bit for bit), and
        the grid's candidates share their initial sets and seeds, so their
        scores differ by what the strategies choose.

    Attributes
    ----------
    learner_ : ActiveLearner
        The learner at the end of the campaign; ``predict`` and
        ``predict_proba`` use it.
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    n_labeled_ : ndarray of shape (n_cycles + 1,)
        Labeled-set size after each training.
    labeled_indices_ : ndarray of shape (`n_labeled_[-1]`,)
        Rows of the training ``X`` in the order they were labeled (the
        initial set first); ``learner_.labeled_cycle_`` gives each one's cycle.
    fit_times_, query_times_ : ndarray of shape (n_cycles + 1,)
        Seconds spent training each model and choosing the batch that led to
        it (``query_times_[0]`` is 0).
    cycle_estimators_ : list of estimator
        With ``scoring="auc"`` only: each cycle's fitted net (or pipeline),
        the learner's ``estimator_`` after that training.
    n_features_in_ : int
        Size of axis 1 of the training ``X`` (array input).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names, when ``X`` had string column names.

    See Also
    --------
    active_learning_curve : Several strategies over repeats on one split, with
        paired differences to random sampling: for reporting curves.
    skal.ActiveLearner : The learner a campaign drives.

    Notes
    -----
    Memory: with ``scoring="final"`` a fitted estimator holds one learner
    (its net and labeled set); with ``scoring="auc"`` it also keeps the
    ``n_cycles + 1`` fitted nets, each with its weights, optimizer state and
    the training state its selector uses, on the net's device, so that
    :meth:`score` can evaluate every cycle on data it sees only then. Keeping
    references costs no copying: each :meth:`~skal.ActiveLearner.teach`
    trains a new net and leaves the previous one untouched.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skal import ActiveLearner, ActiveNet
    >>> from skal.model_selection import CampaignEstimator
    >>> from skal.models import MLP
    >>> from skal.selectors import Margin, Random
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)).astype(np.float32)
    >>> y = (X[:, 0] + X[:, 1] > 0).astype(int)
    >>> net = ActiveNet(MLP, max_epochs=3, lr=0.1, verbose=0)
    >>> campaign = CampaignEstimator(ActiveLearner(net, Random()), initial_size=10, query_size=10,
    ...                              n_cycles=2, scoring="auc", random_state=0)
    >>> search = GridSearchCV(campaign, {"learner__selector": [Random(), Margin()]}, cv=2).fit(X, y)
    >>> search.cv_results_["mean_test_score"].shape, search.best_estimator_.n_labeled_.tolist()
    ((2,), [10, 20, 30])
    """

    _parameter_constraints = {
        "learner": [ActiveLearner],
        "initial_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "query_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_cycles": [Interval(numbers.Integral, 0, None, closed="left")],
        "scoring": [StrOptions({"final", "auc"})],
        "random_state": ["random_state"],
    }

    def __init__(self, learner, *, initial_size, query_size, n_cycles, scoring="final", random_state=None):
        self.learner = learner
        self.initial_size = initial_size
        self.query_size = query_size
        self.n_cycles = n_cycles
        self.scoring = scoring
        self.random_state = random_state

    def fit(self, X, y):
        """Simulate one campaign on ``(X, y)``, the labels playing the annotator.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) or torch Dataset
            The pool, labels known.
        y : array-like of shape (n_samples,)
            The labels, revealed to the learner only for the initial set and
            the samples it queries.

        Returns
        -------
        self : CampaignEstimator
        """
        self._validate_params()
        for name in ("initial_size", "query_size", "n_cycles"):
            # Interval(Integral) lets booleans through
            if isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be an integer, got bool.")
        X_given = X
        X = self._check_X(X, reset=True)
        y = check_labels(y, "y")
        check_same_length(X, y)
        check_budget(self.initial_size, self.query_size, self.n_cycles, len(y))
        rng = check_random_state(self.random_state)
        seeds, initial_sets = draw_repeats(rng, len(y), self.initial_size, 1)
        learner = configured(self.learner, int(seeds[0][1]), np.unique(y))
        models = []

        def keep(record, fitted):
            models.append(fitted.estimator_)

        records = run_campaign(learner, X, y, initial_idx=initial_sets[0], query_size=self.query_size,
                               n_cycles=self.n_cycles, on_model=keep if self.scoring == "auc" else None)
        if not is_dataset(X_given):
            # n_features_in_ / feature_names_in_ change only once the campaign has succeeded
            validate_data(self, X_given, skip_check_array=True)
        self.learner_ = learner
        self.classes_ = learner.classes_
        self.n_labeled_ = np.array([rec["n_labeled"] for rec in records])
        self.labeled_indices_ = np.concatenate([rec["indices"] for rec in records]).astype(np.int64)
        self.fit_times_ = np.array([rec["fit_time"] for rec in records])
        self.query_times_ = np.array([rec["query_time"] for rec in records])
        if models:
            self.cycle_estimators_ = models
        elif hasattr(self, "cycle_estimators_"):
            del self.cycle_estimators_
        return self

    def predict_proba(self, X):
        """Class probabilities of the final model.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) or torch Dataset

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        check_is_fitted(self)
        return self.learner_.predict_proba(self._check_X(X))

    def predict(self, X):
        """Most probable class of each sample, by the final model.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) or torch Dataset

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.learner_.predict(self._check_X(X))

    def score(self, X, y, sample_weight=None):
        """The campaign's score on held-out data: final accuracy or the curve's AUC (``scoring``).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) or torch Dataset
        y : array-like of shape (n_samples,)
            True labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the accuracies.

        Returns
        -------
        float
        """
        check_is_fitted(self)
        if self.scoring == "auc":
            return float(normalised_auc(self.score_cycles(X, y, sample_weight), self.n_labeled_))
        X, y, sample_weight = self._check_scored(X, y, sample_weight)
        return _accuracy(self.learner_, X, y, sample_weight)

    def score_cycles(self, X, y, sample_weight=None):
        """Accuracy of every cycle's model on ``(X, y)``: the campaign's learning curve.

        Needs the models that a fit with ``scoring="auc"`` keeps.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) or torch Dataset
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        ndarray of shape (n_cycles + 1,)
            Against ``n_labeled_``.
        """
        check_is_fitted(self)
        if not hasattr(self, "cycle_estimators_"):
            raise ValueError("score_cycles needs every cycle's model, which fit keeps only with "
                             "scoring='auc'; set scoring='auc' and fit again.")
        X, y, sample_weight = self._check_scored(X, y, sample_weight)
        model, state = copy.copy(self.learner_), self.learner_._state()
        scores = []
        for estimator in self.cycle_estimators_:
            # same classes, features and labeled shape: only the net differs
            model._commit(dataclasses.replace(state, estimator=estimator))
            scores.append(_accuracy(model, X, y, sample_weight))
        return np.array(scores)

    def _check_X(self, X, reset=False):
        check_array_like(X, "X")
        if is_dataset(X):
            if len(X) == 0:
                raise ValueError("X is empty: it needs at least one sample.")
            return X
        with named_errors("X"):
            if reset:
                return check_array(X, allow_nd=True, dtype="numeric", input_name="X")
            return validate_data(self, X, reset=False, allow_nd=True, dtype="numeric")

    def _check_scored(self, X, y, sample_weight):
        X = self._check_X(X)
        y = check_targets(y)
        check_same_length(X, y)
        if sample_weight is not None:
            with named_errors("sample_weight"):
                sample_weight = _check_sample_weight(sample_weight, y)
        return X, y, sample_weight


def _accuracy(learner, X, y, sample_weight):
    return float(accuracy_score(y, learner.predict(X), sample_weight=sample_weight))
