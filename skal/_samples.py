"""The learner's samples: their checks and conversion, and the recognition of its pool.

- :func:`check_fit_samples` and :func:`check_samples` validate what ``fit`` and
  the later methods are given: float32 arrays, Datasets streamed unread, or for a
  Pipeline the samples as given (:func:`given`: a DataFrame stays a DataFrame);
  a non-finite row is refused naming its row (:func:`check_finite`);
- :func:`transform` passes samples through a Pipeline's transformers, and
  :func:`concat_rows` appends labeled rows in their form;
- :func:`split_pool` reads ``fit``'s ``unlabeled`` marker into a pool state,
  :func:`own_pool` recognises the pool again (or the pool with rows appended,
  through :mod:`skal._fingerprint`), :func:`check_rows` checks row indices into
  it and :func:`finite_candidates` leaves out or names its non-finite rows.
"""

import numbers
import warnings

import numpy as np
import torch
from scipy.sparse import issparse
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import validate_data
from torch.utils.data import Subset

from ._bookkeeping import LABELED_ROW, UNLABELED, UNLABELED_ROW, PoolState, Rows
from ._bookkeeping import fingerprint as legacy_fingerprint
from ._data import (FeaturesDataset, check_array_like, check_same_length, is_dataset, item_features, materialize,
                    named_errors, sample_shape)
from ._fingerprint import compare, deterministic, fingerprint
from .selectors.base import LabeledData

__all__ = ["check_fit_samples", "check_samples", "transform", "as_float32", "split_pool", "check_marker",
           "unlabeled_mask", "own_pool", "pool_fingerprint", "require_pool", "check_rows", "labeled_data",
           "resolve_classes", "check_labels", "check_n", "check_finite", "non_finite_rows", "rows_text",
           "given", "concat_rows", "finite_candidates"]

TRANSFORM_CHUNK = 65536  # pool rows per Pipeline transform call
_FINITE_CHUNK = 16384  # pool rows per check of finite values


class _FeatureProbe(BaseEstimator):
    """Takes the ``n_features_in_`` / ``feature_names_in_`` that ``validate_data`` sets."""


def _untracked(X):
    """A tensor's values as numpy (scikit-learn's checks cannot read a tensor needing grad)."""
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    return X


def check_fit_samples(X, rows=None, as_given=False):
    """``(X as float32, n_features_in_, feature_names_in_)``; ``rows``: X's rows in the pool.

    ``as_given`` (the estimator is a Pipeline): X is kept in its own form (see :func:`given`).
    """
    if is_dataset(X):
        if len(X) == 0:
            raise ValueError("X is empty: it needs at least one sample.")
        X = materialize(X, "X", finite=False)
    probe = _FeatureProbe()
    if as_given and not issparse(X):
        X = given(X, "X")
        with named_errors("X"):
            validate_data(probe, X, skip_check_array=True)
        return X, probe.n_features_in_, getattr(probe, "feature_names_in_", None)
    with named_errors("X"):
        X = validate_data(probe, _untracked(X), allow_nd=True, dtype=np.float32, order="C", copy=True,
                          ensure_all_finite=False)
    check_finite(X, "X", rows)
    return X, probe.n_features_in_, getattr(probe, "feature_names_in_", None)


def non_finite_rows(X, rows=None):
    """The rows (of ``rows``, default all) of X holding NaN or infinity, in order.

    X is a float array or a torch Dataset (read item by item); an array's check is
    vectorised, a Dataset's reads every item asked for.
    """
    rows = np.arange(len(X)) if rows is None else np.asarray(rows, dtype=np.int64)
    if is_dataset(X):
        data = X.dataset if isinstance(X, FeaturesDataset) else X
        bad = [row for row in rows.tolist() if not bool(torch.isfinite(item_features(data, row)).all())]
        return np.asarray(bad, dtype=np.int64)
    whole = len(rows) == len(X)  # every row, in order: read in place
    bad = []
    for start in range(0, len(rows), _FINITE_CHUNK):  # a chunk at a time: the pool is never copied
        part = rows[start:start + _FINITE_CHUNK]
        values = np.asarray(X[start:start + len(part)] if whole else X[part])
        # a sum is NaN or infinite whenever an element is; only such rows need the exact check
        sums = values.reshape(len(values), -1).sum(axis=1, dtype=np.float64)
        suspect = np.flatnonzero(~np.isfinite(sums))
        if len(suspect):
            finite = np.isfinite(values[suspect].reshape(len(suspect), -1)).all(axis=1)
            bad.append(part[suspect[~finite]])
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def check_finite(X, name, rows=None):
    """A ValueError naming ``name`` and the first rows of the float array X that are not finite.

    ``rows`` maps X's positions to the rows the user knows (a pool's), when they differ.
    """
    bad = non_finite_rows(X)
    if len(bad):
        named = bad if rows is None else np.asarray(rows)[bad]
        raise ValueError(f"{name} contains NaN or infinity in {rows_text(named)}.")


