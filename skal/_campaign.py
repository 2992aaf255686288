"""The campaign loop shared by active_learning_curve and CampaignEstimator, and their input checks."""

import math
import numbers
import time

import joblib
import numpy as np
from sklearn.base import clone
from sklearn.utils import check_array
from sklearn.utils.multiclass import check_classification_targets

from ._data import check_array_like, check_targets, is_dataset, named_errors, sample_shape, take
from .semi import reads_pool

_SEED_BOUND = np.iinfo(np.int32).max

# numpy >= 2 renamed trapz to trapezoid
_trapezoid = getattr(np, "trapezoid", None) or np.trapz


def normalised_auc(scores, n_labeled):
    """Trapezoidal area under score vs labeled count over the last axis, divided by the count range.

    The curve's average height, in score units; with a single model, its score.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_labeled = np.asarray(n_labeled)
    if len(n_labeled) < 2:
        return scores[..., 0]
    return _trapezoid(scores, n_labeled, axis=-1) / (n_labeled[-1] - n_labeled[0])


def draw_repeats(rng, n_samples, initial_size, n_repeats, X=None, initial_strategy="random"):
    """Per repeat: ``[initial-set seed, learner seed]`` and the initial set it draws.

    ``"random"`` draws ``default_rng(seed).choice``; ``"kmeans"`` / ``"kcenter"``
    choose the set from ``X``'s features by :func:`skal.initial.initial_batch`,
    seeded the same way.
    """
    seeds = rng.randint(_SEED_BOUND, size=(n_repeats, 2))
    if initial_strategy == "random":
        initial_sets = [np.random.default_rng(seed[0]).choice(n_samples, initial_size, replace=False)
                        for seed in seeds]
    else:
        from .initial import initial_batch

        initial_sets = [initial_batch(X, initial_size, strategy=initial_strategy, random_state=int(seed[0]))
                        for seed in seeds]
    return seeds, initial_sets


def configured(learner, seed, classes):
    """A clone seeded for one repeat, with every label of ``y`` declared."""
    learner = clone(learner).set_params(random_state=seed)
    if learner.classes is None:
        learner.set_params(classes=classes)
    return learner


def run_campaign(learner, X, y, *, initial_idx, query_size, n_cycles, evaluate=None, on_model=None):
    """Simulate one campaign on ``learner`` (trained in place): fit, then query/teach ``n_cycles`` times.

    Returns a list of dicts, one per trained model (cycle 0 .. n_cycles), with
    ``cycle``, ``n_labeled``, ``score`` (``evaluate(learner)``, or None),
    ``fit_time``, ``query_time`` (seconds spent choosing the batch that led
    to this model; 0 for cycle 0), ``indices`` (the rows of ``X`` added at
    that cycle; cycle 0: the initial set) and ``labels`` (their labels).
    ``on_model(record, learner)`` is called after each training.
    """
    unlabeled = np.ones(len(y), dtype=bool)
    unlabeled[initial_idx] = False
    records = []
    # Semi-supervised parts (skal.semi) train on the rows not labeled yet: the learner
    # then keeps X as its pool (y marked), queries it and is taught by row.
    pooled = reads_pool(learner.estimator)

    def record(cycle, indices, fit_time, query_time):
        score = None if evaluate is None else _check_score(evaluate(learner), cycle)
        records.append({
            "cycle": cycle, "n_labeled": len(learner.y_labeled_),
            "score": score,
            "fit_time": fit_time, "query_time": query_time,
            "indices": np.asarray(indices), "labels": np.asarray(y[indices]),
        })
        if on_model is not None:
            on_model(records[-1], learner)

    start = time.perf_counter()
    if pooled:
        marker, y_marked = _marked(y, unlabeled)
        learner.set_params(unlabeled=marker).fit(X, y_marked)
    else:
        learner.fit(take(X, initial_idx), y[initial_idx])
    record(0, initial_idx, time.perf_counter() - start, 0.0)
    for cycle in range(1, n_cycles + 1):
        pool = np.flatnonzero(unlabeled)
        if len(pool) == 0:
            break
        start = time.perf_counter()
        if pooled:  # the same candidates, in the same order: the pool's unlabeled rows
            chosen = learner.query(X, min(query_size, len(pool)))
        else:
            chosen = pool[learner.query(take(X, pool), min(query_size, len(pool)))]
        query_time = time.perf_counter() - start
        unlabeled[chosen] = False
        start = time.perf_counter()
        if pooled:
            learner.teach(X, y[chosen], rows=chosen)
        else:
            learner.teach(take(X, chosen), y[chosen])
        record(cycle, chosen, time.perf_counter() - start, query_time)
    return records


def _marked(y, unlabeled):
    """``(marker, y with marker at the unlabeled rows)``, the marker a value no label takes.

    Boolean labels become 0 and 1 (a string marker beside booleans is no label type
    scikit-learn knows); the learner's predictions then compare equal to them.
    """
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind in "iuf":
        marker = min(int(np.floor(np.min(y))), 0) - 1
        marked = y.astype(np.float64 if y.dtype.kind == "f" else np.int64)
        marker = float(marker) if y.dtype.kind == "f" else marker
    else:
        labels = {str(value) for value in np.unique(y)}
        marker = "<unlabeled>"
        while marker in labels:
            marker = f"<{marker}>"
        marked = y.astype(object)
    marked[unlabeled] = marker
    return marker, marked


def _check_score(score, cycle):
    """A scorer's result as a finite float; a ValueError names ``scoring`` otherwise."""
    try:
        value = float(score)
    except (TypeError, ValueError):
        raise ValueError(f"scoring returned {score!r} for the model of cycle {cycle}; a scorer must "
                         "return a number.") from None
    if not math.isfinite(value):
        raise ValueError(f"scoring returned {value} for the model of cycle {cycle}; a scorer must "
                         "return a finite number.")
    return value


