"""Pool passes survive CUDA out-of-memory errors by splitting the batch (injected on CPU)."""

import warnings

import numpy as np
import pytest
import torch

from skal import ActiveLearner, ActiveNet
from skal.models import MLP
from skal.selectors import CoreSet, Entropy


def _net(batch_size=8):
    return ActiveNet(MLP, module__num_classes=3, batch_size=batch_size, verbose=0).initialize()


class _Limited:
    """``fn`` that runs out of 'device memory' above ``limit`` rows; records batch sizes."""

    def __init__(self, limit):
        self.limit, self.sizes = limit, []

    def __call__(self, Xb):
        rows = len(next(iter(Xb.values()))) if isinstance(Xb, dict) else len(Xb)
        self.sizes.append(rows)
        if rows > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        first = Xb["a"] if isinstance(Xb, dict) else Xb
        return first.sum(1) * 2


def test_map_pool_without_errors_is_the_plain_pass():
    X = np.arange(60, dtype=np.float32).reshape(20, 3)
    fn = _Limited(limit=100)
    out = _net().map_pool(fn, X)
    np.testing.assert_array_equal(out.numpy(), X.sum(1) * 2)
    assert fn.sizes == [8, 8, 4]


def test_out_of_memory_splits_the_batch_and_keeps_the_smaller_size():
    X = np.arange(60, dtype=np.float32).reshape(20, 3)
    fn = _Limited(limit=3)
    with pytest.warns(RuntimeWarning, match="CUDA ran out of memory on a pool batch of 8 samples; "
                                            "retrying in pieces of 4") as record:
        out = _net().map_pool(fn, X)
    assert len(record) == 1  # one warning per pass
    np.testing.assert_array_equal(out.numpy(), X.sum(1) * 2)
    # 8 fails, its first half fails, then pieces of 2; later batches go straight to 2s
    assert fn.sizes == [8, 4, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]


def test_dict_batches_are_split_key_by_key():
    X = {"a": np.arange(30, dtype=np.float32).reshape(10, 3),
         "b": np.zeros((10, 1), dtype=np.float32)}
    net = _net(batch_size=10)
    with pytest.warns(RuntimeWarning):
        out = net.map_pool(_Limited(limit=5), X)
    np.testing.assert_array_equal(out.numpy(), X["a"].sum(1) * 2)


def test_out_of_memory_on_a_single_sample_is_raised():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(torch.cuda.OutOfMemoryError, match="Tried to allocate"):
            _net().map_pool(_Limited(limit=0), np.ones((5, 3), dtype=np.float32))


def test_other_errors_are_not_retried():
    def fn(Xb):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        _net().map_pool(fn, np.ones((5, 3), dtype=np.float32))


class _FragileEntropy(Entropy):
    """Entropy that 'runs out of memory' on batches of more than 5 samples."""

    def _score_batch(self, net, X_batch):
        if len(X_batch) > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return super()._score_batch(net, X_batch)


@pytest.mark.parametrize("selector, fragile", [(Entropy(), _FragileEntropy())])
def test_a_query_survives_out_of_memory_with_the_same_answer(selector, fragile):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 1)
    pool = rng.normal(size=(57, 4)).astype(np.float32)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=2, batch_size=16, verbose=0)
    expected = ActiveLearner(net, selector, random_state=0).fit(X, y).query(pool, 9, return_scores=True)
    with pytest.warns(RuntimeWarning, match="CUDA ran out of memory on a pool batch of 16"):
        got = ActiveLearner(net, fragile, random_state=0).fit(X, y).query(pool, 9, return_scores=True)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6)


def test_coreset_embeddings_go_through_the_retrying_pass(monkeypatch):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    pool = rng.normal(size=(41, 4)).astype(np.float32)
    net = ActiveNet(MLP, max_epochs=1, batch_size=16, verbose=0)
    learner = ActiveLearner(net, CoreSet(), random_state=0).fit(X, y)
    expected = learner.query(pool, 5)
    original = ActiveNet.forward_tapped

    def fragile(self, Xb, **kwargs):
        if len(Xb) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return original(self, Xb, **kwargs)

    expected_scores = learner.query(pool, 5, return_scores=True)[1]
    monkeypatch.setattr(ActiveNet, "forward_tapped", fragile)
    with pytest.warns(RuntimeWarning, match="CUDA ran out of memory"):
        got, scores = learner.query(pool, 5, return_scores=True)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)


def test_results_of_a_failed_attempt_are_not_kept():
    # the first half of the batch succeeds, the second runs out of memory: the retry must
    # not keep the first half's result twice
    X = np.arange(60, dtype=np.float32).reshape(20, 3)
    calls = []

    def fn(Xb):
        calls.append(len(Xb))
        if len(Xb) > 2 and Xb[:, 0].max() >= 12:  # rows 4.. of the pool, in pieces above 2
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return Xb[:, 0] / 3

    with pytest.warns(RuntimeWarning):
        out = _net().map_pool(fn, X)
    np.testing.assert_array_equal(out.numpy(), np.arange(20))
    assert calls[:4] == [8, 4, 4, 2]  # whole batch, then 4 (ok) + 4 (fails), then 2s


def test_tuple_batches_are_split_element_wise():
    from skal._pool import batch_len, split_batch

    a, b = torch.arange(10).reshape(5, 2), torch.arange(5)
    pieces = split_batch((a, b), 2)
    assert batch_len((a, b)) == 5 and [len(p[0]) for p in pieces] == [3, 2]
    assert all(isinstance(p, tuple) for p in pieces)
    torch.testing.assert_close(torch.cat([p[1] for p in pieces]), b)
