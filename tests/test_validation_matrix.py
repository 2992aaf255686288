"""Every public entry point against bad input.

Each refused case must raise the exact error type with a message that names
the offending argument, and leave the learner exactly as it was; each accepted
variant (dtype, memory layout, container, numpy integer) must give exactly the
result of the float32 C-contiguous array.
"""

import copy
import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import DataConversionWarning, NotFittedError
from sklearn.utils._param_validation import InvalidParameterError
from torch.utils.data import TensorDataset

from skal import ActiveLearner, ActiveNet
from skal.cli import main
from skal.model_selection import active_learning_curve
from skal.models import MLP
from skal.selectors import ISAL, Entropy

N_FIT, N_POOL, N_FEATURES = 24, 56, 4


def _net():
    return ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=2, batch_size=16, lr=0.1, verbose=0)


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N_FIT + N_POOL, N_FEATURES)).astype(np.float32)
    y = X[:, :3].argmax(1).astype(np.int64)
    return X, y


X_ALL, Y_ALL = _data()
X_FIT, Y_FIT = X_ALL[:N_FIT], Y_ALL[:N_FIT]
POOL, Y_POOL = X_ALL[N_FIT:], Y_ALL[N_FIT:]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fitted(one_torch_thread):
    learner = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(X_FIT, Y_FIT)
    assert learner.classes_.tolist() == [0, 1, 2]
    return learner


# --- exact snapshot of a learner -----------------------------------------------------------


def _frozen(value, by_identity=False):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # the learner's fitted state: the very same value, with every field unchanged
        return ("dataclass", value, {field.name: _frozen(getattr(value, field.name), by_identity)
                                     for field in dataclasses.fields(value)})
    if isinstance(value, np.ndarray):
        return ("array", value.copy())
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return ("value", value)
    if isinstance(value, (list, tuple)):
        return ("sequence", type(value), [_frozen(v, by_identity) for v in value])
    if hasattr(value, "get_params") and not isinstance(value, type) and not by_identity:
        # skorch builds its default callbacks afresh on every get_params: compare their parameters
        return ("estimator", value, {k: _frozen(v) for k, v in value.get_params(deep=False).items()})
    return ("object", value)  # compared by identity


def _same(frozen, value):
    kind = frozen[0]
    if kind == "array":
        return (isinstance(value, np.ndarray) and value.dtype == frozen[1].dtype
                and np.array_equal(value, frozen[1]))
    if kind == "value":
        return type(value) is type(frozen[1]) and value == frozen[1]
    if kind == "sequence":
        return (type(value) is frozen[1] and len(value) == len(frozen[2])
                and all(_same(f, v) for f, v in zip(frozen[2], value)))
    if kind == "dataclass":
        return value is frozen[1] and all(_same(f, getattr(value, name)) for name, f in frozen[2].items())
    if kind == "estimator" and value is not frozen[1]:
        if type(value) is not type(frozen[1]):
            return False
        params = value.get_params(deep=False)
        return params.keys() == frozen[2].keys() and all(_same(f, params[k]) for k, f in frozen[2].items())
    return value is frozen[1]


def _net_tensors(net):
    tensors = {}
    for attribute in ("module_", "loss_predictor_", "dynamics_predictor_"):
        module = getattr(net, attribute, None)
        if module is not None:
            tensors.update({f"{attribute}.{k}": v for k, v in module.state_dict().items()})
    for name, part in net.parts_.items():  # the snapshot, the running means, the heads' epochs
        tensors.update({f"parts_.{name}.{k}": v for k, v in part.state_dict().items()})
    for i, state in net.optimizer_.state_dict()["state"].items():
        tensors.update({f"optimizer_.{i}.{k}": v for k, v in state.items() if torch.is_tensor(v)})
    return {k: v.detach().clone() for k, v in tensors.items()}


def _attributes(learner):
    # the learner's lock is made at its first call and left out of copies: not state
    return {key: value for key, value in vars(learner).items() if key != "_lock"}


def snapshot(learner):
    """Everything a refused call must leave unchanged, copied."""
    state = {
        "params": {k: _frozen(v) for k, v in learner.get_params(deep=True).items()},
        # fitted objects (estimator_, selector_) must stay the very same objects
        "attributes": {k: _frozen(v, by_identity=True) for k, v in _attributes(learner).items()},
    }
    if hasattr(learner, "estimator_"):
        net = learner.estimator_
        state["tensors"] = _net_tensors(net)
        state["history"] = copy.deepcopy(net.history.to_list())
        state["selector_"] = _frozen(list(learner.selector_.get_params().items()))
    return state


def assert_unchanged(learner, before):
    after_params = learner.get_params(deep=True)
    assert after_params.keys() == before["params"].keys()
    for key, frozen in before["params"].items():
        assert _same(frozen, after_params[key]), f"parameter {key} changed"
    attributes = _attributes(learner)
    assert attributes.keys() == before["attributes"].keys(), "attributes added or removed"
    for key, frozen in before["attributes"].items():
        assert _same(frozen, attributes[key]), f"attribute {key} changed"
    if "tensors" in before:
        tensors = _net_tensors(learner.estimator_)
        assert tensors.keys() == before["tensors"].keys()
        for key, value in before["tensors"].items():
            assert torch.equal(tensors[key], value), f"tensor {key} changed"
        assert learner.estimator_.history.to_list() == before["history"]
        assert _same(before["selector_"], list(learner.selector_.get_params().items()))


def _first_weight(learner):
    return next(iter(learner.estimator_.module_.state_dict().values()))


def _set_field(learner, name, value):
    """Change one field of the learner's frozen fitted state in place (as no method may)."""
    state = learner._state()
    target = state.labeled if name in ("X", "y", "cycle", "reference") else state
    object.__setattr__(target, name, value)


