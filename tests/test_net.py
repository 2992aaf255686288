"""ActiveNet: training parts, sample positions beside X, the array path, streaming, skorch parity."""

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_states_equal, module_state, tabular
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, EarlyStopping
from skorch.dataset import Dataset as SkorchDataset
from skorch.dataset import ValidSplit
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler

from skal import ActiveNet
from skal._loader import ArrayLoader
from skal.models import MLP, SmallCNN
from skal.parts import DynamicLoss, DynamicsHeadTraining, EpochSnapshot, TrainingDynamics

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _parts(*names):
    table = {"dynamics": TrainingDynamics, "dynamic_loss": DynamicLoss, "snapshot": EpochSnapshot}
    return [(name, table[name]()) for name in names]


class _Recorder:
    """Forward hook recording (inputs, logits) of training-mode forward passes."""

    def __init__(self, module):
        self.calls = []
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        if module.training:
            self.calls.append((inputs[0].detach().clone(), output.detach().double().clone()))


def test_dynamics_are_the_running_mean_of_the_training_softmax_in_data_order():
    X, y = tabular(n=10)
    torch.manual_seed(0)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=4, batch_size=4, lr=0.5,
                    iterator_train__shuffle=False, callbacks=_parts("dynamics"), verbose=0).initialize()
    recorder = _Recorder(net.module_)
    net.partial_fit(X, y)
    # batches of 4, 4, 2 per epoch in data order: rows of epoch e are calls 3e..3e+2
    per_epoch = [torch.cat([out for _, out in recorder.calls[3 * e:3 * e + 3]]) for e in range(4)]
    expected = np.mean([torch.softmax(logits, 1).numpy() for logits in per_epoch], axis=0)
    np.testing.assert_allclose(net.parts_["dynamics"].mean_.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(net.parts_["dynamics"].visits_.numpy(), 4)


def _row_means(recorder, X, k=3):
    row_of = {X[i].tobytes(): i for i in range(len(X))}
    sums, counts, order = np.zeros((len(X), k)), np.zeros(len(X)), []
    for inputs, logits in recorder.calls:
        rows = [row_of[x.numpy().tobytes()] for x in inputs]
        order.extend(rows)
        np.add.at(sums, rows, torch.softmax(logits, 1).numpy())  # a row twice in a batch counts twice
        np.add.at(counts, rows, 1)
    return sums / np.maximum(counts, 1)[:, None], counts, order


@pytest.mark.parametrize("loader", ["array path", "DataLoader", "DataLoader with 2 workers"])
def test_dynamics_follow_each_sample_under_shuffling(loader):
    X, y = tabular(n=13)
    extra = {"array path": {}, "DataLoader": {"iterator_train__num_workers": 0},
             "DataLoader with 2 workers": {"iterator_train__num_workers": 2}}[loader]
    torch.manual_seed(1)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=3, batch_size=5, lr=0.5, verbose=0,
                    callbacks=_parts("dynamics"), **extra).initialize()
    recorder = _Recorder(net.module_)
    net.partial_fit(X, y)
    means, counts, order = _row_means(recorder, X)
    assert order[:13] != list(range(13))  # batches really were shuffled
    np.testing.assert_array_equal(counts, 3)
    np.testing.assert_allclose(net.parts_["dynamics"].mean_.numpy(), means, rtol=1e-5, atol=1e-6)


def test_each_fit_starts_a_new_mean():
    X, y = tabular(n=12)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=2, verbose=0, lr=0.0,
                    callbacks=_parts("dynamics"))
    net.fit(X, y)
    net.partial_fit(X[:7], y[:7])
    dynamics = net.parts_["dynamics"]
    assert dynamics.mean_.shape == (7, 3)
    np.testing.assert_array_equal(dynamics.visits_.numpy(), 2)
    # lr=0: predictions never change, so the mean equals the current softmax
    np.testing.assert_allclose(dynamics.mean_.numpy(), net.predict_proba(X[:7]), rtol=1e-5, atol=1e-6)


