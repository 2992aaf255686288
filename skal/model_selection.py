"""Campaign simulation: run active learning with known labels as the oracle."""

import csv
import json
import numbers
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.metrics import check_scoring
from sklearn.model_selection import train_test_split
from sklearn.utils import check_array, check_random_state
from sklearn.utils.multiclass import check_classification_targets
from tqdm.auto import tqdm

from ._data import check_array_like, check_same_length, check_targets, is_dataset, named_errors, sample_shape, take

__all__ = ["active_learning_curve", "ActiveLearningCurve"]


@dataclass
class ActiveLearningCurve:
    """Result of :func:`active_learning_curve`.

    Attributes
    ----------
    names : list of str
        One per compared learner.
    n_labeled : ndarray of shape (n_cycles + 1,)
        Labeled-set size after each training (cycle 0 is the initial set).
    scores : ndarray of shape (n_learners, n_repeats, n_cycles + 1)
        Test score of every learner, repeat and cycle.
    fit_times, query_times : ndarray of shape (n_learners, n_repeats, n_cycles + 1)
        Seconds spent training for, and querying the batch that led to,
        each model (``query_times[..., 0]`` is 0).
    scoring : str
        The scorer's name.
    meta : dict
        The campaign's settings: ``initial_size``, ``query_size``,
        ``n_cycles`` and ``n_repeats``.
    class_counts : ndarray of shape (n_learners, n_repeats, n_cycles + 1, n_classes) or None
        How the labels added at each cycle spread over the classes (cycle 0:
        the initial set), in the order of ``classes``.
    classes : ndarray of shape (n_classes,) or None
        The labels counted in ``class_counts``.

    See Also
    --------
    active_learning_curve : Runs the campaigns and returns this result.
    skal.plotting.plot_active_learning_curve : Plots it.

    Examples
    --------
    >>> import numpy as np
    >>> from skal.model_selection import ActiveLearningCurve
    >>> scores = np.array([[[0.5, 0.7, 0.8], [0.6, 0.7, 0.9]]])  # 1 learner, 2 repeats, 3 cycles
    >>> zeros = np.zeros_like(scores)
    >>> result = ActiveLearningCurve(["entropy"], np.array([10, 20, 30]), scores, zeros, zeros)
    >>> result.mean.round(2).tolist(), result.auc.round(3).tolist()
    ([[0.55, 0.7, 0.85]], [[0.675, 0.725]])
    >>> print(result.table().splitlines()[2])
    | 0 | 10 | 0.5500 ± 0.0500 |
    """

    names: list
    n_labeled: np.ndarray
    scores: np.ndarray
    fit_times: np.ndarray
    query_times: np.ndarray
    scoring: str = "accuracy"
    meta: dict = field(default_factory=dict)
    class_counts: np.ndarray | None = None
    classes: np.ndarray | None = None

    @property
    def pick_entropy(self):
        """Spread of each cycle's picks over the classes, shape (n_learners, n_repeats, n_cycles + 1).

        The entropy of the histogram of the labels added at that cycle,
        divided by ``log(n_classes)``: 1 when the batch is spread evenly over
        the classes, 0 when it falls in a single class (cycle 0: the initial
        set). A batch that collapses into a few classes shows here first.
        """
        counts = np.asarray(self.class_counts, dtype=np.float64)
        p = counts / np.maximum(counts.sum(-1, keepdims=True), 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
        return h / np.log(counts.shape[-1]) if counts.shape[-1] > 1 else np.zeros_like(h)

    @property
    def mean(self):
        """Mean score over repeats, shape (n_learners, n_cycles + 1)."""
        return self.scores.mean(axis=1)

    @property
    def std(self):
        """Standard deviation of the score over repeats, shape (n_learners, n_cycles + 1)."""
        return self.scores.std(axis=1)

    @property
    def auc(self):
        """Normalised area under each repeat's curve, shape (n_learners, n_repeats).

        The trapezoidal area under score vs labeled count divided by the
        labeled-count range, i.e. the curve's average height (in score units);
        with a single trained model it is that model's score.
        """
        if len(self.n_labeled) < 2:
            return self.scores[..., 0]
        width = self.n_labeled[-1] - self.n_labeled[0]
        return _trapezoid(self.scores, self.n_labeled, axis=-1) / width

    def table(self):
        """Markdown table: one row per cycle, ``mean ± std`` per learner, then AUC and time.

        Returns
        -------
        str
            The table; with ``class_counts``, a last row gives the mean
            spread of the picks over the classes (:attr:`pick_entropy`).
        """
        header = "| cycle | labeled | " + " | ".join(self.names) + " |"
        rule = "|---:|---:|" + "---:|" * len(self.names)
        rows = []
        for c, n in enumerate(self.n_labeled):
            cells = " | ".join(_mean_std(self.scores[i, :, c]) for i in range(len(self.names)))
            rows.append(f"| {c} | {n} | {cells} |")
        auc = " | ".join(_mean_std(a) for a in self.auc)
        rows.append(f"| AUC | | {auc} |")
        seconds = " | ".join(f"{(f + q).sum() / f.shape[0]:.1f} s"
                             for f, q in zip(self.fit_times, self.query_times))
        rows.append(f"| time / repeat | | {seconds} |")
        if self.class_counts is not None and len(self.n_labeled) > 1:
            spread = " | ".join(_mean_std(e[:, 1:].mean(axis=1)) for e in self.pick_entropy)
            rows.append(f"| pick spread | | {spread} |")
        return "\n".join([header, rule, *rows])

    def to_records(self):
        """One dict per (learner, repeat, cycle): the long format of CSV files.

        Returns
        -------
        list of dict
            Keys ``selector``, ``repeat``, ``cycle``, ``n_labeled``, the
            scorer's name, ``fit_time`` and ``query_time`` (and
            ``pick_entropy`` with ``class_counts``).
        """
        records = []
        for i, name in enumerate(self.names):
            for r in range(self.scores.shape[1]):
                for c, n in enumerate(self.n_labeled):
                    records.append({
                        "selector": name, "repeat": r, "cycle": c, "n_labeled": int(n),
                        self.scoring: float(self.scores[i, r, c]),
                        "fit_time": float(self.fit_times[i, r, c]),
                        "query_time": float(self.query_times[i, r, c]),
                    })
                    if self.class_counts is not None:
                        records[-1]["pick_entropy"] = float(self.pick_entropy[i, r, c])
        return records

    def to_csv(self, path):
        """Write :meth:`to_records` as CSV.

        Parameters
        ----------
        path : str or path-like
            The file to write (overwritten).
        """
        records = self.to_records()
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)

    def to_json(self, path):
        """Write the whole result (arrays as lists) as JSON.

        Parameters
        ----------
        path : str or path-like
            The file to write (overwritten).
        """
        data = {
            "names": self.names, "n_labeled": self.n_labeled.tolist(), "scoring": self.scoring,
            "scores": self.scores.tolist(), "fit_times": self.fit_times.tolist(),
            "query_times": self.query_times.tolist(), "mean": self.mean.tolist(),
            "std": self.std.tolist(), "auc": self.auc.tolist(), "meta": self.meta,
        }
        if self.class_counts is not None:
            data["classes"] = np.asarray(self.classes).tolist()
            data["class_counts"] = np.asarray(self.class_counts).tolist()
            data["pick_entropy"] = self.pick_entropy.tolist()
        with open(path, "w") as f:
            json.dump(data, f, indent=2)