MUTATIONS = {
    "array-in-place": lambda L: L.X_labeled_.__setitem__((0, 0), 9.0),
    "array-dtype": lambda L: _set_field(L, "y", L.y_labeled_.astype(np.int32)),
    "reference-mask-in-place": lambda L: L._state().labeled.reference.__setitem__(0, True),
    "attribute-added": lambda L: setattr(L, "_extra", False),
    "attribute-removed": lambda L: delattr(L, "_fitted"),
    "int-field": lambda L: _set_field(L, "n_features_in", 5),
    "stale-field": lambda L: _set_field(L, "stale", True),
    "state-replaced-by-an-equal-copy": lambda L: L._commit(dataclasses.replace(L._state())),
    "net-replaced-by-a-copy": lambda L: _set_field(L, "estimator", copy.deepcopy(L.estimator_)),
    "weight-in-place": lambda L: _first_weight(L).add_(1.0),
    "history-appended": lambda L: L.estimator_.history.new_epoch(),
    "parameter": lambda L: L.set_params(random_state=1),
    "nested-parameter": lambda L: L.set_params(estimator__lr=0.5),
    "fitted-selector-parameter": lambda L: L.selector_.set_params(batch="cluster"),
}


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_the_snapshot_detects_every_kind_of_change(fitted, mutate):
    learner = copy.deepcopy(fitted)
    before = snapshot(learner)
    assert_unchanged(learner, before)
    mutate(learner)
    with pytest.raises(AssertionError):
        assert_unchanged(learner, before)


# --- refused input ----------------------------------------------------------------------------


@dataclass
class Bad:
    id: str
    call: Callable  # (learner, tmp_path) -> anything
    error: type
    match: str
    prepare: Callable = None  # (learner) -> None, before the snapshot


def _with(X, value, row=3, col=1):
    X = X.copy()
    X[row, col] = value
    return X


def _dataset(X):
    return TensorDataset(torch.from_numpy(np.ascontiguousarray(X)))


def _curve(default, **overrides):
    kwargs = dict(learner=default, X=X_ALL, y=Y_ALL, initial_size=10, query_size=5, n_cycles=1,
                  n_repeats=1, random_state=0)
    kwargs.update(overrides)
    return active_learning_curve(kwargs.pop("learner"), kwargs.pop("X"), kwargs.pop("y"), **kwargs)


NOT_ARRAY = r"must be an array-like of shape \(n_samples, \.\.\.\) or a torch Dataset, got"
POOL_SHAPE = r"X_pool has samples of shape \(3,\), but the learner was fitted on samples of shape \(4,\)"
# arrays go through scikit-learn's validate_data(reset=False), as in predict; the name is prefixed
POOL_FEATURES = r"X_pool: X has 3 features, but ActiveLearner is expecting 4 features as input"
N_RANGE = r"n must be in \[1, len\(X_pool\)\] = \[1, 56\], got "

