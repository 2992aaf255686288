"""DISAL's variants (issue 17): recency-weighted target, ramp-up, K transitions, class-drift removal."""

import math

import numpy as np
import pytest
import torch
from conftest import assert_states_equal, module_state, tabular
from sklearn.utils._param_validation import InvalidParameterError

from skal import ActiveLearner, ActiveNet
from skal.models import MLP, SmallCNN
from skal.parts import DynamicLoss, EpochSnapshot, TrainingDynamics
from skal.selectors import DISAL
from skal.selectors.disal import _without_class_drift

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Recorder:
    def __init__(self, module):
        self.calls = []
        module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        if module.training:
            self.calls.append(output.detach().double().clone())


def _softmax64(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _kl64(z_p, z_q):
    p, q = _softmax64(z_p), _softmax64(z_q)
    return (p * (np.log(p) - np.log(q))).sum(axis=1)


def test_the_recency_weighted_target_is_the_bias_corrected_moving_average():
    X, y = tabular(n=12)
    decay = 0.6
    torch.manual_seed(0)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=4, batch_size=6, lr=0.5, verbose=0,
                    iterator_train__shuffle=False, callbacks=[("dynamics", TrainingDynamics(decay=decay))])
    net.initialize()
    recorder = _Recorder(net.module_)
    net.partial_fit(X, y)
    per_epoch = [_softmax64(torch.cat(recorder.calls[2 * e:2 * e + 2]).numpy()) for e in range(4)]
    ema = np.zeros_like(per_epoch[0])
    for p in per_epoch:
        ema = decay * ema + (1 - decay) * p
    np.testing.assert_allclose(net.parts_["dynamics"].mean_.numpy(), ema / (1 - decay ** 4), rtol=1e-5, atol=1e-6)
    # the plain running mean weighs every epoch the same: a different target
    assert not np.allclose(np.mean(per_epoch, axis=0), ema / (1 - decay ** 4), atol=1e-4)


@pytest.mark.parametrize("epoch, factor", [(0, math.exp(-5.0)), (1, math.exp(-5 * (1 - 1 / 4) ** 2)),
                                           (3, math.exp(-5 * (1 / 4) ** 2)), (4, 1.0), (10, 1.0)])
def test_the_ramp_up_follows_the_gaussian_ramp(epoch, factor):
    part = DynamicLoss(weight=0.8, ramp_up=4).initialize()
    part.epoch_ = epoch
    assert part.current_weight() == pytest.approx(0.8 * factor, rel=1e-12)
    assert DynamicLoss(weight=0.8).initialize().current_weight() == 0.8


def test_the_ramped_loss_is_the_weight_of_its_epoch_times_the_kl():
    rng = np.random.default_rng(1)
    net = ActiveNet(MLP, module__num_classes=3, verbose=0,
                    callbacks=[("dynamic_loss", DynamicLoss(weight=1.0, ramp_up=5))]).initialize()
    dynamics = net.parts_["dynamics"]
    f_bar = rng.dirichlet(np.ones(3), size=4)
    dynamics.batch_rows_ = torch.tensor(f_bar, dtype=torch.float32)  # as if folded in already
    z = rng.normal(size=(4, 3))
    net.parts_["dynamic_loss"].epoch_ = 2
    term = net.parts_["dynamic_loss"].loss(net, torch.tensor(z, dtype=torch.float32), None)
    kl = (f_bar * (np.log(f_bar) - np.log(_softmax64(z)))).sum() / 4
    assert term.item() == pytest.approx(math.exp(-5 * (1 - 2 / 5) ** 2) * kl, rel=1e-5)


def test_kept_snapshots_are_the_weights_of_runs_stopped_k_epochs_earlier():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, size=40)
    kwargs = dict(module=SmallCNN, module__num_classes=4, module__width=4, batch_size=16, lr=0.1, verbose=0)
    torch.manual_seed(7)
    full = ActiveNet(max_epochs=5, callbacks=[("snapshot", EpochSnapshot(keep=3))], **kwargs).fit(X, y)
    states = full.parts_["snapshot"].states_
    assert len(states) == 3
    for back in (1, 2, 3):
        torch.manual_seed(7)
        short = ActiveNet(max_epochs=5 - back, **kwargs).fit(X, y)
        assert_states_equal(states[back - 1], module_state(short))
        torch.testing.assert_close(full.logits(torch.from_numpy(X), module=full.parts_["snapshot"].module(full, back)),
                                   short.logits(torch.from_numpy(X)))
    with pytest.raises(ValueError, match=r"has 3 epoch snapshot\(s\), not the 4 asked for"):
        full.parts_["snapshot"].module(full, back=4)