# numpy >= 2 renamed trapz to trapezoid
_trapezoid = getattr(np, "trapezoid", None) or np.trapz


def _mean_std(values):
    values = np.asarray(values)
    return f"{values.mean():.4f} ± {values.std():.4f}" if values.size > 1 else f"{values.mean():.4f}"


def active_learning_curve(learner, X, y, *, X_test=None, y_test=None, initial_size, query_size,
                          n_cycles, n_repeats=3, scoring="accuracy", n_jobs=None,
                          random_state=None, verbose=0):
    """Simulate active-learning campaigns with ``y`` as the annotator.

    For each repeat, a seeded random initial set of ``initial_size`` samples
    is drawn from ``X`` and shared by every learner compared; each learner is
    fitted on it and then, ``n_cycles`` times, queries ``query_size`` samples
    from the rest of ``X``, is taught their labels from ``y`` and retrains.
    The test score is recorded after every training. Repeats also share the
    learners' ``random_state`` (one per repeat), so differences between
    learners come from their selectors, not from their initialisation.

    Parameters
    ----------
    learner : ActiveLearner or dict of str to ActiveLearner
        What to compare; a single learner is named after its selector.
    X : array-like of shape (n_samples, ...) or torch Dataset
        The pool with known labels.
    y : array-like of shape (n_samples,)
        The labels, revealed only for queried samples.
    X_test, y_test : array-like, default=None
        Held-out evaluation data. ``None`` holds out a stratified 20% of
        ``X`` (seeded by ``random_state``) and simulates on the rest.
    initial_size : int
        Size of the initial labeled set.
    query_size : int
        Samples queried per cycle.
    n_cycles : int
        Query/teach cycles after the initial fit.
    n_repeats : int, default=3
        Independent repeats (initial sets and seeds).
    scoring : str or callable, default="accuracy"
        A scikit-learn scorer.
    n_jobs : int or None, default=None
        Campaigns (learner x repeat) run in parallel through joblib; any
        joblib backend (e.g. Dask) applies.
    random_state : int, RandomState instance or None, default=None
        Seeds the test split, the initial sets and the learners.
    verbose : int, default=0
        ``>= 1`` shows a progress bar over the campaigns (on stderr) and, when
        campaigns run in this process, one line per trained model.

    Returns
    -------
    ActiveLearningCurve

    Examples
    --------
    >>> import numpy as np
    >>> from skal import ActiveLearner, ActiveNet
    >>> from skal.model_selection import active_learning_curve
    >>> from skal.models import MLP
    >>> from skal.selectors import Entropy, Random
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> net = ActiveNet(MLP, max_epochs=3, lr=0.1, verbose=0)
    >>> learners = {"entropy": ActiveLearner(net, Entropy()), "random": ActiveLearner(net, Random())}
    >>> result = active_learning_curve(learners, X, y, initial_size=10, query_size=10,
    ...                                n_cycles=2, n_repeats=2, random_state=0)
    >>> result.scores.shape, result.n_labeled.tolist()
    ((2, 2, 3), [10, 20, 30])
    """
    # everything is checked before the first campaign trains anything
    learners = _check_learners(learner)
    for name, value in {"initial_size": initial_size, "query_size": query_size,
                        "n_cycles": n_cycles, "n_repeats": n_repeats}.items():
        _check_count(value, name, minimum=0 if name == "n_cycles" else 1)
    if isinstance(verbose, bool) or not isinstance(verbose, numbers.Integral):
        raise TypeError(f"verbose must be an integer, got {type(verbose).__name__}.")
    X, y = _check_data(X, y, "X", "y")
    if len(X) != len(y):
        raise ValueError(f"X and y have inconsistent lengths: {len(X)} and {len(y)}.")
    if (X_test is None) != (y_test is None):
        raise ValueError("y_test given without X_test." if X_test is None else "X_test given without y_test.")
    if X_test is not None:
        X_test, y_test = _check_data(X_test, y_test, "X_test", "y_test")
        check_same_length(X_test, y_test, "X_test", "y_test")
        shapes = [_sample_shape(data) for data in (X, X_test)]
        if shapes[0] != shapes[1]:
            raise ValueError(f"X_test has samples of shape {shapes[1]}, but X has samples of shape {shapes[0]}.")
    with named_errors("scoring"):
        check_scoring(next(iter(learners.values())), scoring=scoring)
    with named_errors("random_state"):
        rng = check_random_state(random_state)
    if X_test is None:
        try:
            train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y,
                                           random_state=rng.randint(np.iinfo(np.int32).max))
        except ValueError as error:
            raise ValueError(f"y: cannot hold out a stratified 20% test split: {error} "
                             "Pass X_test and y_test.") from error
        X, y, X_test, y_test = take(X, train), y[train], take(X, test), y[test]
    needed = initial_size + n_cycles * query_size
    if needed > len(y):
        raise ValueError(
            f"initial_size + n_cycles * query_size = {initial_size} + {n_cycles} * {query_size} "
            f"= {needed} exceeds the {len(y)} samples available."
        )
    seeds = rng.randint(np.iinfo(np.int32).max, size=(n_repeats, 2))
    initial_sets = [np.random.default_rng(seed[0]).choice(len(y), initial_size, replace=False)
                    for seed in seeds]
    classes = np.unique(y)
    tasks = [(name, r) for name in learners for r in range(n_repeats)]
    jobs = (
        delayed(_campaign)(
            _configured(learners[name], int(seeds[r][1]), classes),
            X, y, X_test, y_test, initial_idx=initial_sets[r], query_size=query_size,
            n_cycles=n_cycles, scoring=scoring, label=f"{name} repeat {r}" if verbose else None,
        )
        for name, r in tasks
    )
    shape = (len(learners), n_repeats, n_cycles + 1)
    scores, fit_times, query_times = np.empty(shape), np.empty(shape), np.empty(shape)
    class_counts = np.zeros(shape + (len(classes),), dtype=np.int64)
    # results stream back as campaigns finish, so the bar moves under any backend
    progress = tqdm(total=len(tasks), desc="campaigns", unit="campaign", disable=verbose < 1,
                    file=sys.stderr, leave=False, mininterval=0)
    with progress:
        for (name, r), records in zip(tasks, Parallel(n_jobs=n_jobs, return_as="generator")(jobs)):
            i = list(learners).index(name)
            scores[i, r] = [rec["score"] for rec in records]
            fit_times[i, r] = [rec["fit_time"] for rec in records]
            query_times[i, r] = [rec["query_time"] for rec in records]
            class_counts[i, r] = [np.bincount(np.searchsorted(classes, rec["labels"]),
                                              minlength=len(classes)) for rec in records]
            progress.update(1)
    n_labeled = np.array([initial_size + c * query_size for c in range(n_cycles + 1)])
    scorer_name = scoring if isinstance(scoring, str) else getattr(scoring, "__name__", "score")
    return ActiveLearningCurve(list(learners), n_labeled, scores, fit_times, query_times,
                               scoring=scorer_name,
                               meta={"initial_size": initial_size, "query_size": query_size,
                                     "n_cycles": n_cycles, "n_repeats": n_repeats},
                               class_counts=class_counts, classes=classes)