BAD = [
    # fit: X
    Bad("fit-X-None", lambda L, t: L.fit(None, Y_FIT), TypeError, rf"^X {NOT_ARRAY} NoneType\.$"),
    Bad("fit-X-str", lambda L, t: L.fit("abc", Y_FIT), TypeError, rf"^X {NOT_ARRAY} str\.$"),
    Bad("fit-X-dict", lambda L, t: L.fit({"a": X_FIT}, Y_FIT), TypeError, rf"^X {NOT_ARRAY} dict\.$"),
    Bad("fit-X-1d", lambda L, t: L.fit(X_FIT[:, 0], Y_FIT), ValueError, r"^X: Expected 2D array, got 1D array"),
    Bad("fit-X-scalar", lambda L, t: L.fit(3.0, Y_FIT), ValueError, r"^X: Expected 2D array, got scalar"),
    Bad("fit-X-nan", lambda L, t: L.fit(_with(X_FIT, np.nan), Y_FIT), ValueError, r"^X contains NaN or infinity in row \d+\.$"),
    Bad("fit-X-inf", lambda L, t: L.fit(_with(X_FIT, -np.inf), Y_FIT), ValueError, r"^X contains NaN or infinity in row \d+\.$"),
    Bad("fit-X-empty", lambda L, t: L.fit(X_FIT[:0], Y_FIT[:0]), ValueError, r"^X: Found array with 0 sample\(s\)"),
    Bad("fit-X-no-features", lambda L, t: L.fit(X_FIT[:, :0], Y_FIT),
        ValueError, r"^X: Found array with 0 feature\(s\)"),
    Bad("fit-X-strings", lambda L, t: L.fit(np.full((N_FIT, 4), "a"), Y_FIT), ValueError,
        r"^X: could not convert string to float: (np\.str_\()?'a'"),
    Bad("fit-X-complex", lambda L, t: L.fit(X_FIT + 1j, Y_FIT), ValueError, r"^X: Complex data not supported"),
    Bad("fit-X-empty-dataset", lambda L, t: L.fit(_dataset(X_FIT[:0]), Y_FIT[:0]), ValueError, r"^X is empty"),
    # fit: y
    Bad("fit-y-None", lambda L, t: L.fit(X_FIT, None),
        ValueError, r"requires y to be passed, but the target y is None"),
    Bad("fit-y-str", lambda L, t: L.fit(X_FIT, "abc"),
        TypeError, r"^y must be an array-like of shape \(n_samples,\), got str\.$"),
    Bad("fit-y-2d", lambda L, t: L.fit(X_FIT, np.c_[Y_FIT, Y_FIT]),
        ValueError, r"^y should be a 1d array, got an array of shape \(24, 2\)"),
    Bad("fit-y-short", lambda L, t: L.fit(X_FIT, Y_FIT[:-1]), ValueError,
        r"^X and y have inconsistent numbers of samples: \[24, 23\]\.$"),
    Bad("fit-y-nan", lambda L, t: L.fit(X_FIT, np.r_[np.nan, Y_FIT[1:]]), ValueError, r"^Input y contains NaN"),
    Bad("fit-y-continuous", lambda L, t: L.fit(X_FIT, Y_FIT + 0.5), ValueError, r"^y: Unknown label type: continuous"),
    Bad("fit-y-undeclared-label", lambda L, t: L.fit(X_FIT, np.where(Y_FIT == 2, 5, Y_FIT)), ValueError,
        r"^y contains labels not in classes_: \['5'\]", prepare=lambda L: L.set_params(classes=[0, 1, 2])),
    # a late failure (X passed, y refused) must restore n_features_in_ of the previous fit
    Bad("fit-5-features-then-bad-y", lambda L, t: L.fit(np.c_[X_FIT, X_FIT[:, :1]], Y_FIT[:3]), ValueError,
        r"^X and y have inconsistent numbers of samples: \[24, 3\]\.$"),
    Bad("fit-no-room-for-reference", lambda L, t: L.fit(X_FIT[:3], Y_FIT[:3]), ValueError,
        r"reference fraction 0\.1 of the 3 labeled samples", prepare=lambda L: L.set_params(selector=ISAL())),
    # query: X_pool
    Bad("query-X_pool-None", lambda L, t: L.query(None, 1), TypeError, rf"^X_pool {NOT_ARRAY} NoneType\.$"),
    Bad("query-X_pool-str", lambda L, t: L.query("abc", 1), TypeError, rf"^X_pool {NOT_ARRAY} str\.$"),
    Bad("query-X_pool-dict", lambda L, t: L.query({"x": POOL}, 1), TypeError, rf"^X_pool {NOT_ARRAY} dict\.$"),
    Bad("query-X_pool-1d", lambda L, t: L.query(POOL[0], 1), ValueError, r"^X_pool: Expected 2D array, got 1D array"),
    Bad("query-X_pool-features", lambda L, t: L.query(POOL[:, :3], 1), ValueError, rf"^{POOL_FEATURES}\.$"),
    Bad("query-X_pool-rank", lambda L, t: L.query(POOL[:, :, None], 1), ValueError,
        r"^X_pool has samples of shape \(4, 1\), but the learner was fitted on samples of shape \(4,\)\.$"),
    Bad("query-X_pool-nan", lambda L, t: L.query(_with(POOL, np.nan), 1), ValueError,
        r"^X_pool contains NaN or infinity in row \d+; to leave them out, pass non_finite='leave_out'\.$"),
    Bad("query-X_pool-inf", lambda L, t: L.query(_with(POOL, np.inf), 1),
        ValueError, r"^X_pool contains NaN or infinity in row \d+; to leave them out, pass non_finite='leave_out'\.$"),
    Bad("query-X_pool-empty", lambda L, t: L.query(POOL[:0], 1),
        ValueError, r"^X_pool is empty: it needs at least one sample\.$"),
    Bad("query-X_pool-strings", lambda L, t: L.query(np.full((5, 4), "a"), 1),
        ValueError, r"^X_pool: could not convert"),
    Bad("query-X_pool-dataset-nan", lambda L, t: L.query(_dataset(_with(POOL, np.nan)), 1), ValueError,
        r"^X_pool contains NaN or infinity in row 3\.$"),
    Bad("query-X_pool-dataset-empty", lambda L, t: L.query(_dataset(POOL[:0]), 1), ValueError, r"^X_pool is empty"),
    Bad("query-X_pool-dataset-features", lambda L, t: L.query(_dataset(POOL[:, :3]), 1),
        ValueError, rf"^{POOL_SHAPE}\.$"),
    # query: n and return_scores
    Bad("query-n-0", lambda L, t: L.query(POOL, 0), ValueError, rf"^{N_RANGE}0\.$"),
    Bad("query-n-negative", lambda L, t: L.query(POOL, -2), ValueError, rf"^{N_RANGE}-2\.$"),
    Bad("query-n-above-pool", lambda L, t: L.query(POOL, N_POOL + 1), ValueError, rf"^{N_RANGE}57\.$"),
    Bad("query-n-float", lambda L, t: L.query(POOL, 2.5), TypeError, r"^n must be an integer, got float\.$"),
    Bad("query-n-integral-float", lambda L, t: L.query(POOL, 3.0), TypeError, r"^n must be an integer, got float\.$"),
    Bad("query-n-numpy-float", lambda L, t: L.query(POOL, np.float64(3)),
        TypeError, r"^n must be an integer, got float64\.$"),
    Bad("query-n-str", lambda L, t: L.query(POOL, "3"), TypeError, r"^n must be an integer, got str\.$"),
    Bad("query-n-True", lambda L, t: L.query(POOL, True), TypeError, r"^n must be an integer, got bool\.$"),
    Bad("query-n-None", lambda L, t: L.query(POOL, None), TypeError, r"^n must be an integer, got NoneType\.$"),
    Bad("query-return_scores-str", lambda L, t: L.query(POOL, 2, return_scores="yes"), TypeError,
        r"^return_scores must be a bool, got str\.$"),
    # teach
    Bad("teach-X-None", lambda L, t: L.teach(None, Y_POOL[:2]), TypeError, rf"^X {NOT_ARRAY} NoneType\.$"),
    Bad("teach-X-str", lambda L, t: L.teach("ab", Y_POOL[:2]), TypeError, rf"^X {NOT_ARRAY} str\.$"),
    Bad("teach-X-1d", lambda L, t: L.teach(POOL[0], Y_POOL[:4]), ValueError, r"^X: Expected 2D array, got 1D array"),
    Bad("teach-X-features", lambda L, t: L.teach(POOL[:2, :3], Y_POOL[:2]), ValueError,
        r"^X has 3 features, but ActiveLearner is expecting 4 features as input\.$"),
    Bad("teach-X-nan", lambda L, t: L.teach(_with(POOL[:5], np.nan), Y_POOL[:5]), ValueError, r"^X contains NaN or infinity in row \d+\.$"),
    Bad("teach-X-empty", lambda L, t: L.teach(POOL[:0], Y_POOL[:0]),
        ValueError, r"^X is empty: it needs at least one sample\.$"),
    Bad("teach-X-dataset-nan", lambda L, t: L.teach(_dataset(_with(POOL[:5], np.nan)), Y_POOL[:5]), ValueError,
        r"^X contains NaN or infinity in row 3\.$"),
    Bad("teach-y-None", lambda L, t: L.teach(POOL[:2], None),
        ValueError, r"requires y to be passed, but the target y is None"),
    Bad("teach-y-dict", lambda L, t: L.teach(POOL[:2], {0: 1}),
        TypeError, r"^y must be an array-like of shape \(n_samples,\), got dict\.$"),
    Bad("teach-y-2d", lambda L, t: L.teach(POOL[:2], [[0, 1], [1, 0]]),
        ValueError, r"^y should be a 1d array, got an array of shape \(2, 2\)"),
    Bad("teach-y-short", lambda L, t: L.teach(POOL[:3], Y_POOL[:4]), ValueError,
        r"^X and y have inconsistent numbers of samples: \[3, 4\]\.$"),
    Bad("teach-y-nan", lambda L, t: L.teach(POOL[:2], [0.0, np.nan]), ValueError, r"^Input y contains NaN"),
    Bad("teach-y-unknown-label", lambda L, t: L.teach(POOL[:2], [1, 7]), ValueError,
        r"^y contains labels not in classes_: \['7'\]; declare every label with the `classes` parameter\.$"),
    Bad("teach-y-label-of-other-type", lambda L, t: L.teach(POOL[:2], ["0", "1"]), ValueError,
        r"""^y contains labels not in classes_: \["'0'", "'1'"\]"""),
    # predict, predict_proba, score
    Bad("predict-X-None", lambda L, t: L.predict(None), TypeError, rf"^X {NOT_ARRAY} NoneType\.$"),
    Bad("predict-X-1d", lambda L, t: L.predict(POOL[0]), ValueError, r"^X: Expected 2D array, got 1D array"),
    Bad("predict-X-features", lambda L, t: L.predict(POOL[:, :3]), ValueError,
        r"^X has 3 features, but ActiveLearner is expecting 4 features as input\.$"),
    Bad("predict-X-nan", lambda L, t: L.predict(_with(POOL, np.nan)), ValueError, r"^X contains NaN or infinity in row \d+\.$"),
    Bad("predict_proba-X-dict", lambda L, t: L.predict_proba({"x": POOL}), TypeError, rf"^X {NOT_ARRAY} dict\.$"),
    Bad("predict_proba-X-rank", lambda L, t: L.predict_proba(POOL[:, :, None]), ValueError,
        r"^X has samples of shape \(4, 1\), but the learner was fitted on samples of shape \(4,\)\.$"),
    Bad("predict_proba-X-inf", lambda L, t: L.predict_proba(_with(POOL, np.inf)),
        ValueError, r"^X contains NaN or infinity in row \d+\.$"),
    Bad("predict_proba-X-empty", lambda L, t: L.predict_proba(POOL[:0]),
        ValueError, r"^X is empty: it needs at least one sample\.$"),
    Bad("predict_proba-X-dataset-nan", lambda L, t: L.predict_proba(_dataset(_with(POOL, np.nan))), ValueError,
        r"^X contains NaN or infinity in row 3\.$"),
    Bad("score-X-str", lambda L, t: L.score("abc", Y_POOL), TypeError, rf"^X {NOT_ARRAY} str\.$"),
    Bad("score-X-features", lambda L, t: L.score(POOL[:, :3], Y_POOL), ValueError, r"^X has 3 features"),
    Bad("score-y-None", lambda L, t: L.score(POOL, None),
        ValueError, r"requires y to be passed, but the target y is None"),
    Bad("score-y-str", lambda L, t: L.score(POOL, "abc"),
        TypeError, r"^y must be an array-like of shape \(n_samples,\), got str\.$"),
    Bad("score-y-2d", lambda L, t: L.score(POOL, np.c_[Y_POOL, Y_POOL]), ValueError, r"^y should be a 1d array"),
    Bad("score-y-short", lambda L, t: L.score(POOL, Y_POOL[:10]), ValueError,
        r"^X and y have inconsistent numbers of samples: \[56, 10\]\.$"),
    Bad("score-sample_weight-short", lambda L, t: L.score(POOL, Y_POOL, sample_weight=np.ones(3)), ValueError,
        r"^sample_weight\.shape == \(3,\), expected \(56,\)!$"),
    # save / load (file-system problems are OSErrors, as open() raises them, and name the path)
    Bad("save-path-None", lambda L, t: L.save(None), TypeError, r"^path must be a str or path-like, got NoneType\.$"),
    Bad("save-path-int", lambda L, t: L.save(3), TypeError, r"^path must be a str or path-like, got int\.$"),
    Bad("save-path-missing-directory", lambda L, t: L.save(t / "no" / "dir" / "a.skal"), FileNotFoundError,
        r"^path '.*/no/dir/a\.skal': the directory '.*/no/dir' does not exist\.$"),
    Bad("save-path-is-a-directory", lambda L, t: L.save(t), IsADirectoryError,
        r"^path '.*' is a directory; give a file name, e\.g\. '.*/learner\.skal'\.$"),
    Bad("load-path-None", lambda L, t: ActiveLearner.load(None),
        TypeError, r"^path must be a str or path-like, got NoneType\.$"),
    Bad("load-path-dict", lambda L, t: ActiveLearner.load({}),
        TypeError, r"^path must be a str or path-like, got dict\.$"),
    Bad("load-path-missing", lambda L, t: ActiveLearner.load(t / "missing.skal"), FileNotFoundError, r"missing\.skal"),
    Bad("load-path-not-a-save", lambda L, t: ActiveLearner.load(_write(t / "junk.skal", b"junk")), ValueError,
        r"junk\.skal is not a valid skal save: File is not a zip file"),
    # active_learning_curve (the fitted learner passed in must stay untouched too)
    Bad("curve-learner-None", lambda L, t: _curve(None, learner=None), TypeError,
        r"^learner must be an ActiveLearner or a dict of names to ActiveLearners, got NoneType\.$"),
    Bad("curve-learner-value", lambda L, t: _curve(None, learner={"a": L, "b": 3}), TypeError,
        r"^learner\['b'\] must be an ActiveLearner, got int\.$"),
    Bad("curve-learner-name", lambda L, t: _curve(None, learner={1: L}),
        TypeError, r"^learner: the names must be str, got 1\.$"),
    Bad("curve-learner-empty", lambda L, t: _curve(None, learner={}),
        ValueError, r"^learner: give at least one learner"),
    Bad("curve-X-None", lambda L, t: _curve(L, X=None), TypeError, rf"^X {NOT_ARRAY} NoneType\.$"),
    Bad("curve-X-1d", lambda L, t: _curve(L, X=X_ALL[:, 0]), ValueError, r"^X: Expected 2D array, got 1D array"),
    Bad("curve-X-nan", lambda L, t: _curve(L, X=_with(X_ALL, np.nan)), ValueError, r"^Input X contains NaN"),
    Bad("curve-X-empty", lambda L, t: _curve(L, X=X_ALL[:0], y=Y_ALL[:0]),
        ValueError, r"^X: Found array with 0 sample\(s\)"),
    Bad("curve-y-None", lambda L, t: _curve(L, y=None),
        ValueError, r"requires y to be passed, but the target y is None"),
    Bad("curve-y-2d", lambda L, t: _curve(L, y=np.c_[Y_ALL, Y_ALL]), ValueError, r"^y should be a 1d array"),
    Bad("curve-y-short", lambda L, t: _curve(L, y=Y_ALL[:-1]),
        ValueError, r"^X and y have inconsistent lengths: 80 and 79\.$"),
    Bad("curve-y-continuous", lambda L, t: _curve(L, y=Y_ALL + 0.5), ValueError, r"^y: Unknown label type: continuous"),
    Bad("curve-y-unsplittable", lambda L, t: _curve(L, y=np.r_[7, Y_ALL[1:]]), ValueError,
        r"^y: cannot hold out a stratified 20% test split: The least populated class"),
    Bad("curve-X_test-alone", lambda L, t: _curve(L, X_test=POOL), ValueError, r"^X_test given without y_test\.$"),
    Bad("curve-y_test-alone", lambda L, t: _curve(L, y_test=Y_POOL), ValueError, r"^y_test given without X_test\.$"),
    Bad("curve-X_test-y_test-lengths", lambda L, t: _curve(L, X_test=POOL[:5], y_test=Y_POOL[:4]), ValueError,
        r"^X_test and y_test have inconsistent numbers of samples: \[5, 4\]\.$"),
    Bad("curve-X_test-features", lambda L, t: _curve(L, X_test=POOL[:5, :3], y_test=Y_POOL[:5]), ValueError,
        r"^X_test has samples of shape \(3,\), but X has samples of shape \(4,\)\.$"),
    Bad("curve-X_test-nan", lambda L, t: _curve(L, X_test=_with(POOL, np.nan), y_test=Y_POOL), ValueError,
        r"^Input X_test contains NaN"),
    Bad("curve-initial_size-0", lambda L, t: _curve(L, initial_size=0),
        ValueError, r"^initial_size must be a positive integer, got 0\.$"),
    Bad("curve-initial_size-float", lambda L, t: _curve(L, initial_size=2.5),
        TypeError, r"^initial_size must be an integer, got float\.$"),
    Bad("curve-initial_size-str", lambda L, t: _curve(L, initial_size="3"),
        TypeError, r"^initial_size must be an integer, got str\.$"),
    Bad("curve-initial_size-True", lambda L, t: _curve(L, initial_size=True),
        TypeError, r"^initial_size must be an integer, got bool\.$"),
    Bad("curve-query_size-negative", lambda L, t: _curve(L, query_size=-5),
        ValueError, r"^query_size must be a positive integer, got -5\.$"),
    Bad("curve-query_size-None", lambda L, t: _curve(L, query_size=None),
        TypeError, r"^query_size must be an integer, got NoneType\.$"),
    Bad("curve-n_cycles-negative", lambda L, t: _curve(L, n_cycles=-1),
        ValueError, r"^n_cycles must be a non-negative integer, got -1\.$"),
    Bad("curve-n_repeats-0", lambda L, t: _curve(L, n_repeats=0),
        ValueError, r"^n_repeats must be a positive integer, got 0\.$"),
    Bad("curve-budget", lambda L, t: _curve(L, initial_size=60, query_size=10), ValueError,
        r"^initial_size \+ n_cycles \* query_size = 60 \+ 1 \* 10 = 70 exceeds the 64 samples available\.$"),
    Bad("curve-scoring", lambda L, t: _curve(L, scoring="bogus"),
        InvalidParameterError, r"^The 'scoring' parameter of check_scoring"),
    Bad("curve-random_state", lambda L, t: _curve(L, random_state="x"), ValueError,
        r"^random_state: 'x' cannot be used to seed a numpy\.random\.RandomState instance$"),
    Bad("curve-verbose", lambda L, t: _curve(L, verbose="x"), TypeError, r"^verbose must be an integer, got str\.$"),
]


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", BAD, ids=[case.id for case in BAD])
def test_bad_input_raises_a_named_error_and_changes_nothing(fitted, case, tmp_path):
    learner = copy.deepcopy(fitted)
    if case.prepare is not None:
        case.prepare(learner)
    before = snapshot(learner)
    files = sorted(tmp_path.rglob("*"))
    with pytest.raises(case.error, match=case.match) as info:
        case.call(learner, tmp_path)
    assert type(info.value) is case.error
    assert_unchanged(learner, before)
    assert sorted(tmp_path.rglob("*")) == files or case.id == "load-path-not-a-save"


