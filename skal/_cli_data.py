"""The data of ``skal simulate``: loading, checking, splitting and standardising.

Every refusal raises :class:`CommandError` with a message that names the
option or the array at fault; ``skal simulate`` reports it as a usage error.
"""

import math
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from .datasets import load_digits_images, load_fashion_mnist


class CommandError(Exception):
    """A problem with the command's options or data, reported as ``skal simulate: error: ...``."""


# deflate inflates at most ~1032x: an npz member that declares more bytes per compressed byte lies
_DEFLATE_RATIO = 1032


def _kind_of(mode):
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a fifo"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def check_regular(path, option):
    """Refuse ``path`` unless it is a regular file (through symlinks), before anything opens it.

    A fifo would block the read, a device (``/dev/zero``) never ends, a directory is no file.
    """
    try:
        status = os.stat(path)
    except OSError as error:
        raise CommandError(f"{option} {path}: cannot read it: {error.strerror or error}") from None
    if not stat.S_ISREG(status.st_mode):
        raise CommandError(f"{option} {path}: is {_kind_of(status.st_mode)}, not a regular file")
    return status


def read_capped(path, option, limit):
    """The bytes of the regular file ``path``, at most ``limit`` of them (else a CommandError).

    Opened without blocking and checked again once open, so that a fifo swapped in after the
    check cannot block either.
    """
    check_regular(path, option)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise CommandError(f"{option} {path}: cannot read it: {error.strerror or error}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise CommandError(f"{option} {path}: is {_kind_of(mode)}, not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise CommandError(f"{option} {path}: larger than {limit} bytes, more than such a file holds")
    return data


def load(dataset, *, data_path, test_size, pool_size, test_limit, seed):
    """``(X_pool, y_pool, X_test, y_test)`` for ``--dataset``, split and subsampled as asked."""
    if data_path is not None and dataset != "fashion-mnist":
        raise CommandError("--data-path is only read with --dataset fashion-mnist "
                           f"(a .npz dataset is its own path), not with --dataset {dataset}")
    if dataset == "digits":
        X, y = load_digits_images(return_X_y=True)
        X_test = y_test = None
    elif dataset == "fashion-mnist":
        X, y, X_test, y_test = _fashion_mnist(data_path)
    else:
        X, y, X_test, y_test = _npz(dataset)
    if X_test is None:
        X, X_test, y, y_test = _split(X, y, test_size, seed)
    rng = np.random.default_rng(seed)
    if pool_size is not None and pool_size < len(y):
        keep = np.sort(rng.choice(len(y), pool_size, replace=False))
        X, y = X[keep], y[keep]
    if test_limit is not None and test_limit < len(y_test):
        keep = np.sort(rng.choice(len(y_test), test_limit, replace=False))
        X_test, y_test = X_test[keep], y_test[keep]
    return X, y, X_test, y_test


def features_for(model, X, X_test, *, standardize):
    """The arrays the model reads: flattened (and standardised) for the MLP, images for the CNN.

    The scaler is fitted on the pool ``X`` only: in active learning the pool's
    features are known before any label is, so this uses no label and never
    sees the test set.
    """
    if model != "mlp":
        if not standardize:
            check_magnitude(X, X_test)
        return X, X_test
    X, X_test = X.reshape(len(X), -1), X_test.reshape(len(X_test), -1)
    if standardize:
        scaler = StandardScaler().fit(X)
        X, X_test = scaler.transform(X), scaler.transform(X_test)
    else:
        check_magnitude(X, X_test)
    return X.astype(np.float32), X_test.astype(np.float32)


def _fashion_mnist(data_path):
    if data_path is not None and not Path(data_path).is_dir():
        raise CommandError(f"--data-path {data_path}: not a directory")
    try:
        X, y = load_fashion_mnist(data_path, subset="train", return_X_y=True)
        X_test, y_test = load_fashion_mnist(data_path, subset="test", return_X_y=True)
    except FileNotFoundError as error:
        # the loader's advice is for Python callers ("pass path=root"); say it the command's way
        found = str(error).split(" Get them with", 1)[0]
        raise CommandError(
            f"--dataset fashion-mnist: {found} Install Debian's package "
            "(apt-get install dataset-fashion-mnist), or pass --data-path DIR: a directory "
            "holding the IDX files, or a torchvision root (as "
            "torchvision.datasets.FashionMNIST(root, download=True) fills it)"
        ) from None
    except ValueError as error:
        raise CommandError(f"--dataset fashion-mnist: {error}") from None
    return X, y, X_test, y_test


def _npz(path):
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # np.load says why
    if mode is not None and not stat.S_ISREG(mode):  # a fifo would block, /dev/zero never end
        raise CommandError(f"cannot read {path}: it is {_kind_of(mode)}, not a regular file")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise CommandError(f"cannot read {path}: {error}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise CommandError(f"cannot read {path}: it holds a single array (an .npy file), not an "
                           ".npz archive; write one with np.savez(path, X=X, y=y)")
    with data:
        try:
            if ("X_test" in data) != ("y_test" in data):
                raise ValueError("it has one of X_test and y_test but not the other")
            if "X" not in data or "y" not in data:
                raise KeyError(f"{'X' if 'X' not in data else 'y'} is not a file in the archive")
            X, y = _member(data.zip, "X"), _member(data.zip, "y")
            X_test = _member(data.zip, "X_test") if "X_test" in data else None
            y_test = _member(data.zip, "y_test") if "y_test" in data else None
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as error:
            raise CommandError(f"cannot read {path}: {error}") from None
    X, y = _checked(path, X, y, "X", "y")
    if X_test is not None:
        X_test, y_test = _checked(path, X_test, y_test, "X_test", "y_test")
        if X_test.shape[1:] != X.shape[1:]:
            raise CommandError(f"{path}: X_test has samples of shape {X_test.shape[1:]}, but X has "
                               f"samples of shape {X.shape[1:]}")
        if (y.dtype.kind in "US") != (y_test.dtype.kind in "US"):
            raise CommandError(f"{path}: y_test holds {_kind(y_test)} but y holds {_kind(y)}")
        unseen = np.setdiff1d(y_test, y)
        if len(unseen):
            raise CommandError(f"{path}: y_test has labels that y lacks: {unseen[:5].tolist()}")
    return X, y, X_test, y_test


def _member(archive, key):
    """Array ``key`` of an npz archive, its header checked before anything is allocated.

    The header must describe plain numbers or strings (never objects), non-negative
    dimensions, and exactly the bytes that the member declares, which its compressed size
    must be able to hold; the read stops there whatever the stream holds.
    """
    info = archive.getinfo(f"{key}.npy")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"{key}: compressed with method {info.compress_type} (np.savez writes "
                         "stored or deflated members)")
    with archive.open(info) as f:
        version = npy_format.read_magic(f)
        read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
        if not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError(f"{key}: its header declares the shape {shape}")
        if dtype.hasobject or dtype.itemsize == 0:
            raise ValueError(f"{key}: has dtype {dtype}; pass arrays of numbers or strings")
        count = math.prod(shape)
        described = offset + count * dtype.itemsize
        bound = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_RATIO) + offset
        if described != info.file_size or described > bound:
            raise ValueError(f"{key}: its header describes {described} bytes (shape {shape}, dtype "
                             f"{dtype}), but the member holds {info.file_size}")
        array = np.empty(count, dtype=dtype)
        view = memoryview(array.view(np.uint8)) if count else None
        if view is not None and f.readinto(view) != len(view):
            raise ValueError(f"{key}: the array data ends early")
    return array.reshape(shape, order="F" if fortran else "C")


