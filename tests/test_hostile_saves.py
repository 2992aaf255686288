"""Hostile saves: code-execution attempts, crafted members, and bombs, each refused early.

The corpus is built from one valid save (a fixture): each case damages one member
the way an attacker or a broken tool would, and must fail with a ValueError whose
message names the member (exact fragment). The code-execution cases also check
that nothing ran and nothing named in the file was imported.
"""

import bz2
import io
import json
import os
import pickle
import re
import struct
import sys
import textwrap
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
import torch
from numpy.lib import format as npy_format
from safetensors.torch import save as save_safetensors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from skal import ActiveLearner, ActiveNet, get_untrusted_types
from skal.models import MLP
from skal.selectors import DISAL, Entropy

from _hostile import members as _members, refused_cheaply, write as _write

N, D = 45, 5  # rows and features of the saved learner: 40 from fit, 5 from one teach


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, D)).astype(np.float32)
    y = X[:, :3].argmax(1)
    net = ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=2, batch_size=8,
                    optimizer=torch.optim.Adam, verbose=0)
    learner = ActiveLearner(net, DISAL(), random_state=0).fit(X[:40], y[:40])
    learner.teach(X[40:45], y[40:45])
    path = tmp_path_factory.mktemp("saves") / "ok.skal"
    learner.save(path)
    return path, learner


def _edit_json(edit):
    def damage(members):
        meta = json.loads(members["learner.json"][0])
        result = edit(meta)
        members["learner.json"] = (json.dumps(meta if result is None else result).encode(),
                                   zipfile.ZIP_DEFLATED)
    return damage


def _set(member, data, method=zipfile.ZIP_STORED):
    def damage(members):
        members[member] = (data() if callable(data) else data, method)
    return damage


def _drop(member):
    return lambda members: members.pop(member)


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npy_header(shape, dtype, fortran=False):
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": npy_format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": fortran, "shape": shape})
    return buffer.getvalue()


def _array(member, transform):
    def damage(members):
        array = np.load(io.BytesIO(members[member][0]), allow_pickle=False)
        members[member] = (_npy(transform(array.copy())), zipfile.ZIP_STORED)
    return damage


def _tensors(transform):
    def damage(members):
        from safetensors.torch import load

        members["tensors.safetensors"] = (save_safetensors(transform(load(members["tensors.safetensors"][0]))),
                                          zipfile.ZIP_STORED)
    return damage


def _with(tensors, **changes):
    out = dict(tensors)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


def _params(edit):
    def change(meta):
        edit(meta["params"]["estimator"]["params"])
    return _edit_json(change)


def _optimizer(edit):
    def change(meta):
        edit(meta["net"]["optimizers"]["optimizer_"])
    return _edit_json(change)


def _deep_param(depth):
    # written as text: json.dumps itself would recurse too deeply
    def damage(members):
        meta = json.loads(members["learner.json"][0])
        meta["params"]["random_state"] = "DEEP"
        text = json.dumps(meta).replace('"DEEP"', '{"__tuple__": [' * depth + "1" + "]}" * depth)
        members["learner.json"] = (text.encode(), zipfile.ZIP_DEFLATED)
    return damage


class _Payload:
    def __reduce__(self):
        return (exec, ("import builtins; builtins._skal_unpickled = True",))