def test_dynamic_loss_value_and_gradient_match_a_hand_computation():
    rng = np.random.default_rng(3)
    B, C, N, epoch, weight = 5, 4, 9, 2, 0.7
    net = ActiveNet(MLP, module__num_classes=C, verbose=0,
                    callbacks=[("dynamic_loss", DynamicLoss(weight=weight))]).initialize()
    old = rng.dirichlet(np.ones(C), size=N)
    dynamics = net.parts_["dynamics"]
    dynamics.load_state_dict({"sum": torch.tensor(old * epoch, dtype=torch.float32),
                              "visits": torch.full((N,), float(epoch))})
    index = np.array([7, 0, 3, 8, 2])
    net.sample_indices_.put(torch.as_tensor(index))
    net.history.new_epoch()
    batch = (torch.zeros(B, 2), torch.zeros(B))
    for callback in (net, dynamics):  # what fit's notify("on_batch_begin") does for them
        callback.on_batch_begin(net, batch=batch, training=True)
    z = rng.normal(size=(B, C))
    t = rng.integers(0, C, size=B)
    logits = torch.tensor(z, dtype=torch.float32, requires_grad=True)

    loss = net.get_loss(logits, torch.as_tensor(t), X=torch.zeros(B, 2), training=True)
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
    np.testing.assert_allclose(dynamics.mean_.numpy(), expected, rtol=1e-5, atol=1e-7)
    # a second evaluation of the same batch (LBFGS) folds nothing in again
    net.get_loss(logits.detach(), torch.as_tensor(t), X=None, training=True)
    np.testing.assert_allclose(dynamics.mean_.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_validation_loss_has_no_part_terms():
    net = ActiveNet(MLP, module__num_classes=3, verbose=0,
                    callbacks=[("dynamic_loss", DynamicLoss(weight=5.0))]).initialize()
    logits = torch.randn(4, 3)
    t = torch.tensor([0, 1, 2, 0])
    assert net.get_loss(logits, t, X=torch.zeros(4, 2), training=False).item() == pytest.approx(
        F.cross_entropy(logits, t).item(), rel=1e-6)


def test_two_full_batch_epochs_match_a_manual_sgd_loop():
    X, y = tabular(n=16, d=3, k=3, seed=5)
    lr, weight = 0.5, 1.0
    torch.manual_seed(0)
    net = ActiveNet(MLP, module__num_classes=3, module__in_features=3, max_epochs=2,
                    batch_size=16, lr=lr, callbacks=[("dynamic_loss", DynamicLoss(weight))],
                    verbose=0).initialize()
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
    np.testing.assert_allclose(net.parts_["dynamics"].mean_.numpy(), f_bar.numpy(), rtol=1e-5, atol=1e-6)


_PLAIN = dict(module=MLP, module__num_classes=3, max_epochs=4, batch_size=8, lr=0.1,
              optimizer=torch.optim.SGD, optimizer__momentum=0.9, verbose=0)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("loader", [{}, {"iterator_train__num_workers": 0}], ids=["array path", "DataLoader"])
def test_without_parts_training_equals_plain_skorch_bit_for_bit(shuffle, loader):
    X, y = tabular(n=50, d=5, k=3)
    kwargs = dict(_PLAIN, iterator_train__shuffle=shuffle, **loader)
    torch.manual_seed(42)
    active = ActiveNet(**kwargs).fit(X, y)
    torch.manual_seed(42)
    plain = NeuralNetClassifier(criterion=nn.CrossEntropyLoss, train_split=None, **kwargs).fit(X, y)
    assert_states_equal(module_state(active), module_state(plain))
    assert active.history[:, "train_loss"] == plain.history[:, "train_loss"]
    # the global random state is left where the DataLoader would leave it
    assert torch.equal(torch.rand(3), (torch.manual_seed(42), plain.fit(X, y), torch.rand(3))[2])


def test_disabled_callbacks_train_like_plain_skorch():
    X, y = tabular(n=30, d=5, k=3)
    torch.manual_seed(0)
    active = ActiveNet(callbacks="disable", **_PLAIN).fit(X, y)
    torch.manual_seed(0)
    plain = NeuralNetClassifier(criterion=nn.CrossEntropyLoss, train_split=None, callbacks="disable",
                                iterator_train__shuffle=True, **_PLAIN).fit(X, y)
    assert active.callbacks_ == [] and active.parts_ == {}
    assert_states_equal(module_state(active), module_state(plain))
    np.testing.assert_array_equal(active.predict_proba(X), plain.predict_proba(X))


def test_the_array_path_gives_the_dataloaders_batches_and_draws():
    X, y = tabular(n=23)
    dataset = SkorchDataset(X, y)
    for shuffle, drop_last in [(True, False), (False, True), (True, True)]:
        torch.manual_seed(3)
        expected = list(DataLoader(dataset, batch_size=5, shuffle=shuffle, drop_last=drop_last))
        after_loader = torch.rand(1)
        torch.manual_seed(3)
        got = list(ArrayLoader(dataset, batch_size=5, shuffle=shuffle, drop_last=drop_last))
        assert torch.equal(torch.rand(1), after_loader)
        assert len(got) == len(expected)
        for (Xa, ya), (Xb, yb) in zip(got, expected):
            assert torch.equal(Xa, Xb) and torch.equal(ya, yb) and Xa.dtype == Xb.dtype


def test_the_dynamic_loss_changes_training_and_is_the_same_on_both_loaders():
    X, y = tabular(n=50, d=5, k=3)
    states = []
    for loader in [{}, {"iterator_train__num_workers": 0}]:
        torch.manual_seed(42)
        net = ActiveNet(callbacks=[("dynamic_loss", DynamicLoss())], **_PLAIN, **loader).fit(X, y)
        states.append((module_state(net), net.parts_["dynamics"].mean_.clone()))
    assert_states_equal(states[0][0], states[1][0])
    assert torch.equal(states[0][1], states[1][1])
    torch.manual_seed(42)
    plain = ActiveNet(**_PLAIN).fit(X, y)
    assert not torch.equal(states[0][0]["layers.3.weight"], module_state(plain)["layers.3.weight"])


# --- what the user's code sees: exactly what skorch shows it ----------------------------


class _SeesX(ActiveNet):
    """Overrides infer and get_loss the way skorch's docs show, recording what they get."""

    def infer(self, x, **fit_params):
        self.seen_infer_.append(type(x))
        return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        self.seen_loss_.append(type(X))
        return super().get_loss(y_pred, y_true, X=X, training=training)

    def initialize(self):
        self.seen_infer_, self.seen_loss_ = [], []
        return super().initialize()


@pytest.mark.parametrize("loader", [{}, {"iterator_train__num_workers": 0}], ids=["array path", "DataLoader"])
def test_infer_and_get_loss_overrides_receive_the_users_X_with_parts(loader):
    X, y = tabular()
    net = _SeesX(MLP, module__num_classes=3, max_epochs=2, batch_size=8, verbose=0,
                 callbacks=_parts("dynamic_loss", "snapshot"), **loader).fit(X, y)
    assert set(net.seen_infer_) == {torch.Tensor} and set(net.seen_loss_) == {torch.Tensor}
    assert len(net.seen_loss_) == 2 * 4


def test_a_custom_collate_fn_and_callbacks_see_the_users_items():
    X, y = tabular(n=12)
    items, batches = [], []

    def collate(batch):
        items.extend(batch)
        return torch.utils.data.default_collate(batch)

    class Batches(Callback):
        def on_batch_begin(self, net, batch=None, training=None, **kwargs):
            if training:
                batches.append(batch)

    ActiveNet(MLP, module__num_classes=3, max_epochs=1, batch_size=4, verbose=0,
              iterator_train__collate_fn=collate, iterator_train__shuffle=False,
              callbacks=[*_parts("dynamic_loss"), ("batches", Batches())]).fit(X, y)
    assert len(items) == 12 and all(isinstance(x, np.ndarray) and x.shape == (4,) for x, _ in items)
    np.testing.assert_array_equal(np.stack([x for x, _ in items]), X)
    assert len(batches) == 3 and torch.equal(batches[0][0], torch.from_numpy(X[:4]))


class _BalancedLoader(DataLoader):
    """A loader that reads the dataset's labels, as a class-balanced sampler does."""

    def __init__(self, dataset, batch_size, **kwargs):
        labels = np.asarray(dataset.y)
        weights = 1.0 / np.bincount(labels)[labels]
        sampler = WeightedRandomSampler(weights, num_samples=len(labels), replacement=True)
        kwargs.pop("shuffle", None)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)


