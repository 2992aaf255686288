"""Campaign simulation: run active learning with known labels as the oracle, and compare strategies."""

import numbers
import os
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, cpu_count, delayed, effective_n_jobs
from sklearn.base import clone
from sklearn.metrics import check_scoring
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from . import _provenance
from ._campaign import (check_budget, check_count, check_data, check_n_jobs, configured, draw_repeats,
                        run_campaign, samples_shape)
from ._campaign_estimator import CampaignEstimator
from ._curve import ActiveLearningCurve
from ._data import check_same_length, named_errors, take
from ._stats import PairedDifferences

__all__ = ["active_learning_curve", "ActiveLearningCurve", "CampaignEstimator", "PairedDifferences"]


def active_learning_curve(learner, X, y, *, X_test=None, y_test=None, initial_size, query_size,
                          n_cycles, n_repeats=3, scoring="accuracy", n_jobs=None,
                          random_state=None, verbose=0, reference=None, data_name=None,
                          initial_strategy="random", stopping=None):
    """Simulate active-learning campaigns with ``y`` as the annotator.

    For each repeat, a seeded random initial set of ``initial_size`` samples
    is drawn from ``X`` and shared by every learner compared; each learner is
    fitted on it and then, ``n_cycles`` times, queries ``query_size`` samples
    from the rest of ``X``, is taught their labels from ``y`` and retrains.
    The test score is recorded after every training. Repeats also share the
    learners' ``random_state`` (one per repeat), so differences between
    learners come from their selectors, not from their initialisation, and
    the result pairs every method with a reference, repeat by repeat
    (:meth:`ActiveLearningCurve.paired_differences`).

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
        A scikit-learn scorer; it must return a finite number for every
        model (a NaN raises a ValueError naming ``scoring``).
    n_jobs : int or None, default=None
        Campaigns (learner x repeat) run in parallel through joblib; any
        joblib backend (e.g. Dask) applies. None or 1: one at a time; -1:
        as many as CPUs, -2 all but one, down to ``-cpu_count``.
    random_state : int, RandomState instance or None, default=None
        Seeds the test split, the initial sets and the learners.
    verbose : int, default=0
        ``>= 1`` shows a progress bar over the campaigns (on stderr) and, when
        campaigns run in this process, one line per trained model.
    reference : str or None, default=None
        The learner the others are compared with. None: the one named
        ``"random"`` (any case), else the first whose selector is
        :class:`~skal.selectors.Random`, else none.
    data_name : str or None, default=None
        The data's name or path, recorded in ``meta["provenance"]`` next to
        the arrays' checksums.
    initial_strategy : {"random", "kmeans", "kcenter", "typiclust"}, default="random"
        How each repeat's initial set is chosen from ``X`` without labels:
        uniformly at random, or by :func:`skal.initial.initial_batch` (the
        samples nearest the k-means centres, k-center greedy, or TypiClust's
        most typical samples of the largest clusters), seeded per repeat. The initial set is shared by every learner of a repeat.
    stopping : skal.stopping.StoppingCriterion or None, default=None
        A stopping criterion (e.g. :class:`~skal.stopping.StabilizingPredictions`),
        cloned for each campaign and updated after every training; the
        campaign runs on regardless, and the result records in
        :attr:`ActiveLearningCurve.stopped_at` the cycle at which it would
        have stopped.

    Returns
    -------
    ActiveLearningCurve
        Its ``meta["provenance"]`` records the data (shapes, dtypes, sha256
        of the bytes of ``X``, ``y``, ``X_test``, ``y_test``; the held-out
        split), every learner's parameters as :meth:`ActiveLearner.save
        <skal.ActiveLearner.save>` encodes them, the seeds (``random_state``,
        each repeat's ``[initial-set seed, learner seed]``, the initial sets'
        indices into the pool), the versions of skal and its dependencies,
        the learners' devices and the machine (CPU model and SIMD flags,
        cores, GPUs).

    See Also
    --------
    CampaignEstimator : One campaign as a scikit-learn estimator, for model selection.

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
    >>> result.scores.shape, result.n_labeled.tolist(), result.reference
    ((2, 2, 3), [10, 20, 30], 'random')
    >>> result.paired_differences("auc").values.shape
    (1, 2)
    """
    # everything is checked before the first campaign trains anything
    learners = _check_learners(learner)
    for name, value in {"initial_size": initial_size, "query_size": query_size,
                        "n_cycles": n_cycles, "n_repeats": n_repeats}.items():
        check_count(value, name, minimum=0 if name == "n_cycles" else 1)
    if isinstance(verbose, bool) or not isinstance(verbose, numbers.Integral):
        raise TypeError(f"verbose must be an integer, got {type(verbose).__name__}.")
    check_n_jobs(n_jobs)
    reference = _resolve_reference(reference, learners)
    if initial_strategy not in ("random", "kmeans", "kcenter", "typiclust"):
        raise ValueError("initial_strategy must be 'random', 'kmeans', 'kcenter' or 'typiclust', got "
                         f"{initial_strategy!r}.")
    if stopping is not None and not hasattr(stopping, "update"):
        raise TypeError(f"stopping must be a stopping criterion (skal.stopping) or None, got "
                        f"{type(stopping).__name__}.")
    if data_name is not None and not isinstance(data_name, str | Path):
        raise TypeError(f"data_name must be a str, a path or None, got {type(data_name).__name__}.")
    X, y = check_data(X, y, "X", "y")
    if len(X) != len(y):
        raise ValueError(f"X and y have inconsistent lengths: {len(X)} and {len(y)}.")
    if (X_test is None) != (y_test is None):
        raise ValueError("y_test given without X_test." if X_test is None else "X_test given without y_test.")
    if X_test is not None:
        X_test, y_test = check_data(X_test, y_test, "X_test", "y_test")
        check_same_length(X_test, y_test, "X_test", "y_test")
        shapes = [samples_shape(data) for data in (X, X_test)]
        if shapes[0] != shapes[1]:
            raise ValueError(f"X_test has samples of shape {shapes[1]}, but X has samples of shape {shapes[0]}.")
    with named_errors("scoring"):
        check_scoring(next(iter(learners.values())), scoring=scoring)
    with named_errors("random_state"):
        rng = check_random_state(random_state)
    data = {"name": None if data_name is None else str(data_name), "X": _provenance.describe(X),
            "y": _provenance.describe(y), "X_test": _provenance.describe(X_test),
            "y_test": _provenance.describe(y_test), "preprocessing": None}
    if X_test is None:
        split_seed = rng.randint(np.iinfo(np.int32).max)
        try:
            train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y,
                                           random_state=split_seed)
        except ValueError as error:
            raise ValueError(f"y: cannot hold out a stratified 20% test split: {error} "
                             "Pass X_test and y_test.") from error
        data["test_split"] = {"held_out": 0.2, "stratified": True, "seed": int(split_seed),
                              "test_indices_sha256": _provenance.checksum(np.sort(test).astype(np.int64))}
        X, y, X_test, y_test = take(X, train), y[train], take(X, test), y[test]
    check_budget(initial_size, query_size, n_cycles, len(y))
    seeds, initial_sets = draw_repeats(rng, len(y), initial_size, n_repeats, X, initial_strategy)
    classes = np.unique(y)
    data.update(n_pool=len(y), n_test=len(y_test), sample_shape=list(samples_shape(X)),
                classes=classes.tolist())
    provenance = _provenance.campaign_record(data, learners, random_state, seeds, initial_sets)
    tasks = [(name, r) for name in learners for r in range(n_repeats)]
    # parallel campaigns never oversubscribe the cores: each uses at most cores // workers threads
    # (in worker processes by the job itself, in this process's threads here)
    threads = _threads_per_worker(n_jobs)
    jobs = (
        delayed(_campaign)(
            configured(learners[name], int(seeds[r][1]), classes),
            X, y, X_test, y_test, initial_idx=initial_sets[r], query_size=query_size,
            n_cycles=n_cycles, scoring=scoring, label=f"{name} repeat {r}" if verbose else None,
            stopping=None if stopping is None else clone(stopping), threads=threads, parent=os.getpid(),
        )
        for name, r in tasks
    )
    shape = (len(learners), n_repeats, n_cycles + 1)
    scores, fit_times, query_times = np.empty(shape), np.empty(shape), np.empty(shape)
    class_counts = np.zeros(shape + (len(classes),), dtype=np.int64)
    stopped_at = np.full(shape[:2], -1, dtype=np.int64)
    # results stream back as campaigns finish, so the bar moves under any backend
    progress = tqdm(total=len(tasks), desc="campaigns", unit="campaign", disable=verbose < 1,
                    file=sys.stderr, leave=False, mininterval=0)
    with progress, _limited_threads(threads):
        for (name, r), records in zip(tasks, Parallel(n_jobs=n_jobs, return_as="generator")(jobs)):
            i = list(learners).index(name)
            scores[i, r] = [rec["score"] for rec in records]
            fit_times[i, r] = [rec["fit_time"] for rec in records]
            query_times[i, r] = [rec["query_time"] for rec in records]
            class_counts[i, r] = [np.bincount(np.searchsorted(classes, rec["labels"]),
                                              minlength=len(classes)) for rec in records]
            stops = [rec["cycle"] for rec in records if rec.get("stop")]
            stopped_at[i, r] = stops[0] if stops else -1
            progress.update(1)
    n_labeled = np.array([initial_size + c * query_size for c in range(n_cycles + 1)])
    scorer_name = scoring if isinstance(scoring, str) else getattr(scoring, "__name__", "score")
    return ActiveLearningCurve(list(learners), n_labeled, scores, fit_times, query_times,
                               scoring=scorer_name,
                               meta={"initial_size": initial_size, "query_size": query_size,
                                     "n_cycles": n_cycles, "n_repeats": n_repeats,
                                     "initial_strategy": initial_strategy, "provenance": provenance},
                               class_counts=class_counts, classes=classes, reference=reference,
                               stopped_at=None if stopping is None else stopped_at)


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