def _torch_saved(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _safetensors_with_header(header, body=b""):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def _deep_json(depth):
    return ("[" * depth + "]" * depth).encode()


CORPUS = [
    # --- the archive
    ("missing-member", _drop("y_labeled.npy"), r"y_labeled\.npy: missing from the archive"),
    ("unknown-member", _set("payload.py", b"import os"), r"payload\.py: not a member of a skal save"),
    # --- learner.json: structure
    ("not-json", _set("learner.json", b"{not json", zipfile.ZIP_DEFLATED), r"learner\.json: not valid JSON"),
    ("not-utf8", _set("learner.json", b"\xff\xfe{}", zipfile.ZIP_DEFLATED), r"learner\.json: not valid JSON"),
    ("json-a-list", _edit_json(lambda m: [m]), r"learner\.json: not a JSON object"),
    ("format-1", _edit_json(lambda m: {**m, "format": 1}),
     r"learner\.json: unsupported save format 1 \(this skal reads format 2\)"),
    ("no-format", _edit_json(lambda m: {k: v for k, v in m.items() if k != "format"}), r"learner\.json: unsupported save format None"),
    ("no-fitted", _edit_json(lambda m: {k: v for k, v in m.items() if k != "fitted"}), r"learner\.json: lacks fitted"),
    ("extra-field", _edit_json(lambda m: {**m, "run": "rm -rf /"}), r"learner\.json: run: not a field of a skal save"),
    ("deep-json", _set("learner.json", _deep_json(200_000), zipfile.ZIP_DEFLATED),
     r"learner\.json: nested deeper than 64 levels"),
    ("deep-tuples", _deep_param(20_000), r"learner\.json: nested deeper than 64 levels"),
    ("deep-tuples-66", _deep_param(33), r"learner\.json: nested deeper than 64 levels"),
    # --- learner.json: fitted state, every field type-checked
    *[(f"seed-{name}", _edit_json(lambda m, v=value: m["fitted"].update(seed=v)),
       rf"learner\.json: fitted\.seed: must be an integer in \[0, 2147483647\), got {shown}")
      for name, value, shown in [("string", "5", "'5'"), ("negative", -1, "-1"), ("too-big", 2**31, "2147483648"),
                                 ("bool", True, "True"), ("float", 1.5, "1.5"), ("null", None, "None")]],
    *[(f"stale-{name}", _edit_json(lambda m, v=value: m["fitted"].update(stale=v)),
       rf"learner\.json: fitted\.stale: must be true or false, got {shown}")
      for name, value, shown in [("string", "false", "'false'"), ("int", 0, "0"), ("null", None, "None")]],
    ("n-features-string", _edit_json(lambda m: m["fitted"].update(n_features_in_="5")),
     r"learner\.json: fitted\.n_features_in_: must be a positive integer, got '5'"),
    ("feature-names-short", _edit_json(lambda m: m["fitted"].update(feature_names_in_=["a"])),
     r"learner\.json: fitted\.feature_names_in_: must be null or n_features_in_ distinct strings"),
    ("feature-names-repeated", _edit_json(lambda m: m["fitted"].update(feature_names_in_=["a"] * D)),
     r"learner\.json: fitted\.feature_names_in_: must be null or n_features_in_ distinct strings"),
    ("objects-not-bool", _edit_json(lambda m: m["fitted"].update(objects={"classes": 1, "y_labeled": 0})),
     r"learner\.json: fitted\.objects: must map classes and y_labeled to true or false"),
    *[(f"history-{name}", _edit_json(lambda m, v=value: m["net"].update(history=v)),
       r"learner\.json: net\.history: must be a list of epoch records \(objects\) whose batches are lists")
      for name, value in [("number", 5), ("numbers", [5]), ("batches-number", [{"batches": 5}]),
                          ("batches-strings", [{"batches": ["x"]}])]],
    ("parts-not-lists", _edit_json(lambda m: m["net"].update(parts={"dynamics": 5})),
     r"learner\.json: net\.parts: must map training part names to lists of their state's keys"),
    # --- learner.json: optimizer state
    ("optimizer-class", _optimizer(lambda r: r.update({"class": "torch.optim.sgd.SGD"})),
     r"learner\.json: net\.optimizers\.optimizer_: the file holds the state of torch\.optim\.sgd\.SGD, the "
     r"net's optimizer is torch\.optim\.adam\.Adam"),
    ("optimizer-lr-string", _optimizer(lambda r: r["param_groups"][0]["__dict__"].update(lr="fast")),
     r"learner\.json: net\.optimizers\.optimizer_\.param_groups\[0\]\.lr: must be a number, got 'fast'"),
    ("optimizer-lr-object", _optimizer(lambda r: r["param_groups"][0]["__dict__"].update(
        lr={"__type__": "os:system"})),
     r"learner\.json: net\.optimizers\.optimizer_\.param_groups\[0\]\['lr'\]: must be plain data, not a "
     r"type name"),
    ("optimizer-params", _optimizer(lambda r: r["param_groups"][0]["__dict__"].update(params=[0])),
     r"learner\.json: net\.optimizers\.optimizer_\.param_groups\[0\]\.params: must be \[0, 1, 2, 3\]"),
    ("optimizer-two-groups", _optimizer(lambda r: r["param_groups"].append(r["param_groups"][0])),
     r"learner\.json: net\.optimizers\.optimizer_\.param_groups: must be 1 parameter group\(s\)"),
    ("optimizer-missing-key", _optimizer(lambda r: r["param_groups"][0]["__dict__"].pop("betas")),
     r"learner\.json: net\.optimizers\.optimizer_\.param_groups\[0\]: lacks 'betas', which the net's "
     r"optimizer has"),
    ("optimizer-state-index", _optimizer(lambda r: r["state"].update({"99": {}})),
     r"learner\.json: net\.optimizers\.optimizer_\.state: '99' is not a parameter index"),
    ("optimizer-state-value", _optimizer(lambda r: r["state"]["0"].update(extra="x")),
     r"learner\.json: net\.optimizers\.optimizer_\.state\.0\.extra: not a number"),
    ("no-optimizer", _edit_json(lambda m: m["net"].update(optimizers={})),
     r"learner\.json: net\.optimizers: the file has \[\], the net \['optimizer_'\]"),
    # --- learner.json: parameters
    ("unknown-parameter", _edit_json(lambda m: m["params"].update(bogus=1)),
     r"learner\.json: params: 'bogus' is not a parameter of ActiveLearner"),
    ("invalid-parameter", _edit_json(lambda m: m["params"].update(selector={
        "__object__": "skal.selectors.disal:DISAL", "params": {"mode": 7}})),
     r"learner\.json: the selector cannot be set up: The 'mode' parameter of DISAL must be"),
    ("old-import-tag", _params(lambda p: p.update(module={"__import__": "skal.models:MLP"})),
     r"learner\.json: params\.estimator\.module: unknown entry with keys \['__import__'\]"),
    ("tag-with-extra-key", _params(lambda p: p.update(module={"__type__": "skal.models:MLP", "x": 1})),
     r"learner\.json: params\.estimator\.module: unknown entry with keys \['__type__', 'x'\]"),
    ("module-a-string", _params(lambda p: p.update(module="skal.models.MLP")),
     r"learner\.json: params\.estimator\.module: must name a torch\.nn\.Module class \(or a listed module "
     r"factory\), got a string"),
    ("bad-name", _params(lambda p: p.update(module={"__type__": "os.system; rm -rf"})),
     r"learner\.json: params\.estimator\.module: 'os\.system; rm -rf' is not an import path 'module:name'"),
    ("array-object-dtype", _edit_json(lambda m: m["params"].update(classes={
        "__array__": [1, 2], "dtype": "|O", "shape": [2]})),
     r"learner\.json: params\.classes: unsupported array dtype '\|O'"),
    ("array-bad-shape", _edit_json(lambda m: m["params"].update(classes={
        "__array__": [1, 2], "dtype": "<i8", "shape": [3]})), r"learner\.json: params\.classes: malformed array"),
    ("device-bad", _params(lambda p: p.update(device={"__device__": "quantum:7"})),
     r"learner\.json: params\.estimator\.device: not a device"),
    ("torch-dtype-bad", _params(lambda p: p.update(module__dtype={"__torch_dtype__": "nn"})),
     r"learner\.json: params\.estimator\.module__dtype: 'nn' is not a torch dtype"),
    # 10**12 weights (4 TB): refused from a build on the meta device, before anything is allocated
    ("module-of-terabytes", _params(lambda p: p.update(module__hidden_sizes={"__tuple__": [10**6, 10**6]})),
     r"tensors\.safetensors: holds \d+ bytes, fewer than the 4000\d{9} bytes of weights that the "
     r"parameters describe"),
    ("module-kwarg-breaks-init", _params(lambda p: p.update(module__hidden_sizes=-3)),
     r"learner\.json: the net cannot be built from its parameters"),
    ("cuda-device-999", _params(lambda p: p.update(device="cuda:999")),
     r"learner\.json: the net cannot be built from its parameters" if torch.cuda.is_available() else None),
    # --- the arrays
    ("classes-unsorted", _array("classes.npy", lambda a: a[::-1].copy()), r"classes\.npy: must be sorted and unique"),
    ("classes-duplicated", _array("classes.npy", lambda a: np.array([0, 1, 1])), r"classes\.npy: must be sorted and unique"),
    ("classes-nan", _array("classes.npy", lambda a: np.array([0.0, 1.0, np.nan])), r"classes\.npy: holds NaN or infinity"),
    ("classes-empty", _array("classes.npy", lambda a: a[:0]), r"classes\.npy: must be a non-empty 1-d array of labels"),
    ("classes-2d", _array("classes.npy", lambda a: a[None]), r"classes\.npy: must be a non-empty 1-d array of labels"),
    ("label-outside-classes", _array("y_labeled.npy", lambda a: np.where(np.arange(N) == 3, 7, a)),
     r"y_labeled\.npy: label 7 \(row 3\) is not among classes"),
    ("labels-strings", _array("y_labeled.npy", lambda a: a.astype(str)),
     r"y_labeled\.npy: labels of dtype <U21 cannot be among classes of dtype int64"),
    ("labels-short", _array("y_labeled.npy", lambda a: a[:3]),
     rf"y_labeled\.npy: must be labels of shape \({N},\) like X_labeled, got int64 \(3,\)"),
    ("cycle-negative", _array("labeled_cycle.npy", lambda a: a - 1),
     r"labeled_cycle\.npy: cycles must start at 0 and never decrease"),
    ("cycle-decreasing", _array("labeled_cycle.npy", lambda a: a[::-1].copy()),
     r"labeled_cycle\.npy: cycles must start at 0 and never decrease"),
    ("cycle-int32", _array("labeled_cycle.npy", lambda a: a.astype(np.int32)),
     rf"labeled_cycle\.npy: must be a int64 array of shape \({N},\) like X_labeled, got int32"),
    ("mask-int8", _array("reference_mask.npy", lambda a: a.astype(np.int8)),
     rf"reference_mask\.npy: must be a bool array of shape \({N},\) like X_labeled, got int8"),
    ("mask-all", _array("reference_mask.npy", lambda a: np.ones_like(a)),
     r"reference_mask\.npy: holds every sample out: nothing to train on"),
    ("mask-later-cycle", _array("reference_mask.npy", lambda a: np.arange(N) == N - 1),
     r"reference_mask\.npy: only samples of the initial fit \(cycle 0\) can be held out"),
    ("X-float64", _array("X_labeled.npy", lambda a: a.astype(np.float64)),
     r"X_labeled\.npy: must be a float32 array of shape \(n_labeled, n_features, \.\.\.\), got float64"),
    ("X-1d", _array("X_labeled.npy", lambda a: a[:, 0].copy()), r"X_labeled\.npy: must be a float32 array"),
    ("X-nan", _array("X_labeled.npy", lambda a: np.where(np.arange(N)[:, None] == 2, np.nan, a).astype(np.float32)),
     r"X_labeled\.npy: holds NaN or infinity"),
    ("X-features", _array("X_labeled.npy", lambda a: a[:, :4].copy()),
     rf"X_labeled\.npy: has 4 features but learner\.json says n_features_in_={D}"),
    ("X-object", _set("X_labeled.npy", lambda: _object_npy()),
     r"X_labeled\.npy: has dtype object; only plain numbers, booleans and strings are read \(never objects\)"),
    ("X-structured", _set("X_labeled.npy", lambda: _npy(np.zeros(N, dtype=[("a", "f4")]))),
     r"X_labeled\.npy: has dtype \[\('a', '<f4'\)\]; only plain numbers"),
    ("X-fortran", _set("X_labeled.npy", lambda: _npy_header((N, D), np.float32, True) + bytes(4 * N * D)),
     r"X_labeled\.npy: is in Fortran order; saves write C order"),
    ("X-header-lies", _set("X_labeled.npy", lambda: _npy_header((10**9, D), np.float32) + bytes(4 * N * D)),
     rf"X_labeled\.npy: its header describes \d+ bytes \(shape \(1000000000, {D}\), dtype float32\) but "
     rf"the member declares {128 + 4 * N * D}"),
    ("X-trailing-bytes", _set("X_labeled.npy", lambda: _npy(np.zeros((N, D), np.float32)) + b"x"),
     r"X_labeled\.npy: its header describes \d+ bytes .* but the member declares \d+"),
    ("X-not-npy", _set("X_labeled.npy", b"hello, world"), r"X_labeled\.npy: not a valid npy array"),
    ("X-deflated", lambda m: m.update({"X_labeled.npy": (m["X_labeled.npy"][0], zipfile.ZIP_DEFLATED)}),
     r"X_labeled\.npy: must be stored uncompressed \(its declared size \d+ is not the \d+ bytes it takes"),
    # --- the tensors
    ("tensors-empty", _set("tensors.safetensors", b""),
     r"tensors\.safetensors: not a valid safetensors file: shorter than a safetensors header"),
    # a valid safetensors file without the weights: never a net with random weights
    ("tensors-none", _set("tensors.safetensors", lambda: save_safetensors({})),
     r"tensors\.safetensors: holds 16 bytes, fewer than the 108 bytes of weights that the parameters "
     r"describe"),
    ("tensors-only-optimizer", _tensors(lambda t: {k: v for k, v in t.items() if not k.startswith("module_.")}),
     r"tensors\.safetensors: missing module_\.layers\.1\.weight, module_\.layers\.1\.bias, "
     r"module_\.layers\.3\.weight, module_\.layers\.3\.bias"),
    ("tensors-one-missing", _tensors(lambda t: _with(t, **{"module_.layers.3.bias": None})),
     r"tensors\.safetensors: missing module_\.layers\.3\.bias$"),
    ("tensors-raw-pickle", _set("tensors.safetensors", lambda: pickle.dumps(_Payload())),
     r"tensors\.safetensors: not a valid safetensors file"),
    ("tensors-torch-save", _set("tensors.safetensors", lambda: _torch_saved({"module_": _Payload()})),
     r"tensors\.safetensors: not a valid safetensors file"),
    ("tensors-wrong-shape", _tensors(lambda t: _with(t, **{"module_.layers.1.weight": torch.zeros(3, D)})),
     rf"tensors\.safetensors: module_\.layers\.1\.weight has shape \[3, {D}\] in the file, \[8, {D}\] in the net"),
    ("tensors-extra", _tensors(lambda t: _with(t, bogus=torch.zeros(1))), r"tensors\.safetensors: not in the net: bogus"),
    ("tensors-float64", _tensors(lambda t: _with(t, **{"module_.layers.1.bias": torch.zeros(8, dtype=torch.float64)})),
     r"tensors\.safetensors: module_\.layers\.1\.bias has dtype torch\.float64 in the file, torch\.float32 in the net"),
    ("tensors-optimizer-shape", _tensors(lambda t: _with(t, **{"optimizer_.state.0.exp_avg": torch.zeros(2)})),
     rf"tensors\.safetensors: optimizer_\.state\.0\.exp_avg has shape \[2\] in the file, \[8, {D}\] in the net"),
    # a running average saved 0-d: every warm teach would fail on it (issue 20)
    ("tensors-optimizer-0d", _tensors(lambda t: _with(t, **{"optimizer_.state.0.exp_avg": torch.zeros(())})),
     rf"tensors\.safetensors: optimizer_\.state\.0\.exp_avg has shape \[\] in the file, \[8, {D}\] in the net"),
    ("tensors-no-optimizer-state", _tensors(lambda t: _with(t, **{"optimizer_.state.1.exp_avg_sq": None})),
     r"tensors\.safetensors: missing optimizer_\.state\.1\.exp_avg_sq"),
    ("tensors-dynamics-rows", _tensors(lambda t: _with(t, **{"parts.dynamics.sum": torch.zeros(999, 3),
                                                             "parts.dynamics.visits": torch.zeros(999)})),
     r"tensors\.safetensors: parts\.dynamics\.sum has 999 rows for 45 training samples"),
    ("tensors-dynamics-alone", _tensors(lambda t: _with(t, **{"parts.dynamics.visits": None})),
     r"tensors\.safetensors: missing parts\.dynamics\.visits"),
    ("tensors-partial-snapshot", _tensors(lambda t: _with(t, **{"parts.snapshot.0.layers.1.weight": None})),
     r"tensors\.safetensors: missing parts\.snapshot\.0\.layers\.1\.weight"),
    ("tensors-header-huge", _set("tensors.safetensors", struct.pack("<Q", 2**60) + b"{}"),
     r"tensors\.safetensors: not a valid safetensors file: its header declares 1152921504606846976 bytes, "
     r"more than the member holds"),
    ("tensors-header-list", _set("tensors.safetensors", lambda: _safetensors_with_header([1])),
     r"tensors\.safetensors: its header is not a JSON object"),
    ("tensors-header-entry", _set("tensors.safetensors", lambda: _safetensors_with_header({"a": {"shape": "x"}})),
     r"tensors\.safetensors: tensor 'a': malformed header entry"),
    ("tensors-header-size", _set("tensors.safetensors", lambda: _safetensors_with_header(
        {"a": {"dtype": "F32", "shape": [10**6], "data_offsets": [0, 4 * 10**6]}}, bytes(16))),
     r"tensors\.safetensors: its header describes \d+ bytes but the member declares \d+"),
    ("tensors-header-deep", _set("tensors.safetensors", lambda: struct.pack("<Q", 400_000) + _deep_json(200_000)),
     r"tensors\.safetensors: its header is nested too deeply"),
    ("tensors-deflated", lambda m: m.update({"tensors.safetensors": (m["tensors.safetensors"][0], zipfile.ZIP_DEFLATED)}),
     r"tensors\.safetensors: must be stored uncompressed"),
    ("transformers-without-pipeline", _set("transformers.skops", b"PK"),
     r"transformers\.skops: present, but the estimator is not a Pipeline"),
]


def _object_npy():
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Payload()] * N, dtype=object), allow_pickle=True)
    return buffer.getvalue()