def test_iterator_train_receives_the_users_dataset_and_positions_follow_its_sampler():
    X, y = tabular(n=40)
    y[:30] = 0  # imbalanced
    torch.manual_seed(0)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=2, batch_size=8, lr=0.3, verbose=0,
                    iterator_train=_BalancedLoader, callbacks=_parts("dynamics")).initialize()
    recorder = _Recorder(net.module_)
    net.partial_fit(X, y)
    means, counts, _ = _row_means(recorder, X)
    dynamics = net.parts_["dynamics"]
    np.testing.assert_array_equal(dynamics.visits_.numpy(), counts)  # sampled with replacement
    seen = counts > 0
    np.testing.assert_allclose(dynamics.mean_.numpy()[seen], means[seen], rtol=1e-5, atol=1e-6)


def test_a_dataset_with_one_item_gets_skorchs_error():
    class OneValue(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(3)

    net = ActiveNet(MLP, module__num_classes=2, max_epochs=1, verbose=0, callbacks=_parts("dynamics"))
    with pytest.raises(ValueError, match="You are using a non-skorch dataset that returns 1 value"):
        net.fit(OneValue(), None)


def test_lbfgs_folds_each_sample_in_once_per_epoch():
    X, y = tabular(n=16)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=5, batch_size=8, lr=0.5,
                    optimizer=torch.optim.LBFGS, optimizer__max_iter=4, verbose=0,
                    callbacks=_parts("dynamic_loss")).fit(X, y)
    np.testing.assert_array_equal(net.parts_["dynamics"].visits_.numpy(), 5)


