"""Offline data loaders: nothing here downloads anything."""

import gzip
import os
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.utils import Bunch

__all__ = ["load_digits_images", "load_fashion_mnist"]

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_digits_images(*, return_X_y=False):
    """scikit-learn's 8x8 handwritten digits as float32 images ``(N, 1, 8, 8)``.

    The 1,797 real digit images that ship with scikit-learn, 10 classes,
    pixel values scaled from ``0..16`` to ``[0, 1]``, in channels-first layout
    ready for a convolutional net. It is skal's embedded default data set.

    Parameters
    ----------
    return_X_y : bool, default=False
        Return ``(X, y)`` instead of a Bunch.

    Returns
    -------
    data : Bunch
        ``data`` (float32, shape (1797, 1, 8, 8)), ``target`` (int64, shape
        (1797,)), ``target_names`` and ``DESCR``.
    (X, y) : tuple of ndarray
        If ``return_X_y`` is True.

    Examples
    --------
    >>> from skal.datasets import load_digits_images
    >>> X, y = load_digits_images(return_X_y=True)
    >>> X.shape, X.dtype, int(y.max())
    ((1797, 1, 8, 8), dtype('float32'), 9)
    """
    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    if return_X_y:
        return X, y
    return Bunch(data=X, target=y, target_names=digits.target_names, DESCR=digits.DESCR)


def _read_idx(path):
    """Read one IDX file (gzipped or not) into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    n_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(n_dims))
    offset = 4 + 4 * n_dims
    expected = int(np.prod(shape))
    if len(data) - offset != expected:
        raise ValueError(f"{path} is truncated or corrupted: {len(data) - offset} bytes of data "
                         f"for shape {shape}.")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _find_fashion_file(directories, stem):
    for directory in directories:
        for name in (stem + ".gz", stem):
            candidate = Path(directory) / name
            if candidate.is_file():
                return candidate
    return None


def load_fashion_mnist(path=None, *, subset="train", return_X_y=False):
    """Fashion-MNIST from local IDX files, as float32 images ``(N, 1, 28, 28)``.

    Zalando's 70,000 grey-scale 28x28 clothing images in 10 classes (60,000
    train, 10,000 test), pixel values scaled to ``[0, 1]``. Nothing is
    downloaded. The files (``train-images-idx3-ubyte[.gz]`` etc.) are looked
    for in, in order:

    1. ``path``, if given;
    2. the Debian/Ubuntu package's location ``/usr/share/datasets/fashion-mnist``
       (``apt-get install dataset-fashion-mnist``);
    3. a torchvision root: ``$TORCHVISION_ROOT/FashionMNIST/raw`` or
       ``~/.cache/torchvision/FashionMNIST/raw`` (where
       ``torchvision.datasets.FashionMNIST(root, download=True)`` puts them).

    Parameters
    ----------
    path : str or path-like, default=None
        A directory holding the four IDX files, or a torchvision root.
    subset : {"train", "test", "all"}, default="train"
        Which split; "all" is train then test.
    return_X_y : bool, default=False
        Return ``(X, y)`` instead of a Bunch.

    Returns
    -------
    data : Bunch
        ``data`` (float32, (N, 1, 28, 28)), ``target`` (int64), ``target_names``.
    (X, y) : tuple of ndarray
        If ``return_X_y`` is True.

    Raises
    ------
    FileNotFoundError
        When no location has the files; the message says how to get them.

    References
    ----------
    .. [1] Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
       Benchmarking Machine Learning Algorithms", 2017 (MIT licence).

    Examples
    --------
    >>> from skal.datasets import load_fashion_mnist
    >>> X, y = load_fashion_mnist(subset="test", return_X_y=True)  # doctest: +SKIP
    >>> X.shape  # doctest: +SKIP
    (10000, 1, 28, 28)
    """
    if subset not in ("train", "test", "all"):
        raise ValueError(f"subset must be 'train', 'test' or 'all', got {subset!r}.")
    directories = []
    if path is not None:
        directories += [Path(path), Path(path) / "FashionMNIST" / "raw"]
    directories.append(FASHION_MNIST_DEBIAN)
    if os.environ.get("TORCHVISION_ROOT"):
        directories.append(Path(os.environ["TORCHVISION_ROOT"]) / "FashionMNIST" / "raw")
    directories.append(Path.home() / ".cache" / "torchvision" / "FashionMNIST" / "raw")
    images, labels = [], []
    for split in (["train", "test"] if subset == "all" else [subset]):
        found = [_find_fashion_file(directories, stem) for stem in _FASHION_FILES[split]]
        if None in found:
            raise FileNotFoundError(
                f"Fashion-MNIST {split} files ({', '.join(_FASHION_FILES[split])}, optionally "
                f".gz) not found in: {', '.join(map(str, directories))}. Get them with "
                "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or "
                "`torchvision.datasets.FashionMNIST(root, download=True)` and pass `path=root`."
            )
        X_split, y_split = _read_idx(found[0]), _read_idx(found[1])
        if X_split.ndim != 3 or y_split.ndim != 1 or len(X_split) != len(y_split):
            raise ValueError(f"Fashion-MNIST {split} files have shapes {X_split.shape} and "
                             f"{y_split.shape}; expected (N, 28, 28) and (N,).")
        images.append(X_split)
        labels.append(y_split)
    X = (np.concatenate(images).astype(np.float32) / 255.0)[:, None, :, :]
    y = np.concatenate(labels).astype(np.int64)
    if return_X_y:
        return X, y
    return Bunch(data=X, target=y, target_names=list(FASHION_MNIST_CLASSES))