@pytest.mark.parametrize("damage, message", [case[1:] for case in CORPUS], ids=[case[0] for case in CORPUS])
def test_each_crafted_save_is_refused_naming_its_member(saved, tmp_path, damage, message):
    path, _ = saved
    members = _members(path)
    damage(members)
    _write(tmp_path / "odd.skal", members)
    # without CUDA, a CUDA device is not damage: the save cannot be loaded here, and says so
    message = message or (r"learner\.json: params\.estimator\.device is 'cuda:999', which this machine "
                          r"lacks; build the learner with device='cpu' and load with like=learner")
    kind = "cannot be loaded here" if "which this machine lacks" in message else "is not a valid skal save"
    with pytest.raises(ValueError, match=rf"odd\.skal {kind}: " + message):
        ActiveLearner.load(tmp_path / "odd.skal")
    assert not hasattr(__import__("builtins"), "_skal_unpickled")


def test_the_corpus_ids_are_distinct_and_the_valid_save_loads(saved):
    assert len({case[0] for case in CORPUS}) == len(CORPUS)
    path, learner = saved
    X = learner.X_labeled_
    np.testing.assert_array_equal(ActiveLearner.load(path).predict_proba(X), learner.predict_proba(X))


def test_a_member_stored_twice_is_refused(saved, tmp_path):
    path, _ = saved
    members = _members(path)
    with zipfile.ZipFile(tmp_path / "twice.skal", "w") as archive, pytest.warns(UserWarning, match="Duplicate"):
        for name, (data, method) in members.items():
            archive.writestr(name, data, compress_type=method)
        archive.writestr("learner.json", members["learner.json"][0])
    with pytest.raises(ValueError, match=r"twice\.skal is not a valid skal save: learner\.json: the archive "
                                         r"holds this member more than once"):
        ActiveLearner.load(tmp_path / "twice.skal")


