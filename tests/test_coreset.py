"""CoreSet through ActiveLearner: embeddings, labeled centers, exact greedy picks."""

import numpy as np
import pytest
import torch
from torch import nn

from skal import ActiveLearner, ActiveNet
from skal.models import MLP, SmallCNN
from skal.selectors import CoreSet


def _data(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    return X, rng.integers(0, 3, size=n)


def _brute_force(pool, centers, n):
    """k-center greedy in float64 numpy with full distance matrices."""
    dist = np.sqrt(((pool[:, None, :] - centers[None, :, :]) ** 2).sum(-1)).min(1)
    picks, gaps = [], []
    for _ in range(n):
        j = int(np.argmax(dist))
        picks.append(j)
        gaps.append(dist[j])
        dist = np.minimum(dist, np.sqrt(((pool - pool[j]) ** 2).sum(1)))
        dist[j] = -1
    return np.array(picks), np.array(gaps)


def _embed(net, X):
    """The input of the last Linear (fc), by a hand-written forward."""
    module = net.module_.eval()
    with torch.no_grad():
        return module.pool(module.layer2(module.layer1(torch.from_numpy(X)))).double().numpy()


@pytest.mark.parametrize("chunk_size", [1, 8192])
def test_coreset_picks_equal_brute_force_on_the_nets_embeddings(chunk_size):
    X, y = _data(30, 0)
    X_pool, _ = _data(50, 1)
    net = ActiveNet(SmallCNN, module__width=4, max_epochs=2, batch_size=8, verbose=0,
                    iterator_valid__batch_size=7)
    learner = ActiveLearner(net, selector=CoreSet(chunk_size=chunk_size), random_state=0).fit(X, y)
    idx, scores = learner.query(X_pool, 10, return_scores=True)
    expected_idx, expected_gaps = _brute_force(_embed(learner.estimator_, X_pool),
                                               _embed(learner.estimator_, X), 10)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(scores, expected_gaps, rtol=1e-4)
    assert np.all(np.diff(scores) <= 0)


def test_coreset_subset_draws_candidates_from_the_query_seed():
    X, y = _data(30, 0)
    X_pool, _ = _data(60, 2)
    net = ActiveNet(SmallCNN, module__width=4, max_epochs=1, verbose=0)
    learner = ActiveLearner(net, selector=CoreSet(subset=20), random_state=0).fit(X, y)
    idx = learner.query(X_pool, 5)
    again = learner.query(X_pool, 5)
    np.testing.assert_array_equal(idx, again)
    from skal.learner import _QUERY, _derive_seed
    subset = np.random.default_rng(_derive_seed(learner._state().seed, 0, _QUERY)).choice(60, 20, replace=False)
    assert set(idx.tolist()) <= set(subset.tolist())
    with pytest.raises(ValueError, match=r"n=21 exceeds CoreSet's subset=20"):
        learner.query(X_pool, 21)


def test_named_embedding_layer_is_used_and_a_missing_one_fails_at_fit():
    X, y = _data(30, 0)
    net = ActiveNet(SmallCNN, module__width=4, max_epochs=1, verbose=0, embedding_layer="layer1")
    learner = ActiveLearner(net, selector=CoreSet(), random_state=0).fit(X, y)
    _, features = learner.estimator_.forward_tapped(torch.from_numpy(X[:3]), embedding=True)
    assert features["embedding"].shape == (3, 4 * 4 * 4)  # layer1's 4x4x4 maps, flattened
    bad = ActiveNet(SmallCNN, module__width=4, max_epochs=1, verbose=0, embedding_layer="nope")
    with pytest.raises(ValueError, match=r"embedding_layer: the module has no submodule 'nope'; available: \["):
        ActiveLearner(bad, selector=CoreSet()).fit(X, y)


class _NoLinear(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(1, num_classes, 8)

    def forward(self, x):
        return self.conv(x).flatten(1)


def test_auto_embedding_without_a_linear_layer_is_a_clear_error():
    X, y = _data(30, 0)
    learner = ActiveLearner(ActiveNet(_NoLinear, max_epochs=1, verbose=0), selector=CoreSet()).fit(X, y)
    with pytest.raises(ValueError, match=r"embedding_layer='auto' needs a torch.nn.Linear"):
        learner.query(X, 3)


def test_coreset_on_tabular_data_with_mlp():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.integers(0, 2, size=40)
    learner = ActiveLearner(ActiveNet(MLP, max_epochs=1, verbose=0), selector=CoreSet(), random_state=0)
    learner.fit(X[:10], y[:10])
    idx = learner.query(X[10:], 30)
    np.testing.assert_array_equal(np.sort(idx), np.arange(30))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_coreset_on_cuda_matches_cpu():
    X, y = _data(30, 0)
    X_pool, _ = _data(50, 1)
    results = []
    for device in ["cpu", "cuda"]:
        net = ActiveNet(SmallCNN, module__width=4, max_epochs=1, verbose=0, device=device)
        learner = ActiveLearner(net, selector=CoreSet(), random_state=0).fit(X, y)
        results.append(learner)
    # the same weights on both devices, so the same picks
    results[1].estimator_.module_.load_state_dict(results[0].estimator_.module_.state_dict())
    np.testing.assert_array_equal(results[0].query(X_pool, 10), results[1].query(X_pool, 10))