def _check_learners(learner):
    """The learners to compare, as a dict of name to ActiveLearner."""
    from .learner import ActiveLearner

    if not isinstance(learner, dict):
        if not isinstance(learner, ActiveLearner):
            raise TypeError("learner must be an ActiveLearner or a dict of names to ActiveLearners, "
                            f"got {type(learner).__name__}.")
        return {type(learner.selector).__name__: learner}
    if not learner:
        raise ValueError("learner: give at least one learner to compare.")
    for name, value in learner.items():
        if not isinstance(name, str):
            raise TypeError(f"learner: the names must be str, got {name!r}.")
        if not isinstance(value, ActiveLearner):
            raise TypeError(f"learner[{name!r}] must be an ActiveLearner, got {type(value).__name__}.")
    return learner


def _check_count(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}.")
    if value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ValueError(f"{name} must be {kind} integer, got {value!r}.")


def _check_data(X, y, x_name, y_name):
    """Samples and labels checked up front: a Dataset is only counted, arrays fully checked."""
    check_array_like(X, x_name)
    if is_dataset(X):
        if len(X) == 0:
            raise ValueError(f"{x_name} is empty: it needs at least one sample.")
    else:
        with named_errors(x_name):
            X = check_array(X, allow_nd=True, dtype="numeric", input_name=x_name)
    y = check_targets(y, y_name)
    with named_errors(y_name):
        check_classification_targets(y)
    return X, y