@pytest.fixture(scope="module")
def isal_save(tmp_path_factory):
    from skal.selectors import ISAL

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, D)).astype(np.float32)
    y = X[:, :3].argmax(1)
    learner = ActiveLearner(ActiveNet(MLP, max_epochs=1, verbose=0),
                            ISAL(reference=(X[:250], y[:250]), depth=2, repeats=1), random_state=0)
    path = tmp_path_factory.mktemp("isal") / "isal.skal"
    learner.fit(X[250:], y[250:]).save(path)
    return path


def _reference_member(value):
    return _edit_json(lambda m: m["params"]["selector"]["params"]["reference"]["__tuple__"].__setitem__(0, value))


@pytest.mark.parametrize("damage, message", [
    (_drop("params.0.npy"), r"params\.0\.npy: missing from the archive"),
    (_set("params.7.npy", lambda: _npy(np.zeros(3))), r"params\.7\.npy: no parameter refers to this member"),
    (_set("params.0.npy", lambda: _object_npy()), r"params\.0\.npy: has dtype object"),
    (_set("params.0.npy", lambda: _npy_header((10**9,), np.float32) + bytes(8)),
     r"params\.0\.npy: its header describes \d+ bytes"),
    (_reference_member({"__npy__": "../../etc/passwd"}),
     r"learner\.json: params\.selector\.reference\[0\]: '\.\./\.\./etc/passwd' is not an array member"),
    (_reference_member({"__npy__": "X_labeled.npy"}),
     r"learner\.json: params\.selector\.reference\[0\]: 'X_labeled\.npy' is not an array member"),
    (_set("params.x.npy", b""), r"params\.x\.npy: not a member of a skal save"),
], ids=["missing", "unreferenced", "object", "header-lies", "path-traversal", "other-member", "bad-name"])
def test_crafted_parameter_arrays_are_refused(isal_save, tmp_path, damage, message):
    members = _members(isal_save)
    assert "params.0.npy" in members
    damage(members)
    _write(tmp_path / "odd.skal", members)
    with pytest.raises(ValueError, match=r"odd\.skal is not a valid skal save: " + message):
        ActiveLearner.load(tmp_path / "odd.skal")


