"""ActiveNet: indices, training dynamics, dynamic loss, snapshot, streaming."""

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from torch import nn

from skal import ActiveNet
from skal.models import MLP, SmallCNN
from skal.net import _INDEX_KEY, _X_KEY


def _data(n=30, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, k, size=n).astype(np.int64)
    return X, y


def _state(net):
    return {k: v.detach().clone() for k, v in net.module_.state_dict().items()}


def _assert_states_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _Recorder:
    """Forward hook recording (inputs, logits) of training-mode forward passes."""

    def __init__(self, module):
        self.calls = []
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        if module.training:
            self.calls.append((inputs[0].detach().clone(), output.detach().double().clone()))


def test_dynamics_buffer_is_running_mean_of_training_softmax_fixed_order():
    X, y = _data(n=10)
    torch.manual_seed(0)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=4, batch_size=4, lr=0.5,
                    iterator_train__shuffle=False, verbose=0).initialize()
    recorder = _Recorder(net.module_)
    net.partial_fit(X, y)
    # batches of 4, 4, 2 per epoch in data order: rows of epoch e are calls 3e..3e+2
    per_epoch = [torch.cat([out for _, out in recorder.calls[3 * e:3 * e + 3]]) for e in range(4)]
    expected = np.mean([torch.softmax(logits, 1).numpy() for logits in per_epoch], axis=0)
    np.testing.assert_allclose(net.training_dynamics_.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert net.dynamics_epoch_ == 4


def test_dynamics_buffer_follows_sample_index_under_shuffling():
    X, y = _data(n=13)
    torch.manual_seed(1)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=3, batch_size=5, lr=0.5, verbose=0).initialize()
    recorder = _Recorder(net.module_)
    net.partial_fit(X, y)
    row_of = {X[i].tobytes(): i for i in range(len(X))}
    sums = np.zeros((len(X), 3))
    counts = np.zeros(len(X))
    orders = []
    for inputs, logits in recorder.calls:
        rows = [row_of[x.numpy().tobytes()] for x in inputs]
        orders.extend(rows)
        sums[rows] += torch.softmax(logits, 1).numpy()
        counts[rows] += 1
    assert orders[:13] != list(range(13))  # batches really were shuffled
    np.testing.assert_array_equal(counts, 3)
    np.testing.assert_allclose(net.training_dynamics_.numpy(), sums / 3, rtol=1e-5, atol=1e-6)


def test_each_fit_resets_the_dynamics_buffer():
    X, y = _data(n=12)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=2, verbose=0, lr=0.0)
    net.fit(X, y)
    net.partial_fit(X[:7], y[:7])
    assert net.training_dynamics_.shape == (7, 3)
    assert net.dynamics_epoch_ == 2
    # lr=0: predictions never change, so the mean equals the current softmax
    probs = net.predict_proba(X[:7])
    np.testing.assert_allclose(net.training_dynamics_.numpy(), probs, rtol=1e-5, atol=1e-6)


