"""Training batches for ActiveNet: the sample positions reported beside X, and a fast array path.

skorch trains on what ``iterator_train(dataset, **kwargs)`` yields. ActiveNet
keeps that contract (the module, ``infer``, ``get_loss``, collate functions,
callbacks and ``iterator_train`` see exactly the user's data) and adds two
things here:

* the positions of each training batch's samples travel through a
  :class:`SampleIndexQueue`, filled as the loader's sampler draws them and
  read by the net when the batch's training step begins, so per-sample state
  is right with DataLoader workers and prefetching wrappers too;
* in-memory arrays with skorch's default loader are batched by gathering rows
  of one tensor (:class:`ArrayLoader`) instead of fetching and collating items
  one by one: the same batches, in the same order, from the same random draws.
"""

import warnings
from collections import deque
from collections.abc import Mapping

import numpy as np
import torch
from skorch.dataset import Dataset as SkorchDataset
from torch.utils.data import DataLoader, Subset
from torch.utils.data import default_collate

__all__ = ["SampleIndexQueue", "ArrayLoader", "training_loader"]

# DataLoader keyword arguments that the array path reproduces
_ARRAY_PATH_KWARGS = {"batch_size", "shuffle", "drop_last"}


class SampleIndexQueue:
    """The sample positions of training batches drawn and not yet trained on, oldest first.

    The sampler side :meth:`put` s positions as batches are drawn; the net
    :meth:`advance` s by a batch's size at the start of each training step,
    which makes that batch's positions :attr:`current`. A DataLoader with
    workers draws batches ahead of their use; the queue keeps them in order.

    Examples
    --------
    >>> import torch
    >>> from skal._loader import SampleIndexQueue
    >>> queue = SampleIndexQueue()
    >>> queue.put(torch.tensor([3, 1, 0])); queue.put(torch.tensor([2]))
    >>> queue.advance(2, "cpu"); queue.current
    tensor([3, 1])
    >>> queue.advance(2, "cpu"); queue.current
    tensor([0, 2])
    """

    def __init__(self):
        self._pending = deque()
        self._current = None

    def put(self, positions):
        """Append the positions (a 1-d int64 tensor) of samples as they are drawn."""
        self._pending.append(positions)

    def advance(self, n, device):
        """Make the next ``n`` drawn positions :attr:`current`, on ``device``."""
        taken, need = [], n
        while need:
            if not self._pending:
                raise RuntimeError(
                    "A training batch arrived without its sample positions: the training loader "
                    "was not made by ActiveNet.get_iterator(training=True), or its batch sampler "
                    "does not draw its samples from its `sampler`."
                )
            chunk = self._pending.popleft()
            if len(chunk) > need:
                self._pending.appendleft(chunk[need:])
                chunk = chunk[:need]
            taken.append(chunk)
            need -= len(chunk)
        positions = taken[0] if len(taken) == 1 else torch.cat(taken)
        self._current = positions.to(device, non_blocking=True)

    @property
    def current(self):
        """Positions in the training data of the batch being trained on."""
        if self._current is None:
            raise RuntimeError("No training batch is in progress: sample positions exist only "
                               "inside a training step run by fit/partial_fit.")
        return self._current

    def clear(self):
        self._pending.clear()
        self._current = None

    def __getstate__(self):
        return {"_pending": deque(), "_current": None}  # nothing of a running epoch is saved


class _RecordingSampler:
    """Wraps a sampler: reports each position it yields to a queue."""

    def __init__(self, sampler, queue):
        self.sampler = sampler
        self.queue = queue

    def __iter__(self):
        for i in self.sampler:
            self.queue.put(torch.tensor([i], dtype=torch.int64))
            yield i

    def __len__(self):
        return len(self.sampler)


def _record_positions(loader, queue):
    """Make ``loader``'s batch sampler report the positions it draws to ``queue``, in place.

    The loader itself is built by the user's ``iterator_train`` from the user's
    dataset and arguments; only the sampler its batch sampler draws from is
    wrapped.
    """
    batch_sampler = getattr(loader, "batch_sampler", None)
    if batch_sampler is None or not hasattr(batch_sampler, "sampler"):
        raise TypeError(
            f"iterator_train {type(loader).__name__} draws no batches from a batch sampler with a "
            "`sampler` (as torch DataLoaders do), so ActiveNet cannot tell which samples a batch "
            "holds; the training parts that keep per-sample state (skal.parts.TrainingDynamics) "
            "need that."
        )
    if not isinstance(batch_sampler.sampler, _RecordingSampler):
        batch_sampler.sampler = _RecordingSampler(batch_sampler.sampler, queue)
    return loader


