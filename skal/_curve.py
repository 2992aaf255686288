"""ActiveLearningCurve: the result of a campaign simulation, its paired comparisons and its files."""

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._campaign import normalised_auc
from ._stats import PairedDifferences, paired_t_interval

__all__ = ["ActiveLearningCurve"]

_METRICS = ("auc", "final", "cycles")


@dataclass
class ActiveLearningCurve:
    """Result of :func:`~skal.model_selection.active_learning_curve`.

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
        ``n_cycles`` and ``n_repeats``; from :func:`~skal.model_selection.active_learning_curve`
        also ``provenance`` (what the run needs to be repeated: data
        checksums, every learner's parameters, seeds, initial sets,
        versions, devices, machine). ``config`` is reserved for the
        ``skal simulate`` options that produced the result. Everything in it
        must be JSON-able for :meth:`to_json`.
    class_counts : ndarray of shape (n_learners, n_repeats, n_cycles + 1, n_classes) or None
        How the labels added at each cycle spread over the classes (cycle 0:
        the initial set), in the order of ``classes``.
    classes : ndarray of shape (n_classes,) or None
        The labels counted in ``class_counts``.
    reference : str or None
        The method the others are compared with (:meth:`paired_differences`,
        the Δ rows of :meth:`table`). None: the method named ``"random"``
        (any case), if there is one.
    stopped_at : ndarray of shape (n_learners, n_repeats), dtype int64, or None
        With a ``stopping`` criterion: the cycle at which it first said stop
        in each campaign, -1 where it never did (:attr:`stop_labeled` gives
        the labeled-set sizes). None without a criterion.

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
    reference: str | None = None
    stopped_at: np.ndarray | None = None

    @property
    def stop_labeled(self):
        """Labeled-set size at which each campaign's stopping criterion said stop, (n_learners, n_repeats).

        NaN where it never did, or without a criterion (``stopped_at`` None).
        """
        if self.stopped_at is None:
            return None
        at = np.asarray(self.stopped_at)
        sizes = np.asarray(self.n_labeled, dtype=np.float64)[np.clip(at, 0, None)]
        return np.where(at >= 0, sizes, np.nan)

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
        return normalised_auc(self.scores, self.n_labeled)

    # --- paired comparisons ---------------------------------------------------

    def reference_name(self, reference=None):
        """The method the others are compared with, or None when there is none.

        Parameters
        ----------
        reference : str or None, default=None
            A method's name; None takes :attr:`reference`, else the method
            named ``"random"`` (any case).

        Returns
        -------
        str or None
        """
        if reference is None:
            reference = self.reference
            if reference is None:
                return next((name for name in self.names if name.lower() == "random"), None)
        if not isinstance(reference, str):
            raise TypeError(f"reference must be a method's name (str) or None, got {type(reference).__name__}.")
        if reference not in self.names:
            raise ValueError(f"reference: {reference!r} is not one of the methods compared: {self.names}.")
        return reference

    def paired_differences(self, metric="auc", reference=None, *, confidence=0.95):
        """Per-repeat differences of every method to the reference, with a paired t interval.

        Within a repeat all methods share the initial set and the seed, so
        ``method - reference`` pairs them. The interval is Student's t over
        the ``n`` repeats: ``mean ± t_{(1 + confidence) / 2, n - 1} * sd /
        sqrt(n)`` with ``sd`` the sample standard deviation (``ddof=1``) of
        the differences. With a single repeat it is undefined (NaN bounds).

        Parameters
        ----------
        metric : {"auc", "final", "cycles"}, default="auc"
            The normalised area under each repeat's curve (:attr:`auc`), the
            last cycle's score, or every cycle's score.
        reference : str or None, default=None
            The method to compare with (see :meth:`reference_name`).
        confidence : float, default=0.95
            The interval's coverage, in (0, 1).

        Returns
        -------
        PairedDifferences
            For every method but the reference, in the order of ``names``.

        Raises
        ------
        ValueError
            If there is no reference (no method named ``"random"`` and none
            given), or the reference is the only method.

        Examples
        --------
        >>> import numpy as np
        >>> from skal.model_selection import ActiveLearningCurve
        >>> scores = np.array([[[0.5, 0.7], [0.6, 0.9]], [[0.5, 0.6], [0.6, 0.7]]])
        >>> zeros = np.zeros_like(scores)
        >>> result = ActiveLearningCurve(["margin", "random"], np.array([10, 20]), scores, zeros, zeros)
        >>> result.paired_differences("cycles").mean.round(2).tolist()
        [[0.0, 0.15]]
        """
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {list(_METRICS)}, got {metric!r}.")
        if (isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating))
                or not 0 < confidence < 1):
            raise ValueError(f"confidence must be a float in (0, 1), got {confidence!r}.")
        name = self.reference_name(reference)
        if name is None:
            raise ValueError(f"reference: no method is named 'random'; pass reference= one of {self.names}.")
        others = [i for i, other in enumerate(self.names) if other != name]
        if not others:
            raise ValueError(f"reference: {name!r} is the only method; there is nothing to compare with it.")
        per_repeat = {"auc": self.auc, "final": np.asarray(self.scores)[..., -1],
                      "cycles": np.asarray(self.scores, dtype=np.float64)}[metric]
        ref = self.names.index(name)
        values = per_repeat[others] - per_repeat[ref]
        mean, low, high = paired_t_interval(values, confidence, axis=1)
        return PairedDifferences([self.names[i] for i in others], name, metric, values, mean, low, high,
                                 n=int(values.shape[1]), confidence=float(confidence))

    # --- reports ----------------------------------------------------------------

    def table(self):
        """Markdown table: one row per cycle, ``mean ± std`` per learner, then AUC, Δ rows and time.

        With a reference method (:meth:`reference_name`), two rows give each
        other method's paired difference to it, of the AUC and of the final
        score (:meth:`paired_differences`): ``mean [low, high]`` with the 95%
        paired t interval over repeats, and ``*`` when the interval excludes
        zero. With one repeat, or the same difference in every repeat, there
        is no interval (the cell says so).

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
        reference = self.reference_name()
        if reference is not None and len(self.names) > 1:
            for metric, label in (("auc", "AUC"), ("final", "final")):
                diff = self.paired_differences(metric, reference)
                cells = {name: _difference(diff, j) for j, name in enumerate(diff.names)}
                cells[reference] = "(reference)"
                rows.append(f"| Δ {label} vs {reference} (95% CI) | | "
                            + " | ".join(cells[name] for name in self.names) + " |")
        seconds = " | ".join(f"{(f + q).sum() / f.shape[0]:.1f} s"
                             for f, q in zip(self.fit_times, self.query_times))
        rows.append(f"| time / repeat | | {seconds} |")
        if self.class_counts is not None and len(self.n_labeled) > 1:
            spread = " | ".join(_mean_std(e[:, 1:].mean(axis=1)) for e in self.pick_entropy)
            rows.append(f"| pick spread | | {spread} |")
        if self.stopped_at is not None:
            cells = []
            for sizes in self.stop_labeled:
                stopped = sizes[~np.isnan(sizes)]
                cells.append(f"{len(stopped)}/{len(sizes)} stopped" + (
                    f", at {int(np.median(stopped))} labels (median)" if len(stopped) else ""))
            rows.append(f"| stopping criterion | | {' | '.join(cells)} |")
        return "\n".join([header, rule, *rows])

    def to_records(self):
        """One dict per (learner, repeat, cycle): the long format of CSV files.

        Returns
        -------
        list of dict
            Keys ``selector``, ``repeat``, ``cycle``, ``n_labeled``, the
            scorer's name, ``fit_time`` and ``query_time`` (and
            ``pick_entropy`` with ``class_counts``).

        See Also
        --------
        paired_records : The paired comparisons, in the same long format.
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

    def paired_records(self, reference=None):
        """One dict per (method, metric) of the paired differences to the reference (95% paired t).

        Parameters
        ----------
        reference : str or None, default=None
            See :meth:`reference_name`.

        Returns
        -------
        list of dict
            Keys ``selector``, ``reference``, ``metric`` (``auc``, ``final``
            or ``cycle``), ``cycle`` and ``n_labeled`` (per-cycle rows only,
            else None), ``n`` (repeats), ``mean``, ``low``, ``high`` (NaN
            with one repeat), ``excludes_zero`` and ``confidence``; empty
            without a reference or with a single method.
        """
        name = self.reference_name(reference)
        if name is None or len(self.names) < 2:
            return []
        records = []
        for metric in _METRICS:
            diff = self.paired_differences(metric, name)
            cycles = range(len(self.n_labeled)) if metric == "cycles" else [None]
            for j, method in enumerate(diff.names):
                for c in cycles:
                    at = (j,) if c is None else (j, c)
                    records.append({
                        "selector": method, "reference": name,
                        "metric": "cycle" if c is not None else metric,
                        "cycle": c, "n_labeled": None if c is None else int(self.n_labeled[c]),
                        "n": diff.n, "mean": float(diff.mean[at]), "low": float(diff.low[at]),
                        "high": float(diff.high[at]), "excludes_zero": bool(diff.excludes_zero[at]),
                        "confidence": diff.confidence,
                    })
        return records

    def to_csv(self, path, *, paired_path=None):
        """Write :meth:`to_records` as CSV (and :meth:`paired_records` to a second file).

        Parameters
        ----------
        path : str or path-like
            The file to write (overwritten): one row per (learner, repeat, cycle).
        paired_path : str or path-like or None, default=None
            Where to write the paired differences to the reference, one row
            per (method, metric[, cycle]); None writes none. A result without
            a reference writes only the header.
        """
        _write_csv(path, self.to_records())
        if paired_path is not None:
            _write_csv(paired_path, self.paired_records(), fieldnames=[
                "selector", "reference", "metric", "cycle", "n_labeled", "n", "mean", "low", "high",
                "excludes_zero", "confidence"])

    def to_json(self, path):
        """Write the whole result as JSON (arrays as lists), with the paired differences.

        The file holds the fields (``names``, ``n_labeled``, ``scores``,
        ``fit_times``, ``query_times``, ``scoring``, ``meta`` with its
        ``provenance`` and ``config``, ``class_counts``, ``classes`` with
        their dtype, ``reference``) that :meth:`from_json` reads back, and
        for reading elsewhere the derived ``mean``, ``std``, ``auc``,
        ``pick_entropy`` and ``paired`` (:meth:`paired_differences` for
        ``auc``, ``final`` and ``cycles``; undefined bounds as null).

        Parameters
        ----------
        path : str or path-like
            The file to write (overwritten).
        """
        reference = self.reference_name()
        data = {
            "names": self.names, "n_labeled": np.asarray(self.n_labeled).tolist(), "scoring": self.scoring,
            "scores": np.asarray(self.scores).tolist(), "fit_times": np.asarray(self.fit_times).tolist(),
            "query_times": np.asarray(self.query_times).tolist(), "mean": self.mean.tolist(),
            "std": self.std.tolist(), "auc": self.auc.tolist(), "meta": self.meta,
            "reference": self.reference,
            "stopped_at": None if self.stopped_at is None else np.asarray(self.stopped_at).tolist(),
        }
        if self.class_counts is not None:
            classes = np.asarray(self.classes)
            data["classes"] = classes.tolist()
            data["classes_dtype"] = classes.dtype.str
            data["class_counts"] = np.asarray(self.class_counts).tolist()
            data["pick_entropy"] = self.pick_entropy.tolist()
        if reference is not None and len(self.names) > 1:
            data["paired"] = {metric: self.paired_differences(metric, reference).to_dict()
                              for metric in _METRICS}
        with open(path, "w") as f:
            json.dump(data, f, indent=2, default=_json_default)

    @classmethod
    def from_json(cls, path):
        """Read back a result written by :meth:`to_json`.

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        ActiveLearningCurve
            Arrays as numpy (``n_labeled`` and ``class_counts`` int64,
            scores and times float64, ``classes`` in their recorded dtype),
            ``meta`` as written; derived values are recomputed, not read.

        Raises
        ------
        ValueError
            If the file is not JSON or lacks a field the result needs.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from skal.model_selection import ActiveLearningCurve
        >>> scores = np.array([[[0.5, 0.7], [0.6, 0.9]]])
        >>> result = ActiveLearningCurve(["margin"], np.array([10, 20]), scores, scores * 0, scores * 0)
        >>> path = os.path.join(tempfile.mkdtemp(), "results.json")
        >>> result.to_json(path)
        >>> bool(np.array_equal(ActiveLearningCurve.from_json(path).scores, scores))
        True
        """
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not a JSON file ({error}).") from error
        required = ("names", "n_labeled", "scores", "fit_times", "query_times")
        missing = [key for key in required if not isinstance(data, dict) or key not in data]
        if missing:
            raise ValueError(f"{path}: not an ActiveLearningCurve result, it lacks {missing}.")
        class_counts = classes = None
        if data.get("class_counts") is not None:
            class_counts = np.asarray(data["class_counts"], dtype=np.int64)
            classes = np.asarray(data["classes"], dtype=np.dtype(data.get("classes_dtype")))
        return cls(list(data["names"]), np.asarray(data["n_labeled"], dtype=np.int64),
                   *(np.asarray(data[key], dtype=np.float64) for key in ("scores", "fit_times", "query_times")),
                   scoring=data.get("scoring", "accuracy"), meta=data.get("meta", {}),
                   class_counts=class_counts, classes=classes, reference=data.get("reference"),
                   stopped_at=(None if data.get("stopped_at") is None
                               else np.asarray(data["stopped_at"], dtype=np.int64)))


def _write_csv(path, records, fieldnames=None):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames or list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"meta: {type(value).__name__} values cannot be written as JSON")


def _mean_std(values):
    values = np.asarray(values)
    return f"{values.mean():.4f} ± {values.std():.4f}" if values.size > 1 else f"{values.mean():.4f}"


def _difference(diff, j):
    if diff.n < 2:
        return f"{diff.mean[j]:+.4f} (1 repeat: no CI)"
    if diff.no_spread[j]:
        return f"{diff.mean[j]:+.4f} (no spread: no CI)"
    mark = " *" if diff.excludes_zero[j] else ""
    return f"{diff.mean[j]:+.4f} [{diff.low[j]:+.4f}, {diff.high[j]:+.4f}]{mark}"