def test_the_matrix_covers_every_entry_point():
    entry_points = {case.id.split("-")[0] for case in BAD}
    assert entry_points == {"fit", "query", "teach", "predict", "predict_proba", "score", "save", "load", "curve"}


@pytest.mark.parametrize("method, args", [
    ("score", (POOL, Y_POOL)),
    ("save", ("unused.skal",)),
    ("refit", ()),
])
def test_unfitted_learner_refuses_with_not_fitted_error(method, args):
    learner = ActiveLearner(_net(), selector=Entropy())
    before = snapshot(learner)
    with pytest.raises(NotFittedError, match=r"This ActiveLearner instance is not fitted yet"):
        getattr(learner, method)(*args)
    assert_unchanged(learner, before)
    assert not os.path.exists("unused.skal")


@pytest.mark.parametrize("item, finite", [
    (torch.full((4,), 60000.0, dtype=torch.float16), True),  # its sum overflows; the values do not
    (np.full(4, 60000.0, dtype=np.float16), True),
    (torch.arange(4), True),
    (torch.tensor([1.0, np.nan]), False),
    (torch.tensor([np.inf, -np.inf]), False),  # sums to NaN
    (np.array([0.0, -np.inf], dtype=np.float32), False),
])
def test_streamed_items_are_checked_exactly(item, finite):
    from skal._data import FeaturesDataset

    # every item becomes a float32 tensor of its values, as arrays are converted
    expected = torch.as_tensor(np.asarray(item, dtype=np.float32))
    dataset = FeaturesDataset([item, (item, 1)], name="X_pool")
    if finite:
        x, target = dataset[1]
        assert x.dtype == torch.float32 and torch.equal(x, expected) and target == 0
    else:
        with pytest.raises(ValueError, match=r"^X_pool contains NaN or infinity in row 1\.$"):
            dataset[1]
    # no name: converted but not checked (the labeled set path)
    x = FeaturesDataset([item])[0][0]
    assert x.dtype == torch.float32
    np.testing.assert_array_equal(x.numpy(), expected.numpy())  # NaN equals NaN here


