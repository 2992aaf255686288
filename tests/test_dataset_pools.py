"""Dataset pools of any numeric dtype, and item errors that name the argument (issue 13, deliverable 9).

A TensorDataset or a Dataset of numpy items, of dtype float64, float16,
int64, int32, uint8 or bool, with or without labels, works in ``query``,
``predict_proba``, ``score`` and ``teach`` exactly like the same values as a
float32 array. A wrong-shaped item after item 0, an overstated ``__len__`` or
a NaN item raise a ValueError naming the argument and the item, and change
nothing.
"""

import pickle
import re

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from skal import ActiveLearner, ActiveNet
from skal.models import MLP
from skal.selectors import CoreSet, Entropy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

rng = np.random.default_rng(0)
BASE = rng.integers(0, 5, size=(80, 4))  # small integers: exact in every dtype below
Y = BASE[:, :3].argmax(1).astype(np.int64)
DTYPES = [np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_]


def _values(dtype):
    return (BASE % 2 if dtype is np.bool_ else BASE).astype(dtype)


class _NumpyItems(Dataset):
    """Items are numpy arrays (``x``, or ``(x, label)`` with labels)."""

    def __init__(self, X, y=None, length=None, bad_item=None):
        self.X, self.y, self.length, self.bad_item = X, y, length, bad_item

    def __len__(self):
        return len(self.X) if self.length is None else self.length

    def __getitem__(self, i):
        x = self.X[i]
        if i == self.bad_item:
            x = x[:3]
        return x if self.y is None else (x, self.y[i])


_CONTAINERS = {
    "TensorDataset": lambda X, y: TensorDataset(torch.from_numpy(X)),
    "TensorDataset with labels": lambda X, y: TensorDataset(torch.from_numpy(X), torch.from_numpy(y)),
    "numpy items": lambda X, y: _NumpyItems(X),
    "numpy items with labels": lambda X, y: _NumpyItems(X, y),
}


def _learner(selector):
    net = ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=3, batch_size=16, lr=0.1, verbose=0,
                    iterator_valid__batch_size=16)
    return ActiveLearner(net, selector, random_state=0).fit(BASE[:20].astype(np.float32), Y[:20])


@pytest.fixture(scope="module")
def fitted(one_torch_thread):
    return {"Entropy": _learner(Entropy()), "CoreSet": _learner(CoreSet())}


@pytest.mark.parametrize("container", list(_CONTAINERS))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_a_dataset_pool_of_any_numeric_dtype_works_like_the_float32_array(fitted, dtype, container):
    values = _values(dtype)
    array = values.astype(np.float32)
    pool = _CONTAINERS[container](values[20:], Y[20:])
    for name, learner in fitted.items():
        idx, scores = learner.query(pool, 6, return_scores=True)
        expected_idx, expected_scores = learner.query(array[20:], 6, return_scores=True)
        np.testing.assert_array_equal(idx, expected_idx, err_msg=name)
        np.testing.assert_array_equal(scores, expected_scores, err_msg=name)
    learner = fitted["Entropy"]
    np.testing.assert_array_equal(learner.predict_proba(pool), learner.predict_proba(array[20:]))
    np.testing.assert_array_equal(learner.predict(pool), learner.predict(array[20:]))
    assert learner.score(pool, Y[20:]) == learner.score(array[20:], Y[20:])

    taught, expected = pickle.loads(pickle.dumps(learner)), pickle.loads(pickle.dumps(learner))
    new = _CONTAINERS[container](values[20:28], Y[20:28])
    taught.teach(new, Y[20:28])
    expected.teach(array[20:28], Y[20:28])
    np.testing.assert_array_equal(taught.X_labeled_, expected.X_labeled_)
    assert taught.X_labeled_.dtype == np.float32
    for key, value in expected.estimator_.module_.state_dict().items():
        assert torch.equal(taught.estimator_.module_.state_dict()[key], value), key


_BAD = {
    # name: (dataset of 60 items, the message with {name})
    "a wrong-shaped item 7": (_NumpyItems(BASE[20:].astype(np.float32), bad_item=7),
                              "{name} item 7 has shape (3,), but item 0 has shape (4,)."),
    "__len__ overstated by 5": (_NumpyItems(BASE[20:].astype(np.float32), length=65),
                                "{name} item 60 could not be read (the dataset says it has 65 items): "
                                "IndexError: index 60 is out of bounds for axis 0 with size 60"),
    "a NaN in item 11": (_NumpyItems(np.where(np.arange(60)[:, None] == 11, np.nan,
                                              BASE[20:]).astype(np.float32)),
                         "{name} contains NaN or infinity in row 11."),
}


@pytest.mark.parametrize("bad", list(_BAD))
def test_a_bad_item_is_named_with_its_index_and_changes_nothing(fitted, bad):
    dataset, message = _BAD[bad]
    learner = fitted["CoreSet"]
    before = pickle.dumps(learner)
    labels = Y[20:20 + len(dataset)] if len(dataset) <= 60 else np.resize(Y, len(dataset))
    calls = {"X_pool": [lambda: learner.query(dataset, 3)],
             "X": [lambda: learner.predict_proba(dataset), lambda: learner.predict(dataset),
                   lambda: learner.score(dataset, labels), lambda: learner.teach(dataset, labels)]}
    for name, entry_points in calls.items():
        for call in entry_points:
            with pytest.raises(ValueError, match=f"^{re.escape(message.format(name=name))}$"):
                call()
    assert pickle.dumps(learner) == before


def test_a_read_only_array_pool_reaches_torch_as_writable_batches(monkeypatch):
    # joblib's workers get read-only memmaps: each pool batch is copied (torch warns on
    # non-writable arrays, and a module writing into its input would write into the memmap)
    import skal._pool

    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    learner = _learner(Entropy()).fit(X[:20], np.arange(20) % 2)
    expected = learner.query(X[20:], 5, return_scores=True)
    seen = []
    original = skal._pool.to_tensor
    monkeypatch.setattr(skal._pool, "to_tensor",
                        lambda Xi, device: seen.append(Xi.flags.writeable) or original(Xi, device=device))
    read_only = X[20:].copy()
    read_only.flags.writeable = False
    got = learner.query(read_only, 5, return_scores=True)
    assert seen and all(seen) and not read_only.flags.writeable
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
