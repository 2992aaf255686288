"""Property-based tests of the query contract, for every selector and batch rule.

Over random pools (1 to 60 samples, duplicates and all), every ``n`` the
selector allows and random seeds: a query returns ``n`` distinct int64
indices into the pool, is deterministic on CPU for a fixed seed, and its
scores are finite and non-increasing in the returned order. Each selector's
net is trained once (module-scoped); hypothesis varies only the query.
"""

import inspect

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import clone
from torch import nn

from skal import ActiveLearner, ActiveNet, selectors
from skal._samples import labeled_data
from skal.selectors import (
    BADGE,
    BALD,
    DISAL,
    ISAL,
    LL4AL,
    BaseSelector,
    ClusterBatch,
    CoreSet,
    Entropy,
    LeastConfidence,
    Margin,
    Random,
    ScoreSelector,
    StochasticBatch,
    TiDAL,
)

N_FEATURES, MAX_POOL, SUBSET = 3, 60, 8


class TinyNet(nn.Module):
    """Two ``layer<k>`` stages (the heads' multi-level features) and a linear classifier;
    with ``dropout``, a dropout layer before it (for BALD)."""

    def __init__(self, num_classes=3, in_features=N_FEATURES, width=8, dropout=0.0):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(in_features, width), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Linear(width, width), nn.ReLU(),
                                    *([nn.Dropout(dropout)] if dropout else []))
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.layer2(self.layer1(x)))


BASE = [
    Random(),
    Entropy(),
    Margin(),
    LeastConfidence(),
    DISAL(),
    DISAL(mode="literal"),
    TiDAL(subset=None),
    TiDAL(score="margin", subset=SUBSET),
    LL4AL(subset=None),
    LL4AL(subset=SUBSET),
    ISAL(depth=4, repeats=1),
    ISAL(params="last layer", depth=3, repeats=2),
    CoreSet(),
    CoreSet(subset=SUBSET, chunk_size=7),
    BALD(n_samples=3),
    BALD(n_samples=2, subset=SUBSET),
    BADGE(),
    BADGE(first="random", subset=SUBSET),
]


# A batch rule only turns scores into a batch, whatever computed them: Entropy (the cheapest
# score) runs every rule; every other class that takes a ``batch`` runs one non-default rule.
ALL_RULES = ("stochastic", "cluster", StochasticBatch(mode="softmax", beta=0.5),
             ClusterBatch(factor=2, n_clusters=3))


def _with_batch_rules(base):
    variants, seen = list(base), set()
    for selector in base:
        if "batch" in selector.get_params() and type(selector) not in seen:
            seen.add(type(selector))
            rules = ALL_RULES if type(selector) is Entropy else [ALL_RULES[len(seen) % 2]]
            variants += [clone(selector).set_params(batch=rule) for rule in rules]
    return variants


SELECTORS = _with_batch_rules(BASE)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_public_selector_and_batch_rule_is_covered():
    public = {obj for name in selectors.__all__ if inspect.isclass(obj := getattr(selectors, name))
              and issubclass(obj, BaseSelector) and obj not in (BaseSelector, ScoreSelector)}
    assert public == {type(s) for s in SELECTORS}
    batch_values = {repr(s.batch) for s in SELECTORS if "batch" in s.get_params()}
    assert batch_values == {"'topk'", *map(repr, ALL_RULES)}
    for cls in {type(s) for s in SELECTORS if "batch" in s.get_params()}:
        assert len({repr(s.batch) for s in SELECTORS if type(s) is cls}) >= 2, cls


@pytest.fixture(scope="module", params=SELECTORS, ids=repr)
def learner(request):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(45, N_FEATURES)).astype(np.float32)
    y = np.arange(45) % 3
    net = ActiveNet(TinyNet, max_epochs=2, batch_size=16, lr=0.05, verbose=0,
                    module__dropout=0.5 if isinstance(request.param, BALD) else 0.0)
    return ActiveLearner(net, selector=request.param, random_state=0).fit(X, y)


def _max_n(selector, size):
    subset = getattr(selector, "subset", None)
    return size if subset is None or subset >= size else subset


