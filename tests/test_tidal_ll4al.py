"""LL4AL and TiDAL: head registration, stop-gradient, TD target, scores, subsets, end to end."""

import pickle

import numpy as np
import pytest
import torch

from skal import ActiveLearner, ActiveNet
from skal.models import SmallCNN, resnet18_cifar
from skal._taps import tap
from skal.parts import DynamicsHeadTraining, LossPredictionHeadTraining
from skal.scores import margin_at
from skal.selectors import LL4AL, TiDAL

CLASSES = [0, 1, 2]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _heads(loss=None, dynamics=None):
    """Callbacks for the head parts: keyword arguments of each, or None for none."""
    parts = []
    if loss is not None:
        parts.append(("loss_head", LossPredictionHeadTraining(**loss)))
    if dynamics is not None:
        parts.append(("dynamics_head", DynamicsHeadTraining(**dynamics)))
    return parts


def _images(n, seed=0, k=3, shape=(1, 8, 8)):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, *shape)).astype(np.float32)
    y = (np.arange(n) % k).astype(np.int64)
    return X, y


def _net(**kwargs):
    params = dict(module__width=4, classes=CLASSES, max_epochs=2, batch_size=8, lr=0.05, verbose=0)
    params.update(kwargs)
    return ActiveNet(SmallCNN, **params)


def _head_reference(head, levels):
    """The multi-level head by hand in float64 from its own weights."""
    hidden = []
    for level, f in zip(head.levels, levels):
        pooled = f.double().flatten(2).mean(2).numpy() if f.ndim > 2 else f.double().numpy()
        w, b = level[0].weight.detach().double().numpy(), level[0].bias.detach().double().numpy()
        hidden.append(np.maximum(pooled @ w.T + b, 0.0))
    concat = np.concatenate(hidden, axis=1)
    return concat @ head.out.weight.detach().double().numpy().T + head.out.bias.detach().double().numpy()


def _softmax64(z):
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _head_state(head):
    return {k: v.detach().clone() for k, v in head.state_dict().items()}


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_forward(net, X):
    """A training-mode forward with the feature levels tapped (as train_step_single does)."""
    net.module_.train()
    with tap(net.module_, net.feature_layers_) as tapped:
        logits = net.module_(torch.as_tensor(X))
    return logits, [tapped[name] for name in net.feature_layers_]


@pytest.fixture(scope="module")
def fitted():
    """A SmallCNN net with both heads, trained briefly, and a 100-sample pool."""
    X, y = _images(24, seed=0)
    torch.manual_seed(0)
    net = _net(callbacks=_heads(loss={}, dynamics={}), max_epochs=3).fit(X, y)
    pool = _images(100, seed=7)[0]
    return net, pool


# --- the heads are skorch modules ----------------------------------------------------------


@pytest.mark.parametrize("selector, head, other", [
    (LL4AL(), "loss_predictor_", "dynamics_predictor_"),
    (TiDAL(), "dynamics_predictor_", "loss_predictor_"),
])
def test_heads_are_registered_trained_and_pickled(selector, head, other):
    X, y = _images(16, seed=1)
    learner = ActiveLearner(_net(), selector=selector, warm_start=True, random_state=0).fit(X, y)
    net = learner.estimator_
    assert hasattr(net, head) and not hasattr(net, other)
    module = getattr(net, head)
    # skorch knows it as one of the net's modules (saved, moved and trained with it)
    assert head.rstrip("_") in net._modules
    assert head.rstrip("_") in net.prefixes_
    in_optimizer = {id(p) for group in net.optimizer_.param_groups for p in group["params"]}
    params = list(module.parameters())
    assert len(params) == 2 * (len(net.feature_layers_) + 1)
    assert all(id(p) in in_optimizer for p in params)
    assert all(not isinstance(p, torch.nn.parameter.UninitializedParameter) for p in params)

    # the warm-started teach continues training the head
    before = _head_state(module)
    learner.teach(*_images(8, seed=2))
    after = _head_state(getattr(learner.estimator_, head))
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if head == "loss_predictor_":
        # the ranking loss depends on differences of predictions only, so the
        # output bias gets exactly zero gradient; every other tensor learns
        assert changed == set(before) - {"out.bias"}
    else:
        assert changed == set(before)

    restored = pickle.loads(pickle.dumps(learner.estimator_))
    assert _states_equal(_head_state(getattr(restored, head)), after)
    pool = _images(10, seed=3)[0]
    scores = selector.score_pool(learner.estimator_, pool).numpy()
    np.testing.assert_array_equal(selector.score_pool(restored, pool).numpy(), scores)


