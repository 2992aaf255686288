"""Semi-supervised training parts (skal.semi): losses against hand computations, the pool they read."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback
from torch.utils.data import Dataset

import skal
from conftest import assert_states_equal, module_state
from skal import ActiveLearner, ActiveNet
from skal._campaign import _marked, run_campaign
from skal.losses import pseudo_label_loss
from skal.models import MLP
from skal.parts import TrainingPart
from skal.selectors import Margin
from skal.model_selection import active_learning_curve
from skal.semi import _POOL_KEY, FixMatch, PseudoLabel, _PoolView
from skal.transforms import strong_augment, weak_augment

pytestmark = pytest.mark.usefixtures("one_torch_thread")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def np_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def ref_pseudo_label_loss(target, logits, threshold):
    """(1/n) sum_b 1[max p_b >= tau] (-log softmax(logits_b)[argmax p_b]), float64."""
    p = np_softmax(np.asarray(target, dtype=np.float64))
    log_q = np.log(np_softmax(np.asarray(logits, dtype=np.float64)))
    mask = p.max(axis=1) >= threshold
    labels = p.argmax(axis=1)
    return float((mask * -log_q[np.arange(len(labels)), labels]).mean())


def test_pseudo_label_loss_matches_a_hand_computation():
    target = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, 5.0]])
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0], [0.3, -1.0, 2.0]])
    # rows 0 and 2 pass 0.9: -log softmax(l0)[0] and -log softmax(l2)[2], divided by 3 rows
    by_hand = (-np.log(np.exp(1) / (np.exp(1) + np.exp(2) + np.exp(0.5)))
               - np.log(np.exp(2) / (np.exp(0.3) + np.exp(-1) + np.exp(2)))) / 3
    assert float(pseudo_label_loss(target, logits, 0.9)) == pytest.approx(by_hand, rel=1e-6)
    assert float(pseudo_label_loss(target, logits, 0.9)) == pytest.approx(
        ref_pseudo_label_loss(target, logits, 0.9), rel=1e-6)
    assert float(pseudo_label_loss(target, logits, 1.0)) == 0.0


class Linear(torch.nn.Module):
    """Flatten + a linear layer with fixed weights."""

    def __init__(self, num_classes=3, in_features=4):
        super().__init__()
        self.fc = torch.nn.Linear(in_features, num_classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.arange(num_classes * in_features, dtype=torch.float32)
                                 .reshape(num_classes, in_features).sin() * 2)
            self.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.3][:num_classes]))

    def forward(self, x):
        return self.fc(x.flatten(1))


def _lend(net, X, rows):
    net.__dict__[_POOL_KEY] = _PoolView(X, rows)


def _np_logits(module, X):
    W = module.fc.weight.detach().double().numpy()
    b = module.fc.bias.detach().double().numpy()
    return X.reshape(len(X), -1).astype(np.float64) @ W.T + b


def test_pseudo_label_part_loss_against_a_hand_computation():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 4)).astype(np.float32)
    rows = np.array([0, 2, 3, 5, 7, 8])  # 6 unlabeled rows; the others must not count
    net = ActiveNet(Linear, max_epochs=1, verbose=0,
                    callbacks=[("semi", PseudoLabel(ratio=3, threshold=0.7, weight=2.0, ramp_up=0.0))])
    net.initialize()
    _lend(net, X, rows)
    part = net.parts_["semi"]
    part.on_train_begin(net)
    # a batch of 2 labeled rows draws 3 * 2 = 6 unlabeled rows: one pass over all of them
    term = part.loss(net, torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64))
    z = _np_logits(net.module_, X[rows])
    assert float(term.detach()) == pytest.approx(2.0 * ref_pseudo_label_loss(z, z, 0.7), rel=1e-5)
    assert 0 < int(part.n_confident_) < 6  # the threshold masks some rows
    assert part.n_unlabeled_seen_ == 6


def test_fixmatch_part_loss_against_a_hand_computation():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(8, 1, 2, 2)).astype(np.float32)
    rows = np.array([1, 4, 6, 7])
    part = FixMatch(ratio=4, threshold=0.6, weight=0.5, weak=lambda x, g: x * 3.0,
                    strong=lambda x, g: x.flip(3) * 0.5)
    net = ActiveNet(Linear, module__in_features=4, max_epochs=1, verbose=0, callbacks=[("semi", part)])
    net.initialize()
    _lend(net, X, rows)
    part.on_train_begin(net)
    term = part.loss(net, torch.zeros(1, 3), torch.zeros(1, dtype=torch.int64))
    weak = _np_logits(net.module_, X[rows] * 3.0)
    strong = _np_logits(net.module_, X[rows][..., ::-1] * 0.5)
    expected = 0.5 * ref_pseudo_label_loss(weak, strong, 0.6)
    assert expected > 0
    assert float(term.detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("flip", [False, True])
def test_fixmatch_default_views_follow_flip(flip):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(8, 1, 8, 8)).astype(np.float32)
    rows = np.array([0, 2, 3, 5])
    part = FixMatch(ratio=4, threshold=0.0, flip=flip, random_state=7)
    net = ActiveNet(Linear, module__in_features=64, max_epochs=1, verbose=0, callbacks=[("semi", part)])
    net.initialize()
    _lend(net, X, rows)
    part.on_train_begin(net)
    term = float(part.loss(net, torch.zeros(1, 3), torch.zeros(1, dtype=torch.int64)).detach())
    # the part's draws, replayed: the row order, then the weak view, then the strong view
    g = torch.Generator().manual_seed(7)
    batch = torch.as_tensor(X[rows][torch.randperm(4, generator=g).numpy()])
    views = {}
    for f in (False, True):
        h = torch.Generator().set_state(g.get_state())
        weak = weak_augment(batch, h, flip=f)
        strong = strong_augment(batch, h, flip=f)
        views[f] = ref_pseudo_label_loss(_np_logits(net.module_, weak.numpy()),
                                         _np_logits(net.module_, strong.numpy()), 0.0)
    assert views[flip] != pytest.approx(views[not flip], rel=1e-3)
    assert term == pytest.approx(views[flip], rel=1e-5)


def test_weak_augment_without_flip_only_translates():
    x = torch.arange(64 * 8 * 8, dtype=torch.float32).reshape(64, 1, 8, 8)
    assert torch.equal(weak_augment(x, torch.Generator().manual_seed(0), translate=0.0, flip=False), x)
    out = weak_augment(x, torch.Generator().manual_seed(0), flip=False)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    for i in range(64):
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(3) for dx in range(3))
    # with flips, some images of the same batch match only a window of the mirrored image
    flipped = weak_augment(x, torch.Generator().manual_seed(0))
    assert any(not any(torch.equal(flipped[i], padded[i, :, dy:dy + 8, dx:dx + 8])
                       for dy in range(3) for dx in range(3)) for i in range(64))
    for augment in (weak_augment, strong_augment):
        with pytest.raises(ValueError, match=f"{augment.__name__}: flip must be True or False; got 'no'"):
            augment(x, torch.Generator().manual_seed(0), flip="no")


def _fit_net(callbacks, X, y, seed=0):
    net = ActiveNet(MLP, module__num_classes=3, module__in_features=X.shape[1], max_epochs=3,
                    batch_size=8, verbose=0, callbacks=callbacks)
    torch.manual_seed(seed)
    return net.fit(X, y)


@pytest.mark.parametrize("part", [PseudoLabel(), FixMatch()])
def test_a_part_that_sees_no_pool_trains_exactly_as_without_it(part):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=40)
    plain = _fit_net(None, X, y)
    with pytest.warns(UserWarning, match="sees no unlabeled rows"):
        with_part = _fit_net([("semi", part)], X, y)
    assert_states_equal(module_state(plain), module_state(with_part))
    # a learner fitted on arrays (no pool) too
    net = ActiveNet(MLP, module__in_features=6, max_epochs=3, batch_size=8, verbose=0)
    a = ActiveLearner(net, random_state=3).fit(X, y)
    with pytest.warns(UserWarning, match="sees no unlabeled rows"):
        b = ActiveLearner(net.set_params(callbacks=[("semi", part)]), random_state=3).fit(X, y)
    assert_states_equal(module_state(a.estimator_), module_state(b.estimator_))


def _pool_learner(part, seed=0, n=80, n_labeled=12):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    y_marked = np.where(np.arange(n) < n_labeled, y, skal.UNLABELED)
    callbacks = None if part is None else [("semi", part)]
    net = ActiveNet(MLP, module__in_features=6, max_epochs=4, batch_size=4, verbose=0, callbacks=callbacks)
    learner = ActiveLearner(net, selector=Margin(), unlabeled=skal.UNLABELED, random_state=seed)
    return learner.fit(X, y_marked), X, y


def test_seeded_runs_reproduce_and_the_pool_changes_training():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a learner with a pool lends it: no warning
        a, X, _ = _pool_learner(PseudoLabel(threshold=0.5, ramp_up=0.0))
        b, _, _ = _pool_learner(PseudoLabel(threshold=0.5, ramp_up=0.0))
    assert_states_equal(module_state(a.estimator_), module_state(b.estimator_))
    assert a.estimator_.parts_["semi"].n_unlabeled_seen_ == 4 * 3 * 7 * 4  # epochs x batches x ratio x rows
    c, _, _ = _pool_learner(PseudoLabel(threshold=0.5, ramp_up=0.0), seed=1)
    d, _, _ = _pool_learner(None)
    weight = "layers.1.weight"
    assert not torch.equal(module_state(a.estimator_)[weight], module_state(c.estimator_)[weight])
    assert not torch.equal(module_state(a.estimator_)[weight], module_state(d.estimator_)[weight])
    # the part's own random_state fixes its draws whatever the learner's seed draws for it
    e, _, _ = _pool_learner(PseudoLabel(threshold=0.5, ramp_up=0.0, random_state=5))
    f, _, _ = _pool_learner(PseudoLabel(threshold=0.5, ramp_up=0.0, random_state=5))
    assert_states_equal(module_state(e.estimator_), module_state(f.estimator_))
    # nothing of the pool stays on the fitted net or its part
    assert _POOL_KEY not in a.estimator_.__dict__ and a.estimator_.parts_["semi"].view_ is None


class RecordingPool(Dataset):
    """A pool that records the rows read while training runs (a class flag: callbacks are cloned)."""

    recording = False

    def __init__(self, X):
        self.X, self.read = torch.as_tensor(X), set()

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        if self.recording:
            self.read.add(int(i))
        return self.X[i]


class RecordTraining(Callback):
    def on_train_begin(self, net, **kwargs):
        RecordingPool.recording = True

    def on_train_end(self, net, **kwargs):
        RecordingPool.recording = False


def test_the_parts_read_only_unlabeled_rows_never_skipped_or_labeled_ones():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 1, 2, 3)).astype(np.float32)
    y = (X[:, 0, 0, 0] > 0).astype(np.int64)
    pool = RecordingPool(X)
    y_marked = np.where(np.arange(60) < 10, y, skal.UNLABELED)
    net = ActiveNet(MLP, module__in_features=6, max_epochs=3, batch_size=5, verbose=0,
                    callbacks=[("semi", FixMatch(threshold=0.0)), ("record", RecordTraining())])
    learner = ActiveLearner(net, unlabeled=skal.UNLABELED, random_state=0).fit(pool, y_marked)
    assert pool.read == set(range(10, 60))  # 3 epochs x 10 x 7 rows: every unlabeled row
    skipped, taught = np.arange(20, 35), np.array([40, 41, 42])
    learner.skip(skipped)
    pool.read.clear()
    learner.teach(pool, y[taught], rows=taught)
    expected = set(range(10, 60)) - set(skipped.tolist()) - set(taught.tolist())
    assert pool.read == expected
    # teach without rows and refit have no pool: they warn and read nothing
    pool.read.clear()
    with pytest.warns(UserWarning, match="sees no unlabeled rows"):
        learner.refit()
    assert pool.read == set()


def test_parameters_are_validated_at_fit():
    X = np.zeros((10, 3), dtype=np.float32)
    y = np.arange(10) % 2
    for part, name in [(FixMatch(ratio=0), "ratio"), (PseudoLabel(threshold=1.5), "threshold"),
                       (PseudoLabel(weight=-1.0), "weight"), (PseudoLabel(ramp_up=2.0), "ramp_up"),
                       (FixMatch(weak="flip"), "weak"), (FixMatch(flip="no"), "flip")]:
        net = ActiveNet(MLP, module__num_classes=2, max_epochs=1, verbose=0, callbacks=[("semi", part)])
        with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of {type(part).__name__}"):
            net.fit(X, y)


def test_pseudo_label_ramp_is_the_gaussian_ramp_over_a_fraction_of_max_epochs():
    part = PseudoLabel(weight=3.0, ramp_up=0.5).initialize()

    class Net:
        max_epochs = 8

    weights = []
    for epoch in range(6):
        part.epoch_ = epoch
        weights.append(part.current_weight(Net()))
    assert weights == pytest.approx([3.0 * np.exp(-5 * (1 - t / 4) ** 2) for t in range(4)] + [3.0, 3.0])


def test_fixmatch_refuses_non_image_rows_naming_the_augmentation():
    learner = ActiveLearner(ActiveNet(MLP, module__in_features=6, max_epochs=1, verbose=0,
                                      callbacks=[("semi", FixMatch())]), unlabeled=skal.UNLABELED)
    X = np.zeros((20, 6), dtype=np.float32)
    y = np.where(np.arange(20) < 4, np.arange(20) % 2, skal.UNLABELED)
    with pytest.raises(ValueError, match="weak_augment augments image batches"):
        learner.fit(X, y)


def test_augmentations_are_seeded_and_flip_and_shift_as_drawn():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    a = weak_augment(x, torch.Generator().manual_seed(0))
    b = weak_augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    # without translation, exactly the images whose uniform draw is below 1/2 are flipped
    flip = torch.rand(2, generator=torch.Generator().manual_seed(3)) < 0.5
    out = weak_augment(x, torch.Generator().manual_seed(3), translate=0.0)
    for i in range(2):
        assert torch.equal(out[i], x[i].flip(2) if flip[i] else x[i])
    # a translation moves an image by at most 1 pixel (12.5% of 8): every output row is a
    # row of the reflect-padded, possibly flipped input
    padded = torch.nn.functional.pad(torch.cat([x, x.flip(3)]), (1, 1, 1, 1), mode="reflect")
    for i in range(2):
        windows = [padded[j, :, dy:dy + 8, dx:dx + 8] for j in (i, i + 2) for dy in range(3) for dx in range(3)]
        assert any(torch.equal(a[i], w) for w in windows)
    s1 = strong_augment(x, torch.Generator().manual_seed(0))
    s2 = strong_augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2) and not torch.equal(s1, a)


def test_a_campaign_with_a_part_trains_on_the_rows_not_labeled_yet():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(70, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) * 2 + 5  # labels 5 and 7: the marker is -1
    seen = []
    net = ActiveNet(MLP, module__in_features=5, max_epochs=2, batch_size=8, verbose=0,
                    callbacks=[("semi", PseudoLabel(threshold=0.0))])
    learner = ActiveLearner(net, random_state=0, classes=[5, 7])
    initial = np.arange(10)
    records = run_campaign(learner, X, y, initial_idx=initial, query_size=5, n_cycles=2,
                           on_model=lambda r, l: seen.append(l.estimator_.parts_["semi"].n_unlabeled_seen_))
    taught = np.concatenate([r["indices"] for r in records[1:]])
    assert len(set(taught.tolist())) == 10 and not set(taught.tolist()) & set(initial.tolist())
    assert learner.unlabeled == -1 and sorted(learner.labeled_rows_.tolist()) == sorted(
        initial.tolist() + taught.tolist())
    assert seen == [7 * 10 * 2, 7 * 15 * 2, 7 * 20 * 2]  # ratio x labeled rows x epochs


def test_the_campaign_marker_is_no_label():
    marker, marked = _marked(np.array([-1, 0, 2]), np.array([False, True, False]))
    assert marker == -2 and marked.tolist() == [-1, -2, 2]
    marker, marked = _marked(np.array(["a", "<unlabeled>"]), np.array([True, False]))
    assert marker == "<<unlabeled>>" and marked.tolist() == ["<<unlabeled>>", "<unlabeled>"]


def test_a_campaign_with_a_part_takes_boolean_labels_as_0_and_1():
    # a string marker beside booleans is no label type scikit-learn knows: the campaign trains
    # on 0 and 1 instead, and its accuracies equal those of the same campaign given 0 and 1
    marker, marked = _marked(np.array([True, False, True]), np.array([False, True, False]))
    assert marker == -1 and marked.tolist() == [1, -1, 1]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4)).astype(np.float32)
    y = X[:, 0] > 0

    def curve(labels):
        net = ActiveNet(MLP, module__in_features=4, max_epochs=2, batch_size=8, verbose=0,
                        callbacks=[("semi", PseudoLabel(threshold=0.0))])
        return active_learning_curve({"m": ActiveLearner(net, random_state=0)}, X, labels,
                                     initial_size=20, query_size=10, n_cycles=2, n_repeats=1,
                                     random_state=0).scores

    booleans = curve(y)
    np.testing.assert_array_equal(booleans, curve(y.astype(np.int64)))
    assert booleans.shape == (1, 1, 3) and np.all((booleans >= 0) & (booleans <= 1))


@cuda
def test_the_part_runs_on_the_nets_device():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 1, 4, 4)).astype(np.float32)
    y = np.where(np.arange(40) < 8, (X[:, 0, 0, 0] > 0).astype(np.int64), skal.UNLABELED)
    net = ActiveNet(MLP, module__in_features=16, max_epochs=2, verbose=0, device="cuda",
                    callbacks=[("semi", FixMatch(threshold=0.0))])
    learner = ActiveLearner(net, unlabeled=skal.UNLABELED, random_state=0).fit(X, y)
    part = learner.estimator_.parts_["semi"]
    assert part.n_confident_.device.type == "cuda" and int(part.n_confident_) == 7 * 8 * 2


def test_the_user_guide_snippet_runs():
    from docs_snippets import run_section

    namespace = run_section("user_guide/semi.md", "Using a part")
    assert len(namespace["learner"].labeled_rows_) == 30


class LastForwardSize(TrainingPart):
    """Records, when its loss is asked, the batch size of the module's last training forward."""

    def on_train_begin(self, net, **kwargs):
        self.sizes_ = []
        self.handle_ = net.module_.register_forward_hook(self._hook)

    def _hook(self, module, args, out):
        self.last_ = len(args[0])

    def on_train_end(self, net, **kwargs):
        self.handle_.remove()

    def loss(self, net, logits, y_true):
        self.sizes_.append((self.last_, len(logits)))