class ArrayLoader:
    """Training batches of in-memory arrays, gathered a batch at a time.

    Yields what ``DataLoader(dataset, batch_size, shuffle, drop_last)`` with
    the default collate function yields for a skorch Dataset of arrays (or a
    ``Subset`` of one, as ``train_split`` makes): ``(X_batch, y_batch)`` tensors
    (dicts of tensors for dict X), in the same order, drawn from torch's
    global random state exactly as DataLoader draws it, so a seeded fit gives
    the same weights. Rows are gathered from one tensor per array, which on
    small models is several times cheaper than fetching and collating items.

    Parameters
    ----------
    dataset : skorch.dataset.Dataset or torch.utils.data.Subset of one
        With array (or tensor, or dict of those) ``X`` and ``y``.
    batch_size : int
    shuffle : bool, default=False
    drop_last : bool, default=False
    queue : SampleIndexQueue or None, default=None
        Receives each batch's positions (into ``dataset``) as it is drawn.
    transform : callable or None, default=None
        Applied to each sample's X (a tensor) of every batch.
    """

    def __init__(self, dataset, batch_size, shuffle=False, drop_last=False, queue=None,
                 transform=None):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.queue = queue
        self.transform = transform
        base, rows = (dataset.dataset, torch.as_tensor(dataset.indices, dtype=torch.int64)) \
            if isinstance(dataset, Subset) else (dataset, None)
        self._X = _to_tensors(base.X)
        self._y = _to_tensors(base.y)
        self._rows = rows

    @staticmethod
    def accepts(iterator, dataset, kwargs):
        """Whether ``iterator(dataset, **kwargs)`` is a plain DataLoader this class reproduces."""
        if iterator is not DataLoader or not set(kwargs) <= _ARRAY_PATH_KWARGS:
            return False
        base = dataset.dataset if isinstance(dataset, Subset) else dataset
        return (type(base) is SkorchDataset and _is_array_data(base.X) and base.y is not None
                and _is_array_data(base.y) and not isinstance(base.y, Mapping))

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        # The same draws from torch's global generator as DataLoader(shuffle=...) makes:
        # its workers' base seed on each iteration, then RandomSampler's own seed for
        # a torch.randperm (tested against DataLoader, bit for bit).
        torch.empty((), dtype=torch.int64).random_()
        if self.shuffle:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        else:
            order = torch.arange(n)
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.queue is not None:
                self.queue.put(batch)
            rows = batch if self._rows is None else self._rows[batch]
            Xb = _gather(self._X, rows)
            if self.transform is not None:
                Xb = torch.stack([self.transform(x) for x in Xb])
            yield Xb, _gather(self._y, rows)


class _TransformingCollate:
    """A DataLoader ``collate_fn`` applying ``transform`` to each sample of a batch's X, as the
    array path does; a class (not a closure) so that DataLoader workers can pickle it."""

    def __init__(self, transform, collate):
        self.transform, self.collate = transform, collate

    def __call__(self, items):
        batch = self.collate(items)
        if not isinstance(batch, (list, tuple)) or not isinstance(batch[0], torch.Tensor):
            raise TypeError("train_transform needs batches (X, y) whose X is one tensor, got "
                            f"{type(batch).__name__} from the collate function.")
        X = torch.stack([self.transform(x) for x in batch[0]])
        return (X, *batch[1:]) if isinstance(batch, tuple) else [X, *batch[1:]]


def training_loader(iterator, dataset, kwargs, queue=None, transform=None, array_path=True):
    """The training iterator ActiveNet uses in place of ``iterator(dataset, **kwargs)``.

    Parameters
    ----------
    iterator : class
        The net's ``iterator_train``.
    dataset : torch Dataset
        The training data as skorch made it.
    kwargs : dict
        The ``iterator_train__*`` arguments, ``batch_size`` filled in.
    queue : SampleIndexQueue or None
        Where each batch's sample positions go, when a training part reads them.
    transform : callable or None
        The net's ``train_transform``.
    array_path : bool, default=True
        Whether an :class:`ArrayLoader` may stand in for a plain DataLoader
        (not under Accelerate, which shards DataLoaders across processes).

    Returns
    -------
    iterable of batches, or None
        None when ``iterator(dataset, **kwargs)`` itself serves (nothing to
        record, nothing to transform, no array path).
    """
    if array_path and ArrayLoader.accepts(iterator, dataset, kwargs):
        return ArrayLoader(dataset, queue=queue, transform=transform, **kwargs)
    if queue is None and transform is None:
        return None
    kwargs = dict(kwargs)
    if transform is not None:
        if not (isinstance(iterator, type) and issubclass(iterator, DataLoader)):
            raise TypeError(f"train_transform needs iterator_train to be a torch DataLoader (it "
                            f"passes a collate_fn), got {iterator!r}.")
        kwargs["collate_fn"] = _TransformingCollate(transform, kwargs.get("collate_fn") or default_collate)
    loader = iterator(dataset, **kwargs)
    return loader if queue is None else _record_positions(loader, queue)


def _is_array_data(data):
    if isinstance(data, Mapping):
        return bool(data) and all(_is_array_data(value) for value in data.values())
    if isinstance(data, torch.Tensor):
        return True
    return isinstance(data, np.ndarray) and data.dtype.kind in "biuf"


def _to_tensors(data):
    if isinstance(data, Mapping):
        return {key: _to_tensors(value) for key, value in data.items()}
    return _as_tensor(data)


def _as_tensor(data):
    if isinstance(data, np.ndarray):
        if any(stride < 0 for stride in data.strides):
            data = np.ascontiguousarray(data)  # torch takes no negative strides
        with warnings.catch_warnings():
            # a read-only array (a memmap) is only ever read here
            warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
            return torch.as_tensor(data)
    return torch.as_tensor(data)


def _gather(data, rows):
    if isinstance(data, Mapping):
        return {key: _gather(value, rows) for key, value in data.items()}
    return data.index_select(0, rows if data.device == rows.device else rows.to(data.device))
