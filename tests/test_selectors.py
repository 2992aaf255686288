"""Tests of the baseline selectors and DISAL on a tiny fitted ActiveNet."""

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone

from skal import ActiveNet
from skal.models import MLP
from skal.parts import DynamicLoss, EpochSnapshot, TrainingDynamics
from skal.selectors import (
    DISAL,
    Entropy,
    LeastConfidence,
    Margin,
    Random,
    TrainingNeeds,
)

N_POOL = 103  # not a multiple of the batch size
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fit_net(snapshot, seed=0):
    """A tiny fitted net; with ``snapshot``, trained with DISAL's parts (dynamic loss + snapshot)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(64, 5)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.8).astype(np.int64)
    torch.manual_seed(seed)
    net = ActiveNet(
        MLP,
        module__num_classes=3,
        max_epochs=3,
        verbose=0,
        batch_size=16,
        lr=0.1,
        callbacks=list(DISAL().training_needs().parts) if snapshot else None,
    )
    return net.fit(X, y)


@pytest.fixture(scope="module")
def pool():
    return np.random.default_rng(123).normal(size=(N_POOL, 5)).astype(np.float32)


@pytest.fixture(scope="module")
def net():
    return _fit_net(snapshot=False)


@pytest.fixture(scope="module")
def snap_net():
    return _fit_net(snapshot=True)


def _probs64(net, X):
    return net.predict_proba(X).astype(np.float64)


def ref_entropy(p):
    return -(p * np.log(p)).sum(axis=1)


def ref_neg_margin(p):
    s = np.sort(p, axis=1)
    return -(s[:, -1] - s[:, -2])


def ref_least_confidence(p):
    return 1.0 - p.max(axis=1)


UNCERTAINTY = [
    (Entropy, ref_entropy),
    (Margin, ref_neg_margin),
    (LeastConfidence, ref_least_confidence),
]


def _with_batch_size(net, batch_size):
    # skorch (1.4) refuses set_params(iterator_valid__batch_size=...) on an
    # initialized net ("Something went wrong, please open an issue"), for a
    # plain NeuralNetClassifier too; set the attribute, which is where skorch
    # reads it from, on a copy with the same weights.
    net = copy.deepcopy(net)
    setattr(net, "iterator_valid__batch_size", batch_size)
    assert net.get_params_for("iterator_valid")["batch_size"] == batch_size
    return net


# --- uncertainty selectors --------------------------------------------------------


@pytest.mark.parametrize("selector_cls, ref", UNCERTAINTY)
def test_uncertainty_score_pool_matches_reference(net, pool, selector_cls, ref):
    scores = selector_cls().score_pool(net, pool)
    assert isinstance(scores, torch.Tensor)
    assert scores.shape == (N_POOL,)
    expected = ref(_probs64(net, pool))
    assert np.ptp(expected) > 1e-2  # the net is not constant on the pool
    np.testing.assert_allclose(scores.cpu().numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("selector_cls, ref", UNCERTAINTY)
@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_uncertainty_score_pool_independent_of_chunking(net, pool, selector_cls, ref, batch_size):
    full = selector_cls().score_pool(_with_batch_size(net, 1000), pool).cpu().numpy()
    chunked = selector_cls().score_pool(_with_batch_size(net, batch_size), pool).cpu().numpy()
    assert chunked.shape == (N_POOL,)
    np.testing.assert_allclose(chunked, full, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chunked, ref(_probs64(net, pool)), rtol=0, atol=1e-5)


def test_iter_pool_chunks(net, pool):
    sizes = [len(Xb) for Xb in _with_batch_size(net, 7).iter_pool(pool)]
    assert sizes == [7] * 14 + [5]
    assert sum(len(Xb) for Xb in net.iter_pool(pool)) == N_POOL


def _brute_force_top_n(scores, n):
    return np.argsort(-scores, kind="stable")[:n]


@pytest.mark.parametrize("selector_cls, ref", UNCERTAINTY)
@pytest.mark.parametrize("n", [1, 10, N_POOL])
def test_uncertainty_select_matches_brute_force(net, pool, selector_cls, ref, n):
    expected_scores = ref(_probs64(net, pool))
    order = _brute_force_top_n(expected_scores, n)
    if n < N_POOL:
        # The test needs distinct scores around the chosen set; the float32
        # selector and this float64 reference agree to ~1e-7.
        head = np.sort(expected_scores)[::-1][: n + 1]
        assert np.min(-np.diff(head)) > 2e-6
    idx, scores = selector_cls().select(net, pool, n, random_state=0)
    assert isinstance(idx, np.ndarray) and idx.dtype == np.int64
    assert idx.shape == (n,) and scores.shape == (n,)
    assert len(set(idx.tolist())) == n
    assert idx.min() >= 0 and idx.max() < N_POOL
    if n < N_POOL:
        np.testing.assert_array_equal(idx, order)
    else:
        assert sorted(idx.tolist()) == list(range(N_POOL))
    np.testing.assert_allclose(scores, expected_scores[idx], rtol=0, atol=1e-5)
    assert np.all(np.diff(scores) <= 0)
    idx2, scores2 = selector_cls().select(net, pool, n, random_state=0)
    np.testing.assert_array_equal(idx2, idx)
    np.testing.assert_array_equal(scores2, scores)


def test_select_ties_are_seeded(net):
    # Identical pool rows give identical scores: ties broken by random_state.
    X = np.zeros((50, 5), dtype=np.float32)
    a, sa = Entropy().select(net, X, 5, random_state=0)
    b, _ = Entropy().select(net, X, 5, random_state=0)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 5
    assert np.all(sa == sa[0])
    others = {tuple(Entropy().select(net, X, 5, random_state=s)[0].tolist()) for s in range(1, 5)}
    assert len(others | {tuple(a.tolist())}) >= 2


# --- DISAL ------------------------------------------------------------------------


def _eval_logits64(module, X):
    was_training = module.training
    module.eval()
    with torch.no_grad():
        out = module(torch.from_numpy(X)).double().numpy()
    module.train(was_training)
    return out


def _log_softmax64(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _ref_disal(net, X, drift="keep"):
    """KL(p_{T-1} || p_T) in float64; drift="remove" first subtracts, within
    each predicted class, the mean logit change of the last epoch."""
    prev = copy.deepcopy(net.module_)
    prev.load_state_dict(net.parts_["snapshot"].state_)
    z_prev, z_T = _eval_logits64(prev, X), _eval_logits64(net.module_, X)
    if drift == "remove":
        change, classes = z_prev - z_T, z_T.argmax(axis=1)
        for c in np.unique(classes):
            change[classes == c] -= change[classes == c].mean(axis=0)
        z_prev = z_T + change
    lp_prev, lp_T = _log_softmax64(z_prev), _log_softmax64(z_T)
    return (np.exp(lp_prev) * (lp_prev - lp_T)).sum(axis=1)


def test_disal_snapshot_differs_from_final_weights(snap_net):
    snapshot = snap_net.parts_["snapshot"].state_
    assert snapshot is not None
    final = snap_net.module_.state_dict()
    assert snapshot.keys() == final.keys()
    diff = max((snapshot[k] - final[k]).abs().max().item() for k in final)
    assert diff > 1e-4


@pytest.mark.parametrize("drift", ["keep", "remove"])
def test_disal_score_pool_matches_reference(snap_net, pool, drift):
    scores = DISAL(drift=drift, balance="none").score_pool(snap_net, pool).cpu().numpy()
    expected = _ref_disal(snap_net, pool, drift)
    assert scores.shape == (N_POOL,)
    assert expected.max() > 1e-4  # the last epoch moved the predictions
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)
    assert np.all(scores >= -1e-6)


@pytest.mark.parametrize("drift", ["keep", "remove"])
@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_disal_independent_of_chunking(snap_net, pool, batch_size, drift):
    net = _with_batch_size(snap_net, batch_size)
    scores = DISAL(drift=drift, balance="none").score_pool(net, pool).cpu().numpy()
    np.testing.assert_allclose(scores, _ref_disal(snap_net, pool, drift), rtol=1e-4, atol=1e-6)


def test_disal_literal_is_negation(snap_net, pool):
    kl = DISAL(balance="none").score_pool(snap_net, pool).cpu().numpy()
    literal = DISAL(mode="literal", drift="remove", balance="none").score_pool(snap_net, pool).cpu().numpy()
    np.testing.assert_array_equal(literal, -kl)


def test_disal_select_picks_largest_kl(snap_net, pool):
    expected = _ref_disal(snap_net, pool)
    n = 5
    head = np.sort(expected)[::-1][: n + 1]
    assert np.min(-np.diff(head)) > 1e-5 * head[0]
    idx, scores = DISAL(drift="keep", balance="none").select(snap_net, pool, n, random_state=0)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, _brute_force_top_n(expected, n))
    assert np.all(np.diff(scores) <= 0)
    idx_lit, _ = DISAL(mode="literal", drift="keep", balance="none").select(snap_net, pool, n, random_state=0)
    np.testing.assert_array_equal(idx_lit, _brute_force_top_n(-expected, n))


def test_disal_does_not_change_the_module(snap_net, pool):
    before = {k: v.clone() for k, v in snap_net.module_.state_dict().items()}
    DISAL().score_pool(snap_net, pool)
    after = snap_net.module_.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k])


def test_disal_without_snapshot_raises(net, pool):
    assert net.parts_ == {}
    with pytest.raises(ValueError, match="train the net with an EpochSnapshot part"):
        DISAL().score_pool(net, pool)
    with pytest.raises(ValueError, match="train the net with an EpochSnapshot part"):
        DISAL().select(net, pool, 3, random_state=0)


def test_disal_with_an_empty_snapshot_raises(pool):
    # a snapshot part that never saw an epoch holds nothing to score with
    net = ActiveNet(MLP, module__num_classes=3, module__in_features=5, verbose=0,
                    callbacks=[("snapshot", EpochSnapshot())]).initialize()
    assert net.parts_["snapshot"].state_ is None
    with pytest.raises(ValueError, match=r"The net has 0 epoch snapshot\(s\), not the 1 asked for"):
        DISAL().score_pool(net, pool)


def test_disal_invalid_mode_raises(snap_net, pool):
    with pytest.raises(ValueError, match="mode"):
        DISAL(mode="bogus").score_pool(snap_net, pool)
    with pytest.raises(ValueError, match="mode"):
        DISAL(mode="bogus").select(snap_net, pool, 3, random_state=0)


# --- Random -----------------------------------------------------------------------


def test_random_never_runs_the_module(net, pool):
    calls = []

    def hook(module, args):
        calls.append(1)
        raise AssertionError("Random must not run a forward pass")

    handle = net.module_.register_forward_pre_hook(hook)
    try:
        idx, scores = Random().select(net, pool, 10, random_state=0)
        Random().score_pool(net, pool, random_state=1)
    finally:
        handle.remove()
    assert calls == []
    assert idx.dtype == np.int64 and idx.shape == (10,) and scores.shape == (10,)
    assert len(set(idx.tolist())) == 10
    assert idx.min() >= 0 and idx.max() < N_POOL
    assert np.all(np.diff(scores) <= 0)
    assert np.all((scores >= 0) & (scores < 1))


def test_random_deterministic_per_seed(net, pool):
    a, sa = Random().select(net, pool, 10, random_state=3)
    b, sb = Random().select(net, pool, 10, random_state=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    c, _ = Random().select(net, pool, 10, random_state=4)
    assert a.tolist() != c.tolist()
    full, _ = Random().select(net, pool, N_POOL, random_state=0)
    assert sorted(full.tolist()) == list(range(N_POOL))


def test_random_inclusion_is_uniform(net):
    X = np.zeros((10, 5), dtype=np.float32)
    counts = np.zeros(10)
    n_seeds = 2000
    selector = Random()
    for seed in range(n_seeds):
        idx, _ = selector.select(net, X, 3, random_state=seed)
        assert len(set(idx.tolist())) == 3
        counts[idx] += 1
    np.testing.assert_allclose(counts / n_seeds, np.full(10, 0.3), rtol=0, atol=0.05)


# --- training needs and the sklearn contract ------------------------------------------


def _described(needs):
    """A TrainingNeeds as comparable data: parts as (name, type, parameters), and the reference."""
    return [(name, type(part), part.get_params()) for name, part in needs.parts], needs.reference


def test_training_needs():
    disal = [("dynamics", TrainingDynamics, {"decay": None}), ("dynamic_loss", DynamicLoss, {"weight": 1.0, "ramp_up": 0}),
             ("snapshot", EpochSnapshot, {"keep": 1})]
    assert _described(DISAL().training_needs()) == (disal, None)
    assert _described(DISAL(mode="literal").training_needs()) == (disal, None)
    assert _described(DISAL(weight=0.25).training_needs()) == (
        [("dynamics", TrainingDynamics, {"decay": None}), ("dynamic_loss", DynamicLoss, {"weight": 0.25, "ramp_up": 0}),
         ("snapshot", EpochSnapshot, {"keep": 1})], None)
    # weight 0: DISAL's "w/o D" ablation, the snapshot alone
    assert _described(DISAL(weight=0).training_needs()) == ([("snapshot", EpochSnapshot, {"keep": 1})], None)
    for selector in [Entropy(), Margin(), LeastConfidence(), Random()]:
        assert selector.training_needs() == TrainingNeeds()
        assert selector.training_needs().parts == ()
    assert TrainingNeeds() == TrainingNeeds(parts=(), reference=None)


@pytest.mark.parametrize("selector_cls", [Entropy, Margin, LeastConfidence, Random])
def test_parameterless_selectors_sklearn_contract(selector_cls):
    selector = selector_cls()
    expected = {} if selector_cls is Random else {"batch": "topk"}
    assert selector.get_params() == expected
    cloned = clone(selector)
    assert type(cloned) is selector_cls and cloned is not selector
    assert cloned.get_params() == expected
    assert selector.set_params() is selector
    with pytest.raises(ValueError, match="Invalid parameter"):
        selector.set_params(bogus=1)


def test_disal_sklearn_contract():
    selector = DISAL(mode="literal", drift="keep")
    assert selector.get_params() == {"mode": "literal", "batch": "topk", "weight": 1.0, "transitions": 1,
                                     "drift": "keep", "target_decay": None, "ramp_up": 0,
                                     "snapshot_buffers": "previous", "balance": "predicted"}
    cloned = clone(selector)
    assert type(cloned) is DISAL and cloned is not selector
    assert cloned.get_params() == {"mode": "literal", "batch": "topk", "weight": 1.0, "transitions": 1,
                                   "drift": "keep", "target_decay": None, "ramp_up": 0,
                                   "snapshot_buffers": "previous", "balance": "predicted"}
    assert DISAL().get_params() == {"mode": "kl", "batch": "topk", "weight": 1.0, "transitions": 1,
                                    "drift": "remove", "target_decay": None, "ramp_up": 0,
                                    "snapshot_buffers": "previous", "balance": "predicted"}
    assert selector.set_params(mode="kl") is selector
    assert selector.mode == "kl"
    assert repr(DISAL(mode="literal")) == "DISAL(mode='literal')"
    with pytest.raises(ValueError, match="Invalid parameter"):
        selector.set_params(bogus=1)


def test_scores_use_eval_mode(pool):
    # With dropout, a train-mode forward would be random and differ from
    # predict_proba (eval mode); scoring must be deterministic and match it.
    rng = np.random.default_rng(5)
    X = rng.normal(size=(48, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=48).astype(np.int64)
    torch.manual_seed(5)
    net = ActiveNet(
        MLP,
        module__num_classes=3,
        module__dropout=0.5,
        max_epochs=2,
        verbose=0,
        batch_size=16,
        lr=0.1,
        callbacks=list(DISAL().training_needs().parts),
    ).fit(X, y)
    a = Entropy().score_pool(net, pool).cpu().numpy()
    b = Entropy().score_pool(net, pool).cpu().numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, ref_entropy(_probs64(net, pool)), rtol=0, atol=1e-5)
    for drift in ("keep", "remove"):
        disal = DISAL(drift=drift, balance="none").score_pool(net, pool).cpu().numpy()
        np.testing.assert_allclose(disal, _ref_disal(net, pool, drift), rtol=1e-4, atol=1e-6)


def test_disal_after_one_epoch_of_a_lazy_module_says_why():
    from skal import ActiveLearner

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    net = ActiveNet(MLP, max_epochs=1, verbose=0)  # MLP's first layer is lazy
    learner = ActiveLearner(net, DISAL(), random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="train it for at least 2 epochs .* one more when the module has lazy layers"):
        learner.query(X, 2)
    # two epochs: the snapshot is the weights after the first
    learner = ActiveLearner(net.set_params(max_epochs=2), DISAL(), random_state=0).fit(X, y)
    assert len(learner.query(X, 2)) == 2