# --- snapshot ---------------------------------------------------------------------------------


@pytest.mark.parametrize("with_loss", [False, True])
def test_snapshot_equals_the_weights_of_a_run_stopped_one_epoch_earlier(with_loss):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, size=40)
    parts = ["dynamic_loss"] if with_loss else []
    kwargs = dict(module=SmallCNN, module__num_classes=4, module__width=4, batch_size=16, lr=0.1, verbose=0)
    torch.manual_seed(7)
    full = ActiveNet(max_epochs=3, callbacks=_parts(*parts, "snapshot"), **kwargs).fit(X, y)
    torch.manual_seed(7)
    short = ActiveNet(max_epochs=2, callbacks=_parts(*parts), **kwargs).fit(X, y)
    snapshot = full.parts_["snapshot"].state_
    assert_states_equal(snapshot, module_state(short))  # includes BN running stats
    assert not torch.equal(snapshot["fc.weight"], module_state(full)["fc.weight"])
    previous = full.parts_["snapshot"].module(full)
    torch.testing.assert_close(full.logits(torch.from_numpy(X), module=previous), short.logits(torch.from_numpy(X)))


def test_snapshot_under_early_stopping_is_the_epoch_before_the_last():
    X, y = tabular(n=40)
    torch.manual_seed(0)
    stop = EarlyStopping(monitor="train_loss", patience=1, threshold=10.0, threshold_mode="abs")
    net = ActiveNet(MLP, module__num_classes=3, module__in_features=4, max_epochs=20, lr=0.1,
                    verbose=0, callbacks=[("stop", stop), *_parts("snapshot")]).fit(X, y)
    assert len(net.history) == 2  # stopped at the end of the second epoch
    torch.manual_seed(0)
    one = ActiveNet(MLP, module__num_classes=3, module__in_features=4, max_epochs=1, lr=0.1,
                    verbose=0).fit(X, y)
    assert_states_equal(net.parts_["snapshot"].state_, module_state(one))


