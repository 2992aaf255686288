"""A fingerprint of a pool that every row counts in, and the recognition of a pool that grew.

The learner recognises its pool (the dataset of ``fit`` with rows marked
unlabeled) by its length, its sample shape and this fingerprint: the CRC-32 of
the bytes of every row, one checksum per block of :data:`BLOCK` rows. Every row
counts, so a swapped or replaced row anywhere is told apart (the message names
the block of rows that differs); the checksums of the blocks that lie wholly in
an old pool are those of its prefix in a longer one, so a pool that gained rows
at its end is told apart from a changed one in the same pass.

What a row's bytes are:

- numeric arrays and tensors: the row as float32 (the values the net sees);
- DataFrames of numpy numbers: as the array of their values; other DataFrames
  and arrays of other values: pandas' per-row hash of the row's values
  (:func:`pandas.util.hash_pandas_object`), whatever the column dtypes;
- torch Datasets: each item's features as float32, read with torch's global
  random generator seeded by the item's index, so that an item augmented on
  read with torch's random functions (torchvision transforms) reads the same
  each time. A Dataset whose items still differ from one read to the next
  (randomness from elsewhere) is recognised by its length and item shape only:
  :func:`deterministic` tells, and ``fit`` warns.

The cost is one pass over the pool's bytes (CRC-32 runs at about 2 GB/s on one
core): ``benchmarks/bench_fingerprint.py`` measures it on a 1,000,000-row pool
against one scoring pass of a linear model.
"""

import zlib

import numpy as np
import torch
from torch.utils.data import Dataset

BLOCK = 4096  # rows per checksum
_TAG = "crc32"

__all__ = ["BLOCK", "fingerprint", "compare", "deterministic", "parse", "is_fingerprint"]


def _form(n_rows, checksums):
    """The text form: ``crc32;<rows>;<block>;<checksums as 8-digit hex>``, or ``shape;<rows>``."""
    if checksums is None:
        return f"shape;{n_rows}"
    return f"{_TAG};{n_rows};{BLOCK};" + "".join(f"{c:08x}" for c in checksums)


