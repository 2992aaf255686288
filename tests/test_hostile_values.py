"""Hostile values: saves that name only trusted classes, and reach code, files or the network
through their parameters (issue 20).

Every test here runs with the network, torch.hub and torch.compile replaced by functions that
record the attempt and raise: a load makes no connection attempt and compiles nothing,
whatever the file says. Each case is a crafted file (one valid save, one field changed), refused
with a ValueError that names the member and the field, in little time and memory.
"""

import json
import math
import os
import socket
import sys
import zipfile

import numpy as np
import pytest
import torch
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.pipeline import make_pipeline

from skal import ActiveLearner, ActiveNet, _trust, get_untrusted_types
from skal.models import MLP
from skal.parts import DynamicLoss, EpochSnapshot
from skal.selectors import DISAL, Random

from _hostile import members as _members, refused_cheaply, write as _write

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 5


@pytest.fixture(autouse=True)
def no_network_no_compiler(monkeypatch):
    """Every connection, hub download and compilation attempt is recorded and fails."""
    attempts = []

    def refuse(what):
        def call(*args, **kwargs):
            attempts.append(what)
            raise RuntimeError(f"test: {what} attempted")
        return call

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse("torch.hub.load_state_dict_from_url"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse("torch.hub.download_url_to_file"))
    monkeypatch.setattr(torch.hub, "load", refuse("torch.hub.load"))
    monkeypatch.setattr(torch, "compile", refuse("torch.compile"))
    yield attempts
    assert attempts == []


def _data(n=60):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, D)).astype(np.float32)
    return X, X[:, :3].argmax(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    X, y = _data()
    net = ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=2, batch_size=8, verbose=0)
    learner = ActiveLearner(net, DISAL(), random_state=0).fit(X[:40], y[:40])
    path = tmp_path_factory.mktemp("values") / "ok.skal"
    learner.save(path)
    return path, learner


def _craft(saved_path, target, edit):
    members = _members(saved_path)
    meta = json.loads(members["learner.json"][0])
    edit(meta)
    members["learner.json"] = (json.dumps(meta).encode(), zipfile.ZIP_DEFLATED)
    return _write(target, members)


def _net(edit):
    return lambda meta: edit(meta["params"]["estimator"]["params"])


def _refused_cheaply(path, pattern):
    """Load ``path``: a ValueError matching ``pattern``, in < 2 s of CPU time (the machine may be
    shared), < 100 MB, message < 1 kB.

    scikit-learn's list of estimators is imported once per process at the first name a file
    gives under ``sklearn.`` (0.4 s, several times that under tracemalloc): done before timing.
    """
    _trust.default_lookup("sklearn.pipeline.Pipeline")
    return refused_cheaply(path, pattern)


# --- the two exploits --------------------------------------------------------------------


def test_the_compile_options_shell_command_runs_nothing(saved, tmp_path):
    marker = tmp_path / "PWNED"
    options = {"__dict__": {"cpp.cxx": {"__tuple__": [f"sh -c 'touch {marker}'"]}}}
    crafted = _craft(saved[0], tmp_path / "compile.skal",
                     _net(lambda p: p.update(compile=True, compile__options=options)))
    _refused_cheaply(crafted, r"compile\.skal: learner\.json: params\.estimator\.compile: compiles the module "
                              r"with torch\.compile, whose inductor backend runs a C\+\+ compiler .* a file may set "
                              r"it only to False\. A file may not set it: build the learner in code and load "
                              r"with like=")
    assert not marker.exists()
    # reported with its path, beside the names (there are none here)
    assert get_untrusted_types(crafted) == ["learner.json:params.estimator.compile",
                                            "learner.json:params.estimator.compile__options"]
    assert not marker.exists()
    # options without compile=True are refused too: they are never a save's
    alone = _craft(saved[0], tmp_path / "options.skal", _net(lambda p: p.update(compile__options=options)))
    _refused_cheaply(alone, r"learner\.json: params\.estimator\.compile__options: an option of torch\.compile")
    assert not marker.exists()


