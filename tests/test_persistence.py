"""save / load: no pickle, atomic writes, exact resume."""

import io
import json
import pickle
import zipfile

import joblib
import numpy as np
import pytest
import torch
from skorch.callbacks import LRScheduler

from skal import ActiveLearner, ActiveNet
from skal.models import MLP, SmallCNN
from skal.selectors import DISAL, ISAL, LL4AL, CoreSet, Entropy, TiDAL


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, size=n)


def _learner(selector, warm_start=False, **net_kwargs):
    params = dict(module__width=4, max_epochs=2, batch_size=8, lr=0.05, verbose=0)
    params.update(net_kwargs)
    return ActiveLearner(ActiveNet(SmallCNN, **params), selector=selector, warm_start=warm_start,
                         classes=np.arange(3), random_state=0)


@pytest.mark.parametrize("selector", [DISAL(), TiDAL(subset=None), LL4AL(subset=None), CoreSet(),
                                      ISAL(depth=3, repeats=1)], ids=repr)
def test_round_trip_keeps_predictions_queries_and_state(selector, tmp_path):
    X, y = _images(40, 0)
    pool, _ = _images(30, 1)
    learner = _learner(selector).fit(X, y)
    learner.teach(pool[:5], [0, 1, 2, 0, 1])
    learner.save(tmp_path / "run.skal")
    loaded = ActiveLearner.load(tmp_path / "run.skal")
    np.testing.assert_array_equal(loaded.predict_proba(pool), learner.predict_proba(pool))
    np.testing.assert_array_equal(loaded.query(pool[5:], 6, return_scores=True)[0],
                                  learner.query(pool[5:], 6, return_scores=True)[0])
    np.testing.assert_array_equal(loaded.X_labeled_, learner.X_labeled_)
    np.testing.assert_array_equal(loaded.y_labeled_, learner.y_labeled_)
    np.testing.assert_array_equal(loaded.labeled_cycle_, learner.labeled_cycle_)
    assert loaded.get_params()["selector"].get_params() == selector.get_params()
    assert loaded.estimator_.history[-1, "epoch"] == learner.estimator_.history[-1, "epoch"]
    # the training parts' state (snapshot, running means, heads' epochs) comes back exactly
    assert loaded.estimator_.parts_.keys() == learner.estimator_.parts_.keys()
    for name, part in learner.estimator_.parts_.items():
        saved, restored = part.state_dict(), loaded.estimator_.parts_[name].state_dict()
        assert restored.keys() == saved.keys(), name
        for key, value in saved.items():
            assert torch.equal(restored[key], value), (name, key)


@pytest.mark.parametrize("warm_start", [False, True])
def test_resumed_campaign_ends_exactly_like_an_uninterrupted_one(warm_start, tmp_path):
    X, y = _images(40, 0)
    pool, pool_y = _images(60, 2)

    def run(learner, cycles, start=0):
        for _ in range(cycles):
            unlabeled = np.setdiff1d(np.arange(60), getattr(run, "taken", np.array([], int)))
            chosen = unlabeled[learner.query(pool[unlabeled], 5)]
            run.taken = np.concatenate([getattr(run, "taken", np.array([], int)), chosen])
            learner.teach(pool[chosen], pool_y[chosen])
        return learner

    run.taken = np.array([], int)
    straight = run(_learner(DISAL(), warm_start).fit(X, y), 3)
    run.taken = np.array([], int)
    first = run(_learner(DISAL(), warm_start).fit(X, y), 1)
    first.save(tmp_path / "cycle1.skal")
    resumed = run(ActiveLearner.load(tmp_path / "cycle1.skal"), 2)
    np.testing.assert_array_equal(resumed.X_labeled_, straight.X_labeled_)
    np.testing.assert_array_equal(resumed.labeled_cycle_, straight.labeled_cycle_)
    for key, value in straight.estimator_.module_.state_dict().items():
        assert torch.equal(resumed.estimator_.module_.state_dict()[key], value), key