def test_get_loss_value_and_gradient_match_hand_computation():
    rng = np.random.default_rng(3)
    B, C, N, epoch, weight = 5, 4, 9, 2, 0.7
    net = ActiveNet(MLP, module__num_classes=C, dynamic_weight=weight, verbose=0).initialize()
    old = rng.dirichlet(np.ones(C), size=N)
    net.training_dynamics_ = torch.tensor(old, dtype=torch.float32)
    net.dynamics_visits_ = torch.full((N,), float(epoch))
    net.dynamics_epoch_ = epoch
    net._train_size_ = N
    index = np.array([7, 0, 3, 8, 2])
    z = rng.normal(size=(B, C))
    t = rng.integers(0, C, size=B)
    logits = torch.tensor(z, dtype=torch.float32, requires_grad=True)
    X = {_X_KEY: torch.zeros(B, 2), _INDEX_KEY: torch.as_tensor(index)}

    loss = net.get_loss(logits, torch.as_tensor(t), X=X, training=True)
    loss.backward()

    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    f_bar = (old[index] * epoch + p) / (epoch + 1)
    ce = -np.log(p[np.arange(B), t]).mean()
    kl = (f_bar * (np.log(f_bar) - np.log(p))).sum() / B
    assert loss.item() == pytest.approx(ce + weight * kl, rel=1e-5)
    onehot = np.eye(C)[t]
    grad = (p - onehot) / B + weight * (p - f_bar) / B
    np.testing.assert_allclose(logits.grad.numpy(), grad, rtol=1e-4, atol=1e-6)
    # the buffer rows were updated with eq. 12, the others untouched
    expected = old.copy()
    expected[index] = f_bar
    np.testing.assert_allclose(net.training_dynamics_.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_validation_loss_has_no_dynamic_term():
    net = ActiveNet(MLP, module__num_classes=3, dynamic_weight=5.0, verbose=0).initialize()
    logits = torch.randn(4, 3)
    t = torch.tensor([0, 1, 2, 0])
    assert net.get_loss(logits, t, X=torch.zeros(4, 2), training=False).item() == pytest.approx(
        F.cross_entropy(logits, t).item(), rel=1e-6)


def test_two_full_batch_epochs_match_a_manual_sgd_loop():
    X, y = _data(n=16, d=3, k=3, seed=5)
    lr, weight = 0.5, 1.0
    torch.manual_seed(0)
    net = ActiveNet(MLP, module__num_classes=3, module__in_features=3, max_epochs=2,
                    batch_size=16, lr=lr, dynamic_weight=weight, verbose=0).initialize()
    module = copy.deepcopy(net.module_)
    net.partial_fit(X, y)

    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    f_bar = None
    for epoch in range(2):
        opt.zero_grad()
        logits = module(Xt)
        p = torch.softmax(logits.detach(), 1)
        f_bar = p if f_bar is None else (f_bar * epoch + p) / (epoch + 1)
        loss = F.cross_entropy(logits, yt) + weight * F.kl_div(
            F.log_softmax(logits, 1), f_bar, reduction="batchmean")
        loss.backward()
        opt.step()
    for (name, a), b in zip(net.module_.state_dict().items(), module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    np.testing.assert_allclose(net.training_dynamics_.numpy(), f_bar.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shuffle", [True, False])
def test_dynamic_weight_zero_trains_exactly_like_plain_skorch(shuffle):
    X, y = _data(n=50, d=5, k=3)
    kwargs = dict(module=MLP, module__num_classes=3, max_epochs=4, batch_size=8, lr=0.1,
                  optimizer=torch.optim.SGD, optimizer__momentum=0.9,
                  iterator_train__shuffle=shuffle, verbose=0)
    torch.manual_seed(42)
    active = ActiveNet(dynamic_weight=0, **kwargs).fit(X, y)
    torch.manual_seed(42)
    plain = NeuralNetClassifier(criterion=nn.CrossEntropyLoss, train_split=None, **kwargs).fit(X, y)
    _assert_states_equal(_state(active), _state(plain))
    assert active.history[:, "train_loss"] == plain.history[:, "train_loss"]
    # and the dynamic loss does change training when switched on
    torch.manual_seed(42)
    dynamic = ActiveNet(dynamic_weight=1.0, **kwargs).fit(X, y)
    assert not torch.equal(_state(dynamic)["layers.3.weight"], _state(plain)["layers.3.weight"])


@pytest.mark.parametrize("dynamic_weight", [0.0, 1.0])
def test_snapshot_equals_weights_of_a_run_stopped_one_epoch_earlier(dynamic_weight):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, size=40)
    kwargs = dict(module=SmallCNN, module__num_classes=4, module__width=4, batch_size=16,
                  lr=0.1, dynamic_weight=dynamic_weight, verbose=0)
    torch.manual_seed(7)
    full = ActiveNet(max_epochs=3, snapshot=True, **kwargs).fit(X, y)
    torch.manual_seed(7)
    short = ActiveNet(max_epochs=2, **kwargs).fit(X, y)
    _assert_states_equal(full.snapshot_, _state(short))  # includes BN running stats
    assert not torch.equal(full.snapshot_["fc.weight"], _state(full)["fc.weight"])
    assert short.snapshot_ is None


class _SnapshotPointers(Callback):
    def initialize(self):
        self.pointers = []
        return self

    def on_epoch_end(self, net, **kwargs):
        self.pointers.append({k: v.data_ptr() for k, v in net.snapshot_.items()})


def test_snapshot_storage_is_reused_across_epochs_and_renewed_per_fit():
    X, y = _data()
    recorder = _SnapshotPointers()
    net = ActiveNet(MLP, module__num_classes=3, module__in_features=4, max_epochs=4, snapshot=True,
                    callbacks=[("pointers", recorder)], verbose=0).fit(X, y)
    assert all(p == recorder.pointers[0] for p in recorder.pointers)  # copied in place
    # a new fit may change the architecture: fresh buffers, no shape clash
    net.set_params(module__hidden_sizes=(32,)).fit(X, y)
    assert net.snapshot_["layers.1.weight"].shape == (32, 4)


def test_modules_returning_a_tuple_train_on_its_first_element():
    class TwoOutputs(nn.Module):
        def __init__(self, num_classes=3):
            super().__init__()
            self.fc = nn.Linear(4, num_classes)

        def forward(self, x):
            z = self.fc(x)
            return z, z.detach() * 0

    X, y = _data()
    net = ActiveNet(TwoOutputs, max_epochs=2, classes=np.arange(3), verbose=0).fit(X, y)
    assert net.training_dynamics_.shape == (30, 3)
    np.testing.assert_allclose(net.predict_proba(X).sum(1), 1, rtol=1e-6)


def test_running_mean_counts_visits_so_drop_last_keeps_a_proper_mean():
    X, y = _data(n=10)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=3, batch_size=4, lr=0.0, verbose=0,
                    iterator_train__drop_last=True).fit(X, y)
    visits = net.dynamics_visits_.numpy()
    assert visits.sum() == 3 * 8  # 2 full batches of 4 per epoch
    seen = visits > 0
    # lr=0: every visit sees the same softmax, so each visited row is exactly it
    np.testing.assert_allclose(net.training_dynamics_.numpy()[seen], net.predict_proba(X)[seen],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(net.training_dynamics_.numpy()[~seen], 0)


class _TwoInputs(nn.Module):
    def __init__(self, num_classes=2):
        super().__init__()
        self.a = nn.Linear(2, num_classes)
        self.b = nn.Linear(3, num_classes)

    def forward(self, left, right):  # would fail on an unexpected index keyword
        return self.a(left) + self.b(right)


def test_dict_inputs_reach_the_module_without_the_index():
    rng = np.random.default_rng(0)
    X = {"left": rng.normal(size=(20, 2)).astype(np.float32),
         "right": rng.normal(size=(20, 3)).astype(np.float32)}
    y = rng.integers(0, 2, size=20)
    net = ActiveNet(_TwoInputs, max_epochs=2, verbose=0).fit(X, y)
    assert net.training_dynamics_.shape == (20, 2)
    assert net.predict_proba(X).shape == (20, 2)


def test_iter_logits_streams_batches_under_inference_mode():
    X, y = _data(n=23)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=1, verbose=0,
                    iterator_valid__batch_size=10).fit(X, y)
    chunks = list(net.iter_logits(X))
    assert [c.shape[0] for c in chunks] == [10, 10, 3]
    assert all(c.is_inference() for c in chunks)
    assert not net.module_.training
    probs = torch.softmax(torch.cat(chunks), 1).numpy()
    np.testing.assert_allclose(probs, net.predict_proba(X), rtol=1e-6, atol=1e-7)


def test_logits_with_state_uses_those_weights_not_the_modules():
    X, y = _data()
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=1, verbose=0).fit(X, y)
    other = MLP(num_classes=3, in_features=4)
    Xb = torch.from_numpy(X)
    got = net.logits(Xb, state=other.state_dict())
    torch.testing.assert_close(got, other.eval()(Xb).detach())