def test_pool_parts_run_after_the_parts_that_read_the_labeled_forward():
    # listed first, the pool part is still asked last: the other part sees the labeled batch's forward
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6)).astype(np.float32)
    y = np.where(np.arange(80) < 12, (X[:, 0] > 0).astype(np.int64), skal.UNLABELED)
    net = ActiveNet(MLP, module__in_features=6, max_epochs=2, batch_size=4, verbose=0,
                    callbacks=[("semi", PseudoLabel(threshold=0.0)), ("recorder", LastForwardSize())])
    trained = ActiveLearner(net, unlabeled=skal.UNLABELED, random_state=0).fit(X, y)
    sizes = trained.estimator_.parts_["recorder"].sizes_
    assert sizes == [(4, 4)] * 6  # 2 epochs x 3 batches, each the labeled batch's own forward
    assert trained.estimator_.parts_["semi"].n_unlabeled_seen_ == 7 * 12 * 2


def test_with_a_pipeline_the_part_reads_the_pool_through_its_fitted_transformers():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(60, 3)) * 10 + 100).astype(np.float32)
    y = np.where(np.arange(60) < 10, (X[:, 0] > 100).astype(np.int64), skal.UNLABELED)
    seen = []

    class Spy(PseudoLabel):
        def _unlabeled_loss(self, net, X_unlabeled):
            seen.append(X_unlabeled)
            return super()._unlabeled_loss(net, X_unlabeled)

    net = ActiveNet(MLP, module__in_features=3, max_epochs=1, verbose=0, callbacks=[("semi", Spy())])
    learner = ActiveLearner(make_pipeline(StandardScaler(), net), unlabeled=skal.UNLABELED,
                            random_state=0).fit(X, y)
    scaler = learner.estimator_[0]
    expected = scaler.transform(X[10:]).astype(np.float32)
    got = torch.cat(seen).numpy()
    assert len(got) == 7 * 10 and scaler.mean_ == pytest.approx(X[:10].mean(axis=0), rel=1e-5)
    # every gathered row is a transformed unlabeled row
    assert all(np.isclose(expected, row, atol=1e-5).all(axis=1).any() for row in got)
