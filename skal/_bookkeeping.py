"""Which rows of one dataset are labeled, skipped or unlabeled, and views of its rows.

A campaign over one dataset (``ActiveLearner.fit(X, y)`` with ``y`` marking
rows not labeled yet by ``UNLABELED``) keeps its bookkeeping here: one byte
per row and a fingerprint of the dataset, never a copy of it. :class:`Rows` is
a lazy view of some rows of an array, DataFrame or torch Dataset: the pool
passes gather it a chunk at a time.
"""

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

__all__ = ["UNLABELED", "UNLABELED_ROW", "LABELED_ROW", "SKIPPED_ROW", "PoolState", "Rows", "fingerprint"]

#: The label that marks a row not labeled yet in ``fit``'s ``y`` (scikit-learn's
#: semi-supervised convention, as in :class:`sklearn.semi_supervised.SelfTrainingClassifier`).
UNLABELED = -1

# a row's status, one byte each
UNLABELED_ROW, LABELED_ROW, SKIPPED_ROW = 0, 1, 2
_FINGERPRINT_ROWS = 64


@dataclass(frozen=True)
class PoolState:
    """The status of every row of the learner's pool, and how to recognise the pool.

    ``status`` is replaced, never changed in place (the learner commits a new
    state in one step).
    """

    status: np.ndarray  # int8, one per row: UNLABELED_ROW, LABELED_ROW or SKIPPED_ROW
    fingerprint: str
    sample_shape: tuple

    @property
    def n_rows(self):
        return len(self.status)

    def rows(self, kind):
        return np.flatnonzero(self.status == kind)

    def with_status(self, rows, kind):
        status = self.status.copy()
        status[rows] = kind
        return PoolState(status, self.fingerprint, self.sample_shape)


def fingerprint(X):
    """A checksum of the length, sample shape and a spread of rows of ``X``.

    Recognises the pool again, also after a save and a load in another process,
    at the cost of reading 64 rows; a dataset with the same length but other
    contents at those rows is told apart.
    """
    n = len(X)
    digest = hashlib.sha256(f"{n}".encode())
    for i in np.unique(np.linspace(0, n - 1, min(n, _FINGERPRINT_ROWS)).round().astype(np.int64)):
        row = _row(X, int(i))
        digest.update(np.ascontiguousarray(row, dtype=np.float32).tobytes())
        digest.update(str(row.shape).encode())
    return digest.hexdigest()


def _row(X, i):
    if isinstance(X, Dataset):
        item = X[i]
        item = item[0] if isinstance(item, (tuple, list)) else item
        return np.asarray(item.detach().cpu() if isinstance(item, torch.Tensor) else item)
    if hasattr(X, "iloc"):
        return np.asarray(X.iloc[i])
    if isinstance(X, torch.Tensor):
        return X[i].detach().cpu().numpy()
    return np.asarray(X[i])


class Rows:
    """Rows ``rows`` of ``data`` (an array, tensor or DataFrame), read a chunk at a time.

    What selectors take as a pool: ``len`` is the number of rows, :meth:`take`
    narrows it further, :meth:`chunk` returns float32 values of some of its
    rows; nothing is copied until a chunk is read. With a ``name``, each chunk
    is checked to be finite (data not validated as a whole, e.g. a DataFrame
    pool), and an error names it.
    """

    def __init__(self, data, rows, name=None):
        self.data = data
        self.rows = np.asarray(rows, dtype=np.int64)
        self.name = name

    def __len__(self):
        return len(self.rows)

    @property
    def shape(self):
        return (len(self.rows), *np.shape(_row(self.data, 0)))

    def take(self, positions):
        return Rows(self.data, self.rows[np.asarray(positions, dtype=np.int64)], self.name)

    def chunk(self, start, stop):
        rows = self.rows[start:stop]
        if isinstance(self.data, torch.Tensor):
            return self.data[torch.as_tensor(rows, device=self.data.device)]
        if hasattr(self.data, "iloc"):
            try:
                values = self.data.iloc[rows].to_numpy(dtype=np.float32)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{self.name or 'X'}: rows {rows[:3].tolist()}...: {error}") from error
        else:
            values = np.ascontiguousarray(self.data[rows], dtype=np.float32)
        if self.name is not None and not np.isfinite(values).all():
            bad = rows[np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))[0]]
            raise ValueError(f"{self.name} contains NaN or infinity (in row {bad}).")
        return values

    def __array__(self, dtype=None, copy=None):
        # a few callers need the rows as one array (a Pipeline's transformers, the labeled set)
        values = self.chunk(0, len(self))
        values = values.cpu().numpy() if isinstance(values, torch.Tensor) else values
        return values if dtype is None else values.astype(dtype, copy=False)


def subset(X, rows):
    """The rows ``rows`` of the pool ``X`` as a selector's pool: a lazy view, never a copy."""
    if isinstance(X, Dataset):
        return Subset(X, np.asarray(rows).tolist())
    return Rows(X, rows)