def rows_text(rows):
    rows = np.asarray(rows).tolist()
    if len(rows) == 1:
        return f"row {rows[0]}"
    return f"rows {rows[:10]}{' ...' if len(rows) > 10 else ''} ({len(rows)} rows)"


def given(X, name):
    """Samples for a Pipeline, in their own form: a DataFrame as a DataFrame (its own index
    dropped), an array of strings or other values as such; an array of numbers as float32,
    as without a Pipeline (the labeled set of numbers stays one float32 array)."""
    if hasattr(X, "iloc") and hasattr(X, "columns"):
        return X.reset_index(drop=True)
    X = _untracked(X)
    values = np.array(X, copy=True)
    if values.dtype.kind in "biuf":
        values = values.astype(np.float32)
    if values.ndim < 2:
        raise ValueError(f"{name}: Expected 2D array, got {values.ndim}D array instead.")
    if len(values) == 0:
        raise ValueError(f"{name} is empty: it needs at least one sample.")
    return values


def check_samples(learner, state, X, name, stream=False, finite=True, rows=None):
    """Validated samples: a float32 array, or for ``stream`` a Dataset left unread.

    Arrays and DataFrames go through scikit-learn's ``validate_data(reset=False)`` on
    ``learner``, as in ``predict``: the feature count and column names must be those of ``fit``.
    A non-finite row is refused, naming it (``rows``: X's rows in the pool, when X is a part
    of it; ``finite=False``: left to the caller).
    """
    check_array_like(X, name)
    expected = state.labeled.X.shape[1:]
    if is_dataset(X):
        if len(X) == 0:
            raise ValueError(f"{name} is empty: it needs at least one sample.")
        shape = sample_shape(X, name)
        check_feature_shape((len(X), *shape), expected, name)
        if stream:
            return FeaturesDataset(X, name=name, shape=shape)
        X = materialize(X, name, finite=False)
    elif isinstance(state.estimator, Pipeline) and not issparse(X):
        # a Pipeline takes the samples as given (its transformers read the columns they need)
        X = given(X, name)
        with named_errors(name):
            validate_data(learner, X, reset=False, skip_check_array=True)
        check_feature_shape(X.shape, expected, name)
        return X
    with named_errors(name):
        X = validate_data(learner, _untracked(X), reset=False, allow_nd=True, dtype=np.float32,
                          ensure_min_samples=0, ensure_all_finite=False)
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: it needs at least one sample.")
    check_feature_shape(X.shape, expected, name)
    if finite:
        check_finite(X, name, rows)
    return X


def check_feature_shape(shape, expected, name):
    shape = tuple(shape)
    if shape[1:] != tuple(expected):
        raise ValueError(
            f"{name} has samples of shape {shape[1:]}, but the learner was fitted on "
            f"samples of shape {tuple(expected)}."
        )


def as_float32(X):
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    return X.astype(np.float32, copy=False)