def _sample_shape(X):
    return sample_shape(X) if is_dataset(X) else X.shape[1:]


def _configured(learner, seed, classes):
    """A clone seeded for one repeat, with every label of ``y`` declared."""
    learner = clone(learner).set_params(random_state=seed)
    if learner.classes is None:
        learner.set_params(classes=classes)
    return learner


def _campaign(learner, X, y, X_test, y_test, *, initial_idx, query_size, n_cycles, scoring,
              label=None):
    scorer = check_scoring(learner, scoring=scoring)

    def report(record):
        if label is not None:
            print(f"[{label}] cycle {record['cycle']}: {record['n_labeled']} labeled, "
                  f"score {record['score']:.4f}", flush=True)

    return _run_campaign(learner, X, y, X_test, y_test, initial_idx=initial_idx,
                         query_size=query_size, n_cycles=n_cycles, scorer=scorer, callback=report)


def _run_campaign(learner, X, y, X_test, y_test, *, initial_idx, query_size, n_cycles,
                  callback=None, scorer=None):
    """Simulate one campaign: fit on ``initial_idx``, then query/teach ``n_cycles`` times.

    Returns a list of dicts, one per trained model (cycle 0 .. n_cycles), with
    ``cycle``, ``n_labeled``, ``score`` (``scorer``, default accuracy, on the
    test set), ``fit_time``, ``query_time`` (seconds spent choosing the
    batch that led to this model; 0 for cycle 0) and ``labels`` (the labels
    added at that cycle; cycle 0: the initial set's).
    """
    learner = clone(learner)
    scorer = scorer or check_scoring(learner, scoring="accuracy")
    unlabeled = np.ones(len(y), dtype=bool)
    unlabeled[initial_idx] = False
    start = time.perf_counter()
    learner.fit(take(X, initial_idx), y[initial_idx])
    records = [_record(learner, scorer, X_test, y_test, 0, time.perf_counter() - start, 0.0,
                       y[initial_idx])]
    if callback is not None:
        callback(records[-1])
    for cycle in range(1, n_cycles + 1):
        pool = np.flatnonzero(unlabeled)
        if len(pool) == 0:
            break
        start = time.perf_counter()
        chosen = pool[learner.query(take(X, pool), min(query_size, len(pool)))]
        query_time = time.perf_counter() - start
        unlabeled[chosen] = False
        start = time.perf_counter()
        learner.teach(take(X, chosen), y[chosen])
        records.append(_record(learner, scorer, X_test, y_test, cycle, time.perf_counter() - start,
                               query_time, y[chosen]))
        if callback is not None:
            callback(records[-1])
    return records


def _record(learner, scorer, X_test, y_test, cycle, fit_time, query_time, labels):
    return {
        "labels": np.asarray(labels),
        "cycle": cycle,
        "n_labeled": len(learner.y_labeled_),
        "score": float(scorer(learner, X_test, y_test)),
        "fit_time": fit_time,
        "query_time": query_time,
    }
