"""Offline data loaders: nothing here downloads anything."""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.utils import Bunch

__all__ = ["load_digits_images"]


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