def _resolve_reference(reference, learners):
    """The reference learner's name: the one given, else "random" by name, else by selector."""
    from .selectors import Random

    if reference is not None:
        if not isinstance(reference, str):
            raise TypeError(f"reference must be a learner's name (str) or None, got {type(reference).__name__}.")
        if reference not in learners:
            raise ValueError(f"reference: {reference!r} is not one of the learners compared: {list(learners)}.")
        return reference
    by_name = [name for name in learners if name.lower() == "random"]
    by_selector = [name for name, value in learners.items() if type(value.selector) is Random]
    return (by_name + by_selector + [None])[0]


def _threads_per_worker(n_jobs):
    """Threads each of ``n_jobs`` parallel campaigns may use so that workers x threads <= cores.

    None for campaigns run one at a time (the thread count is then left as it is).
    """
    workers = effective_n_jobs(n_jobs)
    if workers <= 1:
        return None
    return max(1, cpu_count() // workers)


@contextmanager
def _limited_threads(threads):
    """At most ``threads`` threads for torch and the BLAS / OpenMP pools (threadpoolctl) inside."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, threads))
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def _campaign(learner, X, y, X_test, y_test, *, initial_idx, query_size, n_cycles, scoring, label=None,
              stopping=None, threads=None, parent=None):
    if parent is not None and os.getpid() == parent:
        # a thread of this process (joblib's threading backend): the caller limited torch and
        # the BLAS pools, which are process-wide; OpenMP's thread count is each thread's own, so
        # it is limited here, for this thread only
        limits = nullcontext() if threads is None else threadpool_limits(limits=threads, user_api="openmp")
        threads = None
    else:
        limits = nullcontext()
    with limits, _limited_threads(threads):
        return _run_campaign(learner, X, y, X_test, y_test, initial_idx=initial_idx, query_size=query_size,
                             n_cycles=n_cycles, scoring=scoring, label=label, stopping=stopping)


def _run_campaign(learner, X, y, X_test, y_test, *, initial_idx, query_size, n_cycles, scoring, label=None,
                  stopping=None):
    scorer = check_scoring(learner, scoring=scoring)

    def report(record, learner):
        if stopping is not None:
            record["stop"] = bool(stopping.update(learner))
        if label is not None:
            print(f"[{label}] cycle {record['cycle']}: {record['n_labeled']} labeled, "
                  f"score {record['score']:.4f}", flush=True)

    records = run_campaign(learner, X, y, initial_idx=initial_idx, query_size=query_size,
                           n_cycles=n_cycles, evaluate=lambda fitted: scorer(fitted, X_test, y_test),
                           on_model=report)
    # the fitted learner stays in the worker: only the numbers travel back
    return [{key: rec.get(key) for key in ("cycle", "score", "fit_time", "query_time", "labels", "stop")}
            for rec in records]