def transform(state, X, name):
    """X as the net sees it: through a Pipeline's transformers, once, in chunks."""
    if not isinstance(state.estimator, Pipeline):
        return X
    if is_dataset(X):
        raise TypeError(f"{name}: a torch Dataset cannot go through a Pipeline's transformers; "
                        "pass an array, or use an ActiveNet as the estimator.")
    transformers = state.estimator[:-1]
    if isinstance(X, Rows):  # some rows of the pool, gathered a chunk at a time
        data, positions = X.data, X.rows
    else:
        data, positions = X, np.arange(len(X))
    parts = [as_float32(transformers.transform(_safe_indexing(data, positions[start:start + TRANSFORM_CHUNK])))
             for start in range(0, len(positions), TRANSFORM_CHUNK)]
    return np.concatenate(parts)


def concat_rows(a, b):
    """The rows of ``a`` then ``b``: arrays concatenated, DataFrames with their columns and dtypes."""
    if not hasattr(a, "iloc"):
        return np.concatenate([a, b])
    import pandas as pd  # a DataFrame was given: pandas is there

    out = pd.concat([a, b], ignore_index=True)
    for column in a.columns:  # two categoricals of other categories concatenate to object
        if isinstance(a[column].dtype, pd.CategoricalDtype) and out[column].dtype != a[column].dtype:
            categories = a[column].cat.categories.union(pd.Index(b[column].dropna().unique()), sort=False)
            out[column] = out[column].astype(pd.CategoricalDtype(categories, a[column].cat.ordered))
    return out


def finite_candidates(X, rows, non_finite, own):
    """The candidate rows (None: all) of the float array or Dataset X, without non-finite ones
    for ``non_finite="leave_out"``, else a ValueError naming them. ``own``: X is the learner's pool.

    A Dataset is checked as it is streamed (naming the row) unless rows are left out.
    """
    if is_dataset(X) and non_finite == "raise":
        return rows
    bad = non_finite_rows(X, rows)
    if len(bad) and non_finite == "raise":
        remedy = "skip them (learner.skip(rows)) or" if own else "to leave them out,"
        raise ValueError(f"X_pool contains NaN or infinity in {rows_text(bad)}; {remedy} pass "
                         "non_finite='leave_out'.")
    if len(bad):
        rows = np.setdiff1d(np.arange(len(X)) if rows is None else rows, bad)
    return rows


# --- the pool ---------------------------------------------------------------------------------


def unlabeled_mask(y, marker):
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


def check_marker(marker):
    """The ``unlabeled`` parameter: a bool (an int to Python) would mark every row labeled 1 or 0."""
    if isinstance(marker, (bool, np.bool_)):
        raise InvalidParameterError(
            f"The 'unlabeled' parameter of ActiveLearner must be an int, float, str or None (the label "
            f"that marks rows not labeled yet, e.g. skal.UNLABELED = {UNLABELED}), not a bool: got "
            f"{marker!r}.")


def split_pool(X, y, marker, classes):
    """``(labeled X, their y, pool state or None, their pool rows)``: ``y == marker`` marks a pool."""
    marked = unlabeled_mask(y, marker)
    if marker is None:
        _warn_unmarked(y)
    if marked.any() and classes is not None and unlabeled_mask(np.asarray(classes), marker).any():
        raise ValueError(f"unlabeled={marker!r} is also one of classes: choose a marker "
                         "that is not a label.")
    rows = np.flatnonzero(~marked)
    if not marked.any():
        return X, y, None, np.full(len(y), -1, dtype=np.int64)
    check_same_length(X, y)
    if len(rows) == 0:
        raise ValueError(
            f"y: every row is unlabeled ({marker!r}), so there is nothing to train on; "
            "label a first batch (e.g. the rows skal.initial.initial_batch(X, n) chooses).")
    labeled_X = Subset(X, rows.tolist()) if is_dataset(X) else _safe_indexing(X, rows)
    shape = tuple(sample_shape(X, "X")) if is_dataset(X) else tuple(np.shape(X)[1:])
    status = np.where(marked, UNLABELED_ROW, LABELED_ROW).astype(np.int8)
    return labeled_X, y[rows], PoolState(status, pool_fingerprint(X), shape), rows