# --- code execution: nothing named in a file runs, or is even imported ------------------------


DANGEROUS = [
    ("torch.utils.collect_env:run", {"command": "touch {marker}"}),  # the issue's exploit
    ("os:system", {"command": "touch {marker}"}),
    ("posix:system", {"command": "touch {marker}"}),
    ("subprocess:run", {"args": ["touch", "{marker}"]}),
    ("subprocess:Popen", {"args": ["touch", "{marker}"]}),
    ("builtins:eval", {"source": "open('{marker}', 'w')"}),
    ("builtins:exec", {"source": "open('{marker}', 'w')"}),
    ("builtins:open", {"file": "{marker}", "mode": "w"}),
    ("torch:save", {"obj": 1, "f": "{marker}"}),  # a torch function with side effects
    ("numpy:save", {"file": "{marker}", "arr": [1]}),
    ("pathlib:Path.touch", {"self": "{marker}"}),
    ("shutil:copyfile", {"src": "/etc/hostname", "dst": "{marker}"}),
    ("importlib:import_module", {"name": "skal_probe_side_effect"}),
    ("pickle:loads", {"data": "x"}),
    ("torch.hub:load", {"repo_or_dir": "x/y", "model": "z"}),
    ("torch.utils.cpp_extension:load_inline", {"name": "x", "cpp_sources": "int x;"}),
    ("skal_probe_side_effect:run", {"command": "touch {marker}"}),  # importing it would touch
]


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """A marker path, and an importable module whose import alone creates the marker."""
    marker = tmp_path / "pwned.txt"
    (tmp_path / "skal_probe_side_effect.py").write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").close()
        def run(command):
            open({str(marker)!r}, "w").close()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("skal_probe_side_effect", None)


def _exploit(saved, target, place, tag, path, kwargs, marker):
    kwargs = json.loads(json.dumps(kwargs).replace("{marker}", str(marker)))
    members = _members(saved)
    meta = json.loads(members["learner.json"][0])
    entry = {tag: path, "params": kwargs} if tag == "__object__" else {tag: path}
    net = meta["params"]["estimator"]["params"]
    if place == "module":
        net["module"] = entry
        net.update({f"module__{k}": v for k, v in kwargs.items()})
    elif place == "callback":
        net["callbacks"] = [{"__tuple__": ["evil", entry]}]
    elif place == "selector":
        meta["params"]["selector"] = entry
    elif place == "module-kwarg":
        net["module__activation"] = entry
    members["learner.json"] = (json.dumps(meta).encode(), zipfile.ZIP_DEFLATED)
    return _write(target, members)


@pytest.mark.parametrize("path, kwargs", DANGEROUS, ids=[p for p, _ in DANGEROUS])
@pytest.mark.parametrize("tag, place", [("__function__", "module"), ("__type__", "module"),
                                        ("__object__", "module"), ("__object__", "callback"),
                                        ("__object__", "selector"), ("__function__", "module-kwarg")])
def test_a_file_naming_a_dangerous_callable_runs_nothing_and_imports_nothing(
        saved, tmp_path, probe, path, kwargs, tag, place):
    module = path.partition(":")[0]
    imported = module in sys.modules
    crafted = _exploit(saved[0], tmp_path / "evil.skal", place, tag, path, kwargs, probe)
    name = path.replace(":", ".")
    with pytest.raises(ValueError, match=rf"evil\.skal: learner\.json: params\.\S+ names {name}, which is "
                                         r"not on the trust list"):
        ActiveLearner.load(crafted)
    assert not probe.exists()
    assert imported or module not in sys.modules
    assert name in get_untrusted_types(crafted)  # listed, still without importing or running it
    assert not probe.exists() and (imported or module not in sys.modules)