def _fitted(selector, n=60, epochs=4):
    X, y = tabular(n=n, d=4, k=3, seed=2)
    X[:, 0] += y  # learnable
    net = ActiveNet(MLP, module__in_features=4, module__hidden_sizes=(16,), max_epochs=epochs, lr=0.2, verbose=0)
    return ActiveLearner(net, selector, random_state=0).fit(X[:30], y[:30]), X[30:]


def test_k_transitions_sum_the_kl_of_consecutive_epochs():
    learner, pool = _fitted(DISAL(transitions=3, drift="keep", balance="none"), epochs=5)
    net = learner.estimator_
    Xb = torch.from_numpy(pool)
    logits = [net.logits(Xb).double().numpy()] + [
        net.logits(Xb, module=net.parts_["snapshot"].module(net, k)).double().numpy() for k in (1, 2, 3)]
    expected = sum(_kl64(logits[k], logits[k - 1]) for k in (1, 2, 3))
    scores = learner.selector_.score_pool(net, pool).double().numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-9)
    # one transition is the paper's score, over the same two last epochs
    one = DISAL(transitions=1, drift="keep", balance="none").score_pool(net, pool).double().numpy()
    np.testing.assert_allclose(one, _kl64(logits[1], logits[0]), rtol=1e-4, atol=1e-9)


def test_drift_removal_scores_the_change_without_its_classes_mean():
    learner, pool = _fitted(DISAL(drift="remove", balance="none"))
    net = learner.estimator_
    Xb = torch.from_numpy(pool)
    z_t = net.logits(Xb).double().numpy()
    z_prev = net.logits(Xb, module=net.parts_["snapshot"].module(net)).double().numpy()
    change, classes = z_prev - z_t, z_t.argmax(axis=1)
    for c in np.unique(classes):
        change[classes == c] -= change[classes == c].mean(axis=0)
    expected = _kl64(z_t + change, z_t)
    scores = learner.selector_.score_pool(net, pool).double().numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-9)
    picked = learner.query(pool, 5)
    np.testing.assert_array_equal(np.sort(picked), np.sort(np.argsort(-expected, kind="stable")[:5]))


def test_a_change_shared_by_a_whole_class_is_removed():
    rng = np.random.default_rng(0)
    change = torch.tensor(rng.normal(size=(12, 3)))
    classes = torch.tensor(rng.integers(0, 3, size=12))
    shift = torch.tensor(rng.normal(size=(3, 3)))
    np.testing.assert_allclose(_without_class_drift(change + shift[classes], classes).numpy(),
                               _without_class_drift(change, classes).numpy(), atol=1e-12)
    means = [_without_class_drift(change, classes)[classes == c].mean(0) for c in range(3)]
    np.testing.assert_allclose(torch.stack(means).numpy(), 0, atol=1e-12)


def test_the_variants_declare_their_training_parts():
    parts = dict(DISAL(target_decay=0.6, ramp_up=10, transitions=2).training_needs().parts)
    assert parts["dynamics"].decay == 0.6 and parts["dynamic_loss"].ramp_up == 10
    assert parts["snapshot"].keep == 2
    assert dict(DISAL().training_needs().parts)["dynamics"].decay is None  # the paper's mean


@pytest.mark.parametrize("params, name", [({"transitions": 0}, "transitions"), ({"drift": "bogus"}, "drift"),
                                          ({"target_decay": 1.5}, "target_decay"), ({"ramp_up": -1}, "ramp_up")])
def test_bad_variant_parameters_are_refused_at_fit(params, name):
    X, y = tabular(n=20)
    learner = ActiveLearner(ActiveNet(MLP, max_epochs=1, verbose=0), DISAL(**params))
    with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of DISAL must be"):
        learner.fit(X, y)
    assert not hasattr(learner, "estimator_")


def test_variants_save_and_resume(tmp_path):
    learner, pool = _fitted(DISAL(transitions=2, target_decay=0.5, ramp_up=2))
    learner.save(tmp_path / "v.skal")
    loaded = ActiveLearner.load(tmp_path / "v.skal")
    np.testing.assert_array_equal(loaded.query(pool, 6), learner.query(pool, 6))
    assert len(loaded.estimator_.parts_["snapshot"].states_) == 2