# --- input checks ----------------------------------------------------------------------------


def check_n_jobs(n_jobs):
    """``n_jobs`` as joblib takes it: None, a positive integer, or -1 .. -cpu_count."""
    if n_jobs is None:
        return
    if isinstance(n_jobs, (bool, np.bool_)) or not isinstance(n_jobs, numbers.Integral):
        raise TypeError(f"n_jobs must be None or an integer, got {type(n_jobs).__name__}: {n_jobs!r}.")
    cpus = joblib.cpu_count()
    if n_jobs == 0 or n_jobs < -cpus:
        raise ValueError(f"n_jobs must be None, a positive integer or in [-{cpus}, -1] (-1: all "
                         f"{cpus} CPUs, -2: all but one, ...), got {n_jobs}.")


def check_count(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}.")
    if value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ValueError(f"{name} must be {kind} integer, got {value!r}.")


def check_budget(initial_size, query_size, n_cycles, n_samples):
    needed = initial_size + n_cycles * query_size
    if needed > n_samples:
        raise ValueError(
            f"initial_size + n_cycles * query_size = {initial_size} + {n_cycles} * {query_size} "
            f"= {needed} exceeds the {n_samples} samples available."
        )


def check_data(X, y, x_name, y_name):
    """Samples and labels checked up front: a Dataset is only counted, arrays fully checked."""
    check_array_like(X, x_name)
    if is_dataset(X):
        if len(X) == 0:
            raise ValueError(f"{x_name} is empty: it needs at least one sample.")
    else:
        with named_errors(x_name):
            X = check_array(X, allow_nd=True, dtype="numeric", input_name=x_name)
    return X, check_labels(y, y_name)


def check_labels(y, name):
    y = check_targets(y, name)
    with named_errors(name):
        check_classification_targets(y)
    return y


def samples_shape(X):
    return sample_shape(X) if is_dataset(X) else X.shape[1:]