# --- accepted input: converted, and exactly the float32 C-contiguous result ------------------


def _wide(X):
    """X as a non-contiguous view (every other column of a wider array)."""
    wide = np.zeros((len(X), 2 * X.shape[1]), dtype=X.dtype)
    wide[:, ::2] = X
    view = wide[:, ::2]
    assert not view.flags.c_contiguous and not view.flags.f_contiguous
    return view


U8_FIT = np.arange(N_FIT * N_FEATURES, dtype=np.uint8).reshape(N_FIT, N_FEATURES) % 7
U8_POOL = (np.arange(N_POOL * N_FEATURES, dtype=np.uint8).reshape(N_POOL, N_FEATURES) * 3) % 11
F64_POOL = np.random.default_rng(1).normal(size=(N_POOL, N_FEATURES))  # not float32-representable

# (id, variant, its float32 C-contiguous reference)
VARIANTS = [
    ("float64", F64_POOL, F64_POOL.astype(np.float32)),
    ("uint8", U8_POOL, U8_POOL.astype(np.float32)),
    ("int64", U8_POOL.astype(np.int64), U8_POOL.astype(np.float32)),
    ("bool", POOL > 0, (POOL > 0).astype(np.float32)),
    ("fortran", np.asfortranarray(POOL), POOL),
    ("strided", _wide(POOL), POOL),
    ("strided-float64", _wide(F64_POOL), F64_POOL.astype(np.float32)),
    ("list", POOL.tolist(), POOL),
    ("tensor", torch.from_numpy(POOL.copy()), POOL),
    ("dataframe", pd.DataFrame(POOL), POOL),
]
VARIANT_IDS = [v[0] for v in VARIANTS]


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning")  # pandas' read-only view
@pytest.mark.parametrize("name, variant, reference", VARIANTS, ids=VARIANT_IDS)
def test_query_predict_and_score_accept_the_variant_and_match_float32(fitted, name, variant, reference):
    assert reference.dtype == np.float32 and reference.flags.c_contiguous
    learner = copy.deepcopy(fitted)
    before = snapshot(learner)
    kept = copy.deepcopy(variant)
    idx, scores = learner.query(variant, 9, return_scores=True)
    ref_idx, ref_scores = learner.query(reference, 9, return_scores=True)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(scores, ref_scores)
    np.testing.assert_array_equal(learner.predict_proba(variant), learner.predict_proba(reference))
    np.testing.assert_array_equal(learner.predict(variant), learner.predict(reference))
    assert learner.score(variant, Y_POOL) == learner.score(reference, Y_POOL)
    assert_unchanged(learner, before)
    if isinstance(variant, np.ndarray):
        np.testing.assert_array_equal(variant, kept)  # the caller's data is not modified


