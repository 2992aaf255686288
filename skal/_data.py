"""Helpers that let arrays, tensors and torch Datasets travel the same paths, and check them."""

import math
import re
from collections.abc import Mapping, Set
from contextlib import contextmanager

import numpy as np
import torch
from scipy.sparse import issparse
from sklearn.utils import assert_all_finite, column_or_1d
from torch.utils.data import Dataset, Subset


def is_dataset(X):
    return isinstance(X, Dataset)


def take(X, indices):
    """Rows ``indices`` of X: an array, tensor, dict of arrays or torch Dataset."""
    if is_dataset(X):
        return Subset(X, np.asarray(indices).tolist())
    if isinstance(X, dict):
        return {key: take(value, indices) for key, value in X.items()}
    if isinstance(X, torch.Tensor):
        return X[torch.as_tensor(indices, device=X.device)]
    return X[indices]


def _features(item):
    return item[0] if isinstance(item, (tuple, list)) else item


class FeaturesDataset(Dataset):
    """A Dataset's features as skorch ``(X, y)`` items with a dummy target.

    Pool Datasets may yield ``x`` or ``(x, y)``; skorch's loaders want pairs,
    and a pool's labels (if any) must never reach a selector. With a ``name``,
    every floating-point item read is checked to be finite (a streamed pool is
    never validated as a whole), and an error names the argument.
    """

    def __init__(self, dataset, name=None):
        self.dataset = dataset
        self.name = name

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x = _features(self.dataset[i])
        if self.name is not None and not _is_finite(x):
            raise ValueError(f"{self.name} contains NaN or infinity (in item {i}).")
        return x, 0


def _is_finite(x):
    # A sum is NaN or infinite whenever an element is, and costs a fraction of an
    # element-wise check; only a sum that overflows (e.g. float16) needs the exact one.
    if isinstance(x, torch.Tensor):
        return (not x.is_floating_point() or math.isfinite(x.sum())
                or bool(torch.isfinite(x).all()))
    if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.inexact):
        with np.errstate(over="ignore", invalid="ignore"):
            return bool(np.isfinite(x.sum())) or bool(np.isfinite(x).all())
    return True


def sample_shape(dataset):
    """Shape of one sample's features, from the first item."""
    return tuple(np.shape(_features(dataset[0])))


def materialize(dataset):
    """Stack a Dataset's features into a float32 array (for the labeled set)."""
    items = [np.asarray(_features(dataset[i]), dtype=np.float32) for i in range(len(dataset))]
    if not items:
        return np.empty((0,), dtype=np.float32)
    return np.stack(items)


# --- input checks shared by the learner and the campaign simulation --------------------


def check_array_like(X, name, kind="an array-like of shape (n_samples, ...) or a torch Dataset"):
    """Refuse what can never be samples (None, a string, a mapping, a set) with a TypeError."""
    # scipy's DOK format is a dict; check_array explains that sparse input is not supported
    if X is None or isinstance(X, (str, bytes, Mapping, Set)) and not issparse(X):
        raise TypeError(f"{name} must be {kind}, got {type(X).__name__}.")


@contextmanager
def named_errors(name):
    """Re-raise a ValueError / TypeError whose message does not name ``name`` with it as prefix.

    scikit-learn's checks only name the input in some messages ("could not
    convert string to float", "Expected 2D array" do not).
    """
    try:
        yield
    except (ValueError, TypeError) as error:
        message = str(error)
        if re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message):
            raise
        # TypeError first: sklearn's InvalidParameterError is both
        kind = TypeError if isinstance(error, TypeError) else ValueError
        raise kind(f"{name}: {message}") from error


def check_targets(y, name="y"):
    """``y`` as a finite 1-d array of labels; errors name ``name``."""
    if y is None:
        # scikit-learn's own wording, which its estimator checks look for
        raise ValueError(f"This estimator requires {name} to be passed, but the target {name} is None.")
    check_array_like(y, name, "an array-like of shape (n_samples,)")
    with named_errors(name):
        y = column_or_1d(y, warn=True)
        assert_all_finite(y, input_name=name)
    return y


def check_same_length(X, y, x_name="X", y_name="y"):
    if len(X) != len(y):
        raise ValueError(
            f"{x_name} and {y_name} have inconsistent numbers of samples: [{len(X)}, {len(y)}]."
        )