class _SnapshotPointers(Callback):
    def initialize(self):
        self.pointers = []
        return self

    def on_epoch_end(self, net, **kwargs):
        self.pointers.append({k: v.data_ptr() for k, v in net.parts_["snapshot"].state_.items()})


def test_snapshot_storage_is_reused_across_epochs_and_renewed_per_fit():
    X, y = tabular()
    recorder = _SnapshotPointers()
    net = ActiveNet(MLP, module__num_classes=3, module__in_features=4, max_epochs=4,
                    callbacks=[*_parts("snapshot"), ("pointers", recorder)], verbose=0).fit(X, y)
    assert all(p == recorder.pointers[0] for p in recorder.pointers)  # copied in place
    # a new fit may change the architecture: fresh buffers, no shape clash
    net.set_params(module__hidden_sizes=(32,)).fit(X, y)
    assert net.parts_["snapshot"].state_["layers.1.weight"].shape == (32, 4)


def test_the_snapshot_module_is_a_copy_the_net_is_never_swapped():
    X, y = tabular()
    net = ActiveNet(MLP, module__num_classes=3, module__in_features=4, max_epochs=2, verbose=0,
                    callbacks=_parts("snapshot")).fit(X, y)
    before = module_state(net)
    previous = net.parts_["snapshot"].module(net)
    assert previous is not net.module_
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(previous.parameters(), net.module_.parameters()))
    assert_states_equal(module_state(net), before)


# --- other inputs and outputs -------------------------------------------------------------------


def test_modules_returning_a_tuple_train_on_its_first_element():
    class TwoOutputs(nn.Module):
        def __init__(self, num_classes=3):
            super().__init__()
            self.fc = nn.Linear(4, num_classes)

        def forward(self, x):
            z = self.fc(x)
            return z, z.detach() * 0

    X, y = tabular()
    net = ActiveNet(TwoOutputs, max_epochs=2, classes=np.arange(3), verbose=0,
                    callbacks=_parts("dynamic_loss")).fit(X, y)
    assert net.parts_["dynamics"].mean_.shape == (30, 3)
    np.testing.assert_allclose(net.predict_proba(X).sum(1), 1, rtol=1e-6)


def test_running_mean_counts_visits_so_drop_last_keeps_a_proper_mean():
    X, y = tabular(n=10)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=3, batch_size=4, lr=0.0, verbose=0,
                    iterator_train__drop_last=True, callbacks=_parts("dynamics")).fit(X, y)
    visits = net.parts_["dynamics"].visits_.numpy()
    mean = net.parts_["dynamics"].mean_.numpy()
    assert visits.sum() == 3 * 8  # 2 full batches of 4 per epoch
    seen = visits > 0
    # lr=0: every visit sees the same softmax, so each visited row is exactly it
    np.testing.assert_allclose(mean[seen], net.predict_proba(X)[seen], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mean[~seen], 0)


class _TwoInputs(nn.Module):
    def __init__(self, num_classes=2):
        super().__init__()
        self.a = nn.Linear(2, num_classes)
        self.b = nn.Linear(3, num_classes)

    def forward(self, left, right):  # would fail on an unexpected keyword
        return self.a(left) + self.b(right)


@pytest.mark.parametrize("loader", [{}, {"iterator_train__num_workers": 0}], ids=["array path", "DataLoader"])
def test_dict_inputs_reach_the_module_as_they_are(loader):
    rng = np.random.default_rng(0)
    X = {"left": rng.normal(size=(20, 2)).astype(np.float32),
         "right": rng.normal(size=(20, 3)).astype(np.float32)}
    y = rng.integers(0, 2, size=20)
    net = ActiveNet(_TwoInputs, max_epochs=2, verbose=0, callbacks=_parts("dynamic_loss"), **loader).fit(X, y)
    assert net.parts_["dynamics"].mean_.shape == (20, 2)
    assert net.predict_proba(X).shape == (20, 2)