class _BatchNormNet(torch.nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Linear: running statistics that change every epoch."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.hidden = torch.nn.Linear(4, 6)
        self.norm = torch.nn.BatchNorm1d(6)
        self.out = torch.nn.Linear(6, num_classes)

    def forward(self, x):
        return self.out(torch.relu(self.norm(self.hidden(x))))


def _forward64(state, X):
    """The module's eval-mode logits, in float64 numpy, from a state dict."""
    s = {key: value.detach().double().numpy() for key, value in state.items()}
    h = X.astype(np.float64) @ s["hidden.weight"].T + s["hidden.bias"]
    h = (h - s["norm.running_mean"]) / np.sqrt(s["norm.running_var"] + 1e-5) * s["norm.weight"] + s["norm.bias"]
    return np.maximum(h, 0) @ s["out.weight"].T + s["out.bias"]


@pytest.mark.parametrize("buffers", ["previous", "current"])
def test_snapshot_buffers_choose_the_running_statistics_of_epoch_t_minus_1(buffers):
    X, y = tabular(n=48, d=4)
    pool = tabular(n=20, d=4, seed=1)[0]
    net = ActiveNet(_BatchNormNet, max_epochs=4, batch_size=16, lr=0.1, verbose=0)
    learner = ActiveLearner(net, DISAL(drift="keep", snapshot_buffers=buffers, balance="none"), classes=[0, 1, 2],
                            random_state=0).fit(X, y)
    trained = learner.estimator_
    current = trained.module_.state_dict()
    previous = dict(trained.parts_["snapshot"].state_)
    # the running statistics moved in the last epoch, so the choice matters
    assert not torch.equal(previous["norm.running_mean"], current["norm.running_mean"])
    if buffers == "current":
        previous.update({key: current[key] for key in ("norm.running_mean", "norm.running_var",
                                                          "norm.num_batches_tracked")})
    expected = _kl64(_forward64(previous, pool), _forward64(current, pool))
    scores = learner.selector_.score_pool(trained, pool).double().numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-9)
    other = "current" if buffers == "previous" else "previous"
    other_scores = DISAL(drift="keep", snapshot_buffers=other, balance="none").score_pool(trained, pool).double().numpy()
    assert np.abs(other_scores - scores).max() > 1e-3 * np.abs(scores).max()


def test_snapshot_buffers_are_checked_at_fit():
    X, y = tabular()
    with pytest.raises(InvalidParameterError, match=r"The 'snapshot_buffers' parameter of DISAL must be"):
        ActiveLearner(ActiveNet(MLP, max_epochs=2, verbose=0), DISAL(snapshot_buffers="next")).fit(X, y)


def _balanced_order64(scores, classes):
    """Brute force: the classes take turns, each giving its best remaining sample; ties by score."""
    queues = {c: sorted(np.flatnonzero(classes == c), key=lambda i: -scores[i]) for c in np.unique(classes)}
    order = []
    for turn in range(max(len(q) for q in queues.values())):
        order += sorted((q[turn] for q in queues.values() if turn < len(q)), key=lambda i: -scores[i])
    return np.array(order)


@pytest.mark.parametrize("drift", ["keep", "remove"])
def test_balance_predicted_takes_the_classes_in_turns_by_their_kl(drift):
    learner, pool = _fitted(DISAL(drift=drift, balance="predicted"))
    net = learner.estimator_
    Xb = torch.from_numpy(pool)
    z_t = net.logits(Xb).double().numpy()
    z_prev = net.logits(Xb, module=net.parts_["snapshot"].module(net)).double().numpy()
    kl = DISAL(drift=drift, balance="none").score_pool(net, pool).double().numpy()  # the unbalanced score
    classes = z_t.argmax(axis=1)
    assert len(np.unique(classes)) >= 2
    expected = _balanced_order64(kl, classes)
    scores = learner.selector_.score_pool(net, pool).numpy()
    np.testing.assert_array_equal(np.argsort(-scores, kind="stable"), expected)
    np.testing.assert_array_equal(scores[expected], -np.arange(len(pool), dtype=np.float32))
    picked = learner.query(pool, 6)
    np.testing.assert_array_equal(picked, expected[:6])
    if drift == "keep":
        np.testing.assert_allclose(kl, _kl64(z_prev, z_t), rtol=1e-4, atol=1e-9)


def test_class_balanced_order_against_brute_force():
    from skal.selectors.disal import class_balanced_order

    rng = np.random.default_rng(0)
    for n, k in [(1, 1), (7, 3), (50, 4), (200, 10)]:
        scores, classes = rng.normal(size=n), rng.integers(0, k, size=n)
        got = class_balanced_order(torch.tensor(scores), torch.tensor(classes)).numpy()
        np.testing.assert_array_equal(np.argsort(-got, kind="stable"), _balanced_order64(scores, classes))
