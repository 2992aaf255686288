"""Image workflows: train-only augmentation and torch Dataset pools."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from skal import ActiveLearner, ActiveNet
from skal.models import SmallCNN
from skal.parts import DynamicsHeadTraining, LossPredictionHeadTraining, TrainingDynamics
from skal.selectors import DISAL, LL4AL, Entropy, TiDAL
from skal.transforms import cifar_augmentation

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n, seed=0, k=3, shape=(1, 8, 8)):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, *shape)).astype(np.float32)
    y = (np.arange(n) % k).astype(np.int64)
    return X, y


def _net(**kwargs):
    params = dict(module__width=4, max_epochs=2, batch_size=8, lr=0.05, verbose=0)
    params.update(kwargs)
    return ActiveNet(SmallCNN, **params)


class CountingTransform:
    """Counts its calls and records what it was given; optionally replaces the sample."""

    def __init__(self, zero=False):
        self.zero = zero
        self.calls = 0
        self.seen = set()

    def __call__(self, x):
        self.calls += 1
        self.seen.add((type(x).__name__, tuple(x.shape)))
        return torch.zeros_like(x) if self.zero else x


# --- train-only augmentation --------------------------------------------------------------


def test_train_transform_runs_once_per_sample_and_epoch_during_fit_only():
    X, y = _images(10)
    rec = CountingTransform()
    torch.manual_seed(0)
    net = _net(module__num_classes=3, classes=[0, 1, 2], max_epochs=3, train_transform=rec,
               callbacks=[("loss_head", LossPredictionHeadTraining()),
                          ("dynamics_head", DynamicsHeadTraining())])
    net.fit(X, y)
    assert rec.calls == 3 * 10
    assert rec.seen == {("Tensor", (1, 8, 8))}

    net.predict_proba(X)
    net.predict(X)
    list(net.iter_logits(X))
    net.forward_tapped(torch.as_tensor(X), levels=True, embedding=True)
    for selector in (Entropy(), TiDAL(subset=None), LL4AL(subset=None)):
        selector.score_pool(net, X)
        selector.select(net, X, 3, random_state=0)
    assert rec.calls == 30

    net.partial_fit(X[:4], y[:4])
    assert rec.calls == 30 + 3 * 4


def test_train_transform_output_is_what_training_sees_but_not_prediction():
    X, y = _images(10)
    torch.manual_seed(0)
    net = _net(module__num_classes=3, classes=[0, 1, 2], max_epochs=2, batch_size=10,
               train_transform=CountingTransform(zero=True),
               callbacks=[("dynamics", TrainingDynamics())]).fit(X, y)
    # every training input was zeroed and each epoch is one batch: all samples had
    # the same training softmax
    dyn = net.parts_["dynamics"].mean_
    assert dyn.shape == (10, 3)
    assert torch.allclose(dyn, dyn[:1].expand_as(dyn), atol=1e-6)
    # prediction sees the real images: rows differ, and equal a plain eval forward
    proba = net.predict_proba(X)
    assert np.ptp(proba[:, 0]) > 1e-4
    net.module_.eval()
    with torch.no_grad():
        ref = F.softmax(net.module_(torch.as_tensor(X)), dim=1).numpy()
    np.testing.assert_allclose(proba, ref, rtol=1e-5, atol=1e-6)


def test_train_transform_on_a_dataset_equals_the_array_path():
    # a torch Dataset goes through the user's DataLoader (not the array path): the transform
    # is applied to each sample of each training batch there too, and trains the same weights
    X, y = _images(12)
    nets = []
    for data in ((X, y), (TensorDataset(torch.as_tensor(X), torch.as_tensor(y)), None)):
        rec = CountingTransform()
        torch.manual_seed(0)
        net = _net(module__num_classes=3, classes=[0, 1, 2], max_epochs=2, train_transform=rec)
        nets.append(net.fit(*data))
        assert rec.calls == 2 * 12 and rec.seen == {("Tensor", (1, 8, 8))}
    for a, b in zip(nets[0].module_.parameters(), nets[1].module_.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_train_transform_through_the_learner():
    X, y = _images(12)
    pool = _images(20, seed=1)[0]
    for warm_start in (False, True):
        learner = ActiveLearner(_net(train_transform=CountingTransform()), selector=Entropy(),
                                warm_start=warm_start, random_state=0).fit(X, y)
        rec = learner.estimator_.train_transform  # the learner trains a clone
        assert rec.calls == 2 * 12
        idx = learner.query(pool, 4)
        learner.predict_proba(pool)
        assert rec.calls == 2 * 12
        learner.teach(pool[idx], np.array([0, 1, 2, 0]))
        calls = learner.estimator_.train_transform.calls
        # cold start: a fresh clone trains on all 16; warm start: continues the copy's count
        assert calls == (2 * 12 + 2 * 16 if warm_start else 2 * 16)


class RandomAugment:
    """cifar_augmentation behind a plain callable (skorch refuses nn.Module attributes)."""

    def __init__(self, size=8, padding=2):
        self.aug = cifar_augmentation(size=size, padding=padding)
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return self.aug(x)


@pytest.fixture(scope="module")
def augmented_learners():
    X, y = _images(16, shape=(3, 8, 8))
    learners = {}
    for name, selector in [("entropy", Entropy()), ("tidal", TiDAL(subset=None)), ("ll4al", LL4AL(subset=None))]:
        net = _net(module__in_channels=3, train_transform=RandomAugment())
        learners[name] = ActiveLearner(net, selector=selector, random_state=0).fit(X, y)
    return learners


def test_query_time_outputs_are_deterministic_with_augmentation(augmented_learners):
    pool = _images(15, seed=2, shape=(3, 8, 8))[0]
    for name, learner in augmented_learners.items():
        net = learner.estimator_
        p1, p2 = learner.predict_proba(pool), learner.predict_proba(pool)
        np.testing.assert_array_equal(p1, p2)
        net.module_.eval()
        with torch.no_grad():
            ref = F.softmax(net.module_(torch.as_tensor(pool)), dim=1).double().numpy()
        np.testing.assert_allclose(p1, ref, rtol=1e-5, atol=1e-6)
        s1 = learner.selector_.score_pool(net, pool).numpy()
        s2 = learner.selector_.score_pool(net, pool).numpy()
        np.testing.assert_array_equal(s1, s2)
        i1, sc1 = learner.query(pool, 5, return_scores=True)
        i2, sc2 = learner.query(pool, 5, return_scores=True)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(sc1, sc2)
        assert net.train_transform.calls == 2 * 16  # used in training only


def test_cifar_augmentation_as_documented_train_transform():
    X, y = _images(8, shape=(3, 8, 8))
    net = _net(module__in_channels=3, max_epochs=1, train_transform=cifar_augmentation(size=8, padding=2))
    learner = ActiveLearner(net, selector=Entropy(), random_state=0).fit(X, y)
    np.testing.assert_array_equal(learner.predict_proba(X), learner.predict_proba(X))
    assert learner.estimator_.get_params()["train_transform"] is not None
    # a v2 transform is an nn.Module; it must stay a plain, settable parameter
    learner.set_params(estimator__train_transform=cifar_augmentation(size=8, padding=1))
    assert learner.get_params()["estimator__train_transform"].transforms[0].padding == [1, 1, 1, 1]
    assert "train_transform" not in learner.estimator_.prefixes_


def _crops(img, padding):
    """Every (flip, dy, dx) crop of the zero-padded image, as the augmentation can produce."""
    size = img.shape[-1]
    out = {}
    for flip in (False, True):
        src = img.flip(-1) if flip else img
        padded = F.pad(src, (padding,) * 4)
        for dy in range(2 * padding + 1):
            for dx in range(2 * padding + 1):
                out[(flip, dy, dx)] = padded[:, dy:dy + size, dx:dx + size]
    return out


def test_cifar_augmentation_crops_and_flips():
    img = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(3, 32, 32) + 1.0
    aug = cifar_augmentation()
    candidates = _crops(img, 4)
    found = []
    for seed in range(30):
        torch.manual_seed(seed)
        out = aug(img)
        assert out.shape == (3, 32, 32)
        matches = [key for key, crop in candidates.items() if torch.equal(out, crop)]
        assert len(matches) == 1, seed  # always a padded crop, possibly flipped
        found.append(matches[0])
    assert any(key != (False, 4, 4) for key in found)  # sometimes differs from the input
    assert {flip for flip, _, _ in found} == {False, True}
    assert len({(dy, dx) for _, dy, dx in found}) > 5
    # reproducible under a fixed seed
    torch.manual_seed(3)
    a = aug(img)
    torch.manual_seed(3)
    assert torch.equal(aug(img), a)
    # other sizes keep their shape
    assert cifar_augmentation(size=8, padding=2)(torch.zeros(3, 8, 8)).shape == (3, 8, 8)


# --- Dataset pools ---------------------------------------------------------------------------


class _PlainDataset(Dataset):
    """Items are bare numpy samples, not tuples."""

    def __init__(self, X):
        self.X = X

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i]


@pytest.fixture(scope="module")
def data():
    X, y = _images(20)
    pool, y_pool = _images(30, seed=1)
    return X, y, pool, y_pool


def _learner(selector, X, y):
    return ActiveLearner(_net(), selector=selector, random_state=0).fit(X, y)


@pytest.mark.parametrize("selector", [Entropy(), DISAL()], ids=["entropy", "disal"])
def test_dataset_pool_queries_equal_array_pool(data, selector):
    X, y, pool, y_pool = data
    learner = _learner(selector, X, y)
    idx, scores = learner.query(pool, 5, return_scores=True)
    pool_t = torch.as_tensor(pool)
    for ds in (TensorDataset(pool_t), TensorDataset(pool_t, torch.as_tensor(y_pool)), _PlainDataset(pool)):
        idx_ds, scores_ds = learner.query(ds, 5, return_scores=True)
        np.testing.assert_array_equal(idx_ds, idx)
        np.testing.assert_array_equal(scores_ds, scores)
        np.testing.assert_array_equal(learner.predict_proba(ds), learner.predict_proba(pool))
    assert len(set(idx.tolist())) == 5


def test_teach_with_dataset_subset_equals_array_path(data):
    X, y, pool, y_pool = data
    a = _learner(Entropy(), X, y)
    b = _learner(Entropy(), X, y)
    c = _learner(Entropy(), X, y)
    idx = a.query(pool, 5)
    pool_t = torch.as_tensor(pool)
    a.teach(pool[idx], y_pool[idx])
    b.teach(Subset(TensorDataset(pool_t, torch.as_tensor(y_pool)), idx), y_pool[idx])
    c.teach(Subset(TensorDataset(pool_t), idx.tolist()), y_pool[idx])
    for other in (b, c):
        assert other.X_labeled_.dtype == np.float32
        np.testing.assert_array_equal(other.X_labeled_, a.X_labeled_)
        np.testing.assert_array_equal(other.y_labeled_, a.y_labeled_)
        np.testing.assert_array_equal(other.labeled_cycle_, a.labeled_cycle_)
        np.testing.assert_array_equal(other.predict_proba(pool), a.predict_proba(pool))
    np.testing.assert_array_equal(a.X_labeled_[20:], pool[idx])


def test_fit_on_tensor_dataset_equals_array_fit(data):
    X, y, pool, _ = data
    a = _learner(Entropy(), X, y)
    b = _learner(Entropy(), TensorDataset(torch.as_tensor(X), torch.as_tensor(y)), y)
    c = _learner(Entropy(), TensorDataset(torch.as_tensor(X)), y)
    for other in (b, c):
        np.testing.assert_array_equal(other.X_labeled_, X)
        assert other.X_labeled_.shape == (20, 1, 8, 8)
        np.testing.assert_array_equal(other.predict_proba(pool), a.predict_proba(pool))
        np.testing.assert_array_equal(other.query(pool, 4), a.query(pool, 4))


def _snapshot(learner):
    return (learner.X_labeled_.copy(), learner.y_labeled_.copy(), learner.labeled_cycle_.copy(),
            learner.estimator_, {k: v.clone() for k, v in learner.estimator_.module_.state_dict().items()})


def _assert_unchanged(learner, snap):
    X_lab, y_lab, cycle, est, state = snap
    np.testing.assert_array_equal(learner.X_labeled_, X_lab)
    np.testing.assert_array_equal(learner.y_labeled_, y_lab)
    np.testing.assert_array_equal(learner.labeled_cycle_, cycle)
    assert learner.estimator_ is est
    assert all(torch.equal(v, state[k]) for k, v in learner.estimator_.module_.state_dict().items())


def test_dataset_errors_leave_the_learner_unchanged(data):
    X, y, pool, _ = data
    learner = _learner(DISAL(), X, y)
    snap = _snapshot(learner)

    empty = TensorDataset(torch.empty(0, 1, 8, 8))
    with pytest.raises(ValueError, match="X_pool is empty"):
        learner.query(empty, 1)
    wrong = TensorDataset(torch.zeros(4, 1, 6, 6))
    with pytest.raises(ValueError, match="X_pool") as info:
        learner.query(wrong, 1)
    assert "(1, 6, 6)" in str(info.value) and "(1, 8, 8)" in str(info.value)
    with pytest.raises(ValueError, match=r"X has samples of shape \(1, 6, 6\)"):
        learner.predict_proba(wrong)
    _assert_unchanged(learner, snap)

    with pytest.raises(ValueError, match="X is empty"):
        learner.teach(empty, np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match=r"X has samples of shape \(1, 6, 6\).*\(1, 8, 8\)"):
        learner.teach(wrong, np.array([0, 1, 2, 0]))
    _assert_unchanged(learner, snap)

    # still works afterwards, with a Dataset pool
    idx = learner.query(TensorDataset(torch.as_tensor(pool)), 3)
    assert len(set(idx.tolist())) == 3 and all(0 <= i < 30 for i in idx)
