"""save / load: exact round trips of ordinary set-ups, like= and trusted=, the save target.

The hostile files (crafted members, bombs, code-execution attempts) are in
tests/test_hostile_saves.py; damaged files and interrupted saves in
tests/test_reliability.py.
"""

import copy
import json
import os
import pickle
import socket
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from skorch.callbacks import EarlyStopping, EpochScoring, GradientNormClipping, LRScheduler
from skorch.dataset import ValidSplit
from torch import nn
from torch.optim.lr_scheduler import StepLR

from skal.parts import DynamicsHeadTraining
from skal import ActiveLearner, ActiveNet, get_untrusted_types
from skal.models import MLP, SmallCNN
from skal.selectors import DISAL, ISAL, LL4AL, CoreSet, Entropy, TiDAL

ROOT = Path(__file__).parents[1]


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, size=n)


def _learner(selector, warm_start=False, **net_kwargs):
    params = dict(module__width=4, max_epochs=2, batch_size=8, lr=0.05, verbose=0)
    params.update(net_kwargs)
    return ActiveLearner(ActiveNet(SmallCNN, **params), selector=selector, warm_start=warm_start,
                         classes=np.arange(3), random_state=0)


def _tabular(n=80, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    return X, X[:, :3].argmax(1)


def _assert_same_learner(loaded, learner, pool):
    np.testing.assert_array_equal(loaded.predict_proba(pool), learner.predict_proba(pool))
    np.testing.assert_array_equal(loaded.X_labeled_, learner.X_labeled_)
    np.testing.assert_array_equal(loaded.y_labeled_, learner.y_labeled_)
    assert loaded.y_labeled_.dtype == learner.y_labeled_.dtype
    np.testing.assert_array_equal(loaded.labeled_cycle_, learner.labeled_cycle_)
    np.testing.assert_array_equal(loaded.classes_, learner.classes_)
    assert loaded.classes_.dtype == learner.classes_.dtype
    net, other = loaded.estimator_, learner.estimator_
    if hasattr(net, "steps"):
        net, other = net.steps[-1][1], other.steps[-1][1]
    for name in ("module_", "loss_predictor_", "dynamics_predictor_"):
        if hasattr(other, name):
            for key, value in getattr(other, name).state_dict().items():
                assert torch.equal(getattr(net, name).state_dict()[key], value), (name, key)
    saved_opt, own_opt = net.optimizer_.state_dict(), other.optimizer_.state_dict()
    assert saved_opt["param_groups"] == own_opt["param_groups"]
    for index, entries in own_opt["state"].items():
        for key, value in entries.items():
            assert torch.equal(saved_opt["state"][index][key], value), (index, key)
    # the training parts' state: training dynamics, snapshot, a head's epoch
    assert net.parts_.keys() == other.parts_.keys()
    for name, part in other.parts_.items():
        own, restored = part.state_dict(), net.parts_[name].state_dict()
        assert own.keys() == restored.keys(), name
        for key, value in own.items():
            assert torch.equal(restored[key], value), (name, key)
    assert _timeless(net.history) == _timeless(other.history)


def _timeless(history):
    return [{k: v for k, v in epoch.items() if k != "dur"} for epoch in history.to_list()]


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("selector", [DISAL(), TiDAL(subset=None), LL4AL(subset=None), CoreSet(),
                                      ISAL(depth=3, repeats=1)], ids=repr)
def test_round_trip_keeps_predictions_queries_and_state(selector, tmp_path):
    X, y = _images(40, 0)
    pool, _ = _images(30, 1)
    learner = _learner(selector).fit(X, y)
    learner.teach(pool[:5], [0, 1, 2, 0, 1])
    learner.save(tmp_path / "run.skal")
    loaded = ActiveLearner.load(tmp_path / "run.skal")
    _assert_same_learner(loaded, learner, pool)
    np.testing.assert_array_equal(loaded.query(pool[5:], 6, return_scores=True)[0],
                                  learner.query(pool[5:], 6, return_scores=True)[0])
    assert loaded.get_params()["selector"].get_params() == selector.get_params()
    np.testing.assert_array_equal(loaded._state().labeled.reference, learner._state().labeled.reference)


@pytest.mark.parametrize("warm_start", [False, True])
def test_resumed_campaign_ends_exactly_like_an_uninterrupted_one(warm_start, tmp_path):
    X, y = _images(40, 0)
    pool, pool_y = _images(60, 2)

    def run(learner, cycles, taken):
        for _ in range(cycles):
            unlabeled = np.setdiff1d(np.arange(60), taken)
            chosen = unlabeled[learner.query(pool[unlabeled], 5)]
            taken = np.concatenate([taken, chosen])
            learner.teach(pool[chosen], pool_y[chosen])
        return learner, taken

    # Adam and a StepLR scheduler: optimizer moments and initial_lr must survive too
    kwargs = dict(optimizer=torch.optim.Adam, lr=0.01,
                  callbacks=[("lr", LRScheduler(policy=StepLR, step_size=1, gamma=0.5))])
    straight, _ = run(_learner(DISAL(), warm_start, **kwargs).fit(X, y), 3, np.array([], int))
    first, taken = run(_learner(DISAL(), warm_start, **kwargs).fit(X, y), 1, np.array([], int))
    first.save(tmp_path / "cycle1.skal")
    resumed, _ = run(ActiveLearner.load(tmp_path / "cycle1.skal"), 2, taken)
    _assert_same_learner(resumed, straight, pool)


def test_ordinary_skorch_and_sklearn_set_ups_round_trip(tmp_path):
    # LR scheduler as a class and as a string, ValidSplit, EarlyStopping, a scorer, a Pipeline
    X, y = _tabular(120)
    net = ActiveNet(MLP, max_epochs=4, batch_size=16, verbose=0, optimizer=torch.optim.Adam,
                    train_split=ValidSplit(0.2, stratified=True, random_state=0),
                    callbacks=[("step", LRScheduler(policy=StepLR, step_size=2)),
                               ("named", LRScheduler(policy="ExponentialLR", gamma=0.9)),
                               ("stop", EarlyStopping(patience=2)),
                               ("acc", EpochScoring("accuracy", lower_is_better=False)),
                               ("clip", GradientNormClipping(1.0))])
    estimator = make_pipeline(StandardScaler(), FunctionTransformer(np.tanh), PCA(4, random_state=0), net)
    learner = ActiveLearner(estimator, DISAL(), random_state=0).fit(X[:40], y[:40])
    learner.teach(X[40:50], y[40:50])
    assert learner.check_savable() == []
    learner.save(tmp_path / "pipe.skal")
    assert get_untrusted_types(tmp_path / "pipe.skal") == []
    loaded = ActiveLearner.load(tmp_path / "pipe.skal")
    _assert_same_learner(loaded, learner, X[50:])
    np.testing.assert_array_equal(loaded.query(X[50:], 7), learner.query(X[50:], 7))
    scaler, fitted = loaded.estimator_.steps[0][1], learner.estimator_.steps[0][1]
    np.testing.assert_array_equal(scaler.mean_, fitted.mean_)
    np.testing.assert_array_equal(loaded.estimator_.steps[2][1].components_,
                                  learner.estimator_.steps[2][1].components_)
    callbacks = dict(loaded.estimator.steps[-1][1].callbacks)
    assert callbacks["step"].policy is StepLR and callbacks["step"].kwargs == {"step_size": 2}
    assert callbacks["named"].policy == "ExponentialLR"
    split = loaded.estimator.steps[-1][1].train_split
    assert isinstance(split, ValidSplit) and (split.cv, split.stratified, split.random_state) == (0.2, True, 0)
    # and the campaign goes on from there exactly as it would have
    for other in (learner, loaded):
        other.teach(X[60:70], y[60:70])
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))


