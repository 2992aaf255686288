"""BADGE: gradient embeddings against autograd, factored k-means++ against a brute force."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn
from torch.utils.data import TensorDataset

from skal import ActiveLearner, ActiveNet
from skal._samples import labeled_data
from skal.kmeans import kmeans_plusplus_outer
from skal.learner import _QUERY, _derive_seed
from skal.models import SmallCNN
from skal.selectors import BADGE
from skal.selectors.badge import gradient_embedding_factors


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def brute_force_seeding(G, k, generator, first="norm"):
    """k-means++ on explicit rows G (n, m) in float64 numpy, fed the same draws as
    kmeans_plusplus_outer: the top_n permutation (or one randint), then n uniforms per pick,
    the row of smallest -log(1 - u) / D^2 winning (an exponential race)."""
    G = np.asarray(G, dtype=np.float64)
    n = len(G)
    norms = (G ** 2).sum(1)
    if first == "norm":
        perm = torch.randperm(n, generator=generator).numpy()
        pick = perm[np.argsort(-norms[perm], kind="stable")[0]]
    else:
        pick = int(torch.randint(n, (), generator=generator))
    picks, d2 = [int(pick)], [norms[pick]]
    for _ in range(k - 1):
        u = torch.rand(n, generator=generator, dtype=torch.float64).numpy()
        dist = ((G[:, None, :] - G[None, picks, :]) ** 2).sum(-1).min(1)
        dist[picks] = 0.0
        weights = dist if dist.sum() > 0 else np.isin(np.arange(n), picks, invert=True).astype(float)
        with np.errstate(divide="ignore"):
            times = np.where(weights > 0, -np.log1p(-u) / weights, np.inf)
        pick = int(np.argmin(times))
        picks.append(pick)
        d2.append(dist[pick])
    return np.array(picks), np.array(d2)


def _outer(A, H):
    A, H = np.asarray(A, np.float64), np.asarray(H, np.float64)
    return np.einsum("nc,nd->ncd", A, H).reshape(len(A), -1)


# --- the seeding ------------------------------------------------------------------------

@pytest.mark.parametrize("first", ["norm", "random"])
@pytest.mark.parametrize("n, k, C, d", [(40, 10, 3, 5), (25, 25, 4, 2), (60, 1, 10, 8)])
def test_seeding_equals_brute_force_on_explicit_outer_products(first, n, k, C, d):
    g = torch.Generator().manual_seed(n + k)
    A = torch.randn(n, C, generator=g, dtype=torch.float64)
    H = torch.randn(n, d, generator=g, dtype=torch.float64)
    idx, d2 = kmeans_plusplus_outer(A, H, k, first=first, generator=torch.Generator().manual_seed(7))
    expected_idx, expected_d2 = brute_force_seeding(_outer(A, H), k, torch.Generator().manual_seed(7),
                                                    first)
    np.testing.assert_array_equal(idx.numpy(), expected_idx)
    np.testing.assert_allclose(d2.numpy(), expected_d2, rtol=1e-9, atol=1e-12)
    assert len(set(idx.tolist())) == k


def test_factored_squared_distances_equal_the_explicit_ones():
    # D^2 to the first pick, then after two picks, against ||g_i - g_j||^2 of the outer products
    g = torch.Generator().manual_seed(3)
    A, H = torch.randn(30, 4, generator=g), torch.randn(30, 6, generator=g)
    G = _outer(A, H)
    idx, d2 = kmeans_plusplus_outer(A, H, 5, generator=torch.Generator().manual_seed(1))
    idx = idx.numpy()
    for j in range(1, 5):
        explicit = ((G[:, None, :] - G[None, idx[:j], :]) ** 2).sum(-1).min(1)
        assert d2[j].item() == pytest.approx(explicit[idx[j]], rel=1e-6)
    assert d2[0].item() == pytest.approx((G[idx[0]] ** 2).sum(), rel=1e-6)
    assert idx[0] == np.argmax((G ** 2).sum(1))  # first="norm": the largest embedding


def test_duplicate_rows_fall_back_to_uniform_draws_among_the_rest():
    # 3 distinct rows, each 4 times: after 3 picks every D^2 is 0
    A = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [0.5, -0.5]], dtype=torch.float64).repeat(4, 1)
    H = torch.tensor([[1.0, 2.0], [2.0, 0.0], [0.0, 3.0]], dtype=torch.float64).repeat(4, 1)
    idx, d2 = kmeans_plusplus_outer(A, H, 12, generator=torch.Generator().manual_seed(0))
    expected_idx, expected_d2 = brute_force_seeding(_outer(A, H), 12, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(idx.numpy(), expected_idx)
    np.testing.assert_allclose(d2.numpy(), expected_d2, atol=1e-12)
    assert sorted(idx.tolist()) == list(range(12))
    assert sorted(idx[:3].numpy() % 3) == [0, 1, 2] and np.all(d2[3:].numpy() == 0)


def test_draws_follow_the_squared_distances():
    # row 0 is the first center (largest norm); rows 1 and 2 have D^2 1 and 3: picked 1:3
    A = torch.ones(3, 1, dtype=torch.float64)
    H = torch.tensor([[10.0], [9.0], [10.0 - 3 ** 0.5]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    second = [kmeans_plusplus_outer(A, H, 2, generator=g)[0][1].item() for _ in range(4000)]
    assert np.mean(np.array(second) == 2) == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"k": 0}, ValueError, r"k must be in \[1, 5\] \(the number of rows\), got 0"),
    ({"k": 6}, ValueError, r"k must be in \[1, 5\]"),
    ({"first": "max"}, ValueError, r"first must be 'norm' or 'random', got 'max'"),
    ({"H": torch.zeros(4, 2)}, ValueError, r"A and H must be 2-D with the same number of rows, "
                                           r"got shapes \(5, 3\) and \(4, 2\)"),
    ({"A": torch.zeros(5, 3, dtype=torch.int64)}, ValueError, r"A and H must be floating point"),
])
def test_seeding_refuses_bad_input_by_name(kwargs, error, match):
    args = {"A": torch.zeros(5, 3), "H": torch.zeros(5, 2), "k": 2, **kwargs}
    with pytest.raises(error, match=match):
        kmeans_plusplus_outer(args.pop("A"), args.pop("H"), args.pop("k"), **args)


# --- the gradient embedding ---------------------------------------------------------------

class _TinyNet(nn.Module):
    def __init__(self, num_classes=4, in_features=5, width=6):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(in_features, width), nn.Tanh())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.layer1(x))


def test_embedding_is_the_last_layer_gradient_of_the_loss_at_the_predicted_label():
    torch.manual_seed(0)
    net = ActiveNet(_TinyNet, batch_size=7, verbose=0).initialize()
    net.module_.double()
    X = torch.randn(20, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    a, h = gradient_embedding_factors(net, X)
    assert a.dtype == h.dtype == torch.float64 and a.shape == (20, 4) and h.shape == (20, 6)
    module = net.module_
    for i in range(20):
        logits = module(X[i:i + 1])
        loss = F.cross_entropy(logits, logits.argmax(1))
        (grad,) = torch.autograd.grad(loss, module.fc.weight)  # (C, d)
        np.testing.assert_allclose(torch.outer(a[i], h[i]).numpy(), grad.numpy(), rtol=1e-12,
                                   atol=1e-15)


# --- the selector ---------------------------------------------------------------------

def _images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8), dtype=np.float32), np.arange(n) % 3


def _factors_by_hand(net, X):
    """softmax - onehot and the pooled embedding (the input of fc), by a hand-written forward."""
    module = net.module_.eval()
    with torch.no_grad():
        h = module.pool(module.layer2(module.layer1(torch.from_numpy(X))))
        p = torch.softmax(module.fc(h), dim=1)
    return p - F.one_hot(p.argmax(1), p.shape[1]).to(p.dtype), h


@pytest.fixture(scope="module")
def learner():
    X, y = _images(40, 0)
    net = ActiveNet(SmallCNN, module__width=4, max_epochs=2, batch_size=8, lr=0.05,
                    iterator_valid__batch_size=9, verbose=0)
    return ActiveLearner(net, BADGE(), random_state=0).fit(X, y)


def _expected(net, pool, n, seed, first="norm"):
    a, h = _factors_by_hand(net, pool)
    idx, d2 = brute_force_seeding(_outer(a, h), n, torch.Generator().manual_seed(seed), first)
    order = np.argsort(-d2, kind="stable")
    return idx[order], d2[order]


def test_query_through_the_learner_equals_brute_force_on_hand_computed_gradients(learner):
    pool, _ = _images(50, 1)
    idx, scores = learner.query(pool, 12, return_scores=True)
    seed = _derive_seed(learner._state().seed, 0, _QUERY)
    expected_idx, expected_scores = _expected(learner.estimator_, pool, 12, seed)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    assert idx.dtype == np.int64 and np.all(np.diff(scores) <= 0)


def test_first_random_draws_the_first_center_from_the_seed(learner):
    pool, _ = _images(50, 1)
    idx, scores = BADGE(first="random").select(learner.estimator_, pool, 6, random_state=5)
    expected_idx, expected_scores = _expected(learner.estimator_, pool, 6, 5, first="random")
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)


def test_labeled_set_plays_no_part_and_picks_are_seeded(learner):
    pool, _ = _images(50, 1)
    net, selector = learner.estimator_, learner.selector_
    a = selector.select(net, pool, 8, random_state=1, labeled=labeled_data(learner._state()))
    b = selector.select(net, pool, 8, random_state=1, labeled=None)
    c = selector.select(net, pool, 8, random_state=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert set(a[0].tolist()) != set(c[0].tolist())


def test_dataset_pool_queries_equal_the_array_pool(learner):
    pool, y_pool = _images(45, 2)
    idx, scores = learner.query(pool, 7, return_scores=True)
    dataset = TensorDataset(torch.from_numpy(pool), torch.from_numpy(y_pool))
    ds_idx, ds_scores = learner.query(dataset, 7, return_scores=True)
    np.testing.assert_array_equal(ds_idx, idx)
    np.testing.assert_allclose(ds_scores, scores, rtol=1e-6)


def test_subset_runs_on_candidates_drawn_from_the_query_seed(learner):
    pool, _ = _images(60, 3)
    net = learner.estimator_
    selector = BADGE(subset=20)
    idx, scores = selector.select(net, pool, 5, random_state=4)
    candidates = selector._draw_subset(len(pool), 5, 4)
    sub_idx, sub_scores = BADGE().select(net, pool[candidates], 5, random_state=4)
    np.testing.assert_array_equal(idx, candidates[sub_idx])
    np.testing.assert_array_equal(scores, sub_scores)
    with pytest.raises(ValueError, match=r"n=21 exceeds BADGE's subset=20"):
        selector.select(net, pool, 21, random_state=0)


def test_the_whole_pool_is_a_permutation(learner):
    pool = np.repeat(_images(4, 4)[0], 5, axis=0)  # 4 distinct images, 5 copies each
    idx, scores = learner.query(pool, 20, return_scores=True)
    assert sorted(idx.tolist()) == list(range(20))
    assert np.all(np.isfinite(scores)) and np.all(np.diff(scores) <= 0)
    assert np.count_nonzero(scores) <= 4  # after one copy of each, every D^2 is 0


@pytest.mark.parametrize("params, match", [
    ({"first": "max"}, r"'first' parameter of BADGE must be a str among"),
    ({"subset": 0}, r"'subset' parameter of BADGE must be"),
])
def test_invalid_parameters_are_refused_by_name(learner, params, match):
    with pytest.raises(InvalidParameterError, match=match):
        BADGE(**params).select(learner.estimator_, _images(10, 0)[0], 2, random_state=0)


def test_nan_outputs_are_refused_not_ranked(learner):
    net = clone(learner.estimator_)
    X, y = _images(30, 0)
    net.fit(X, y)
    with torch.no_grad():
        net.module_.fc.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"^BADGE: the net's outputs or embeddings of the pool are "
                                         r"NaN or infinite; .*did training diverge\?"):
        BADGE().select(net, X, 3, random_state=0)


def test_sklearn_contract():
    selector = BADGE(first="random", subset=500)
    assert selector.get_params() == {"first": "random", "subset": 500}
    assert clone(selector).get_params() == selector.get_params()
    assert BADGE().training_needs().parts == ()  # no training part: the net trains plainly


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_badge_on_cuda_is_seeded_distinct_and_its_d2_are_exact():
    X, y = _images(60, 0)
    net = ActiveNet(SmallCNN, module__width=8, max_epochs=2, batch_size=16,
                    iterator_valid__batch_size=64, device="cuda", verbose=0)
    learner = ActiveLearner(net, BADGE(), random_state=0).fit(X, y)
    pool = _images(2000, 1)[0]
    state = torch.cuda.get_rng_state()
    idx, d2 = learner.selector_.select(learner.estimator_, pool, 100, random_state=3)
    again = learner.selector_.select(learner.estimator_, pool, 100, random_state=3)
    assert torch.equal(torch.cuda.get_rng_state(), state)
    np.testing.assert_array_equal(idx, again[0])
    assert len(set(idx.tolist())) == 100 and np.all(np.diff(d2) <= 0)
    # the factors on the device against a CPU forward, and the picks' D^2 recomputed explicitly
    a, h = gradient_embedding_factors(learner.estimator_, pool)
    assert a.device.type == "cuda"
    a, h = a.double().cpu(), h.double().cpu()
    a_cuda, h_cuda = a.cuda(), h.cuda()
    generator = torch.Generator("cuda").manual_seed(3)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # the seeding loop never waits for the device
    try:
        indices, seq_d2 = kmeans_plusplus_outer(a_cuda, h_cuda, 100, generator=generator)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    G = _outer(a, h)
    picks = indices.cpu().numpy()
    for j in (1, 10, 99):
        explicit = ((G[None, picks[j]] - G[picks[:j]]) ** 2).sum(-1).min()
        assert seq_d2[j].item() == pytest.approx(explicit, rel=1e-6, abs=1e-12)
    np.testing.assert_allclose(np.sort(seq_d2.cpu().numpy())[::-1], d2, rtol=1e-12)


def test_a_saved_badge_campaign_resumes_with_the_same_queries(learner, tmp_path):
    pool, _ = _images(25, 1)
    learner.save(tmp_path / "badge.skal")
    loaded = ActiveLearner.load(tmp_path / "badge.skal")
    assert loaded.selector_.get_params() == {"first": "norm", "subset": None}
    expected = learner.query(pool, 5, return_scores=True)
    for a, b in zip(loaded.query(pool, 5, return_scores=True), expected):
        np.testing.assert_array_equal(a, b)