def test_head_output_layer_changes_during_fit():
    X, y = _images(16, seed=1)
    torch.manual_seed(0)
    net = _net(callbacks=_heads(loss={}, dynamics={})).initialize()
    out_loss = net.loss_predictor_.out.weight.detach().clone()
    out_dyn = net.dynamics_predictor_.out.weight.detach().clone()
    net.partial_fit(X, y)
    assert not torch.equal(net.loss_predictor_.out.weight, out_loss)
    assert not torch.equal(net.dynamics_predictor_.out.weight, out_dyn)


def test_head_params_are_net_params():
    net = _net(callbacks=_heads(loss={}, dynamics={}), loss_predictor__hidden=16, dynamics_predictor__hidden=8)
    params = net.get_params()
    assert params["loss_predictor__hidden"] == 16
    assert params["dynamics_predictor__hidden"] == 8
    net.initialize()
    assert net.loss_predictor_.hidden == 16
    assert [level[0].out_features for level in net.loss_predictor_.levels] == [16, 16]
    assert net.loss_predictor_.out.in_features == 32
    assert net.dynamics_predictor_.hidden == 8 and net.dynamics_predictor_.out.in_features == 16
    assert net.dynamics_predictor_.out.out_features == 3

    # through the learner (which clones the net) the setting is kept
    X, y = _images(8, seed=1)
    learner = ActiveLearner(_net(loss_predictor__hidden=16, max_epochs=1), selector=LL4AL(), random_state=0).fit(X, y)
    assert learner.estimator_.loss_predictor_.hidden == 16
    assert learner.estimator_.loss_predictor_.out.in_features == 32


# --- LL4AL's stop-gradient ------------------------------------------------------------------


def _head_loss(net, name, logits, y, features):
    """The head part's loss term for one batch whose feature maps were tapped."""
    part = net.parts_[name]
    part.features_.update(zip(net.feature_layers_, features))
    return part.loss(net, logits, torch.as_tensor(y))


def _backbone_grad_of_head_loss(net, epoch, X, y):
    torch.manual_seed(0)
    logits, features = _train_forward(net, X)
    net.parts_["loss_head"].epoch_ = epoch
    loss = _head_loss(net, "loss_head", logits, y, features)
    backbone = net.module_.layer1[0].weight
    head_param = net.loss_predictor_.out.weight
    g_backbone, g_head = torch.autograd.grad(loss, (backbone, head_param), allow_unused=True)
    return loss.item(), g_backbone, g_head


def _reaches(grad):
    return grad is not None and grad.abs().sum().item() > 0


@pytest.mark.parametrize("stop, max_epochs, first_stopped", [(3, 10, 3), (0.5, 4, 2), (0.6, 5, 3), (0, 4, 0)])
def test_ll4al_head_gradient_stops_reaching_backbone(stop, max_epochs, first_stopped):
    X, y = _images(8, seed=5)
    torch.manual_seed(0)
    net = _net(callbacks=_heads(loss={"stop_grad_epoch": stop}), max_epochs=max_epochs).initialize()
    values = {}
    for epoch in range(max_epochs):
        value, g_backbone, g_head = _backbone_grad_of_head_loss(net, epoch, X, y)
        values[epoch] = value
        assert value > 0
        assert _reaches(g_head), epoch  # the head itself always learns
        if epoch < first_stopped:
            assert _reaches(g_backbone), epoch
        else:
            assert not _reaches(g_backbone), epoch
    # stopping the gradient does not change the loss value
    assert max(values.values()) - min(values.values()) < 1e-6


def test_ll4al_stop_none_never_stops():
    X, y = _images(8, seed=5)
    torch.manual_seed(0)
    net = _net(callbacks=_heads(loss={"stop_grad_epoch": None})).initialize()
    _, g_backbone, _ = _backbone_grad_of_head_loss(net, 10_000, X, y)
    assert _reaches(g_backbone)