def test_like_is_the_opt_in_that_restores_safe_values(saved, tmp_path):
    # with like=, the parameters are the caller's: the file's compile settings are never read
    marker = tmp_path / "PWNED"
    options = {"__dict__": {"cpp.cxx": {"__tuple__": [f"sh -c 'touch {marker}'"]}}}
    crafted = _craft(saved[0], tmp_path / "compile.skal",
                     _net(lambda p: p.update(compile=True, compile__options=options)))
    path, learner = saved
    loaded = ActiveLearner.load(crafted, like=ActiveLearner(learner.estimator, DISAL(), random_state=0))
    assert loaded.estimator.compile is False and not marker.exists()
    X, _ = _data()
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))


def test_a_refused_value_cannot_be_trusted_by_name(saved, tmp_path):
    crafted = _craft(saved[0], tmp_path / "compile.skal", _net(lambda p: p.update(compile=True)))
    [entry] = get_untrusted_types(crafted)
    with pytest.raises(ValueError, match=r"trusted\[0\]: 'learner\.json:params\.estimator\.compile' is a value "
                                         r"that a file may not set .* load with like="):
        ActiveLearner.load(crafted, trusted=[entry])


def test_the_resnet_weights_download_makes_no_connection(saved, tmp_path, no_network_no_compiler):
    def edit(p):
        p.pop("module__hidden_sizes")
        p.update(module={"__function__": "skal.models:resnet18_cifar"}, module__weights="IMAGENET1K_V1")

    crafted = _craft(saved[0], tmp_path / "weights.skal", _net(edit))
    _refused_cheaply(crafted, r"weights\.skal: learner\.json: params\.estimator\.module__weights: "
                              r"skal\.models\.resnet18_cifar's weights reaches the network and unpickling .* "
                              r"a file may set it only to None")
    assert no_network_no_compiler == []
    assert get_untrusted_types(crafted) == ["learner.json:params.estimator.module__weights"]


# --- the corpus: one field each ----------------------------------------------------------------


def _callback(entry):
    return _net(lambda p: p.update(callbacks=[{"__tuple__": ["evil", entry]}]))


def _lr(**params):
    return _callback({"__object__": "skorch.callbacks.lr_scheduler:LRScheduler", "params": params})


def _pipeline(step):
    def edit(meta):
        net = meta["params"]["estimator"]
        meta["params"]["estimator"] = {"__object__": "sklearn.pipeline:Pipeline", "params": {
            "steps": [{"__tuple__": ["step", step]}, {"__tuple__": ["net", net]}], "memory": None,
            "verbose": False, "transform_input": None}}
    return edit