def test_a_validation_split_trains_on_its_training_part_with_positions_into_it():
    X, y = tabular(n=50)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=2, verbose=0, train_split=ValidSplit(5),
                    callbacks=_parts("dynamic_loss")).fit(X, y)
    assert net.parts_["dynamics"].mean_.shape == (40, 3)
    np.testing.assert_array_equal(net.parts_["dynamics"].visits_.numpy(), 2)
    assert "valid_loss" in net.history[-1]


def test_negative_stride_arrays_train_and_predict():
    X, y = tabular(n=20)
    view = X[:, ::-1]
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=1, verbose=0).fit(view, y)
    np.testing.assert_allclose(net.predict_proba(view), net.predict_proba(view.copy()), rtol=0, atol=0)


def test_iter_logits_streams_batches_under_inference_mode():
    X, y = tabular(n=23)
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=1, verbose=0,
                    iterator_valid__batch_size=10).fit(X, y)
    chunks = list(net.iter_logits(X))
    assert [c.shape[0] for c in chunks] == [10, 10, 3]
    assert all(c.is_inference() for c in chunks)
    assert not net.module_.training
    probs = torch.softmax(torch.cat(chunks), 1).numpy()
    np.testing.assert_allclose(probs, net.predict_proba(X), rtol=1e-6, atol=1e-7)


def test_logits_of_another_module_use_its_weights():
    X, y = tabular()
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=1, verbose=0).fit(X, y)
    other = MLP(num_classes=3, in_features=4)
    Xb = torch.from_numpy(X)
    torch.testing.assert_close(net.logits(Xb, module=other), other.eval()(Xb).detach())


def test_num_classes_is_taken_from_classes_when_not_given():
    net = ActiveNet(MLP, classes=np.arange(7), verbose=0).initialize()
    assert net.module_.layers[-1].out_features == 7
    net = ActiveNet(MLP, classes=np.arange(7), module__num_classes=5, verbose=0).initialize()
    assert net.module_.layers[-1].out_features == 5


def test_module_output_size_must_match_classes():
    X, y = tabular()
    net = ActiveNet(MLP, module__num_classes=5, classes=np.arange(3), max_epochs=1, verbose=0,
                    callbacks=_parts("dynamics"))
    with pytest.raises(ValueError, match=r"returns 5 logits .* 3 classes; set module__num_classes=3"):
        net.fit(X, y)


# --- callbacks that stop training, parameters, persistence ------------------------------------------


def test_early_stopping_on_train_loss_stops_training():
    X, y = tabular(n=40)
    stop = EarlyStopping(monitor="train_loss", patience=2, threshold=10.0, threshold_mode="abs")
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=50, verbose=0,
                    callbacks=[("stop", stop), *_parts("dynamic_loss")]).fit(X, y)
    assert len(net.history) == 3


@pytest.mark.parametrize("callback", [EarlyStopping(), EarlyStopping(monitor="valid_acc", lower_is_better=False)])
def test_a_callback_monitoring_a_validation_score_needs_a_split(callback):
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=2, verbose=0, callbacks=[("stop", callback)])
    with pytest.raises(ValueError, match=r"callbacks: 'stop' \(EarlyStopping\) monitors 'valid_.*', but "
                                         r"ActiveNet has train_split=None.*ValidSplit"):
        net.initialize()
    net.set_params(train_split=ValidSplit(5)).fit(*tabular(n=40))  # with a split it works


@pytest.mark.parametrize("params, match", [
    ({"feature_layers": "all"}, r"The 'feature_layers' parameter of ActiveNet must be"),
    ({"embedding_layer": 3}, r"The 'embedding_layer' parameter of ActiveNet must be"),
    ({"train_transform": "flip"}, r"The 'train_transform' parameter of ActiveNet must be"),
    ({"callbacks": [("dynamic_loss", DynamicLoss(weight=-5))]}, r"The 'weight' parameter of DynamicLoss"),
    ({"callbacks": [("dynamic_loss", DynamicLoss(weight="abc"))]}, r"The 'weight' parameter of DynamicLoss"),
    ({"callbacks": [("head", DynamicsHeadTraining(weight=0))]}, r"The 'weight' parameter of DynamicsHeadTraining"),
])
def test_invalid_parameters_are_refused_at_initialize_naming_them(params, match):
    net = ActiveNet(MLP, module__num_classes=3, verbose=0, **params)
    with pytest.raises(ValueError, match=match):
        net.initialize()


