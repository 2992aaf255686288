"""Batch rules: top-k, stochastic (Gumbel-top-k) and cluster round-robin acquisition."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.base import clone

from skal import ActiveLearner, ActiveNet
from skal.kmeans import kmeans
from skal.models import MLP
from skal.selectors import (
    DISAL,
    ISAL,
    LL4AL,
    ClusterBatch,
    Entropy,
    LeastConfidence,
    Margin,
    StochasticBatch,
    TiDAL,
    TopK,
)
from skal.selectors.batch import resolve_batch, round_robin

SCORE_SELECTORS = [Entropy, Margin, LeastConfidence, DISAL, TiDAL, LL4AL, ISAL]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# --- resolution and the sklearn contract ------------------------------------------


@pytest.mark.parametrize("selector_cls", SCORE_SELECTORS)
def test_every_score_selector_has_batch_defaulting_to_topk(selector_cls):
    selector = selector_cls()
    assert selector.get_params()["batch"] == "topk"
    rule = StochasticBatch(mode="power", beta=2.0)
    configured = clone(selector_cls(batch=rule))
    params = configured.get_params(deep=True)
    assert params["batch__mode"] == "power" and params["batch__beta"] == 2.0
    assert configured.batch is not rule  # cloned, not shared
    configured.set_params(batch__beta=3.0)
    assert configured.batch.beta == 3.0


@pytest.mark.parametrize("name, cls", [("topk", TopK), ("stochastic", StochasticBatch),
                                       ("cluster", ClusterBatch)])
def test_resolve_batch_names(name, cls):
    rule = resolve_batch(name)
    assert type(rule) is cls
    assert rule.get_params() == cls().get_params()


@pytest.mark.parametrize("bad", ["top-k", "TOPK", None, 3, StochasticBatch])
def test_resolve_batch_refuses_unknown_values(bad):
    with pytest.raises(ValueError, match=r"batch must be one of \['cluster', 'stochastic', 'topk'\]"):
        resolve_batch(bad)


@pytest.mark.parametrize("rule, message", [
    (StochasticBatch(mode="gumbel"), "'mode' parameter of StochasticBatch"),
    (StochasticBatch(beta=-1.0), "'beta' parameter of StochasticBatch"),
    (ClusterBatch(factor=0.5), "'factor' parameter of ClusterBatch"),
    (ClusterBatch(n_clusters=0), "'n_clusters' parameter of ClusterBatch"),
])
def test_rules_validate_their_parameters_when_used(rule, message):
    with pytest.raises(ValueError, match=message):
        rule.pick(torch.arange(5.0), 2, generator=_gen(0), embed=lambda p: torch.zeros(len(p), 1))


# --- TopK ---------------------------------------------------------------------------


def test_topk_matches_brute_force_with_seeded_ties():
    scores = torch.tensor([0.5, 0.9, 0.5, 0.1, 0.9, 0.5])
    for seed in range(20):
        picks = TopK().pick(scores, 4, generator=_gen(seed)).tolist()
        assert set(picks[:2]) == {1, 4}
        assert set(picks[2:]) <= {0, 2, 5} and len(set(picks)) == 4
        assert picks == TopK().pick(scores, 4, generator=_gen(seed)).tolist()


# --- StochasticBatch ----------------------------------------------------------------


def test_log_weights_match_hand_computations():
    scores = torch.tensor([0.3, 0.9, 0.1, 0.6], dtype=torch.float64)
    ranks = np.array([3, 1, 4, 2], dtype=np.float64)
    np.testing.assert_allclose(StochasticBatch("softrank", 2.0).log_weights(scores).numpy(),
                               -2.0 * np.log(ranks), rtol=1e-12)
    np.testing.assert_allclose(StochasticBatch("power", 1.5).log_weights(scores).numpy(),
                               1.5 * np.log(scores.numpy()), rtol=1e-12)
    np.testing.assert_allclose(StochasticBatch("softmax", 4.0).log_weights(scores).numpy(),
                               4.0 * scores.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(StochasticBatch("power", 0.0).log_weights(scores).numpy(),
                                  np.zeros(4))


def test_power_refuses_negative_scores_and_tolerates_rounding():
    with pytest.raises(ValueError, match="needs non-negative scores, got a minimum of -0.5"):
        StochasticBatch(mode="power").pick(torch.tensor([0.2, -0.5, 0.1]), 1, generator=_gen(0))
    # float32 rounding just below 0 (a KL of two nearly equal distributions) is 0
    log_w = StochasticBatch(mode="power").log_weights(torch.tensor([0.5, -1e-9, 0.25]))
    assert log_w[1].item() == float("-inf")


def _inclusion_probabilities(weights, n):
    """P(i in batch) under successive sampling without replacement, by enumeration."""
    weights = np.asarray(weights, dtype=np.float64)
    probs = np.zeros(len(weights))
    for order in itertools.permutations(range(len(weights)), n):
        p, left = 1.0, weights.sum()
        for i in order:
            p *= weights[i] / left
            left -= weights[i]
        probs[list(order)] += p
    return probs


@pytest.mark.parametrize("rule, weights", [
    (StochasticBatch("softrank", 1.0), 1.0 / np.array([3.0, 1.0, 4.0, 2.0, 5.0])),
    (StochasticBatch("power", 1.0), np.array([0.3, 0.9, 0.1, 0.6, 0.05])),
    (StochasticBatch("softmax", 2.0), np.exp(2.0 * np.array([0.3, 0.9, 0.1, 0.6, 0.05]))),
])
@pytest.mark.parametrize("n", [1, 2])
def test_stochastic_inclusion_frequencies_follow_the_weights(rule, weights, n):
    scores = torch.tensor([0.3, 0.9, 0.1, 0.6, 0.05])
    draws = 6000
    counts = np.zeros(5)
    for seed in range(draws):
        picks = rule.pick(scores, n, generator=_gen(seed)).numpy()
        assert len(set(picks.tolist())) == n
        counts[picks] += 1
    expected = _inclusion_probabilities(weights, n)
    freq = counts / draws
    tolerance = 4.5 * np.sqrt(expected * (1 - expected) / draws)  # ~4.5 sigma, 10 cells
    np.testing.assert_array_less(np.abs(freq - expected), tolerance + 1e-12)
    assert counts.sum() == n * draws


def test_stochastic_is_seeded_and_not_topk():
    scores = torch.linspace(0, 1, 200)
    rule = StochasticBatch()
    a = rule.pick(scores, 20, generator=_gen(1))
    assert torch.equal(a, rule.pick(scores, 20, generator=_gen(1)))
    assert not torch.equal(a, rule.pick(scores, 20, generator=_gen(2)))
    assert set(a.tolist()) != set(range(180, 200))
    assert len(set(a.tolist())) == 20 and a.min() >= 0 and a.max() < 200


# --- ClusterBatch -------------------------------------------------------------------


def _round_robin_reference(labels):
    labels = list(labels)
    clusters = []  # clusters in order of their best (first) item
    for lab in labels:
        if lab not in clusters:
            clusters.append(lab)
    members = {c: [i for i, lab in enumerate(labels) if lab == c] for c in clusters}
    order, r = [], 0
    while len(order) < len(labels):
        for c in clusters:
            if r < len(members[c]):
                order.append(members[c][r])
        r += 1
    return order


@pytest.mark.parametrize("seed", range(10))
def test_round_robin_matches_reference(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 8))
    labels = rng.integers(0, k, size=int(rng.integers(1, 40)))
    got = round_robin(torch.as_tensor(labels), k).tolist()
    assert got == _round_robin_reference(labels)


def test_kmeans_is_a_lloyd_fixed_point_and_recovers_blobs():
    rng = np.random.default_rng(0)
    means = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float64)
    truth = np.repeat(np.arange(4), 50)
    X = means[truth] + rng.normal(scale=0.5, size=(200, 2))
    labels, centers = kmeans(torch.as_tensor(X), 4, generator=_gen(0), chunk_size=37)
    labels, centers = labels.numpy(), centers.numpy()
    # same partition as the truth, up to renaming
    assert {tuple(np.flatnonzero(labels == c)) for c in range(4)} == \
        {tuple(np.flatnonzero(truth == c)) for c in range(4)}
    np.testing.assert_allclose(centers, [X[labels == c].mean(0) for c in range(4)], atol=1e-9)
    brute = ((X[:, None, :] - centers[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(labels, brute)
    again = kmeans(torch.as_tensor(X), 4, generator=_gen(0))[0].numpy()
    np.testing.assert_array_equal(labels, again)


def test_kmeans_validates_its_input():
    with pytest.raises(ValueError, match=r"k must be in \[1, 3\]"):
        kmeans(torch.zeros(3, 2), 4)
    with pytest.raises(ValueError, match="2-D floating-point"):
        kmeans(torch.zeros(3, dtype=torch.int64), 1)
    labels, _ = kmeans(torch.zeros(5, 2), 3, generator=_gen(0))  # duplicate rows
    assert labels.shape == (5,)


def test_cluster_batch_spreads_where_topk_piles_up():
    rng = np.random.default_rng(0)
    # three tight groups; the highest scores all sit in group 0
    points = np.concatenate([rng.normal(c, 0.1, size=(20, 2)) for c in (0.0, 5.0, 10.0)])
    scores = np.concatenate([3 + rng.random(20), 2 + rng.random(20), 1 + rng.random(20)])
    points_t, scores_t = torch.as_tensor(points, dtype=torch.float32), torch.as_tensor(scores)
    seen = []

    def embed(positions):
        seen.append(positions.clone())
        return points_t[positions]

    top = TopK().pick(scores_t, 3, generator=_gen(0))
    assert set(top.tolist()) <= set(range(20))
    picks = ClusterBatch(factor=20).pick(scores_t, 3, generator=_gen(0), embed=embed)
    # one per group, each group's best
    assert set(picks.tolist()) == {int(np.argmax(scores[g * 20:(g + 1) * 20])) + 20 * g
                                   for g in range(3)}
    assert len(seen) == 1 and len(seen[0]) == 60  # embeddings of the candidates only
    # factor=1: the candidates are the batch, no clustering
    assert torch.equal(ClusterBatch(factor=1).pick(scores_t, 3, generator=_gen(0)), top)


def test_cluster_batch_candidates_are_the_top_factor_n():
    scores = torch.arange(100.0)
    seen = []

    def embed(positions):
        seen.append(set(positions.tolist()))
        return torch.randn(len(positions), 3, generator=_gen(5))

    picks = ClusterBatch(factor=2.5, n_clusters=4).pick(scores, 4, generator=_gen(0), embed=embed)
    assert seen == [set(range(90, 100))]
    assert set(picks.tolist()) <= seen[0] and len(set(picks.tolist())) == 4
    with pytest.raises(ValueError, match="needs the candidates' embeddings"):
        ClusterBatch().pick(scores, 4, generator=_gen(0))


# --- through the learner ------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(260, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.7)
    return X[:60], y[:60], X[60:]


def _learner(selector):
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=3, lr=0.1, batch_size=16, verbose=0)
    return ActiveLearner(net, selector, random_state=0)


@pytest.mark.parametrize("batch", ["topk", "stochastic", "cluster",
                                   StochasticBatch("power", 2.0), ClusterBatch(factor=3)])
def test_learner_queries_with_every_rule(data, batch):
    X, y, pool = data
    learner = _learner(Entropy(batch=batch)).fit(X, y)
    idx, scores = learner.query(pool, 15, return_scores=True)
    assert idx.dtype == np.int64 and len(set(idx.tolist())) == 15
    assert idx.min() >= 0 and idx.max() < len(pool)
    assert np.all(np.diff(scores) <= 0)
    reference = Entropy().score_pool(learner.estimator_, pool).numpy()
    np.testing.assert_allclose(scores, reference[idx], rtol=1e-6)
    again = learner.query(pool, 15)
    np.testing.assert_array_equal(idx, again)


def test_default_batch_equals_topk_and_rules_differ(data):
    X, y, pool = data
    default = _learner(Entropy()).fit(X, y).query(pool, 20)
    topk = _learner(Entropy(batch="topk")).fit(X, y).query(pool, 20)
    np.testing.assert_array_equal(default, topk)
    stochastic = _learner(Entropy(batch="stochastic")).fit(X, y).query(pool, 20)
    assert set(stochastic.tolist()) != set(topk.tolist())


def test_cluster_rule_picks_among_the_top_candidates(data):
    X, y, pool = data
    learner = _learner(DISAL(batch=ClusterBatch(factor=4))).fit(X, y)
    idx, scores = learner.query(pool, 10, return_scores=True)
    kl = DISAL().score_pool(learner.estimator_, pool)
    candidates = torch.sort(kl, descending=True, stable=True).indices[:40]
    assert set(idx.tolist()) <= set(candidates.tolist()) and len(set(idx.tolist())) == 10
    np.testing.assert_allclose(scores, kl.numpy()[idx], rtol=1e-6)
    topk = _learner(DISAL()).fit(X, y).query(pool, 10)
    assert set(idx.tolist()) != set(topk.tolist())


class _Duplicates(TopK):
    def pick(self, scores, n, *, generator=None, embed=None):
        return torch.zeros(n, dtype=torch.int64)


class _Bottom(TopK):
    """A TopK subclass with its own pick: must be used, not bypassed."""

    def pick(self, scores, n, *, generator=None, embed=None):
        return torch.argsort(scores)[:n]


def test_custom_rules_are_used_and_checked(data):
    X, y, pool = data
    learner = _learner(Entropy(batch=_Bottom())).fit(X, y)
    idx = learner.query(pool, 5)
    entropy = Entropy().score_pool(learner.estimator_, pool).numpy()
    assert set(idx.tolist()) == set(np.argsort(entropy)[:5].tolist())
    learner = _learner(Entropy(batch=_Duplicates())).fit(X, y)
    with pytest.raises(RuntimeError, match=r"_Duplicates\(\)\.pick must return 5 distinct integer "
                                           r"positions in \[0, 200\)"):
        learner.query(pool, 5)


def test_stochastic_refuses_infinite_scores_and_ranks_low_precision_in_float32():
    with pytest.raises(ValueError, match="StochasticBatch needs finite scores"):
        StochasticBatch("softmax", beta=0.0).pick(torch.tensor([1.0, float("inf")]), 1)
    scores = torch.linspace(0, 1, 1000).to(torch.bfloat16)
    log_w = StochasticBatch().log_weights(scores, generator=_gen(0))
    assert log_w.dtype == torch.float32 and len(torch.unique(log_w)) == 1000


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("rule", [TopK(), StochasticBatch(), StochasticBatch("power", 2.0),
                                  ClusterBatch(factor=4)], ids=repr)
def test_rules_on_cuda_are_seeded_distinct_and_stay_on_the_device(rule):
    scores = torch.rand(500, generator=torch.Generator().manual_seed(0)).cuda()
    points = torch.randn(500, 8, generator=torch.Generator().manual_seed(1)).cuda()

    def pick(seed):
        generator = torch.Generator(device="cuda").manual_seed(seed)
        return rule.pick(scores, 20, generator=generator, embed=lambda pos: points[pos])

    a = pick(3)
    assert a.device.type == "cuda" and len(torch.unique(a)) == 20
    assert torch.equal(a, pick(3))
    if isinstance(rule, TopK):
        assert set(a.tolist()) == set(torch.topk(scores, 20).indices.tolist())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kmeans_on_cuda_matches_cpu_partition():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.3, size=(40, 3)) for c in (0.0, 5.0, 10.0)])
    X = torch.as_tensor(X, dtype=torch.float32)
    labels, _ = kmeans(X.cuda(), 3, generator=torch.Generator(device="cuda").manual_seed(0))
    again, _ = kmeans(X.cuda(), 3, generator=torch.Generator(device="cuda").manual_seed(0))
    assert torch.equal(labels, again)
    groups = {tuple(np.flatnonzero(labels.cpu().numpy() == c)) for c in range(3)}
    assert groups == {tuple(range(g * 40, (g + 1) * 40)) for g in range(3)}