VALUES = [
    # (id, edit, field, reason fragment, reported by get_untrusted_types)
    ("torch-load-kwargs", _net(lambda p: p.update(torch_load_kwargs={"__dict__": {"weights_only": False}})),
     r"params\.estimator\.torch_load_kwargs", r"torch\.load's arguments \(unpickling\)", True),
    ("torch-load-mmap", _net(lambda p: p.update(torch_load_kwargs={"__dict__": {"mmap": True}})),
     r"params\.estimator\.torch_load_kwargs", r"torch\.load's arguments", True),
    ("collate-fn", _net(lambda p: p.update(iterator_train__collate_fn={"__function__": "builtins:print"})),
     r"params\.estimator\.iterator_train__collate_fn", r"a DataLoader argument that a file may not set", True),
    ("worker-init-fn", _net(lambda p: p.update(iterator_valid__worker_init_fn={"__function__": "builtins:print"})),
     r"params\.estimator\.iterator_valid__worker_init_fn", r"a DataLoader argument", True),
    ("mp-context", _net(lambda p: p.update(iterator_train__multiprocessing_context="forkserver")),
     r"params\.estimator\.iterator_train__multiprocessing_context", r"a DataLoader argument", True),
    ("dataset-arg", _net(lambda p: p.update(dataset__length=3)),
     r"params\.estimator\.dataset__length", r"an argument of the dataset class", True),
    ("module-path-arg", _net(lambda p: p.update(module__path="/etc/passwd")),
     r"params\.estimator\.module__path", r"a path argument reaches files or the network", True),
    ("module-pretrained", _net(lambda p: p.update(module__pretrained=True)),
     r"params\.estimator\.module__pretrained", r"a pretrained argument reaches files", True),
    ("progress-file", _callback({"__object__": "skal.callbacks:ProgressBars", "params": {"file": "/tmp/x"}}),
     r"params\.estimator\.callbacks\[0\]\[1\]\.file", r"a file argument reaches files", True),
    ("factory-as-activation", _net(lambda p: p.update(module__activation={"__function__": "skal.models:resnet18_cifar"})),
     r"params\.estimator\.module__activation", r"skal\.models\.resnet18_cifar may only fill module", True),
    ("lr-lambda", _lr(policy="LambdaLR", lr_lambda={"__function__": "builtins:print"}),
     r"params\.estimator\.callbacks\[0\]\[1\]\.lr_lambda", r"builtins\.print may only fill sink", True),
    ("init-as-sink", _callback({"__object__": "skorch.callbacks.logging:PrintLog",
                                "params": {"sink": {"__function__": "torch.nn.init:zeros_"}}}),
     r"params\.estimator\.callbacks\[0\]\[1\]\.sink", r"torch\.nn\.init\.zeros_ may only fill fn", True),
    ("text-vectorizer-files", _pipeline({"__object__": "sklearn.feature_extraction.text:TfidfVectorizer",
                                         "params": {"input": "filename"}}),
     r"params\.estimator\.steps\[0\]\[1\]\.input", r"a text vectorizer's input other than 'content' reads files",
     True),
    # numbers: finite, and of their type
    ("max-epochs-infinity", _net(lambda p: p.update(max_epochs=math.inf)),
     r"params\.estimator\.max_epochs", r"inf is not a finite number", False),
    ("lr-nan", _net(lambda p: p.update(lr=math.nan)), r"params\.estimator\.lr", r"nan is not a finite number", False),
    ("max-epochs-float", _net(lambda p: p.update(max_epochs=2.5)),
     r"params\.estimator\.max_epochs", r"must be an integer \(as its default 10\), got 2\.5", False),
    ("warm-start-string", _net(lambda p: p.update(warm_start="yes")),
     r"params\.estimator\.warm_start", r"must be true or false \(as its default False\), got 'yes'", False),
    ("selector-weight-infinity", lambda m: m["params"]["selector"]["params"].update(weight=-math.inf),
     r"params\.selector\.weight", r"-inf is not a finite number", False),
    # the size probe's time bombs: refused from the arguments, before anything is built
    ("transformer-1e8-layers", _net(lambda p: (p.pop("module__hidden_sizes"), p.update(
        module={"__type__": "torch.nn.modules.transformer:Transformer"}, module__num_encoder_layers=10**8))),
     r"params\.estimator\.module__num_encoder_layers", r"100000000 layers \(100000000 in all\), over the bound of 64", False),
    ("lstm-1e6-layers", _net(lambda p: (p.pop("module__hidden_sizes"), p.update(
        module={"__type__": "torch.nn.modules.rnn:LSTM"}, module__input_size=D, module__hidden_size=4,
        module__num_layers=10**6))),
     r"params\.estimator\.module__num_layers", r"1000000 layers \(1000000 in all\), over the bound", False),
    ("transformer-40-plus-40-layers", _net(lambda p: (p.pop("module__hidden_sizes"), p.update(
        module={"__type__": "torch.nn.modules.transformer:Transformer"}, module__num_encoder_layers=40,
        module__num_decoder_layers=40))),
     r"params\.estimator\.module__num_(en|de)coder_layers", r"40 layers \(80 in all\), over the bound of 64", False),
    ("hidden-sizes-1000", _net(lambda p: p.update(module__hidden_sizes={"__tuple__": [1] * 1000})),
     r"params\.estimator\.module__hidden_sizes", r"sequences of more than 256 entries", False),
]