def test_query_streams_a_dataset_and_matches_the_array(fitted):
    learner = copy.deepcopy(fitted)
    before = snapshot(learner)
    for n in (1, 9, N_POOL):
        got = learner.query(_dataset(POOL), n, return_scores=True)
        expected = learner.query(POOL, n, return_scores=True)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(learner.predict_proba(_dataset(POOL)), learner.predict_proba(POOL))
    assert_unchanged(learner, before)


@pytest.mark.parametrize("n", [np.int64(7), np.int32(7), np.uint8(7), np.int16(7)], ids=lambda n: type(n).__name__)
def test_query_accepts_numpy_integer_n(fitted, n):
    learner = copy.deepcopy(fitted)
    idx, scores = learner.query(POOL, n, return_scores=True)
    ref_idx, ref_scores = learner.query(POOL, 7, return_scores=True)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(scores, ref_scores)


@pytest.mark.parametrize("return_scores", [True, np.True_])
def test_query_accepts_numpy_bool_return_scores(fitted, return_scores):
    idx, scores = copy.deepcopy(fitted).query(POOL, 4, return_scores=return_scores)
    assert idx.shape == scores.shape == (4,)


@pytest.mark.parametrize("n", [1, 5, 18])
def test_pool_with_duplicate_rows_gives_distinct_indices(fitted, n):
    pool = np.repeat(POOL[:6], 3, axis=0)  # every row three times
    idx = copy.deepcopy(fitted).query(pool, n)
    assert idx.shape == (n,) and len(set(idx.tolist())) == n
    assert set(idx.tolist()) <= set(range(18))
    if n == 18:
        np.testing.assert_array_equal(np.sort(idx), np.arange(18))