def _warn_unmarked(y):
    """Warn when ``skal.UNLABELED`` labels most rows of ``y`` but no ``unlabeled`` marker is set."""
    y = np.asarray(y)
    if y.dtype.kind not in "iuf" or len(y) == 0:
        return
    share = float(np.mean(y == UNLABELED))
    if share > 0.5:
        warnings.warn(
            f"y: {share:.0%} of the rows are labeled {UNLABELED} but unlabeled=None, so {UNLABELED} is "
            f"trained on as a class; if {UNLABELED} marks rows not labeled yet, set "
            "unlabeled=skal.UNLABELED.", UserWarning, stacklevel=4)


def own_pool(state, X, name="X_pool", other_dataset=False):
    """The pool state for ``X``: the learner's, that of its pool grown by appended rows, or None.

    None when the learner keeps no pool, or ``other_dataset`` says X is another dataset on
    purpose. A learner that keeps a pool refuses anything else: fewer rows, or rows that
    are not the pool's (a ValueError naming ``name`` and the rows that differ). Appended rows
    are new unlabeled rows.
    """
    pool = state.pool
    if pool is None or other_dataset:
        return None
    if len(pool.fingerprint) == 64 and ";" not in pool.fingerprint:  # a save of skal <= 0.4
        if len(X) == pool.n_rows and legacy_fingerprint(X) == pool.fingerprint:
            return pool
        raise ValueError(
            f"{name} is not the learner's pool of {pool.n_rows} rows (a save of an earlier skal, which "
            "recognises its pool only unchanged): pass that dataset, or other_dataset=True to query "
            "a different dataset on purpose.")
    grown = compare(X, pool.fingerprint, name)
    if grown is None:
        return pool
    new_rows = np.full(len(X) - pool.n_rows, UNLABELED_ROW, dtype=np.int8)
    return PoolState(np.concatenate([pool.status, new_rows]), grown, pool.sample_shape)


def pool_fingerprint(X):
    """The fingerprint ``fit`` keeps of its pool X; a Dataset that reads differently each time warns."""
    if deterministic(X):
        return fingerprint(X)
    warnings.warn(
        "X: the Dataset's items differ from one read to the next (random augmentation on read "
        "that does not draw from torch's random generator), so the learner recognises its pool by "
        "its length and item shape only. Give the learner the dataset without augmentation, and "
        "augment in training (ActiveNet's train_transform).", UserWarning, stacklevel=4)
    return fingerprint(X, contents=False)


def require_pool(state):
    if state.pool is None:
        raise ValueError(
            "The learner has no pool: rows are rows of the dataset given to fit with the "
            f"`unlabeled` marker (e.g. skal.UNLABELED, {UNLABELED}) in y for the rows not labeled yet.")
    return state.pool


def check_rows(pool, rows, name):
    """``rows`` as distinct int64 positions of ``pool`` (a PoolState)."""
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


# --- labels and counts ------------------------------------------------------------------------


def labeled_data(state):
    """The labeled set of ``state`` as the selectors see it (through a Pipeline's transformers)."""
    labeled = state.labeled
    y = np.searchsorted(state.classes, labeled.y)
    train, ref = ~labeled.reference, labeled.reference
    X = transform(state, labeled.X, "X_labeled_")
    return LabeledData(X[train], y[train], X[ref], y[ref], state.classes)


def resolve_classes(y, classes):
    """The sorted classes: those of ``y``, or the ``classes`` parameter checked against ``y``."""
    if classes is None:
        return unique_labels(y)
    classes = np.asarray(classes)
    if classes.ndim != 1 or len(classes) == 0:
        raise ValueError(f"classes must be a non-empty 1-d array-like, got shape {classes.shape}.")
    unique = np.unique(classes)
    if len(unique) != len(classes):
        raise ValueError("classes contains duplicate labels.")
    check_labels(y, unique)
    return unique


def check_labels(y, classes, name="y"):
    unknown = set(y.tolist()) - set(classes.tolist())
    if unknown:
        raise ValueError(
            f"{name} contains labels not in classes_: {sorted(map(repr, unknown))}; "
            "declare every label with the `classes` parameter."
        )


def check_n(n, n_pool, what="len(X_pool)"):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be an integer, got {type(n).__name__}.")
    if not 1 <= n <= n_pool:
        raise ValueError(f"n must be in [1, {what}] = [1, {n_pool}], got {n}.")
    return int(n)