def test_callbacks_and_string_labels_and_feature_names_survive(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(30, 3)).astype(np.float32), columns=["a", "b", "c"])
    y = np.array(["cat", "dog"])[(X["a"] > 0).astype(int)]
    net = ActiveNet(MLP, max_epochs=2, verbose=0,
                    callbacks=[("lr", LRScheduler(policy="StepLR", step_size=1, gamma=0.5))])
    learner = ActiveLearner(net, selector=Entropy(), random_state=0).fit(X, y)
    learner.save(tmp_path / "a.skal")
    loaded = ActiveLearner.load(tmp_path / "a.skal")
    assert loaded.classes_.tolist() == ["cat", "dog"]
    assert list(loaded.feature_names_in_) == ["a", "b", "c"]
    callback = dict(loaded.estimator.callbacks)["lr"]
    assert isinstance(callback, LRScheduler) and callback.step_size == 1 and callback.gamma == 0.5
    np.testing.assert_array_equal(loaded.predict(X), learner.predict(X))


def test_a_file_carrying_a_pickle_payload_is_refused(tmp_path):
    X, y = _images(20, 0)
    _learner(Entropy()).fit(X, y).save(tmp_path / "ok.skal")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with zipfile.ZipFile(tmp_path / "ok.skal") as src, zipfile.ZipFile(tmp_path / "evil.skal", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "tensors.pt":
                buffer = io.BytesIO()
                torch.save({"payload": Evil()}, buffer)
                data = buffer.getvalue()
            dst.writestr(item, data)
    with pytest.raises(ValueError, match="is not a valid skal save"):
        ActiveLearner.load(tmp_path / "evil.skal")


def test_a_file_naming_a_dangerous_callable_is_refused(tmp_path):
    X, y = _images(20, 0)
    _learner(Entropy()).fit(X, y).save(tmp_path / "ok.skal")
    with zipfile.ZipFile(tmp_path / "ok.skal") as src, zipfile.ZipFile(tmp_path / "bad.skal", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "learner.json":
                meta = json.loads(data)
                meta["params"]["estimator"]["params"]["module"] = {"__import__": "os:system"}
                data = json.dumps(meta).encode()
            dst.writestr(item, data)
    with pytest.raises(ValueError, match=r"refusing to load os:system"):
        ActiveLearner.load(tmp_path / "bad.skal")


def test_truncated_and_corrupted_files_fail_clearly(tmp_path):
    X, y = _images(20, 0)
    _learner(Entropy()).fit(X, y).save(tmp_path / "ok.skal")
    data = (tmp_path / "ok.skal").read_bytes()
    (tmp_path / "short.skal").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="short.skal is not a valid skal save"):
        ActiveLearner.load(tmp_path / "short.skal")
    corrupted = bytearray(data)
    middle = len(corrupted) // 3
    corrupted[middle:middle + 64] = bytes(64)
    (tmp_path / "bad.skal").write_bytes(bytes(corrupted))
    with pytest.raises(ValueError, match="is not a valid skal save"):
        ActiveLearner.load(tmp_path / "bad.skal")


def test_an_interrupted_save_leaves_the_previous_one_loadable(tmp_path, monkeypatch):
    X, y = _images(20, 0)
    learner = _learner(Entropy()).fit(X, y)
    learner.save(tmp_path / "run.skal")
    before = (tmp_path / "run.skal").read_bytes()
    learner.teach(X[:2], y[:2])

    def crash(self, name, data, *args, **kwargs):
        if name == "tensors.pt":
            raise KeyboardInterrupt("power cut")
        return original(self, name, data, *args, **kwargs)

    original = zipfile.ZipFile.writestr
    monkeypatch.setattr(zipfile.ZipFile, "writestr", crash)
    with pytest.raises(KeyboardInterrupt):
        learner.save(tmp_path / "run.skal")
    monkeypatch.undo()
    assert (tmp_path / "run.skal").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.skal"]  # no temporary left
    assert len(ActiveLearner.load(tmp_path / "run.skal").y_labeled_) == 20


def test_unsavable_parameters_are_named(tmp_path):
    X, y = _images(20, 0)
    learner = _learner(Entropy(), train_transform=lambda x: x).fit(X, y)
    with pytest.raises(TypeError, match=r"cannot save estimator\.train_transform: .*lambda.* is not importable"):
        learner.save(tmp_path / "x.skal")
    assert not (tmp_path / "x.skal").exists()


def test_joblib_and_pickle_still_work(tmp_path):
    X, y = _images(20, 0)
    learner = _learner(DISAL()).fit(X, y)
    joblib.dump(learner, tmp_path / "l.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "l.joblib").predict_proba(X), learner.predict_proba(X))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(learner)).query(X, 3), learner.query(X, 3))