def test_a_listed_module_factory_round_trips(tmp_path):
    # resnet18_cifar is a function: trusted for `module` because it is named on the list
    from skal.models import resnet18_cifar

    X, y = _images(16, 0)
    net = ActiveNet(resnet18_cifar, module__in_channels=1, max_epochs=1, batch_size=8, verbose=0)
    learner = ActiveLearner(net, Entropy(), classes=np.arange(3), random_state=0).fit(X, y)
    learner.save(tmp_path / "resnet.skal")
    assert get_untrusted_types(tmp_path / "resnet.skal") == []
    loaded = ActiveLearner.load(tmp_path / "resnet.skal")
    assert loaded.estimator.module is resnet18_cifar
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))


@pytest.mark.parametrize("kind", ["series-str", "categorical", "categorical-int", "numpy-str",
                                  "object-str", "int", "bool", "float"])
def test_labels_of_every_kind_come_back_with_their_values_and_dtype_kind(kind, tmp_path):
    X, codes = _tabular(40)
    names = np.array(["ant", "bee", "cat"])
    y = {"series-str": pd.Series(names[codes], dtype=object),
         "categorical": pd.Series(pd.Categorical(names[codes])),
         "categorical-int": pd.Categorical(codes * 10),
         "numpy-str": names[codes],
         "object-str": names[codes].astype(object),
         "int": codes.astype(np.int32),
         "bool": codes > 0,
         "float": codes.astype(np.float64)}[kind]
    learner = ActiveLearner(ActiveNet(MLP, max_epochs=1, verbose=0), Entropy(), random_state=0).fit(X, y)
    learner.save(tmp_path / "labels.skal")
    loaded = ActiveLearner.load(tmp_path / "labels.skal")
    assert loaded.y_labeled_.dtype == learner.y_labeled_.dtype
    assert loaded.y_labeled_.tolist() == learner.y_labeled_.tolist()
    assert [type(v) for v in loaded.y_labeled_.tolist()] == [type(v) for v in learner.y_labeled_.tolist()]
    assert loaded.classes_.dtype == learner.classes_.dtype
    assert loaded.classes_.tolist() == learner.classes_.tolist()
    np.testing.assert_array_equal(loaded.predict(X), learner.predict(X))
    loaded.teach(X[:2], learner.y_labeled_[:2])  # and new labels of the same kind are accepted


