"""Stopping criteria: signals that more labels no longer change the model.

A criterion is called after every training of the campaign (the initial
``fit`` and each ``teach``) with :meth:`StoppingCriterion.update`, which
returns whether to stop now. Criteria are scikit-learn style objects: their
constructor only stores parameters, their state lives in attributes ending in
``_`` created by the first update, and :func:`sklearn.base.clone` gives a
fresh one (one per campaign); they pickle with their state.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.metrics import cohen_kappa_score
from sklearn.utils._param_validation import Interval
from torch.utils.data import Dataset

from ._data import check_array_like

__all__ = ["StoppingCriterion", "StabilizingPredictions"]


class StoppingCriterion(BaseEstimator):
    """Base class of the stopping criteria.

    :meth:`update` checks the parameters, asks the subclass's ``_update`` hook
    whether to stop, and keeps the bookkeeping common to all criteria. A
    subclass implements ``_update(learner) -> bool``; it must leave the
    criterion unchanged when it raises (compute first, then assign its
    fitted attributes).

    Attributes
    ----------
    n_updates_ : int
        Number of completed :meth:`update` calls.
    stop_ : bool
        The decision of the last update.
    stopped_at_ : int or None
        Index (0-based) of the first update that decided to stop, ``None``
        while none has. When updates follow the initial fit and every teach,
        this is the cycle at which the campaign would have stopped.

    See Also
    --------
    StabilizingPredictions : Stop when consecutive models agree on a stop set.

    Examples
    --------
    A criterion that stops once the learner holds a number of labels:

    >>> import numpy as np
    >>> from skal.stopping import StoppingCriterion
    >>> class LabelBudget(StoppingCriterion):
    ...     _parameter_constraints = {"budget": [int]}
    ...     def __init__(self, budget=100):
    ...         self.budget = budget
    ...     def _update(self, learner):
    ...         return len(learner.y_labeled_) >= self.budget
    >>> class Learner:  # stands in for an ActiveLearner
    ...     y_labeled_ = np.zeros(50)
    >>> criterion, learner = LabelBudget(budget=100), Learner()
    >>> criterion.update(learner)
    False
    >>> learner.y_labeled_ = np.zeros(100)
    >>> criterion.update(learner), criterion.stopped_at_, criterion.n_updates_
    (True, 1, 2)
    """

    _parameter_constraints = {}

    def update(self, learner):
        """Record one trained model; return whether to stop now.

        Parameters
        ----------
        learner : estimator
            The learner just trained (an :class:`~skal.ActiveLearner` after
            ``fit`` or ``teach``, or any fitted estimator the criterion can
            read).

        Returns
        -------
        bool
            Whether the criterion says to stop after this training.
        """
        self._validate_params()
        stop = bool(self._update(learner))
        n_updates = getattr(self, "n_updates_", 0)
        if stop and getattr(self, "stopped_at_", None) is None:
            self.stopped_at_ = n_updates
        elif n_updates == 0:
            self.stopped_at_ = None
        self.stop_ = stop
        self.n_updates_ = n_updates + 1
        return stop

    def _update(self, learner):
        raise NotImplementedError(f"{type(self).__name__} must implement _update(learner) -> bool.")


class StabilizingPredictions(StoppingCriterion):
    """Stop when consecutive models' predictions on a stop set have stabilised.

    After Bloodgood & Vijay-Shanker (2009): each update predicts the classes
    of a fixed set of unlabeled samples, the *stop set*, and measures the
    agreement with the previous model's predictions by Cohen's kappa
    (:func:`sklearn.metrics.cohen_kappa_score`). The criterion stops when the
    mean of the last ``window`` agreements is above ``threshold``; the first
    possible stop is thus at update ``window`` (0-based), the
    ``window + 1``-th model.

    The stop set need not be labeled: the paper draws it from the unlabeled
    data, and since it costs no annotation it can be large (a few thousand
    samples keep the kappa estimate's variance small). A random sample of the
    initial pool is the usual choice; it may overlap the pool.

    Kappa is undefined when both models predict one and the same class for
    every stop-set sample (observed and chance agreement are then both 1).
    Such an agreement is recorded as NaN and never counts as stable: a window
    holding a NaN does not stop. Two models that both put the whole stop set
    in one class have learned nothing the stop set can measure, and stopping
    then would end a campaign whose model has not yet separated any classes
    (other implementations count it as 1.0, i.e. full agreement).

    Parameters
    ----------
    X_stop : array-like of shape (n_stop, ...) or torch Dataset
        The stop set, at least 2 samples, passed unchanged to
        ``learner.predict``. Clones share it (it is never written to) rather
        than copy it; it is pickled with the criterion.
    threshold : float, default=0.99
        Agreement above which the predictions count as stable, in
        ``[-1, 1)``; 0.99 is the paper's value.
    window : int, default=3
        Number of most recent agreements averaged; 3 is the paper's value.

    Attributes
    ----------
    agreements_ : list of float
        Kappa between the predictions of update ``i`` and update ``i + 1``
        for every pair of consecutive updates (``n_updates_ - 1`` values; NaN
        where undefined).
    predictions_ : ndarray of shape (n_stop,)
        The last learner's predictions on the stop set.
    n_updates_ : int
        Number of completed updates.
    stop_ : bool
        The decision of the last update.
    stopped_at_ : int or None
        Index of the first update that decided to stop, ``None`` until then.

    See Also
    --------
    StoppingCriterion : The base class, for writing other criteria.

    References
    ----------
    .. [1] M. Bloodgood and K. Vijay-Shanker, "A Method for Stopping Active
       Learning Based on Stabilizing Predictions and the Need for
       User-Adjustable Stopping", CoNLL 2009, pp. 39-47.

    Examples
    --------
    Any fitted classifier works; here logistic regressions on 10, 20, 40,
    ... labels, with the paper's threshold and window:

    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skal.stopping import StabilizingPredictions
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(1000, 2))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> criterion = StabilizingPredictions(X[800:])  # 200 unlabeled samples
    >>> for n_labeled in (10, 20, 40, 80, 160, 320, 640, 800):
    ...     model = LogisticRegression().fit(X[:n_labeled], y[:n_labeled])
    ...     if criterion.update(model):
    ...         break
    >>> [round(kappa, 2) for kappa in criterion.agreements_]
    [0.9, 0.84, 0.98, 0.99, 1.0, 1.0]
    >>> criterion.stopped_at_, n_labeled
    (6, 640)
    """

    _parameter_constraints = {
        "X_stop": ["array-like", Dataset],
        "threshold": [Interval(Real, -1, 1, closed="left")],
        "window": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, X_stop, threshold=0.99, window=3):
        self.X_stop = X_stop
        self.threshold = threshold
        self.window = window

    def __sklearn_clone__(self):
        # scikit-learn's clone deep-copies every parameter that is not an
        # estimator: here a copy of the stop set per campaign, and a Dataset
        # (file handles, lazily loaded images) may not be copyable at all.
        # The stop set is only ever read, so clones share it.
        return type(self)(**self.get_params(deep=False))

    def _update(self, learner):
        check_array_like(self.X_stop, "X_stop")
        n_stop = len(self.X_stop)
        if n_stop < 2:
            raise ValueError(f"X_stop must hold at least 2 samples; got {n_stop}.")
        predictions = np.asarray(learner.predict(self.X_stop))
        if predictions.shape != (n_stop,):
            raise ValueError(
                f"learner.predict(X_stop) must return one label per stop-set sample, shape "
                f"({n_stop},); got shape {predictions.shape}.")
        agreements = list(getattr(self, "agreements_", []))
        if hasattr(self, "predictions_"):
            if self.predictions_.shape != predictions.shape:
                raise ValueError(
                    f"X_stop changed size since the last update ({len(self.predictions_)} -> "
                    f"{n_stop} samples); the stop set must stay fixed.")
            agreements.append(_kappa(self.predictions_, predictions))
        recent = agreements[-self.window:]
        # NaN (undefined kappa) makes the mean NaN, and NaN > threshold is False.
        stop = len(agreements) >= self.window and float(np.mean(recent)) > self.threshold
        self.predictions_ = predictions
        self.agreements_ = agreements
        return stop


def _kappa(previous, current):
    """Cohen's kappa of two label vectors; NaN when both are one and the same class."""
    if np.array_equal(previous, current) and np.unique(current).size == 1:
        return float("nan")  # observed = chance agreement = 1: 0 / 0
    return float(cohen_kappa_score(previous, current))