def test_num_classes_is_taken_from_classes_when_not_given():
    net = ActiveNet(MLP, classes=np.arange(7), verbose=0).initialize()
    assert net.module_.layers[-1].out_features == 7
    net = ActiveNet(MLP, classes=np.arange(7), module__num_classes=5, verbose=0).initialize()
    assert net.module_.layers[-1].out_features == 5


def test_module_output_size_must_match_classes():
    X, y = _data()
    net = ActiveNet(MLP, module__num_classes=5, classes=np.arange(3), max_epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"returns 5 logits .* 3 classes; set module__num_classes=3"):
        net.fit(X, y)


def test_pickle_keeps_dynamics_and_snapshot():
    X, y = _data()
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=2, snapshot=True, verbose=0).fit(X, y)
    loaded = pickle.loads(pickle.dumps(net))
    assert torch.equal(loaded.training_dynamics_, net.training_dynamics_)
    _assert_states_equal(loaded.snapshot_, net.snapshot_)
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))


def test_clone_and_params():
    from sklearn.base import clone

    net = ActiveNet(MLP, module__num_classes=3, dynamic_weight=0.5, snapshot=True)
    params = clone(net).get_params()
    assert params["dynamic_weight"] == 0.5 and params["snapshot"] is True
    assert params["iterator_train__shuffle"] is True
    assert params["train_split"] is None and params["criterion"] is nn.CrossEntropyLoss
    assert clone(net).set_params(dynamic_weight=0.0).dynamic_weight == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_buffers_and_streaming_stay_on_the_device():
    X, y = _data()
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=2, snapshot=True, device="cuda",
                    verbose=0).fit(X, y)
    assert net.training_dynamics_.is_cuda
    assert all(v.is_cuda for v in net.snapshot_.values())
    assert all(c.is_cuda for c in net.iter_logits(X))