def test_feature_names_survive(tmp_path):
    X, y = _tabular(30)
    frame = pd.DataFrame(X, columns=list("abcde"))
    learner = ActiveLearner(ActiveNet(MLP, max_epochs=1, verbose=0), Entropy(), random_state=0).fit(frame, y)
    learner.save(tmp_path / "f.skal")
    loaded = ActiveLearner.load(tmp_path / "f.skal")
    assert loaded.feature_names_in_.tolist() == list("abcde")
    np.testing.assert_array_equal(loaded.predict(frame), learner.predict(frame))


def test_a_selector_holding_arrays_round_trips_them_as_members(tmp_path):
    # ISAL with its own reference set: large arrays in parameters go to npy members, not JSON
    X, y = _tabular(400)
    reference = (X[100:], y[100:].astype(np.int32))  # 1,500 values: a member; 300 labels: inline
    learner = ActiveLearner(ActiveNet(MLP, max_epochs=1, verbose=0),
                            ISAL(reference=reference, depth=3, repeats=1), random_state=0).fit(X[:40], y[:40])
    learner.save(tmp_path / "isal.skal")
    with zipfile.ZipFile(tmp_path / "isal.skal") as archive:
        assert {"params.0.npy", "params.1.npy"} - set(archive.namelist()) == {"params.1.npy"}  # y is small
        selector = json.loads(archive.read("learner.json"))["params"]["selector"]["params"]
        assert selector["reference"]["__tuple__"][0] == {"__npy__": "params.0.npy"}
    loaded = ActiveLearner.load(tmp_path / "isal.skal")
    X_ref, y_ref = loaded.selector.reference
    np.testing.assert_array_equal(X_ref, reference[0])
    np.testing.assert_array_equal(y_ref, reference[1])
    assert (X_ref.dtype, y_ref.dtype) == (np.float32, np.int32)
    np.testing.assert_array_equal(loaded.query(X[40:100], 5), learner.query(X[40:100], 5))