def test_ll4al_stopped_from_epoch_zero_leaves_backbone_training_unchanged():
    # With the head detached from epoch 0, the backbone trains exactly as without a head.
    X, y = _images(16, seed=6)
    common = dict(max_epochs=3, iterator_train__shuffle=False)
    torch.manual_seed(0)
    plain = _net(**common).fit(X, y)
    torch.manual_seed(0)
    stopped = _net(callbacks=_heads(loss={"stop_grad_epoch": 0}), **common).fit(X, y)
    torch.manual_seed(0)
    flowing = _net(callbacks=_heads(loss={"stop_grad_epoch": None}), **common).fit(X, y)
    ref = plain.module_.state_dict()
    for key, value in stopped.module_.state_dict().items():
        torch.testing.assert_close(value, ref[key], rtol=1e-6, atol=1e-7, msg=key)
    diff = max((flowing.module_.state_dict()[k].double() - ref[k].double()).abs().max().item()
               for k in ref if ref[k].is_floating_point())
    assert diff > 1e-5


# --- TiDAL's training-dynamics target ----------------------------------------------------------


def test_tidal_head_loss_targets_the_training_dynamics_buffer():
    X, y = _images(10, seed=8)
    w = 0.7
    torch.manual_seed(0)
    net = _net(callbacks=_heads(dynamics={"weight": w})).initialize()
    p_bar = np.random.default_rng(0).dirichlet(np.ones(3), size=10).astype(np.float32)
    dynamics = net.parts_["dynamics"]
    net.parts_["dynamics_head"].epoch_ = 50  # TiDAL has no stop-gradient schedule

    def head_loss(index):
        # the batch's rows of the running mean, as if this batch were already folded in
        dynamics.batch_rows_ = torch.as_tensor(p_bar[index])
        return _head_loss(net, "dynamics_head", logits, y[index], features)

    index = np.array([3, 7, 1, 0])
    logits, features = _train_forward(net, X[index])
    loss = head_loss(index)

    q = _head_reference(net.dynamics_predictor_, [f.detach() for f in features])
    log_q = np.log(_softmax64(q))
    target = p_bar[index].astype(np.float64)
    ref = w * (target * (np.log(target) - log_q)).sum() / len(index)
    np.testing.assert_allclose(loss.item(), ref, rtol=1e-5)

    # rows are taken by sample index: another index gives another loss
    other = head_loss(np.array([0, 1, 2, 3]))
    assert abs(other.item() - loss.item()) > 1e-4
    # the gradient reaches the backbone and the head
    g_backbone, g_head = torch.autograd.grad(loss, (net.module_.layer1[0].weight, net.dynamics_predictor_.out.weight))
    assert g_backbone.abs().sum() > 0 and g_head.abs().sum() > 0


# --- scores against numpy ------------------------------------------------------------------------


def _pool_outputs(net, pool):
    logits, feats = net.forward_tapped(torch.as_tensor(pool), levels=True)
    return logits.double().numpy(), feats["levels"]


def test_tidal_entropy_scores_match_numpy(fitted):
    net, pool = fitted
    logits, levels = _pool_outputs(net, pool)
    q = _softmax64(_head_reference(net.dynamics_predictor_, levels))
    ref = -(q * np.log(q)).sum(axis=1)
    scores = TiDAL(subset=None).score_pool(net, pool)
    assert scores.shape == (100,)
    np.testing.assert_allclose(scores.double().numpy(), ref, rtol=1e-5, atol=1e-5)
    idx, top = TiDAL(subset=None).select(net, pool, 5, random_state=0)
    np.testing.assert_array_equal(idx, np.argsort(-ref)[:5])
    np.testing.assert_allclose(top, ref[idx], atol=1e-5)


def test_tidal_margin_scores_match_numpy(fitted):
    net, pool = fitted
    logits, levels = _pool_outputs(net, pool)
    q = _softmax64(_head_reference(net.dynamics_predictor_, levels))
    y_hat = logits.argmax(axis=1)
    own = q[np.arange(len(q)), y_hat]
    rivals = q.copy()
    rivals[np.arange(len(q)), y_hat] = -np.inf
    ref = -(own - rivals.max(axis=1))
    scores = TiDAL(score="margin", subset=None).score_pool(net, pool)
    np.testing.assert_allclose(scores.double().numpy(), ref, rtol=1e-5, atol=1e-5)
    idx, _ = TiDAL(score="margin", subset=None).select(net, pool, 5, random_state=0)
    np.testing.assert_array_equal(idx, np.argsort(-ref)[:5])