@st.composite
def pools(draw, selector):
    size = draw(st.integers(1, MAX_POOL))
    pool = draw(arrays(np.float32, (size, N_FEATURES),
                       elements=st.floats(-4, 4, width=32, allow_subnormal=False)))
    n = draw(st.integers(1, _max_n(selector, size)))
    seed = draw(st.integers(0, 2**31 - 1))
    return pool, n, seed


def _check_contract(indices, scores, n, size):
    assert isinstance(indices, np.ndarray) and indices.dtype == np.int64 and indices.shape == (n,)
    assert len(set(indices.tolist())) == n
    assert indices.min() >= 0 and indices.max() < size
    assert isinstance(scores, np.ndarray) and scores.shape == (n,)
    assert np.all(np.isfinite(scores))
    assert np.all(scores[1:] <= scores[:-1]), scores


PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPERTY
@given(data=st.data())
def test_query_contract(learner, data):
    pool, n, seed = data.draw(pools(learner.selector_))
    size = len(pool)
    before = pool.copy()

    # through the learner (its seed is fixed by random_state)
    indices, scores = learner.query(pool, n, return_scores=True)
    _check_contract(indices, scores, n, size)
    again, again_scores = learner.query(pool, n, return_scores=True)
    np.testing.assert_array_equal(again, indices)
    np.testing.assert_array_equal(again_scores, scores)

    # the selector itself, with a drawn seed
    net, labeled = learner.estimator_, labeled_data(learner._state())
    picked, picked_scores = learner.selector_.select(net, pool, n, random_state=seed, labeled=labeled)
    picked = np.asarray(picked)
    _check_contract(picked, np.asarray(picked_scores), n, size)
    repeat, repeat_scores = learner.selector_.select(net, pool, n, random_state=seed, labeled=labeled)
    np.testing.assert_array_equal(repeat, picked)
    np.testing.assert_array_equal(repeat_scores, picked_scores)
    np.testing.assert_array_equal(pool, before)  # the caller's pool is not modified


@settings(PROPERTY, max_examples=8)
@given(data=st.data())
def test_whole_pool_query_is_a_permutation(learner, data):
    if _max_n(learner.selector_, MAX_POOL) < MAX_POOL:
        size = data.draw(st.integers(1, SUBSET))  # a subset only applies to larger pools
    else:
        size = data.draw(st.integers(1, MAX_POOL))
    pool = data.draw(arrays(np.float32, (size, N_FEATURES), elements=st.sampled_from([-1.0, 0.0, 2.5])))
    indices, scores = learner.query(pool, size, return_scores=True)
    np.testing.assert_array_equal(np.sort(indices), np.arange(size))
    assert np.all(np.isfinite(scores)) and np.all(scores[1:] <= scores[:-1])


@pytest.mark.parametrize("selector", [s for s in BASE if getattr(s, "subset", None)], ids=repr)
def test_n_above_the_subset_is_refused_with_both_named(selector):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(45, N_FEATURES)).astype(np.float32)
    net = ActiveNet(TinyNet, max_epochs=2, batch_size=16, lr=0.05, verbose=0,
                    module__dropout=0.5 if isinstance(selector, BALD) else 0.0)
    learner = ActiveLearner(net, selector=selector, random_state=0).fit(X, np.arange(45) % 3)
    pool = rng.normal(size=(SUBSET + 5, N_FEATURES)).astype(np.float32)
    with pytest.raises(ValueError, match=rf"^n={SUBSET + 1} exceeds {type(selector).__name__}'s "
                                         rf"subset={SUBSET}: raise subset or set it to None"):
        learner.query(pool, SUBSET + 1)
    assert learner.query(pool, SUBSET).shape == (SUBSET,)
    # a pool no larger than the subset is scored whole
    np.testing.assert_array_equal(np.sort(learner.query(pool[:SUBSET], SUBSET)), np.arange(SUBSET))


def test_torch_global_random_state_is_untouched_by_queries(learner):
    pool = np.random.default_rng(1).normal(size=(30, N_FEATURES)).astype(np.float32)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    learner.query(pool, 5)
    learner.selector_.select(learner.estimator_, pool, 5, random_state=3, labeled=labeled_data(learner._state()))
    assert torch.equal(torch.rand(3), expected)
