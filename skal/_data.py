"""Helpers that let arrays, tensors and torch Datasets travel the same paths."""

import numpy as np
import torch
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
    and a pool's labels (if any) must never reach a selector.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return _features(self.dataset[i]), 0


def sample_shape(dataset):
    """Shape of one sample's features, from the first item."""
    return tuple(np.shape(_features(dataset[0])))


def materialize(dataset):
    """Stack a Dataset's features into a float32 array (for the labeled set)."""
    items = [np.asarray(_features(dataset[i]), dtype=np.float32) for i in range(len(dataset))]
    if not items:
        return np.empty((0,), dtype=np.float32)
    return np.stack(items)