FIT_VARIANTS = [
    ("float64", X_FIT.astype(np.float64), X_FIT),
    ("uint8", U8_FIT, U8_FIT.astype(np.float32)),
    ("int32", U8_FIT.astype(np.int32), U8_FIT.astype(np.float32)),
    ("fortran", np.asfortranarray(X_FIT), X_FIT),
    ("strided", _wide(X_FIT), X_FIT),
    ("list", X_FIT.tolist(), X_FIT),
    ("dataset", _dataset(X_FIT), X_FIT),
]


def _weights(learner):
    return {k: v.clone() for k, v in learner.estimator_.module_.state_dict().items()}


@pytest.mark.parametrize("name, variant, reference", FIT_VARIANTS, ids=[v[0] for v in FIT_VARIANTS])
def test_fit_and_teach_accept_the_variant_and_match_float32(fitted, name, variant, reference):
    # fit: the same labeled set and exactly the same weights
    a = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(variant, Y_FIT.tolist())
    b = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(reference, Y_FIT)
    assert a.X_labeled_.dtype == np.float32 and a.X_labeled_.flags.c_contiguous
    np.testing.assert_array_equal(a.X_labeled_, b.X_labeled_)
    np.testing.assert_array_equal(a.y_labeled_, b.y_labeled_)
    for key, value in _weights(b).items():
        assert torch.equal(_weights(a)[key], value), key
    # teach: the same for the new samples
    a, b = copy.deepcopy(fitted), copy.deepcopy(fitted)
    a.teach(variant, Y_FIT.tolist())
    b.teach(reference, Y_FIT)
    np.testing.assert_array_equal(a.X_labeled_, b.X_labeled_)
    np.testing.assert_array_equal(a.y_labeled_, b.y_labeled_)
    np.testing.assert_array_equal(a.labeled_cycle_, [0] * N_FIT + [1] * N_FIT)
    for key, value in _weights(b).items():
        assert torch.equal(_weights(a)[key], value), key


def test_teach_accepts_a_column_vector_y_with_sklearns_warning(fitted):
    a, b = copy.deepcopy(fitted), copy.deepcopy(fitted)
    with pytest.warns(DataConversionWarning, match="A column-vector y was passed"):
        a.teach(POOL[:5], Y_POOL[:5, None])
    b.teach(POOL[:5], Y_POOL[:5])
    np.testing.assert_array_equal(a.y_labeled_, b.y_labeled_)
    np.testing.assert_array_equal(a.predict_proba(POOL), b.predict_proba(POOL))


@pytest.mark.parametrize("kind", ["str", "pathlib", "bytes"])
def test_save_and_load_accept_any_path_like(fitted, tmp_path, kind):
    path = tmp_path / "learner.skal"
    path = {"str": str(path), "pathlib": path, "bytes": os.fsencode(path)}[kind]
    learner = copy.deepcopy(fitted)
    before = snapshot(learner)
    learner.save(path)
    assert_unchanged(learner, before)
    loaded = ActiveLearner.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(POOL), learner.predict_proba(POOL))
    np.testing.assert_array_equal(loaded.query(POOL, 5), learner.query(POOL, 5))
    assert [p.name for p in tmp_path.iterdir()] == ["learner.skal"]  # no temporary file left


CURVE_VARIANTS = [
    ("numpy-integers", dict(initial_size=np.int64(10), query_size=np.int32(5), n_cycles=np.uint8(1),
                            n_repeats=np.int16(1))),
    ("float64-X", dict(X=X_ALL.astype(np.float64))),
    ("fortran-X", dict(X=np.asfortranarray(X_ALL))),
    ("list-y", dict(y=Y_ALL.tolist())),
    ("dataset-X", dict(X=_dataset(X_ALL))),
]