class _StubNet:
    """Just enough of ActiveNet for TiDAL: fixed backbone logits and TD-head logits."""

    device = "cpu"

    def __init__(self, logits, q_logits):
        self._logits, self._q = logits, q_logits

    def iter_pool(self, X):
        yield torch.as_tensor(X)

    def map_pool(self, fn, X):
        return torch.cat([fn(Xb) for Xb in self.iter_pool(X)])

    def forward_tapped(self, Xb, *, levels=False, embedding=False, module=None):
        return self._logits[Xb.long()], {"levels": [Xb]}

    def dynamics_predictor_(self, levels):
        return self._q[levels[0].long()]


def test_tidal_margin_uses_the_backbones_class_not_the_heads():
    logits = torch.tensor([[0.0, 0.0, 5.0], [5.0, 0.0, 0.0]])
    q_logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]))
    net = _StubNet(logits, q_logits)
    scores = TiDAL(score="margin", subset=None).score_pool(net, np.arange(2))
    # row 0: y_hat = 2, q[2] - max(q[0], q[1]) = -0.3 -> score 0.3; row 1: y_hat = 0 -> score -0.2
    np.testing.assert_allclose(scores.numpy(), [0.3, -0.2], atol=1e-6)
    ent = TiDAL(subset=None).score_pool(net, np.arange(2)).numpy()
    p = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(ent, [-(p * np.log(p)).sum()] * 2, atol=1e-6)


def test_ll4al_scores_are_loss_predictor_outputs(fitted):
    net, pool = fitted
    _, levels = _pool_outputs(net, pool)
    ref = _head_reference(net.loss_predictor_, levels)[:, 0]
    scores = LL4AL(subset=None).score_pool(net, pool)
    assert scores.shape == (100,)
    np.testing.assert_allclose(scores.double().numpy(), ref, rtol=1e-5, atol=1e-5)
    idx, top = LL4AL(subset=None).select(net, pool, 5, random_state=0)
    np.testing.assert_array_equal(idx, np.argsort(-ref)[:5])  # largest predicted loss first
    assert np.all(np.diff(top) <= 0)


def test_scores_are_eval_mode_and_do_not_change_the_net(fitted):
    net, pool = fitted
    before = {k: v.clone() for k, v in net.module_.state_dict().items()}
    a = LL4AL(subset=None).score_pool(net, pool)
    b = TiDAL(subset=None).score_pool(net, pool)
    assert torch.equal(a, LL4AL(subset=None).score_pool(net, pool))
    assert torch.equal(b, TiDAL(subset=None).score_pool(net, pool))
    after = net.module_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics untouched


# --- random subsets ----------------------------------------------------------------------------


@pytest.mark.parametrize("selector_cls", [LL4AL, TiDAL])
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_subset_selection_is_topn_within_the_seeded_subset(fitted, selector_cls, seed):
    net, pool = fitted
    full = selector_cls(subset=None).score_pool(net, pool).numpy()
    idx, scores = selector_cls(subset=20).select(net, pool, 5, random_state=seed)
    subset = np.random.default_rng(seed).choice(100, 20, replace=False)
    assert set(idx.tolist()) <= set(subset.tolist())
    assert len(set(idx.tolist())) == 5
    expected = subset[np.argsort(-full[subset], kind="stable")[:5]]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(scores, full[expected], rtol=1e-6, atol=1e-6)
    # same seed, same answer
    idx2, _ = selector_cls(subset=20).select(net, pool, 5, random_state=seed)
    np.testing.assert_array_equal(idx2, idx)


def test_subset_seeds_differ_and_none_scores_whole_pool(fitted):
    net, pool = fitted
    a, _ = LL4AL(subset=20).select(net, pool, 5, random_state=0)
    b, _ = LL4AL(subset=20).select(net, pool, 5, random_state=1)
    assert set(a.tolist()) != set(b.tolist())
    full = LL4AL(subset=None).score_pool(net, pool).numpy()
    top = np.argsort(-full)[:5]
    for subset in (None, 100, 500):  # a subset as large as the pool is the whole pool
        idx, _ = LL4AL(subset=subset).select(net, pool, 5, random_state=0)
        np.testing.assert_array_equal(idx, top)
    # the whole-pool top 5 is (almost surely) not inside a random 20-subset
    assert not set(top.tolist()) <= set(np.random.default_rng(0).choice(100, 20, replace=False).tolist())