def test_load_leaves_torch_global_random_state_alone(tmp_path):
    X, y = _images(20, 0)
    _learner(Entropy()).fit(X, y).save(tmp_path / "a.skal")
    before = torch.get_rng_state()
    ActiveLearner.load(tmp_path / "a.skal")
    assert torch.equal(torch.get_rng_state(), before)


def test_a_save_is_deterministic_and_names_its_format(tmp_path):
    X, y = _images(20, 0)
    learner = _learner(Entropy()).fit(X, y)
    learner.save(tmp_path / "a.skal")
    learner.save(tmp_path / "b.skal")
    assert (tmp_path / "a.skal").read_bytes() == (tmp_path / "b.skal").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.skal") as archive:
        assert sorted(archive.namelist()) == sorted(
            ["learner.json", "classes.npy", "X_labeled.npy", "y_labeled.npy", "labeled_cycle.npy",
             "reference_mask.npy", "labeled_row.npy", "pool_status.npy", "tensors.safetensors"])
        assert json.loads(archive.read("learner.json"))["format"] == 2
        stored = {i.filename for i in archive.infolist() if i.compress_type == zipfile.ZIP_STORED}
        assert stored == set(archive.namelist()) - {"learner.json"}


# --- resuming a learner whose module is not importable: like= ----------------------------------


class ScriptNet(nn.Module):
    """A module as a user's script defines it (its __module__ is set to __main__ below)."""

    def __init__(self, num_classes=3, hidden=8):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.fixture
def script_net(monkeypatch):
    monkeypatch.setattr(ScriptNet, "__module__", "__main__")
    return ScriptNet


def _script_learner(module, **kwargs):
    params = dict(max_epochs=2, batch_size=8, verbose=0, optimizer=torch.optim.Adam)
    params.update(kwargs)
    return ActiveLearner(ActiveNet(module, **params), Entropy(),
                         random_state=0)


def test_a_module_from_a_script_saves_and_resumes_with_like(script_net, tmp_path):
    X, y = _tabular(60)
    learner = _script_learner(script_net).fit(X[:30], y[:30])
    assert learner.check_savable() == ["__main__.ScriptNet"]
    learner.save(tmp_path / "s.skal")
    assert get_untrusted_types(tmp_path / "s.skal") == ["__main__.ScriptNet"]
    with pytest.raises(ValueError, match=r"s\.skal: learner\.json: params\.estimator\.module names "
                                         r"__main__\.ScriptNet, which is not on the trust list.*"
                                         r"defined in the script that saved the learner: build the "
                                         r"same learner in code and pass it as like="):
        ActiveLearner.load(tmp_path / "s.skal")
    template = _script_learner(script_net)
    before = template.get_params(deep=True)
    loaded = ActiveLearner.load(tmp_path / "s.skal", like=template)
    _assert_same_learner(loaded, learner, X)
    assert template.get_params(deep=True).keys() == before.keys()
    assert not hasattr(template, "estimator_")  # like is only read
    assert loaded.estimator is not template.estimator  # a clone
    np.testing.assert_array_equal(loaded.query(X[30:], 4), learner.query(X[30:], 4))
    # trusting the class itself also works, without like=
    trusted = ActiveLearner.load(tmp_path / "s.skal", trusted=[script_net])
    _assert_same_learner(trusted, learner, X)