WRONG_KIND = [
    ("module", {"__type__": "torch.optim.sgd:SGD"},
     r"params\.estimator\.module: torch\.optim\.sgd\.SGD is a class that is not a torch\.nn\.Module class"),
    ("module", {"__function__": "builtins:print"},
     r"params\.estimator\.module: builtins\.print is a function that is not a torch\.nn\.Module class"),
    ("module", {"__function__": "torch.nn.init:zeros_"},
     r"params\.estimator\.module: torch\.nn\.init\.zeros_ is a function that is not a torch\.nn\.Module"),
    ("module", {"__object__": "skal.selectors.disal:DISAL", "params": {}},
     r"params\.estimator\.module: must name a torch\.nn\.Module class .*, got an instance of "
     r"skal\.selectors\.disal\.DISAL"),
    ("optimizer", {"__type__": "skal.models:MLP"},
     r"params\.estimator\.optimizer: skal\.models\.MLP is a class that is not a torch\.optim\.Optimizer class"),
    ("optimizer", {"__function__": "skal.models:resnet18_cifar"},
     r"params\.estimator\.optimizer: skal\.models\.resnet18_cifar is a function that is not a "
     r"torch\.optim\.Optimizer class"),
    ("criterion", {"__type__": "torch.optim.lr_scheduler:StepLR"},
     r"params\.estimator\.criterion: torch\.optim\.lr_scheduler\.StepLR is a class that is not a "
     r"torch\.nn\.Module \(loss\) class"),
    ("iterator_train", {"__type__": "torch.nn.modules.linear:Linear"},
     r"params\.estimator\.iterator_train: torch\.nn\.modules\.linear\.Linear is a class that is not a "
     r"torch DataLoader class"),
    ("callbacks", [{"__object__": "sklearn.preprocessing._data:StandardScaler", "params": {}}],
     r"params\.estimator\.callbacks\[0\]: sklearn\.preprocessing\._data\.StandardScaler is a class that is "
     r"not a skorch callback"),
    ("callbacks", [{"__object__": "skorch.callbacks.training:Checkpoint", "params": {}}],
     r"params\.estimator\.callbacks\[0\] names skorch\.callbacks\.training\.Checkpoint, which is not on "
     r"the trust list"),
    ("callbacks", [{"__object__": "skorch.callbacks.training:LoadInitState", "params": {}}],
     r"params\.estimator\.callbacks\[0\] names skorch\.callbacks\.training\.LoadInitState, which is not "
     r"on the trust list"),
    ("callbacks", [{"__type__": "skorch.callbacks.scoring:EpochScoring"}],
     r"params\.estimator\.callbacks\[0\]: must be a skorch callback, got the "
     r"skorch\.callbacks\.scoring\.EpochScoring class itself"),
    ("callbacks", [{"__object__": "skorch.callbacks.lr_scheduler:LRScheduler", "params": {"policy": "sys"}}],
     r"params\.estimator\.callbacks\[0\]\.policy: 'sys' is not the name of a torch LR scheduler"),
    ("callbacks", [{"__object__": "skorch.callbacks.lr_scheduler:LRScheduler",
                    "params": {"policy": {"__type__": "torch.optim.adam:Adam"}}}],
     r"params\.estimator\.callbacks\[0\]\.policy: torch\.optim\.adam\.Adam is a class that is not a torch LR "
     r"scheduler class"),
    ("train_split", {"__function__": "skorch.utils:to_numpy"},
     r"params\.estimator\.train_split: must be a train split or None, got the skorch\.utils\.to_numpy "
     r"function itself"),
    ("torch_load_kwargs", {"__dict__": {"weights_only": False}},
     r"params\.estimator\.torch_load_kwargs: torch\.load's arguments \(unpickling\): a file may set it only "
     r"to None or \{'weights_only': True\}"),
    ("module__norm", {"__object__": "torch.nn.modules.linear:Linear", "params": {}},
     r"params\.estimator\.module__norm: torch\.nn\.modules\.linear\.Linear is not a class that a save "
     r"rebuilds from its parameters"),
    ("module", {"__type__": "__main__:Evil"},
     r"params\.estimator\.module names __main__\.Evil, which is not on the trust list.*defined in the "
     r"script that saved the learner"),
]


@pytest.mark.parametrize("key, value, message", WRONG_KIND, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(WRONG_KIND)])
def test_a_trusted_name_of_the_wrong_kind_is_refused_before_anything_is_built(saved, tmp_path, key, value,
                                                                              message, monkeypatch):
    built = []
    monkeypatch.setattr(ActiveNet, "initialize", lambda self: built.append(self))
    members = _members(saved[0])
    meta = json.loads(members["learner.json"][0])
    meta["params"]["estimator"]["params"][key] = value
    members["learner.json"] = (json.dumps(meta).encode(), zipfile.ZIP_DEFLATED)
    _write(tmp_path / "kind.skal", members)
    with pytest.raises(ValueError, match=r"kind\.skal(:| is not a valid skal save:) learner\.json: " + message):
        ActiveLearner.load(tmp_path / "kind.skal")
    assert built == []  # refused before the net (and so its module) was built


def test_selector_and_estimator_slots_take_only_their_kind(saved, tmp_path):
    for field, value, message in [
        ("selector", {"__object__": "sklearn.preprocessing._data:StandardScaler", "params": {}},
         r"params\.selector: sklearn\.preprocessing\._data\.StandardScaler is a class that is not a skal selector"),
        ("estimator", {"__object__": "skal.selectors.disal:DISAL", "params": {}},
         r"params\.estimator: skal\.selectors\.disal\.DISAL is not an ActiveNet or a Pipeline"),
        ("estimator", {"__object__": "sklearn.pipeline:Pipeline", "params": {
            "steps": [{"__tuple__": ["net", {"__object__": "skal.net:ActiveNet", "params": {
                "module": {"__type__": "skal.models:MLP"}}}]}], "memory": "/tmp/cache"}},
         r"params\.estimator\.memory: must be None \(a loaded learner never caches\)"),
        ("estimator", {"__object__": "sklearn.pipeline:Pipeline", "params": {
            "steps": [{"__tuple__": ["clf", {"__object__": "sklearn.linear_model._logistic:LogisticRegression",
                                             "params": {}}]}]}},
         r"params\.estimator: must be an ActiveNet or a Pipeline ending in one"),
    ]:
        members = _members(saved[0])
        meta = json.loads(members["learner.json"][0])
        meta["params"][field] = value
        members["learner.json"] = (json.dumps(meta).encode(), zipfile.ZIP_DEFLATED)
        _write(tmp_path / "slot.skal", members)
        with pytest.raises(ValueError, match=r"slot\.skal is not a valid skal save: learner\.json: " + message):
            ActiveLearner.load(tmp_path / "slot.skal")


# --- Pipeline transformers (skops) -------------------------------------------------------------


class MyScaler(StandardScaler):
    """A user's transformer: not on the default trust list."""


@pytest.fixture(scope="module")
def pipeline_save(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, D)).astype(np.float32)
    y = X[:, :3].argmax(1)
    estimator = make_pipeline(StandardScaler(), ActiveNet(MLP, max_epochs=1, verbose=0))
    learner = ActiveLearner(estimator, Entropy(), random_state=0).fit(X, y)
    path = tmp_path_factory.mktemp("pipe") / "pipe.skal"
    learner.save(path)
    return path, X


def _skops(obj):
    import skops.io

    return skops.io.dumps(obj)


@pytest.mark.parametrize("data, message", [
    (lambda X: _skops([MinMaxScaler().fit(X)]),
     r"transformers\.skops: step 'standardscaler': holds a MinMaxScaler with other parameters than the Pipeline's"),
    (lambda X: _skops([StandardScaler(with_mean=False).fit(X)]),
     r"transformers\.skops: step 'standardscaler': holds a StandardScaler with other parameters"),
    (lambda X: _skops([StandardScaler()]), r"transformers\.skops: step 'standardscaler': is not fitted"),
    (lambda X: _skops([]), r"transformers\.skops: must hold the 1 fitted transformer\(s\) of the Pipeline"),
    (lambda X: _skops([StandardScaler().fit(X[:, :4])]),
     r"transformers\.skops: the fitted transformers cannot transform the saved samples: X has 5 features, "
     r"but StandardScaler is expecting 4"),
    (lambda X: b"not a zip", r"transformers\.skops: not a valid skops file"),
    (lambda X: _deflated(_skops([StandardScaler().fit(X)])),
     r"transformers\.skops: inner member '\S+' must be stored uncompressed"),
], ids=["other-class", "other-params", "unfitted", "empty", "other-features", "garbage", "deflated-inside"])
def test_crafted_pipeline_transformers_are_refused(pipeline_save, tmp_path, data, message):
    path, X = pipeline_save
    members = _members(path)
    members["transformers.skops"] = (data(X), zipfile.ZIP_STORED)
    _write(tmp_path / "odd.skal", members)
    with pytest.raises(ValueError, match=r"odd\.skal is not a valid skal save: " + message):
        ActiveLearner.load(tmp_path / "odd.skal")


