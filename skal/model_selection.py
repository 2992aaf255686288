"""Campaign simulation: run active learning with known labels as the oracle."""

import time

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state

__all__ = []


def _initial_indices(n_samples, initial_size, random_state):
    """A seeded random initial labeled set, shared by every selector compared."""
    if not 1 <= initial_size < n_samples:
        raise ValueError(f"initial_size must be in [1, {n_samples - 1}], got {initial_size}.")
    return check_random_state(random_state).choice(n_samples, initial_size, replace=False)


def _run_campaign(learner, X, y, X_test, y_test, *, initial_idx, query_size, n_cycles, callback=None):
    """Simulate one campaign: fit on ``initial_idx``, then query/teach ``n_cycles`` times.

    Returns a list of dicts, one per trained model (cycle 0 .. n_cycles), with
    ``cycle``, ``n_labeled``, ``score`` (accuracy on the test set),
    ``fit_time`` and ``query_time`` (seconds spent choosing the batch that
    led to this model; 0 for cycle 0).
    """
    learner = clone(learner)
    unlabeled = np.ones(len(X), dtype=bool)
    unlabeled[initial_idx] = False
    start = time.perf_counter()
    learner.fit(X[initial_idx], y[initial_idx])
    records = [_record(learner, X_test, y_test, 0, time.perf_counter() - start, 0.0)]
    if callback is not None:
        callback(records[-1])
    for cycle in range(1, n_cycles + 1):
        pool = np.flatnonzero(unlabeled)
        if len(pool) == 0:
            break
        start = time.perf_counter()
        chosen = pool[learner.query(X[pool], min(query_size, len(pool)))]
        query_time = time.perf_counter() - start
        unlabeled[chosen] = False
        start = time.perf_counter()
        learner.teach(X[chosen], y[chosen])
        records.append(_record(learner, X_test, y_test, cycle, time.perf_counter() - start, query_time))
        if callback is not None:
            callback(records[-1])
    return records


def _record(learner, X_test, y_test, cycle, fit_time, query_time):
    return {
        "cycle": cycle,
        "n_labeled": len(learner.y_labeled_),
        "score": float(learner.score(X_test, y_test)),
        "fit_time": fit_time,
        "query_time": query_time,
    }
