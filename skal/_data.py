"""Helpers that let arrays, tensors and torch Datasets travel the same paths, and check them."""

import math
import os
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
    """Rows ``indices`` of X: an array, tensor, dict of arrays, lazy row view or torch Dataset."""
    if hasattr(X, "take") and hasattr(X, "chunk"):  # skal._bookkeeping.Rows
        return X.take(indices)
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
    and a pool's labels (if any) must never reach a selector. Each item's
    features become a float32 tensor, whatever their numeric dtype, as arrays
    are converted. With a ``name``, every item read is checked (a streamed pool
    is never validated as a whole): a finite, real number array of the first
    item's shape, else a ValueError naming the argument and the item.
    """

    def __init__(self, dataset, name=None, shape=None):
        self.dataset = dataset
        self.name = name
        self.shape = shape

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return item_features(self.dataset, i, self.name, self.shape), 0


def item_features(dataset, i, name=None, shape=None, finite=True):
    """Item ``i``'s features as a float32 tensor; errors name ``name`` and the item.

    With a ``name`` and ``finite``, a non-finite item is refused, naming its row.
    """
    where = f"{name or 'the dataset'} item {i}"
    try:
        x = _features(dataset[i])
    except Exception as error:
        raise ValueError(f"{where} could not be read (the dataset says it has {len(dataset)} "
                         f"items): {type(error).__name__}: {error}") from error
    x = _as_float32_tensor(x, where)
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{where} has shape {tuple(x.shape)}, but item 0 has shape {tuple(shape)}.")
    if name is not None and finite and not _is_finite(x):
        raise ValueError(f"{name} contains NaN or infinity in row {i}.")
    return x


def _as_float32_tensor(x, where):
    if isinstance(x, torch.Tensor):
        x = x.detach()
    else:
        try:
            x = np.asarray(x)
        except Exception as error:
            raise TypeError(f"{where} is not an array ({type(x).__name__}): {error}") from error
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{where} has dtype {x.dtype}; samples must be real numbers.")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if x.is_complex() or not (x.is_floating_point() or x.dtype in _INTEGER_DTYPES):
        raise TypeError(f"{where} has dtype {x.dtype}; samples must be real numbers.")
    return x.to(torch.float32)


_INTEGER_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _is_finite(x):
    # A sum is NaN or infinite whenever an element is, and costs a fraction of an
    # element-wise check; only a sum that overflows needs the exact one.
    return math.isfinite(x.sum()) or bool(torch.isfinite(x).all())


def sample_shape(dataset, name=None):
    """Shape of one sample's features, from the first item (whose values are checked where used)."""
    return tuple(item_features(dataset, 0, name, finite=False).shape)


def materialize(dataset, name=None, finite=True):
    """Stack a Dataset's features into a float32 array (for the labeled set).

    ``finite=False`` leaves the check of non-finite values to the caller.
    """
    if len(dataset) == 0:
        return np.empty((0,), dtype=np.float32)
    shape = sample_shape(dataset, name)
    return torch.stack([item_features(dataset, i, name, shape, finite) for i in range(len(dataset))]).numpy()


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


def check_targets(y, name="y", allow_nan=False):
    """``y`` as a finite 1-d array of labels (NaN allowed with ``allow_nan``); errors name ``name``."""
    if y is None:
        # scikit-learn's own wording, which its estimator checks look for
        raise ValueError(f"This estimator requires {name} to be passed, but the target {name} is None.")
    check_array_like(y, name, "an array-like of shape (n_samples,)")
    with named_errors(name):
        y = column_or_1d(y, warn=True)
        assert_all_finite(y, input_name=name, allow_nan=allow_nan)
    return y


def check_same_length(X, y, x_name="X", y_name="y"):
    if len(X) != len(y):
        raise ValueError(
            f"{x_name} and {y_name} have inconsistent numbers of samples: [{len(X)}, {len(y)}]."
        )


def check_path(path):
    """``path`` as a str; a TypeError names it when it is not a path."""
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}.") from None


def check_device(device, name="device"):
    """A ValueError naming ``name`` when ``device`` is no torch device this machine can use.

    ``None`` (skorch: leave the module where it is) and devices of this machine pass:
    cpu, cuda / cuda:N when CUDA has that many GPUs, mps when available, meta.
    """
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name}={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:N' or "
                         "'mps'.") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={device!r}, but CUDA is not available on this machine "
                             "(torch.cuda.is_available() is False); use device='cpu'.")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={device!r}, but this machine has {torch.cuda.device_count()} "
                             "CUDA device(s).")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={device!r}, but MPS is not available on this machine; use device='cpu'.")