@pytest.mark.parametrize("change, message", [
    (dict(module__hidden=9), r"tensors\.safetensors: .*module_\.body\.0\.weight has shape \[8, 5\] in "
                             r"the file, \[9, 5\] in the net"),
    (dict(optimizer=torch.optim.SGD), r"learner\.json: net\.optimizers\.optimizer_: the file holds the "
                                      r"state of torch\.optim\.adam\.Adam, the net's optimizer is "
                                      r"torch\.optim\.sgd\.SGD"),
    (dict(module__num_classes=4), r"tensors\.safetensors: .*module_\.fc\.weight has shape \[3, 8\] in "
                                  r"the file, \[4, 8\] in the net"),
    (dict(callbacks=[("dynamics_head", DynamicsHeadTraining())], feature_layers=("body",)),
     r"tensors\.safetensors: missing dynamics_predictor_\.\S+"),
], ids=["hidden-width", "optimizer", "n-classes", "extra-head"])
def test_like_with_another_architecture_names_what_differs(script_net, tmp_path, change, message):
    X, y = _tabular(60)
    _script_learner(script_net).fit(X[:30], y[:30]).save(tmp_path / "s.skal")
    with pytest.raises(ValueError, match=r"s\.skal: the saved learner does not fit like: " + message):
        ActiveLearner.load(tmp_path / "s.skal", like=_script_learner(script_net, **change))