def test_a_head_part_removed_from_the_callbacks_is_no_longer_built_or_trained():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=20)
    net = ActiveNet(SmallCNN, module__width=4, classes=np.arange(3), max_epochs=1, verbose=0,
                    callbacks=[("head", DynamicsHeadTraining())]).fit(X, y)
    assert isinstance(net.dynamics_predictor_, nn.Module) and "dynamics_predictor" in net._modules
    net.set_params(callbacks=[]).fit(X, y)
    assert not hasattr(net, "dynamics_predictor_") and "dynamics_predictor" not in net._modules


def test_pickle_keeps_the_parts_state():
    X, y = tabular()
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=2, verbose=0,
                    callbacks=_parts("dynamic_loss", "snapshot")).fit(X, y)
    loaded = pickle.loads(pickle.dumps(net))
    assert torch.equal(loaded.parts_["dynamics"].mean_, net.parts_["dynamics"].mean_)
    assert_states_equal(loaded.parts_["snapshot"].state_, net.parts_["snapshot"].state_)
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))


def test_copies_keep_parts_and_callbacks_the_same_objects_and_copy_lambdas():
    # warm starts deep-copy the net: a callback holding a lambda must copy as in skorch
    X, y = tabular()
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=2, verbose=0,
                    callbacks=_parts("dynamic_loss", "snapshot") + [
                        ("stop", EarlyStopping(monitor="train_loss", sink=lambda *args: None))]).fit(X, y)
    picklable = copy.deepcopy(net)
    dict(picklable.callbacks_)["stop"].sink = print  # a lambda cannot be pickled, in skorch either
    for copied in (copy.deepcopy(net), pickle.loads(pickle.dumps(picklable))):
        callbacks = dict(copied.callbacks_)
        assert all(callbacks[name] is part for name, part in copied.parts_.items())
        assert set(copied.parts_) == {"dynamic_loss", "dynamics", "snapshot"}
        assert copied.parts_["dynamics"] is not net.parts_["dynamics"]
        assert torch.equal(copied.parts_["dynamics"].mean_, net.parts_["dynamics"].mean_)
        assert_states_equal(copied.parts_["snapshot"].state_, net.parts_["snapshot"].state_)
        copied.partial_fit(X, y)  # the copy trains its own parts
        assert int(copied.parts_["dynamics"].visits_.min()) == 2
    assert int(net.parts_["dynamics"].visits_.min()) == 2 and len(net.history) == 2


def test_clone_and_params():
    from sklearn.base import clone

    net = ActiveNet(MLP, module__num_classes=3, callbacks=[("dynamic_loss", DynamicLoss(0.5))])
    params = clone(net).initialize().get_params()
    assert params["callbacks__dynamic_loss__weight"] == 0.5
    assert params["iterator_train__shuffle"] is True
    assert params["train_split"] is None and params["criterion"] is nn.CrossEntropyLoss
    assert clone(net).initialize().set_params(callbacks__dynamic_loss__weight=0.0).get_params()[
        "callbacks__dynamic_loss__weight"] == 0.0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_parts_state_and_streaming_stay_on_the_device():
    X, y = tabular()
    net = ActiveNet(MLP, module__num_classes=3, max_epochs=2, device="cuda", verbose=0,
                    callbacks=_parts("dynamic_loss", "snapshot")).fit(X, y)
    assert net.parts_["dynamics"].mean_.is_cuda
    assert all(v.is_cuda for v in net.parts_["snapshot"].state_.values())
    assert all(c.is_cuda for c in net.iter_logits(X))
    loaded = pickle.loads(pickle.dumps(net))
    assert loaded.parts_["dynamics"].mean_.is_cuda