@pytest.mark.parametrize("name, overrides", CURVE_VARIANTS, ids=[v[0] for v in CURVE_VARIANTS])
def test_active_learning_curve_accepts_the_variant_and_matches_float32(fitted, name, overrides):
    learner = copy.deepcopy(fitted)
    before = snapshot(learner)
    got = _curve(learner, **overrides)
    expected = _curve(learner)
    assert got.n_labeled.tolist() == expected.n_labeled.tolist() == [10, 15]
    np.testing.assert_array_equal(got.scores, expected.scores)
    assert_unchanged(learner, before)


# --- the command line ------------------------------------------------------------------------


def _npz(directory, name, **arrays):
    path = directory / f"{name}.npz"
    np.savez(path, **arrays)
    return str(path)


_GOOD = dict(X=X_ALL, y=Y_ALL)
# (id, argv after "simulate", npz arrays or None, regex of the message). Every refusal is an
# argparse usage error: exit status 2, "skal simulate: error: ..." as the last line of stderr.
CLI = [
    ("initial-not-a-number", ["--initial", "abc"], None, r"argument --initial: must be a positive integer, got abc$"),
    ("query-float", ["--query", "2.5"], None, r"argument --query: must be a positive integer, got 2\.5$"),
    ("cycles-zero", ["--cycles", "0"], None, r"argument --cycles: must be a positive integer, got 0$"),
    ("repeats-negative", ["--repeats", "-1"], None, r"argument --repeats: must be a positive integer, got -1$"),
    ("test-size-not-a-number", ["--test-size", "abc"], None,
     r"argument --test-size: must be a fraction in \(0, 1\), got abc$"),
    ("test-size-one", ["--test-size", "1"], None, r"argument --test-size: must be a fraction in \(0, 1\), got 1$"),
    ("seed-negative", ["--seed", "-1"], None, r"argument --seed: must be an integer in \[0, 2\*\*32 - 1\], got -1$"),
    ("seed-too-large", ["--seed", str(2**32)], None,
     r"argument --seed: must be an integer in \[0, 2\*\*32 - 1\], got 4294967296$"),
    ("device-unknown", ["--device", "bogus"], None,
     r"argument --device: unknown device 'bogus'; use cpu, cuda, cuda:N or mps$"),
    ("selectors-empty", ["--selectors", ""], None,
     r"argument --selectors: no selector given; choose from disal, tidal"),
    ("dataset-unknown", ["--dataset", "cifar"], None, r"argument --dataset: unknown dataset 'cifar'"),
    ("unknown-option", ["--bogus"], None, r"unrecognized arguments: --bogus$"),
    ("device-missing-gpu", ["--device", "cuda:99"], None,
     r"^skal simulate: error: argument --device: cuda:99: "
     r"(this machine has \d+ CUDA device\(s\)|CUDA is not available on this machine)$"),
    ("test-size-too-small", ["--test-size", "0.001"], None,
     r"^skal simulate: error: --test-size 0\.001: cannot split off a stratified test set: The test_size = 2 should be"),
    ("npz-missing", ["--dataset", "MISSING"], None, r"^skal simulate: error: cannot read .*missing\.npz: "),
    ("npz-without-y", [], dict(X=X_ALL), r"^skal simulate: error: cannot read .*\.npz: 'y is not a file"),
    ("npz-lengths", [], dict(X=X_ALL, y=Y_ALL[:-1]), r"\.npz: X and y have different lengths: 80 and 79$"),
    ("npz-nan", [], dict(X=_with(X_ALL, np.nan), y=Y_ALL), r"\.npz: X contains NaN or infinity \(after conversion to float32\)$"),
    ("npz-X-1d", [], dict(X=X_ALL[:, 0], y=Y_ALL),
     r"\.npz: X must have shape \(n_samples, n_features\) or \(n_samples, C, H, W\), got \(80,\)$"),
    ("npz-y-2d", [], dict(X=X_ALL, y=np.c_[Y_ALL, Y_ALL]),
     r"\.npz: y must have shape \(n_samples,\), got \(80, 2\)$"),
    ("npz-X_test-shape", [], dict(_GOOD, X_test=POOL[:, :3], y_test=Y_POOL),
     r"\.npz: X_test has samples of shape \(3,\), but X has samples of shape \(4,\)$"),
    ("npz-X_test-lengths", [], dict(_GOOD, X_test=POOL, y_test=Y_POOL[:3]),
     r"\.npz: X_test and y_test have different lengths: 56 and 3$"),
    ("npz-budget", ["--initial", "50", "--query", "10", "--cycles", "5"], _GOOD,
     r"--initial \+ --cycles \* --query = 50 \+ 5 \* 10 = 100 exceeds the pool of 56 samples$"),
    # the MLP is no longer lazy, so DISAL runs with one epoch (tests/test_cli.py); a head-based
    # selector still cannot run on it
    ("npz-tidal-on-the-mlp", ["--selectors", "tidal"], _GOOD,
     r"--selectors tidal: TiDAL trains a head on the multi-level features of a convolutional net"),
]


@pytest.mark.parametrize("name, argv, arrays, match", CLI, ids=[c[0] for c in CLI])
def test_cli_refuses_bad_options_before_training(name, argv, arrays, match, tmp_path, capsys):
    argv = [tmp_path.joinpath("missing.npz").as_posix() if a == "MISSING" else a for a in argv]
    if arrays is not None:
        argv = ["--dataset", _npz(tmp_path, "data", **arrays), *argv]
    for flag, value in {"--initial": "10", "--query": "5", "--cycles": "1", "--epochs": "2"}.items():
        if flag not in argv:
            argv += [flag, value]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["simulate", *argv, "--quiet", "--out", str(out)])
    assert info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("skal simulate: error: ")  # an unknown option too
    assert re.search(match, message), message
    assert not out.exists()  # nothing was trained or written