def _deflated(data):
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    return out.getvalue()


def test_an_untrusted_transformer_type_is_named_and_can_be_trusted(pipeline_save, tmp_path):
    path, X = pipeline_save
    y = X[:, :3].argmax(1)
    learner = ActiveLearner(make_pipeline(MyScaler(), ActiveNet(MLP, max_epochs=1, verbose=0)), Entropy(),
                            random_state=0).fit(X, y)
    learner.save(tmp_path / "mine.skal")
    name = f"{MyScaler.__module__}.MyScaler"
    assert get_untrusted_types(tmp_path / "mine.skal") == [name]
    with pytest.raises(ValueError, match=rf"mine\.skal: learner\.json: params\.estimator\.steps\[0\]\[1\] "
                                         rf"names {name}, which is not on the trust list"):
        ActiveLearner.load(tmp_path / "mine.skal")
    loaded = ActiveLearner.load(tmp_path / "mine.skal", trusted=[name])
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))
    # the skops member alone naming an untrusted type is refused too
    members = _members(path)
    members["transformers.skops"] = (_skops([MyScaler().fit(X)]), zipfile.ZIP_STORED)
    _write(tmp_path / "swap.skal", members)
    with pytest.raises(ValueError, match=rf"swap\.skal: transformers\.skops: names {name}, which is not on "
                                         "the trust list"):
        ActiveLearner.load(tmp_path / "swap.skal")


# --- bombs: refused before anything is inflated, in little memory ---------------------------------


def _zip(path, entries):
    """A zip written by hand, so that declared sizes can differ from the data.

    entries: (name, method, payload, crc, file_size, compress_size or None for len(payload)).
    """
    with open(path, "wb") as f:
        central = []
        for name, method, payload, crc, size, declared in entries:
            offset, raw, csize = f.tell(), name.encode(), len(payload) if declared is None else declared
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, csize, size, len(raw), 0))
            f.write(raw + payload)
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, csize,
                                       size, len(raw), 0, 0, 0, 0, 0, offset) + raw)
        start = f.tell()
        f.write(b"".join(central))
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), f.tell() - start, start, 0))
    return path


_BOMB_ROWS = 40_000_000  # x 5 float32 features = 800 MB