@pytest.mark.parametrize("selector_cls", [LL4AL, TiDAL])
def test_n_larger_than_subset_raises(fitted, selector_cls):
    net, pool = fitted
    with pytest.raises(ValueError, match="subset"):
        selector_cls(subset=4).select(net, pool, 5, random_state=0)
    idx, _ = selector_cls(subset=5).select(net, pool, 5, random_state=0)
    assert sorted(idx.tolist()) == sorted(np.random.default_rng(0).choice(100, 5, replace=False).tolist())


# --- margin_at ---------------------------------------------------------------------------------


def test_margin_at_matches_numpy_including_negative():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 4)) * 2
    p = _softmax64(logits)
    labels = p.argmax(axis=1)
    labels[::2] = p.argmin(axis=1)[::2]  # every other row: a label that is not the argmax
    rivals = p.copy()
    rivals[np.arange(8), labels] = -np.inf
    ref = p[np.arange(8), labels] - rivals.max(axis=1)
    got = margin_at(torch.tensor(logits), torch.tensor(labels)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    assert (got[::2] < 0).all() and (got[1::2] > 0).all()
    # float32 logits, the docstring's example
    got32 = margin_at(torch.log(torch.tensor([[0.5, 0.3, 0.2]])), torch.tensor([1]))
    assert got32.item() == pytest.approx(-0.2, abs=1e-6)
    # single class: nothing to confuse
    assert margin_at(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long)).tolist() == [1.0, 1.0, 1.0]


# --- end to end on ResNet-18 ------------------------------------------------------------------


@pytest.mark.parametrize("selector", [TiDAL(), TiDAL(score="margin"), LL4AL()], ids=["tidal", "tidal-margin", "ll4al"])
def test_end_to_end_resnet18(selector):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 3, 32, 32)).astype(np.float32)
    y = np.arange(16) % 4
    pool = rng.normal(size=(12, 3, 32, 32)).astype(np.float32)
    net = ActiveNet(resnet18_cifar, max_epochs=2, batch_size=8, verbose=0)
    learner = ActiveLearner(net, selector=selector, warm_start=True, random_state=0).fit(X, y)
    estimator = learner.estimator_
    assert estimator.feature_layers_ == ("layer1", "layer2", "layer3", "layer4")
    assert estimator.module_.fc.out_features == 4
    idx = learner.query(pool, n=4)
    assert idx.dtype == np.int64 and idx.shape == (4,)
    assert len(set(idx.tolist())) == 4
    assert all(0 <= i < 12 for i in idx)
    learner.teach(pool[idx], y[:4])
    assert learner.X_labeled_.shape == (20, 3, 32, 32)
    assert learner.labeled_cycle_.tolist() == [0] * 16 + [1] * 4
    if isinstance(selector, TiDAL):
        assert learner.estimator_.parts_["dynamics"].mean_.shape == (20, 4)
    else:  # LL4AL needs no per-sample dynamics, so its net keeps none
        assert set(learner.estimator_.parts_) == {"loss_head"}
    proba = learner.predict_proba(pool[:3])
    assert proba.shape == (3, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("selector", [TiDAL(subset=None), TiDAL(score="margin", subset=None), LL4AL(subset=None)],
                         ids=repr)
def test_heads_buffers_and_scores_stay_on_the_cuda_device(selector):
    from skal import ActiveLearner, ActiveNet
    from skal.models import SmallCNN

    rng = np.random.default_rng(0)
    X = rng.random((40, 1, 8, 8), dtype=np.float32)
    y = np.arange(40) % 3
    net = ActiveNet(SmallCNN, module__width=4, max_epochs=2, batch_size=8, device="cuda", verbose=0)
    learner = ActiveLearner(net, selector=selector, classes=np.arange(3), random_state=0).fit(X, y)
    trained = learner.estimator_
    head = trained.loss_predictor_ if isinstance(selector, LL4AL) else trained.dynamics_predictor_
    assert all(p.is_cuda for p in head.parameters())
    assert trained.parts_["dynamics"].mean_.is_cuda
    scores = selector.score_pool(trained, X)
    assert scores.is_cuda and scores.shape == (40,)
    # the taps follow a move between devices: the same net on the CPU gives the same scores
    trained.set_params(device="cpu")
    trained.module_.cpu()
    head.cpu()
    np.testing.assert_allclose(selector.score_pool(trained, X).numpy(), scores.cpu().numpy(), rtol=1e-4, atol=1e-5)
