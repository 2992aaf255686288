"""The learner's samples: their checks and conversion, and the recognition of its pool.

- :func:`check_fit_samples` and :func:`check_samples` validate what ``fit`` and
  the later methods are given (float32 arrays, or Datasets streamed unread);
- :func:`transform` passes samples through a Pipeline's transformers;
- :func:`split_pool` reads ``fit``'s ``unlabeled`` marker into a pool state,
  :func:`is_pool` recognises the pool again, :func:`check_rows` checks row
  indices into it.
"""

import numbers
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import validate_data
from torch.utils.data import Subset

from ._bookkeeping import LABELED_ROW, UNLABELED, UNLABELED_ROW, PoolState, fingerprint
from ._data import (FeaturesDataset, check_array_like, check_same_length, is_dataset, materialize, named_errors,
                    sample_shape)
from .selectors.base import LabeledData

__all__ = ["check_fit_samples", "check_samples", "transform", "as_float32", "split_pool", "check_marker",
           "unlabeled_mask", "is_pool", "candidates", "require_pool", "check_rows", "labeled_data", "resolve_classes",
           "check_labels", "check_n"]

TRANSFORM_CHUNK = 65536  # pool rows per Pipeline transform call


class _FeatureProbe(BaseEstimator):
    """Takes the ``n_features_in_`` / ``feature_names_in_`` that ``validate_data`` sets."""


def _untracked(X):
    """A tensor's values as numpy (scikit-learn's checks cannot read a tensor needing grad)."""
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    return X


def check_fit_samples(X):
    """``(X as float32, n_features_in_, feature_names_in_)``."""
    if is_dataset(X):
        if len(X) == 0:
            raise ValueError("X is empty: it needs at least one sample.")
        X = materialize(X, "X")
    probe = _FeatureProbe()
    with named_errors("X"):
        X = validate_data(probe, _untracked(X), allow_nd=True, dtype=np.float32, order="C", copy=True)
    return X, probe.n_features_in_, getattr(probe, "feature_names_in_", None)


def check_samples(learner, state, X, name, stream=False):
    """Validated samples: a float32 array, or for ``stream`` a Dataset left unread.

    Arrays and DataFrames go through scikit-learn's ``validate_data(reset=False)`` on
    ``learner``, as in ``predict``: the feature count and column names must be those of ``fit``.
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
        X = materialize(X, name)
    with named_errors(name):
        X = validate_data(learner, _untracked(X), reset=False, allow_nd=True, dtype=np.float32,
                          ensure_min_samples=0)
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: it needs at least one sample.")
    check_feature_shape(X.shape, expected, name)
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
    parts = [transformers.transform(X[start:start + TRANSFORM_CHUNK])
             for start in range(0, len(X), TRANSFORM_CHUNK)]
    return as_float32(np.concatenate(parts))


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
    return labeled_X, y[rows], PoolState(status, fingerprint(X), shape), rows


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


def is_pool(state, X):
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


def candidates(state, X):
    """The pool's unlabeled rows when ``X`` is the learner's pool, else None."""
    if not is_pool(state, X):
        return None
    return state.pool.rows(UNLABELED_ROW)


def require_pool(state):
    if state.pool is None:
        raise ValueError(
            "The learner has no pool: rows are rows of the dataset given to fit with the "
            f"`unlabeled` marker (e.g. skal.UNLABELED, {UNLABELED}) in y for the rows not labeled yet.")
    return state.pool


def check_rows(state, X, rows, name):
    """``rows`` as distinct int64 positions of the pool (and ``X`` checked to be it)."""
    pool = require_pool(state)
    if X is not None and not is_pool(state, X):
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