def _zero_bomb(prefix, total):
    """Deflate stream and CRC of ``prefix`` + ``total`` zero bytes, built without inflating them."""
    chunk = 8 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    piece = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    zeros = bytes(chunk)
    for _ in range(total // chunk):
        crc = zlib.crc32(zeros, crc)
    return head + piece * (total // chunk) + compressor.flush(), crc


@pytest.fixture(scope="module")
def bombs(saved, tmp_path_factory):
    path, _ = saved
    members = _members(path)
    folder = tmp_path_factory.mktemp("bombs")
    header = _npy_header((_BOMB_ROWS, D), np.float32)
    stream, crc = _zero_bomb(header, _BOMB_ROWS * D * 4)
    size = len(header) + _BOMB_ROWS * D * 4

    def entries(replace):
        out = []
        for name, (data, method) in members.items():
            if name in replace:
                out.append((name, *replace[name]))
            else:
                payload = zlib.compress(data)[2:-4] if method == zipfile.ZIP_DEFLATED else data
                out.append((name, method, payload, zlib.crc32(data), len(data), None))
        return out

    json_stream, json_crc = _zero_bomb(b"[", 800 << 20)
    made = {
        # the issue's bomb: a 0.8 MB save whose X_labeled.npy inflates to 800 MB
        "deflated-X": (entries({"X_labeled.npy": (zipfile.ZIP_DEFLATED, stream, crc, size, None)}),
                       r"X_labeled\.npy: must be stored uncompressed \(its declared size 800000128 is not the"),
        "stored-X-declared-800MB": (entries({"X_labeled.npy": (zipfile.ZIP_STORED, header, crc, size, size)}),
                                    r"X_labeled\.npy: declares 800000128 bytes, more than the \d+-byte file holds"),
        "stored-X-header-800MB": (entries({"X_labeled.npy": (zipfile.ZIP_STORED, header + bytes(64),
                                                             zlib.crc32(header + bytes(64)), len(header) + 64,
                                                             None)}),
                                  r"X_labeled\.npy: its header describes 800000128 bytes"),
        "deflated-tensors": (entries({"tensors.safetensors": (zipfile.ZIP_DEFLATED, stream, crc, size, None)}),
                             r"tensors\.safetensors: must be stored uncompressed"),
        "json-800MB": (entries({"learner.json": (zipfile.ZIP_DEFLATED, json_stream, json_crc, (800 << 20) + 1, None)}),
                       r"learner\.json: declares 838860801 bytes, over the limit of 33554432 for this member"),
        "json-ratio": (entries({"learner.json": (zipfile.ZIP_DEFLATED, json_stream[:4096], 0, 30 << 20, None)}),
                       r"learner\.json: declares 31457280 bytes from 4096 compressed ones, more than any JSON "
                       r"compresses"),
    }
    return {name: (_zip(folder / f"{name}.skal", parts), message) for name, (parts, message) in made.items()}


@pytest.mark.parametrize("bomb", ["deflated-X", "stored-X-declared-800MB", "stored-X-header-800MB",
                                  "deflated-tensors", "json-800MB", "json-ratio"])
def test_a_bomb_is_refused_before_inflating_in_little_memory(bombs, bomb):
    path, message = bombs[bomb]
    assert os.path.getsize(path) < 2 << 20  # under 2 MB on disk, 800 MB inflated
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"{bomb}\.skal is not a valid skal save: " + message):
            ActiveLearner.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # measured: under 1 MB for every bomb (benchmarks/bench_persistence.py reports it)
    assert peak < 100 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_the_bomb_really_inflates_to_800MB(bombs):
    # the deflate stream is what the test says it is: read back a prefix and count
    path, _ = bombs["deflated-X"]
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("X_labeled.npy")
        assert info.file_size == 800_000_128 and info.compress_size < 1 << 20
        with archive.open(info) as f:
            assert f.read(128)[:6] == b"\x93NUMPY"
            assert f.read(1 << 20) == bytes(1 << 20)


# --- issue 20: bombs that passed the size checks, each refused in < 2 s and < 100 MB ------------


def _crafted_members(saved_path, **replace):
    """The valid save's members as _zip entries, some replaced by (method, payload, crc, size, declared)."""
    out = []
    for name, (data, method) in _members(saved_path).items():
        if name in replace:
            out.append((name, *replace.pop(name)))
        else:
            payload = zlib.compress(data)[2:-4] if method == zipfile.ZIP_DEFLATED else data
            out.append((name, method, payload, zlib.crc32(data), len(data), None))
    out.extend((name, *entry) for name, entry in replace.items())
    return out


def _stored_json(text):
    return (zipfile.ZIP_STORED, text, zlib.crc32(text), len(text), None)


def _meta_text(saved_path, edit):
    meta = json.loads(_members(saved_path)["learner.json"][0])
    edit(meta)
    return json.dumps(meta).encode()


def _npy_raw_header(shape, descr):
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


BZIP2 = 12


@pytest.fixture(scope="module")
def issue20_bombs(saved, pipeline_save, tmp_path_factory):
    path, _ = saved
    folder = tmp_path_factory.mktemp("bombs20")
    gib_stream, gib_crc = _zero_bomb(b"[", 1 << 30)
    bz = bz2.compress(bytes(256 << 20), 9)  # 256 MiB of zeros in a few hundred bytes
    empty_objects = b"[" + b"{}," * 10_000_000 + b"{}]"  # 29 MiB, stored: no ratio to exceed
    npy = {name: np.load(io.BytesIO(data), allow_pickle=False) for name, (data, _) in _members(path).items()
           if name.endswith(".npy")}
    n, d = npy["X_labeled.npy"].shape
    negative = _npy_raw_header((-n, -d), "<f4") + npy["X_labeled.npy"].tobytes()
    made = {
        "json-bzip2-declared-1000": (_crafted_members(path, **{"learner.json": (BZIP2, bz, 0, 1000, None)}),
                                     r"learner\.json: compressed with method 12; a save is stored or deflated"),
        "json-deflate-1GiB-declared-1000": (
            _crafted_members(path, **{"learner.json": (zipfile.ZIP_DEFLATED, gib_stream, gib_crc, 1000, None)}),
            r"learner\.json: Bad CRC-32"),
        "json-deflate-1GiB-declared-30MiB": (
            _crafted_members(path, **{"learner.json": (zipfile.ZIP_DEFLATED, gib_stream, gib_crc, 30 << 20, None)}),
            r"learner\.json: Bad CRC-32"),
        "json-10M-empty-objects": (_crafted_members(path, **{"learner.json": _stored_json(empty_objects)}),
                                   r"learner\.json: holds about 20000003 values, over the limit of 1048576"),
        "hidden-sizes-2M": (_crafted_members(path, **{"learner.json": _stored_json(_meta_text(
            path, lambda m: m["params"]["estimator"]["params"].update(
                module__hidden_sizes={"__tuple__": [1] * 2_000_000})))}),
            r"learner\.json: holds about 2000\d\d\d values, over the limit of 1048576"),
        "dotted-name-4MB": (_crafted_members(path, **{"learner.json": _stored_json(_meta_text(
            path, lambda m: m["params"]["estimator"]["params"].update(
                module={"__type__": "a." * 2_000_000 + "b:C"})))}),
            r"learner\.json: holds a string of 4000003 characters, over the limit of 65536"),
        "40000-members": (_crafted_members(path, **{f"x{i}.npy": (zipfile.ZIP_STORED, b"", 0, 0, None)
                                                    for i in range(40_000)}),
                          r"40009 members, more than a save has \(at most 4096\)"),
        "npy-negative-shape": (_crafted_members(path, **{"X_labeled.npy": (
            zipfile.ZIP_STORED, negative, zlib.crc32(negative), len(negative), None)}),
            rf"X_labeled\.npy: its header declares the shape \(-{n}, -{d}\); dimensions must be non-negative"),
        **{f"npy-{dtype[1:]}-1e12": (_crafted_members(path, **{"y_labeled.npy": (
            zipfile.ZIP_STORED, header, zlib.crc32(header), len(header), None)}),
            rf"y_labeled\.npy: has dtype \S+, whose items take no bytes")
           for dtype in ("<U0", "|S0") for header in [_npy_raw_header((10**12,), dtype)]},
    }
    pipe_path, X = pipeline_save
    schema = b"[" + b"[]," * 2_000_000 + b"[]]"
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("schema.json", schema)
    made["skops-schema-2M-lists"] = (
        _crafted_members(pipe_path, **{"transformers.skops": (zipfile.ZIP_STORED, inner.getvalue(),
                                                              zlib.crc32(inner.getvalue()), len(inner.getvalue()),
                                                              None)}),
        r"transformers\.skops: schema\.json: holds about 4000003 values, over the limit of 1048576")
    return {name: (_zip(folder / f"{name}.skal", entries), message) for name, (entries, message) in made.items()}


ISSUE20_BOMBS = ["json-bzip2-declared-1000", "json-deflate-1GiB-declared-1000", "json-deflate-1GiB-declared-30MiB",
                 "json-10M-empty-objects", "hidden-sizes-2M", "dotted-name-4MB", "40000-members",
                 "npy-negative-shape", "npy-U0-1e12", "npy-S0-1e12", "skops-schema-2M-lists"]


@pytest.mark.parametrize("bomb", ISSUE20_BOMBS)
def test_an_issue20_bomb_is_refused_in_under_2s_and_100MB(issue20_bombs, bomb):
    path, message = issue20_bombs[bomb]
    refused_cheaply(path, rf"{re.escape(bomb)}\.skal(:| is not a valid skal save:) " + message)


def test_get_untrusted_types_refuses_the_bombs_cheaply_too(issue20_bombs):
    for bomb in ("json-bzip2-declared-1000", "json-10M-empty-objects", "40000-members", "skops-schema-2M-lists"):
        path, message = issue20_bombs[bomb]
        with pytest.raises(ValueError, match=message):
            get_untrusted_types(path)