def test_like_with_other_classes_or_estimator_kind_is_refused(tmp_path):
    X, y = _tabular(60)
    ActiveLearner(ActiveNet(MLP, max_epochs=1, verbose=0), Entropy(), random_state=0).fit(X, y).save(
        tmp_path / "a.skal")
    with pytest.raises(ValueError, match=r"does not fit like: classes\.npy: classes: the saved classes_ "
                                         r"\[0, 1, 2\] are not the parameter's \[0, 1, 2, 3\]"):
        ActiveLearner.load(tmp_path / "a.skal", like=ActiveLearner(ActiveNet(MLP), classes=[0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"does not fit like: transformers\.skops: missing: the "
                                         r"estimator is a Pipeline"):
        ActiveLearner.load(tmp_path / "a.skal", like=ActiveLearner(make_pipeline(StandardScaler(),
                                                                                 ActiveNet(MLP))))
    with pytest.raises(ValueError, match=r"does not fit like: tensors\.safetensors: missing "
                                         r"loss_predictor_\."):
        ActiveLearner.load(tmp_path / "a.skal", like=ActiveLearner(
            ActiveNet(MLP, feature_layers=("layers.1",)), LL4AL()))
    with pytest.raises(TypeError, match=r"^like must be an ActiveLearner \(built like the saved one\), "
                                        r"got ActiveNet\.$"):
        ActiveLearner.load(tmp_path / "a.skal", like=ActiveNet(MLP))


def test_a_save_from_a_gpu_loads_on_a_cpu_with_like(tmp_path):
    # a save's tensors are device-free; only the device parameter says where it was made, so a
    # save edited to say "cuda" is what a GPU run writes
    X, y = _tabular(40)
    learner = _script_learner(ImportableNet).fit(X, y)
    learner.save(tmp_path / "cpu.skal")
    with zipfile.ZipFile(tmp_path / "cpu.skal") as archive:
        members = {i.filename: (archive.read(i), i.compress_type) for i in archive.infolist()}
    meta = json.loads(members["learner.json"][0])
    meta["params"]["estimator"]["params"]["device"] = "cuda"
    members["learner.json"] = (json.dumps(meta).encode(), zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(tmp_path / "gpu.skal", "w") as archive:
        for name, (data, method) in members.items():
            archive.writestr(name, data, compress_type=method)
    loaded = ActiveLearner.load(tmp_path / "gpu.skal", like=_script_learner(ImportableNet, device="cpu"))
    _assert_same_learner(loaded, learner, X)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"gpu\.skal cannot be loaded here: learner\.json: "
                                             r"params\.estimator\.device is 'cuda', which this machine lacks"):
            ActiveLearner.load(tmp_path / "gpu.skal", trusted=[ImportableNet])


def test_a_script_module_resumes_in_another_process(tmp_path):
    # The case: a module class defined in the user's script, saved, and resumed by
    # running the same script again; LRScheduler(policy=StepLR) travels in the same save.
    script = tmp_path / "campaign.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        import numpy as np
        import torch
        from torch import nn
        from torch.optim.lr_scheduler import StepLR
        from skorch.callbacks import LRScheduler
        from skal import ActiveLearner, ActiveNet
        from skal.selectors import DISAL

        class Net(nn.Module):
            def __init__(self, num_classes=3):
                super().__init__()
                self.hidden = nn.Linear(4, 8)
                self.fc = nn.Linear(8, num_classes)
            def forward(self, x):
                return self.fc(torch.relu(self.hidden(x)))

        def make():
            net = ActiveNet(Net, max_epochs=2, batch_size=8, verbose=0,
                            callbacks=[("lr", LRScheduler(policy=StepLR, step_size=1))])
            return ActiveLearner(net, DISAL(), random_state=0)

        rng = np.random.default_rng(0)
        X = rng.normal(size=(60, 4)).astype(np.float32)
        y = X[:, :3].argmax(1)
        path = {str(tmp_path / "run.skal")!r}
        if sys.argv[1] == "save":
            make().fit(X[:30], y[:30]).save(path)
        else:
            learner = ActiveLearner.load(path, like=make())
            picks = learner.query(X[30:], 5)
            learner.teach(X[30:][picks], y[30:][picks])
            np.save(sys.argv[2], learner.predict_proba(X))
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for args in (["save"], ["resume", str(tmp_path / "resumed.npy")]):
        subprocess.run([sys.executable, str(script), *args], check=True, env=env, cwd=tmp_path,
                       capture_output=True, timeout=300)
    # the same campaign uninterrupted, here
    namespace = {}
    exec(compile(script.read_text().split("rng = np.random")[0], str(script), "exec"), namespace)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    y = X[:, :3].argmax(1)
    learner = namespace["make"]().fit(X[:30], y[:30])
    picks = learner.query(X[30:], 5)
    learner.teach(X[30:][picks], y[30:][picks])
    np.testing.assert_array_equal(np.load(tmp_path / "resumed.npy"), learner.predict_proba(X))


# --- trusted= ----------------------------------------------------------------------------------


class ImportableNet(nn.Module):
    """A module class of the user's own package (this test module), importable by name."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.fc = nn.Linear(5, num_classes)

    def forward(self, x):
        return self.fc(x)


def test_trusted_extends_the_list_by_name_or_object(tmp_path):
    X, y = _tabular(40)
    learner = ActiveLearner(ActiveNet(ImportableNet, max_epochs=1, verbose=0), Entropy(),
                            random_state=0).fit(X, y)
    learner.save(tmp_path / "u.skal")
    name = f"{ImportableNet.__module__}.ImportableNet"
    assert get_untrusted_types(tmp_path / "u.skal") == [name]
    with pytest.raises(ValueError, match=rf"params\.estimator\.module names {name}, which is not on the "
                                         rf"trust list; if you trust it, pass trusted=\['{name}'\]"):
        ActiveLearner.load(tmp_path / "u.skal")
    for trusted in ([name], [ImportableNet]):
        np.testing.assert_array_equal(ActiveLearner.load(tmp_path / "u.skal", trusted=trusted).predict_proba(X),
                                      learner.predict_proba(X))


def test_trusted_is_checked_by_kind_too(tmp_path):
    # a trusted class still has to be of the kind its parameter needs
    X, y = _tabular(40)
    learner = ActiveLearner(ActiveNet(MLP, max_epochs=1, verbose=0), Entropy(), random_state=0).fit(X, y)
    learner.save(tmp_path / "a.skal")
    with zipfile.ZipFile(tmp_path / "a.skal") as archive:
        members = {i.filename: (archive.read(i), i.compress_type) for i in archive.infolist()}
    meta = json.loads(members["learner.json"][0])
    meta["params"]["estimator"]["params"]["optimizer"] = {"__type__": f"{ImportableNet.__module__}:ImportableNet"}
    members["learner.json"] = (json.dumps(meta).encode(), zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(tmp_path / "b.skal", "w") as archive:
        for member, (data, method) in members.items():
            archive.writestr(member, data, compress_type=method)
    with pytest.raises(ValueError, match=r"params\.estimator\.optimizer: \S+ImportableNet is a class "
                                         r"that is not a torch\.optim\.Optimizer class"):
        ActiveLearner.load(tmp_path / "b.skal", trusted=[ImportableNet])


@pytest.mark.parametrize("trusted, error, message", [
    ("mypkg.Net", TypeError, r"^trusted must be a list of names, classes or functions, got str\.$"),
    (5, TypeError, r"^trusted must be a list of names, classes or functions, got int\.$"),
    ([3], TypeError, r"^trusted\[0\] must be a name, a class or a function, got int\.$"),
    (["os.system; rm"], ValueError, r"^trusted\[0\]: 'os.system; rm' is not a dotted import path"),
])
def test_bad_trusted_is_refused_before_the_file_is_read(trusted, error, message, tmp_path):
    with pytest.raises(error, match=message):
        ActiveLearner.load(tmp_path / "does-not-exist.skal", trusted=trusted)


# --- check_savable ------------------------------------------------------------------------------


def _transform(x):
    return x


@pytest.mark.parametrize("make, message", [
    (lambda: ActiveLearner(ActiveNet(MLP, train_transform=lambda x: x)),
     r"^cannot save estimator\.train_transform: <function .*<lambda>.*> is not importable"),
    (lambda: ActiveLearner(ActiveNet(MLP(num_classes=3))),
     r"^cannot save estimator\.module: a module instance \(MLP\); pass the class"),
    (lambda: ActiveLearner(make_pipeline(StandardScaler(), ActiveNet(MLP), memory="cache")),
     r"^cannot save estimator\.memory: a cache location"),
    (lambda: ActiveLearner(ActiveNet(MLP), random_state=np.random.RandomState(0)),
     r"^cannot save random_state: a RandomState"),
    (lambda: ActiveLearner(ActiveNet(MLP, callbacks=[("cb", object())])),
     r"^cannot save estimator\.callbacks\[0\]\[1\]: a object"),
], ids=["lambda", "module-instance", "pipeline-memory", "random-state-instance", "plain-object"])
def test_check_savable_names_what_cannot_be_saved_before_training(make, message, tmp_path):
    learner = make()
    with pytest.raises(TypeError, match=message):
        learner.check_savable()
    assert not hasattr(learner, "estimator_")


def test_save_names_the_parameter_and_writes_nothing(tmp_path):
    X, y = _images(20, 0)
    learner = _learner(Entropy(), train_transform=lambda x: x).fit(X, y)
    with pytest.raises(TypeError, match=r"cannot save estimator\.train_transform: .*lambda.* is not importable"):
        learner.save(tmp_path / "x.skal")
    assert list(tmp_path.iterdir()) == []


def test_check_savable_on_a_fitted_learner_changes_nothing_and_lists_untrusted_names():
    X, y = _tabular(40)
    learner = ActiveLearner(ActiveNet(ImportableNet, max_epochs=1, verbose=0), Entropy(),
                            random_state=0).fit(X, y)
    before = copy.deepcopy(learner)
    assert learner.check_savable() == [f"{ImportableNet.__module__}.ImportableNet"]
    np.testing.assert_array_equal(learner.predict_proba(X), before.predict_proba(X))
    assert learner.get_params(deep=False).keys() == before.get_params(deep=False).keys()


def test_joblib_and_pickle_still_work(tmp_path):
    X, y = _images(20, 0)
    learner = _learner(DISAL()).fit(X, y)
    joblib.dump(learner, tmp_path / "l.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "l.joblib").predict_proba(X), learner.predict_proba(X))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(learner)).query(X, 3), learner.query(X, 3))


# --- the save target ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    X, y = _tabular(30)
    return ActiveLearner(ActiveNet(MLP, max_epochs=1, verbose=0), Entropy(), random_state=0).fit(X, y), X


def test_a_symlink_is_written_through_to_its_target(small, tmp_path):
    learner, X = small
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "run.skal"
    target.write_bytes(b"old")
    link = tmp_path / "link.skal"
    link.symlink_to(target)
    learner.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(ActiveLearner.load(target).predict_proba(X), learner.predict_proba(X))
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["run.skal"]  # no temporary left
    # a dangling link creates its target; a chain of links is followed to the end
    dangling = tmp_path / "dangling.skal"
    dangling.symlink_to(tmp_path / "real" / "new.skal")
    chain = tmp_path / "chain.skal"
    chain.symlink_to(dangling)
    learner.save(chain)
    assert chain.is_symlink() and dangling.is_symlink()
    assert ActiveLearner.load(tmp_path / "real" / "new.skal").y_labeled_.tolist() == learner.y_labeled_.tolist()


def _fifo(path):
    os.mkfifo(path)
    return "a fifo"


def _socket(path):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return "a socket"


@pytest.mark.parametrize("make", [_fifo, _socket], ids=["fifo", "socket"])
def test_a_fifo_or_socket_is_refused_and_left_alone(small, tmp_path, make):
    learner, _ = small
    path = tmp_path / "special"
    kind = make(path)
    mode = os.lstat(path).st_mode
    with pytest.raises(ValueError, match=rf"^path '.*special' is {kind}, not a regular file; a save is "
                                         r"only written to a regular file \(or a new one\)"):
        learner.save(path)
    assert os.lstat(path).st_mode == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["special"]
    link = tmp_path / "to-special"
    link.symlink_to(path)
    with pytest.raises(ValueError, match=rf"is {kind}, not a regular file"):
        learner.save(link)
    assert os.lstat(path).st_mode == mode


def test_a_device_is_refused_and_never_replaced(small):
    learner, _ = small
    before = os.stat("/dev/null")
    with pytest.raises(ValueError, match=r"^path '/dev/null' is a character device, not a regular file"):
        learner.save("/dev/null")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_a_symlink_to_a_directory_is_refused(small, tmp_path):
    learner, _ = small
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    with pytest.raises(IsADirectoryError, match=r"is a directory; give a file name"):
        learner.save(tmp_path / "link")
    assert list((tmp_path / "dir").iterdir()) == []


def test_loading_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.skal")
    with pytest.raises(ValueError, match=r"pipe\.skal is not a valid skal save: a fifo, not a regular file"):
        ActiveLearner.load(tmp_path / "pipe.skal")


def test_a_long_file_name_saves(small, tmp_path):
    learner, X = small
    path = tmp_path / ("x" * 245 + ".skal")
    learner.save(path)
    np.testing.assert_array_equal(ActiveLearner.load(path).predict_proba(X), learner.predict_proba(X))


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o664])
def test_an_existing_file_keeps_its_permissions(small, tmp_path, mode):
    learner, _ = small
    path = tmp_path / "run.skal"
    path.write_bytes(b"old")
    os.chmod(path, mode)
    learner.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert path.read_bytes() != b"old"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_an_existing_file_keeps_its_owner_when_root_saves_over_it(small, tmp_path):
    learner, _ = small
    path = tmp_path / "run.skal"
    path.write_bytes(b"old")
    os.chown(path, 4321, 4322)
    learner.save(path)
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (4321, 4322)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_new_file_gets_the_umask_permissions(small, tmp_path, umask):
    learner, _ = small
    old = os.umask(umask)
    try:
        learner.save(tmp_path / "new.skal")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.skal").st_mode) == 0o666 & ~umask