def parse(text):
    """``(n_rows, checksums or None)`` of a fingerprint's text; a ValueError when it is not one."""
    parts = text.split(";") if isinstance(text, str) else []
    try:
        if len(parts) == 2 and parts[0] == "shape":
            return int(parts[1]), None
        if len(parts) == 4 and parts[0] == _TAG and int(parts[2]) == BLOCK:
            n_rows, digits = int(parts[1]), parts[3]
            n_blocks = -(-n_rows // BLOCK)
            if n_rows >= 0 and len(digits) == 8 * n_blocks and all(c in "0123456789abcdef" for c in digits):
                return n_rows, [int(digits[8 * i:8 * i + 8], 16) for i in range(n_blocks)]
    except ValueError:
        pass
    raise ValueError("not a skal pool fingerprint")


def is_fingerprint(text, n_rows=None):
    """Whether ``text`` is a fingerprint (of ``n_rows`` rows, when given), or a save of skal <= 0.4's."""
    if isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return True  # the sha256 of 64 rows that earlier saves hold
    try:
        rows, _ = parse(text)
    except ValueError:
        return False
    return n_rows is None or rows == n_rows


def _unwrapped(X):
    # the learner's streamed view of a Dataset (skal._data.FeaturesDataset) checks each item; the
    # fingerprint reads the dataset itself, so that a non-finite item is named where it is used
    return X.dataset if type(X).__name__ == "FeaturesDataset" and hasattr(X, "dataset") else X


def _reader(X):
    """``read(start, stop)``: the bytes of rows ``start:stop`` of X."""
    X = _unwrapped(X)
    if isinstance(X, Dataset):
        def read(start, stop):
            out = []
            with torch.random.fork_rng(devices=[]):
                for i in range(start, stop):
                    torch.manual_seed(i)
                    item = X[i]
                    item = item[0] if isinstance(item, (tuple, list)) else item
                    if isinstance(item, torch.Tensor):
                        item = item.detach().cpu().numpy()
                    out.append(np.ascontiguousarray(item, dtype=np.float32).tobytes())
            return b"".join(out)
        return read
    if hasattr(X, "iloc"):  # a DataFrame (or Series)
        dtypes = list(X.dtypes) if hasattr(X, "dtypes") else [X.dtype]
        if all(isinstance(dtype, np.dtype) and dtype.kind in "biuf" for dtype in dtypes):
            return _reader(X.to_numpy(dtype=np.float32))  # as the array of its values
        from pandas.util import hash_pandas_object  # a DataFrame was given: pandas is there

        def read(start, stop):
            return hash_pandas_object(X.iloc[start:stop], index=False).to_numpy().tobytes()
        return read
    if isinstance(X, torch.Tensor):
        def read(start, stop):
            return np.ascontiguousarray(X[start:stop].detach().cpu().numpy(), dtype=np.float32).data
        return read
    if hasattr(X, "chunk") and hasattr(X, "take"):  # skal._bookkeeping.Rows
        return _reader(np.asarray(X))
    values = X if isinstance(X, np.ndarray) else np.asarray(X)
    if values.dtype.kind in "biuf":
        def read(start, stop):
            return np.ascontiguousarray(values[start:stop], dtype=np.float32).data
        return read
    import pandas as pd  # values that are not numbers (strings for a Pipeline) are hashed by pandas

    return _reader(pd.DataFrame(values.reshape(len(values), -1) if values.ndim != 2 else values))


def _checksums(X, n_rows, split=None):
    """The block checksums of X's first ``n_rows`` rows, and those of its first ``split`` rows."""
    read = _reader(X)
    whole, prefix = [], None
    for start in range(0, n_rows, BLOCK):
        stop = min(start + BLOCK, n_rows)
        if split is not None and start < split < stop:
            crc = zlib.crc32(read(start, split))
            prefix = whole + [crc]
            crc = zlib.crc32(read(split, stop), crc)
        else:
            crc = zlib.crc32(read(start, stop))
        whole.append(crc)
        if split is not None and stop == split:
            prefix = list(whole)
    if split == 0:
        prefix = []
    return whole, prefix


def fingerprint(X, contents=True):
    """The fingerprint of X (every row; only its length with ``contents=False``)."""
    if not contents:
        return _form(len(X), None)
    return _form(len(X), _checksums(X, len(X))[0])


def compare(X, stored, name="X_pool"):
    """How X stands to the pool whose fingerprint is ``stored``.

    Returns
    -------
    None
        X is that pool.
    str
        X is that pool with rows appended: the new fingerprint.

    Raises
    ------
    ValueError
        Naming the first block of rows that differs, when X has the pool's
        length or more but other contents.
    """
    n_old, old = parse(stored)
    n_new = len(X)
    if n_new < n_old:
        raise ValueError(f"{name} has {n_new} rows, fewer than the {n_old} of the learner's pool.")
    if old is None:
        return None if n_new == n_old else fingerprint(X, contents=False)
    whole, prefix = _checksums(X, n_new, split=n_old if n_new > n_old else None)
    prefix = whole if n_new == n_old else prefix
    for block, (a, b) in enumerate(zip(prefix, old)):
        if a != b:
            first, last = block * BLOCK, min((block + 1) * BLOCK, n_old) - 1
            raise ValueError(
                f"{name} is not the learner's pool{' with rows appended' if n_new > n_old else ''}: "
                f"its rows {first}..{last} hold other contents than the pool's (checksums of every row "
                "differ). Pass the dataset the learner was fitted on, in the same order, new rows only "
                "appended at its end; to query a different dataset on purpose, pass other_dataset=True.")
    return None if n_new == n_old else _form(n_new, whole)


def deterministic(X, n_items=2):
    """Whether reading the first items of the Dataset X twice gives the same bytes."""
    X = _unwrapped(X)
    if not isinstance(X, Dataset) or len(X) == 0:
        return True
    read = _reader(X)
    stop = min(n_items, len(X))
    return read(0, stop) == read(0, stop)