@pytest.mark.parametrize("edit, field, reason, untrusted", [case[1:] for case in VALUES],
                         ids=[case[0] for case in VALUES])
def test_each_hostile_value_is_refused_naming_its_field(saved, tmp_path, edit, field, reason, untrusted,
                                                        monkeypatch):
    built = []
    monkeypatch.setattr(ActiveNet, "initialize", lambda self: built.append(self))
    crafted = _craft(saved[0], tmp_path / "odd.skal", edit)
    kind = r"odd\.skal: " if untrusted else r"odd\.skal is not a valid skal save: "
    _refused_cheaply(crafted, kind + r"learner\.json: " + field + ": " + reason)
    assert built == []  # refused before the net (and its module) was built
    path = field.replace("\\", "")
    assert (f"learner.json:{path}" in get_untrusted_types(crafted)) == untrusted


def test_parameters_of_a_hundred_thousand_values_are_refused_before_decoding(saved, tmp_path):
    crafted = _craft(saved[0], tmp_path / "wide.skal",
                     _net(lambda p: p.update(module__hidden_sizes={"__tuple__": [1] * 100_000})))
    _refused_cheaply(crafted, r"wide\.skal is not a valid skal save: learner\.json: params: more than 65536 values")
    with pytest.raises(ValueError, match=r"params: more than 65536 values"):
        get_untrusted_types(crafted)


def test_get_untrusted_types_reports_every_refused_value(saved, tmp_path):
    def edit(meta):
        net = meta["params"]["estimator"]["params"]
        net.update(compile=True, module__weights="x", iterator_train__collate_fn={"__function__": "builtins:print"},
                   callbacks=[{"__tuple__": ["bar", {"__object__": "skal.callbacks:ProgressBars",
                                                     "params": {"file": "/dev/tty"}}]}])
        meta["params"]["selector"] = {"__object__": "mypkg.selectors:Mine", "params": {"url": "http://x"}}

    crafted = _craft(saved[0], tmp_path / "many.skal", edit)
    assert get_untrusted_types(crafted) == [
        "learner.json:params.estimator.callbacks[0][1].file",
        "learner.json:params.estimator.compile",
        "learner.json:params.estimator.iterator_train__collate_fn",
        "learner.json:params.estimator.module__weights",
        "learner.json:params.selector.url",
        "mypkg.selectors.Mine",
    ]


def test_check_savable_lists_the_values_a_load_refuses():
    learner = ActiveLearner(ActiveNet(MLP, compile=True, verbose=0), Random())
    assert learner.check_savable() == ["learner.json:params.estimator.compile"]
    assert ActiveLearner(ActiveNet(MLP, verbose=0), Random()).check_savable() == []


# --- what a save names by default loads without trusted= ------------------------------------------


def test_skals_own_parts_load_without_trusted(tmp_path):
    # DISAL's "w/o S": random sampling trained with the dynamic loss, added by hand
    X, y = _data()
    net = ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=2, verbose=0,
                    callbacks=[("dynamic_loss", DynamicLoss(weight=1.0)), ("snapshot", EpochSnapshot())])
    learner = ActiveLearner(net, Random(), random_state=0).fit(X[:40], y[:40])
    assert learner.check_savable() == []
    learner.save(tmp_path / "wo_s.skal")
    assert get_untrusted_types(tmp_path / "wo_s.skal") == []
    loaded = ActiveLearner.load(tmp_path / "wo_s.skal")
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))
    assert isinstance(loaded.estimator_.parts_["dynamic_loss"], DynamicLoss)


def test_a_select_k_best_pipeline_loads_without_trusted(tmp_path):
    X, y = _data()
    estimator = make_pipeline(SelectKBest(f_classif, k=3), ActiveNet(MLP, max_epochs=1, verbose=0))
    learner = ActiveLearner(estimator, Random(), random_state=0).fit(X[:40], y[:40])
    assert learner.check_savable() == []
    learner.save(tmp_path / "kbest.skal")
    assert get_untrusted_types(tmp_path / "kbest.skal") == []
    loaded = ActiveLearner.load(tmp_path / "kbest.skal")
    assert loaded.estimator_.steps[0][1].score_func is f_classif
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))