def check_magnitude(X, X_test):
    """Refuse raw features whose squares overflow float32 (a net's first layer would)."""
    limit = math.sqrt(np.finfo(np.float32).max / max(1, X[0].size))
    largest = max(float(np.abs(X).max(initial=0)), float(np.abs(X_test).max(initial=0)))
    if largest > limit:
        raise CommandError(
            f"--no-standardize: features reach {largest:.3g}, beyond {limit:.3g}, where float32 "
            "sums of squares overflow and training diverges; standardise them (drop "
            "--no-standardize) or rescale the data")


def _kind(y):
    return "strings" if y.dtype.kind in "US" else "numbers"


def _checked(path, X, y, x_name, y_name):
    """Arrays a campaign can run on (X as float32), or a CommandError naming the array."""
    if X.ndim < 2 or 0 in X.shape:
        raise CommandError(f"{path}: {x_name} must have shape (n_samples, n_features) or "
                           f"(n_samples, C, H, W), got {X.shape}")
    if X.dtype.kind == "c":
        raise CommandError(f"{path}: {x_name} holds complex numbers ({X.dtype}); pass real "
                           "features (e.g. the real and imaginary parts as separate columns)")
    if X.dtype.kind not in "biuf":
        raise CommandError(f"{path}: {x_name} must hold numbers, got dtype {X.dtype}")
    if y.ndim != 1:
        raise CommandError(f"{path}: {y_name} must have shape (n_samples,), got {y.shape}")
    if len(X) != len(y):
        raise CommandError(f"{path}: {x_name} and {y_name} have different lengths: {len(X)} and {len(y)}")
    with np.errstate(over="ignore"):
        X = X.astype(np.float32)
    if not np.isfinite(X).all():
        raise CommandError(f"{path}: {x_name} contains NaN or infinity (after conversion to float32)")
    return X, _labels(path, y, y_name)


def _labels(path, y, name):
    """Class labels as given (integers, bools, strings); integral floats become int64."""
    if y.dtype.kind in "biuUS":
        return y
    if y.dtype.kind == "f":
        if np.isnan(y).any():
            raise CommandError(f"{path}: {name} contains NaN")
        if not np.isfinite(y).all():
            raise CommandError(f"{path}: {name} contains infinity")
        fractional = y[y != np.round(y)]
        if len(fractional):
            raise CommandError(f"{path}: {name} must hold class labels (integers or strings), got "
                               f"non-integer values such as {float(fractional[0])!r}")
        return y.astype(np.int64)
    raise CommandError(f"{path}: {name} must hold class labels (integers or strings), got dtype {y.dtype}")


def _split(X, y, test_size, seed):
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise CommandError(f"y has a single class ({classes[0].item()!r}); a campaign needs at least 2")
    if counts.min() < 2:
        raise CommandError(f"y: class {classes[counts.argmin()].item()!r} has a single sample; a "
                           "stratified test split needs at least 2 per class (or give X_test "
                           "and y_test in the .npz file)")
    try:
        return train_test_split(X, y, test_size=test_size, stratify=y, random_state=seed)
    except ValueError as error:
        raise CommandError(f"--test-size {test_size}: cannot split off a stratified test set: "
                           f"{error}") from None