def test_a_valid_save_loads_with_the_network_and_compiler_gone(saved, no_network_no_compiler):
    path, learner = saved
    X, _ = _data()
    np.testing.assert_array_equal(ActiveLearner.load(path).predict_proba(X), learner.predict_proba(X))
    assert no_network_no_compiler == [] and os.path.exists(path)


def test_the_size_probe_stops_a_slow_build_and_refuses_it(saved, tmp_path, monkeypatch):
    # within the static bounds, but slower than the probe's budget (made 10 ms here): refused,
    # never built for real. 60 transformer layers take ~0.3 s to build on the meta device.
    from skal import _persistence

    monkeypatch.setattr(_persistence, "PROBE_SECONDS", 0.01)
    built, initialize = [], ActiveNet.initialize
    monkeypatch.setattr(ActiveNet, "initialize", lambda self: built.append(self) if self.device != "meta" else
                        initialize(self))

    def edit(p):
        p.pop("module__hidden_sizes")
        p.update(module={"__type__": "torch.nn.modules.transformer:Transformer"}, module__d_model=8,
                 module__nhead=1, module__dim_feedforward=8, module__num_encoder_layers=30,
                 module__num_decoder_layers=30)

    crafted = _craft(saved[0], tmp_path / "slow.skal", _net(edit))
    _refused_cheaply(crafted, r"slow\.skal is not a valid skal save: learner\.json: the net that the parameters "
                              r"describe takes more than 0\.01 s of CPU time to build on the meta device")
    assert built == [] and sys.getprofile() is None


def test_a_long_untrusted_name_gives_a_short_message(saved, tmp_path):
    # 60,000 characters: under the string limit, so it reaches the trust list, whose message is cut
    crafted = _craft(saved[0], tmp_path / "long.skal",
                     _net(lambda p: p.update(module={"__type__": "a." * 30_000 + "b:C"})))
    message = _refused_cheaply(crafted, r"long\.skal: learner\.json: params\.estimator\.module names a\.a\.a\.")
    assert message.endswith("more characters)")


def test_scikit_learn_parameters_named_like_paths_are_their_own(tmp_path):
    # KNNImputer(weights="uniform") is a weighting, not pretrained weights: it loads
    from sklearn.impute import KNNImputer

    X, y = _data()
    estimator = make_pipeline(KNNImputer(weights="distance"), ActiveNet(MLP, max_epochs=1, verbose=0))
    learner = ActiveLearner(estimator, Random(), random_state=0).fit(X[:40], y[:40])
    assert learner.check_savable() == []
    learner.save(tmp_path / "knn.skal")
    loaded = ActiveLearner.load(tmp_path / "knn.skal")
    assert loaded.estimator_.steps[0][1].weights == "distance"


def test_the_safe_value_of_a_refused_parameter_loads(tmp_path):
    # set explicitly to their defaults, the refused parameters are what a file may hold
    X, y = _data()
    net = ActiveNet(MLP, max_epochs=1, verbose=0, compile=False, torch_load_kwargs={"weights_only": True},
                    iterator_train__collate_fn=None, dataset__length=None, callbacks=[
                        ("bars", _progress_bars(file=None))])
    learner = ActiveLearner(net, Random(), random_state=0).fit(X[:40], y[:40])
    assert learner.check_savable() == []
    learner.save(tmp_path / "safe.skal")
    assert get_untrusted_types(tmp_path / "safe.skal") == []
    np.testing.assert_array_equal(ActiveLearner.load(tmp_path / "safe.skal").predict_proba(X), learner.predict_proba(X))


def _progress_bars(**params):
    from skal.callbacks import ProgressBars

    return ProgressBars(**params)
