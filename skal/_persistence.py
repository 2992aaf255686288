"""Saving and loading an ActiveLearner without pickle.

A save is one zip file:

- ``learner.json``: the learner's parameters, nested (the net, the selector,
  skorch callbacks), classes and functions named by import path; the small
  fitted state (seed, feature count, history, optimizer settings);
- ``*.npy``: the labeled set, its labels, cycles and reference mask (labels of
  Python strings or numbers as plain arrays, flagged to come back as objects);
- ``tensors.safetensors``: every tensor of the net (weights and buffers of the
  module, heads and criterion, optimizer state, and each training part's
  state, e.g. the snapshot and the training dynamics, as ``parts.<name>.<key>``);
- ``transformers.skops``: a Pipeline's fitted transformers, through
  :mod:`skops.io`, only for Pipeline estimators.

Loading runs no pickle anywhere: arrays are read with ``allow_pickle=False``,
tensors by :mod:`safetensors`, transformers by :mod:`skops.io` with an explicit
trust list. Every name in ``learner.json`` is looked up in the trust list
(:mod:`skal._trust`) and checked to be of the kind its parameter needs before
anything is imported, called or built. The learner is built whole before
``load`` returns.

Only :func:`_learner_state` and :func:`_install_state` read or write the
learner's fitted state (through the interface of :mod:`skal._state`) and the net's;
:func:`_check_tensors`, :func:`_read_tensors` and :func:`_materialize` know the
net's components through skorch's registry of modules, criteria and optimizers,
and the training parts' state through their public ``state_dict`` /
``state_shapes`` / ``load_state_dict``.
"""

import functools
import importlib
import json
import numbers
import re
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from skorch.history import History
from skorch.net import NeuralNet
from torch.nn.parameter import is_lazy

from . import _archive, _fingerprint, _frames, _state, _trust
from ._archive import InvalidSave
from ._bookkeeping import PoolState
from ._data import check_path
from ._training import final_net as _final_net
from ._training import torch_seeded as _torch_seeded
from ._params import (ARRAY_MEMBER, JSON, Untrusted, check_params_size, decode_params, encode, encode_params,
                      names_in, object_params)

FORMAT = 2
TENSORS, TRANSFORMERS = "tensors.safetensors", "transformers.skops"
ARRAYS = ("classes", "X_labeled", "y_labeled", "labeled_cycle", "reference_mask", "labeled_row", "pool_status")
MEMBERS = (JSON, *(f"{name}.npy" for name in ARRAYS), TENSORS)
_SEED_MAX = np.iinfo(np.int32).max  # seeds are drawn in [0, 2**31 - 1)
_PARTS = "parts."  # tensors of training part NAME are saved as "parts.NAME.<key>"
# members beyond MEMBERS: the parameters' arrays and the columns of a labeled set kept as a DataFrame
_MEMBER_PATTERN = re.compile(f"{ARRAY_MEMBER.pattern}|{_frames.MEMBER.pattern}")


class Mismatch(InvalidSave):
    """A save whose state does not fit the learner given as ``like``."""


class NotHere(InvalidSave):
    """A valid save that needs what this machine lacks (a CUDA device)."""


# --- labels -------------------------------------------------------------------------------


def _label_array(values, where):
    """``(plain array, came_from_objects)``: object arrays of str/int/float/bool as plain ones."""
    values = np.asarray(values)
    if values.dtype != object:
        if values.dtype.kind not in "biufU":
            raise TypeError(f"cannot save {where}: labels of dtype {values.dtype}.")
        return values, False
    items = values.tolist()
    kinds = {_label_kind(item) for item in items}
    if None in kinds or len(kinds) > 1:
        names = sorted({type(item).__name__ for item in items})
        raise TypeError(f"cannot save {where}: labels of type {', '.join(names)}; only str, int, "
                        "float or bool labels (one type per learner) can be saved.")
    kind = kinds.pop() if kinds else "U"
    try:
        plain = np.array(items, dtype={"U": str, "i": np.int64, "f": np.float64, "b": bool}[kind])
    except OverflowError:
        raise TypeError(f"cannot save {where}: integer labels beyond 64 bits.") from None
    if kind == "U" and plain.tolist() != items:
        raise TypeError(f"cannot save {where}: a label ends with a NUL character.")
    return plain, True


def _label_kind(item):
    if isinstance(item, (str, np.str_)):
        return "U"
    if isinstance(item, (bool, np.bool_)):
        return "b"
    if isinstance(item, numbers.Integral):
        return "i"
    if isinstance(item, (float, np.floating)):
        return "f"
    return None


# --- the adapters: the only code that touches the learner's and net's fitted state --------


def _components(net):
    """Attribute names of the net's torch modules and criteria: skorch's own registry."""
    return [f"{name}_" for name in (*net._modules, *net._criteria)]


def _optimizers(net):
    return [f"{name}_" for name in net._optimizers]


def _learner_state(learner):
    """What a save holds of a fitted learner beyond its parameters.

    Returns
    -------
    dict
        ``fitted`` and ``net`` (JSON), ``arrays`` (name -> ndarray), ``tensors``
        (name -> tensor) and ``transformers`` (a Pipeline's fitted steps, or None).
    """
    fitted = _state.fitted_state(learner)
    estimator = fitted.estimator
    net = _final_net(estimator)
    classes, classes_objects = _label_array(fitted.classes, "classes_")
    y, y_objects = _label_array(fitted.labeled.y, "y_labeled_")
    tensors, optimizers = {}, {}
    for name in _components(net):
        for key, value in getattr(net, name).state_dict().items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"cannot save estimator_.{name}: its state {key!r} is a "
                                f"{type(value).__name__}, not a tensor.")
            tensors[f"{name}.{key}"] = value
    for name in _optimizers(net):
        optimizer = getattr(net, name)
        state = optimizer.state_dict()
        entries = {}
        for index, values in state["state"].items():
            entries[str(index)] = {}
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{name}.state.{index}.{key}"] = value
                    entries[str(index)][key] = {"__tensor__": True}
                elif value is None or isinstance(value, (bool, int, float)):
                    entries[str(index)][key] = value
                else:
                    raise TypeError(f"cannot save estimator_.{name}: its state holds a "
                                    f"{type(value).__name__} ({key!r}).")
        optimizers[name] = {"class": _trust.qualified_name(type(optimizer)), "state": entries,
                            "param_groups": encode(state["param_groups"], f"estimator_.{name}", True)}
    # the training parts' state (the snapshot, the training dynamics, a head's epoch)
    for name, part in net.parts_.items():
        for key, value in part.state_dict().items():
            tensors[f"{_PARTS}{name}.{key}"] = value
    X, frame, frame_members = fitted.labeled.X, None, {}
    if _frames.is_kept(X):  # samples kept as given (a Pipeline's DataFrame): a member per column
        frame, frame_members = _frames.encode(X)
        X = np.zeros(X.shape, dtype=np.float32)
    return {
        "fitted": {
            **({} if frame is None else {"frame": frame}),
            "seed": int(fitted.seed),
            "stale": bool(fitted.stale),  # a failed teach stays failed
            "n_features_in_": int(fitted.n_features_in),
            "feature_names_in_": (fitted.feature_names_in.tolist()
                                  if fitted.feature_names_in is not None else None),
            "objects": {"classes": classes_objects, "y_labeled": y_objects},
            "pool": (None if fitted.pool is None else
                     {"fingerprint": fitted.pool.fingerprint, "sample_shape": list(fitted.pool.sample_shape)}),
        },
        "net": {
            "history": _history(net),
            "optimizers": optimizers,
            "modules": {name: _trust.qualified_name(type(getattr(net, name))) for name in _components(net)},
            "parts": {name: sorted(part.state_dict()) for name, part in net.parts_.items()},
        },
        "frame_members": frame_members,
        "arrays": {"classes": classes, "X_labeled": X, "y_labeled": y,
                   "labeled_cycle": fitted.labeled.cycle, "reference_mask": fitted.labeled.reference,
                   "labeled_row": fitted.labeled.row,
                   "pool_status": (np.zeros(0, dtype=np.int8) if fitted.pool is None else fitted.pool.status)},
        "tensors": tensors,
        "transformers": ([step for _, step in estimator.steps[:-1]]
                         if isinstance(estimator, Pipeline) else None),
    }


def _history(net):
    def scalar(value):
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(f"cannot save estimator_.history: it records a {type(value).__name__}.")

    return json.loads(json.dumps(net.history.to_list(), default=scalar))


def _build(learner, classes, sample_shape):
    """The learner's fitted selector and its net, configured (not yet initialized)."""
    return _state.build(learner, classes, sample_shape)


def _install_state(learner, selector, estimator, state, tensors, transformers):
    """Put the checked state onto a learner that nothing else holds yet."""
    net = _final_net(estimator)
    fitted, arrays = state["fitted"], state["arrays"]
    with torch.no_grad():
        for name in _components(net):
            prefix = f"{name}."
            getattr(net, name).load_state_dict(
                {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        for name in _optimizers(net):
            record = state["net"]["optimizers"][name]
            optimizer_state = {
                int(index): {key: tensors[f"{name}.state.{index}.{key}"] if isinstance(value, dict) else value
                             for key, value in values.items()}
                for index, values in record["state"].items()}
            getattr(net, name).load_state_dict({"state": optimizer_state,
                                                "param_groups": record["param_groups"]})
    device = torch.device(net.device or "cpu")
    for name, part in net.parts_.items():
        prefix = f"{_PARTS}{name}."
        part.load_state_dict({k[len(prefix):]: v.to(device) for k, v in tensors.items() if k.startswith(prefix)})
    net.history_ = History(state["net"]["history"])
    if transformers is not None:
        estimator.steps = [*zip([name for name, _ in estimator.steps[:-1]], transformers),
                           estimator.steps[-1]]
    names = fitted["feature_names_in_"]
    labeled = _state.LabeledSet(arrays["X_labeled"], arrays["y_labeled"], arrays["labeled_cycle"],
                          arrays["reference_mask"], arrays["labeled_row"])
    pool = (None if fitted["pool"] is None else
            PoolState(arrays["pool_status"], fitted["pool"]["fingerprint"], tuple(fitted["pool"]["sample_shape"])))
    # the learner is complete in one assignment: nothing half-built is ever seen
    _state.install(learner, _state.restored(
        learner, estimator, selector, arrays["classes"], labeled, fitted["seed"], fitted["n_features_in_"],
        None if names is None else np.asarray(names, dtype=object), stale=fitted["stale"], pool=pool))
    return learner


# --- checks of a file's content, before anything is built from it ------------------------


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _expect(condition, member, message, error=InvalidSave):
    if not condition:
        raise error(member, message)


def _check_meta(meta):
    """Type-check learner.json apart from the parameters (checked as they are decoded)."""
    _expect(isinstance(meta, dict), JSON, "not a JSON object")
    _expect(meta.get("format") == FORMAT, JSON,
            f"unsupported save format {meta.get('format')!r} (this skal reads format {FORMAT})")
    _exact_keys(meta, {"format", "skal", "params", "fitted", "net"}, "")
    _expect(isinstance(meta["skal"], str), JSON, "skal: must be the version string of the skal that saved it")
    fitted, net = meta["fitted"], meta["net"]
    _expect(isinstance(fitted, dict), JSON, "fitted: not an object")
    _exact_keys(fitted, {"seed", "stale", "n_features_in_", "feature_names_in_", "objects", "pool"}
                | ({"frame"} if "frame" in fitted else set()), "fitted.")
    pool = fitted["pool"]
    _expect(pool is None or isinstance(pool, dict) and set(pool) == {"fingerprint", "sample_shape"}
            and _fingerprint.is_fingerprint(pool["fingerprint"])
            and isinstance(pool["sample_shape"], list)
            and all(_is_int(d) and d >= 1 for d in pool["sample_shape"]), JSON,
            "fitted.pool: must be null or {fingerprint: a pool fingerprint, sample_shape: positive "
            "integers}")
    _expect(_is_int(fitted["seed"]) and 0 <= fitted["seed"] < _SEED_MAX, JSON,
            f"fitted.seed: must be an integer in [0, {_SEED_MAX}), got {fitted['seed']!r}")
    _expect(isinstance(fitted["stale"], bool), JSON, f"fitted.stale: must be true or false, got "
                                                     f"{fitted['stale']!r}")
    _expect(_is_int(fitted["n_features_in_"]) and fitted["n_features_in_"] >= 1, JSON,
            f"fitted.n_features_in_: must be a positive integer, got {fitted['n_features_in_']!r}")
    names = fitted["feature_names_in_"]
    _expect(names is None or isinstance(names, list) and all(isinstance(n, str) for n in names)
            and len(names) == fitted["n_features_in_"] and len(set(names)) == len(names), JSON,
            "fitted.feature_names_in_: must be null or n_features_in_ distinct strings")
    objects = fitted["objects"]
    _expect(isinstance(objects, dict) and set(objects) == {"classes", "y_labeled"}
            and all(isinstance(v, bool) for v in objects.values()), JSON,
            "fitted.objects: must map classes and y_labeled to true or false")
    _expect(isinstance(net, dict), JSON, "net: not an object")
    _exact_keys(net, {"history", "optimizers", "modules", "parts"}, "net.")
    history = net["history"]
    _expect(isinstance(history, list) and all(
        isinstance(epoch, dict) and all(isinstance(batch, dict) for batch in _batches(epoch))
        for epoch in history), JSON, "net.history: must be a list of epoch records (objects) whose "
                                     "batches are lists of objects")
    _expect(isinstance(net["parts"], dict) and all(
        isinstance(keys, list) and all(isinstance(key, str) for key in keys)
        for keys in net["parts"].values()), JSON,
        "net.parts: must map training part names to lists of their state's keys")
    _expect(isinstance(net["optimizers"], dict) and all(
        isinstance(r, dict) and set(r) == {"class", "state", "param_groups"} and isinstance(r["class"], str)
        and isinstance(r["state"], dict) and isinstance(r["param_groups"], list)
        for r in net["optimizers"].values()), JSON,
        "net.optimizers: must map names to {class, state, param_groups}")
    _expect(isinstance(net["modules"], dict), JSON, "net.modules: not an object")


def _batches(epoch):
    batches = epoch.get("batches", [])
    return batches if isinstance(batches, list) else [None]


def _exact_keys(value, keys, where):
    missing, unknown = sorted(keys - set(value)), sorted(set(value) - keys)
    if missing:
        raise InvalidSave(JSON, f"lacks {where}{missing[0]}")
    if unknown:
        raise InvalidSave(JSON, f"{where}{unknown[0]}: not a field of a skal save")


def _check_headers(headers, fitted):
    """Shapes and dtypes of the arrays, from their npy headers alone (nothing inflated yet)."""
    (x_shape, x_dtype, _), (y_shape, y_dtype, _) = headers["X_labeled"], headers["y_labeled"]
    (c_shape, c_dtype, _) = headers["classes"]
    _expect(x_dtype == np.float32 and len(x_shape) >= 2 and x_shape[0] >= 1, "X_labeled.npy",
            f"must be a float32 array of shape (n_labeled, n_features, ...), got {x_dtype} {x_shape}")
    n = x_shape[0]
    _expect(x_shape[1] == fitted["n_features_in_"], "X_labeled.npy",
            f"has {x_shape[1]} features but learner.json says n_features_in_="
            f"{fitted['n_features_in_']}")
    _expect(fitted["feature_names_in_"] is None or len(x_shape) == 2, "X_labeled.npy",
            "feature names are only recorded for 2-d samples")
    for name, dtype in (("labeled_cycle", np.int64), ("reference_mask", np.bool_), ("labeled_row", np.int64)):
        shape, got, _ = headers[name]
        _expect(got == dtype and shape == (n,), f"{name}.npy",
                f"must be a {np.dtype(dtype)} array of shape ({n},) like X_labeled, got {got} {shape}")
    (p_shape, p_dtype, _) = headers["pool_status"]
    _expect(p_dtype == np.int8 and len(p_shape) == 1 and (p_shape[0] == 0) == (fitted["pool"] is None)
            and (fitted["pool"] is None or _fingerprint.is_fingerprint(fitted["pool"]["fingerprint"], p_shape[0])),
            "pool_status.npy", f"must be an int8 array with a row per pool row (none without a pool), "
                               f"got {p_dtype} {p_shape}")
    _expect(fitted["pool"] is None or list(x_shape[1:]) == fitted["pool"]["sample_shape"], "X_labeled.npy",
            "samples of another shape than the pool's")
    _expect(y_shape == (n,) and y_dtype.kind in "biufU", "y_labeled.npy",
            f"must be labels of shape ({n},) like X_labeled, got {y_dtype} {y_shape}")
    _expect(len(c_shape) == 1 and c_shape[0] >= 1 and c_dtype.kind in "biufU", "classes.npy",
            f"must be a non-empty 1-d array of labels, got {c_dtype} {c_shape}")
    _expect((y_dtype.kind == "U") == (c_dtype.kind == "U"), "y_labeled.npy",
            f"labels of dtype {y_dtype} cannot be among classes of dtype {c_dtype}")
    # a label longer than every class cannot be one of them
    _expect(y_dtype.kind != "U" or y_dtype.itemsize <= c_dtype.itemsize, "y_labeled.npy",
            f"labels of dtype {y_dtype} are longer than every class ({c_dtype})")


def _check_values(arrays, fitted):
    classes, y = arrays["classes"], arrays["y_labeled"]
    cycle, mask, X = arrays["labeled_cycle"], arrays["reference_mask"], arrays["X_labeled"]
    _expect(classes.dtype.kind != "f" or np.isfinite(classes).all(), "classes.npy", "holds NaN or infinity")
    _expect(bool(np.all(classes[1:] > classes[:-1])), "classes.npy", "must be sorted and unique")
    outside = np.flatnonzero(~np.isin(y, classes))
    if len(outside):
        raise InvalidSave("y_labeled.npy", f"label {y[outside[0]].item()!r} (row {outside[0]}) is "
                                           "not among classes")
    _expect(cycle[0] == 0 and bool(np.all(np.diff(cycle) >= 0)), "labeled_cycle.npy",
            "cycles must start at 0 and never decrease")
    _expect(not mask.all(), "reference_mask.npy", "holds every sample out: nothing to train on")
    _expect(not (mask & (cycle > 0)).any(), "reference_mask.npy",
            "only samples of the initial fit (cycle 0) can be held out")
    _expect(bool(np.isfinite(X).all()), "X_labeled.npy", "holds NaN or infinity")
    status, row = arrays["pool_status"], arrays["labeled_row"]
    _expect(bool(np.isin(status, (0, 1, 2)).all()), "pool_status.npy", "holds a status other than 0, 1, 2")
    _expect(bool((row >= -1).all()) and bool((row < len(status)).all()), "labeled_row.npy",
            f"rows must be -1 (not from the pool) or in [0, {len(status)})")
    in_pool = row[row >= 0]
    _expect(len(np.unique(in_pool)) == len(in_pool), "labeled_row.npy", "holds a pool row twice")
    _expect(np.array_equal(np.sort(in_pool), np.flatnonzero(status == 1)), "pool_status.npy",
            "the labeled rows (status 1) are not the rows of labeled_row.npy")
    for name in ("classes", "y_labeled"):
        if fitted["objects"][name]:
            arrays[name] = arrays[name].astype(object)


def _check_tensors(header, net, net_json, n_train, n_classes, error):
    """Every tensor the net needs is in the file with its shape, and nothing else is.

    Returns the optimizers' checked parameter groups.
    """
    present = {key: tuple(entry["shape"]) for key, entry in header.items()}
    expected, param_keys = {}, {}
    for name in _components(net):
        module = getattr(net, name)
        for key, value in module.state_dict().items():
            expected[f"{name}.{key}"] = None if is_lazy(value) else tuple(value.shape)
        for key, value in module.named_parameters():
            param_keys[id(value)] = f"{name}.{key}"
    # the modules first: a different architecture is named by its weights
    _compare(present, expected, lambda key: "." in key and key.split(".")[0] in _components(net),
             error)
    records = net_json["optimizers"]
    if set(records) != set(_optimizers(net)):
        raise error(JSON, f"net.optimizers: the file has {sorted(records)}, the net "
                          f"{sorted(_optimizers(net))}")
    groups = {}
    for name in _optimizers(net):
        optimizer, record = getattr(net, name), records[name]
        own = _trust.qualified_name(type(optimizer))
        if record["class"] != own:
            raise error(JSON, f"net.optimizers.{name}: the file holds the state of {record['class']}, "
                              f"the net's optimizer is {own}")
        groups[name] = _check_param_groups(record["param_groups"], optimizer, name, error)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for index, entries in record["state"].items():
            if not (index.isdigit() and int(index) < len(params) and isinstance(entries, dict)):
                raise error(JSON, f"net.optimizers.{name}.state: {index!r} is not a parameter index")
            shape = present.get(param_keys.get(id(params[int(index)])))
            for key, value in entries.items():
                if value == {"__tensor__": True}:
                    # a running average (momentum_buffer, exp_avg...) has its parameter's shape;
                    # only a count (step) or a scalar factor may be 0-d
                    expected[f"{name}.state.{index}.{key}"] = (
                        shape if key in _PARAM_SHAPED and shape is not None else _ScalarOr(shape))
                elif not (value is None or isinstance(value, (bool, int, float))):
                    raise error(JSON, f"net.optimizers.{name}.state.{index}.{key}: not a number")
    for name, part in net.parts_.items():
        prefix = f"{_PARTS}{name}."
        # keys "<k>.<key>" come in groups (a snapshot per kept epoch): a group present in the
        # file must be whole; a part that never trained holds nothing (a snapshot of a lazy net)
        saved = {_group(key[len(prefix):]) for key in present if key.startswith(prefix)}
        for key, (shape, _) in part.state_spec(net).items():
            if _group(key) not in saved:
                continue
            if shape and shape[0] is None:  # a row per training sample: at most n_train
                rows = present.get(prefix + key, (0,))[:1] or (0,)
                if rows[0] > n_train:
                    raise error(TENSORS, f"{prefix}{key} has {rows[0]} rows for {n_train} training samples")
                shape = (rows[0], *shape[1:])
            expected[prefix + key] = shape
    _compare(present, expected, lambda key: True, error)
    return groups


def _group(key):
    head, _, rest = key.partition(".")
    return head if head.isdigit() and rest else ""


def _compare(present, expected, selected, error):
    problems = []
    missing = [key for key in expected if key not in present and selected(key)]
    unexpected = [key for key in present if key not in expected and selected(key)]
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"not in the net: {_some(unexpected)}")
    for key, shape in expected.items():
        got = present.get(key)
        if got is None or shape is None or not selected(key):
            continue
        if isinstance(shape, _ScalarOr):
            if got not in ((), shape.shape):
                problems.append(f"{key} has shape {list(got)} in the file, [] or "
                                f"{list(shape.shape or ())} in the net")
        elif got != shape:
            problems.append(f"{key} has shape {list(got)} in the file, {list(shape)} in the net")
    if problems:
        raise error(TENSORS, "; ".join(problems))


# optimizer state that has its parameter's shape in every torch optimizer that keeps it
# (SGD, Adam(W), Adamax, NAdam, RAdam, Adagrad, Adadelta, RMSprop, Rprop, ASGD); other keys (step,
# eta, mu, mu_product, Adafactor's factored rows) are a scalar or the parameter's shape
_PARAM_SHAPED = frozenset({"momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "exp_inf",
                           "square_avg", "acc_delta", "sum", "grad_avg", "prev", "step_size", "ax"})


class _ScalarOr:
    """An optimizer state tensor: a scalar (``step``) or the shape of its parameter."""

    def __init__(self, shape):
        self.shape = shape


def _some(keys, limit=5):
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _check_param_groups(encoded, optimizer, name, error):
    from ._params import _Decoder

    where = f"net.optimizers.{name}.param_groups"
    groups = _Decoder(None).value(encoded, where, None, 3)
    own = optimizer.state_dict()["param_groups"]
    if not (isinstance(groups, list) and len(groups) == len(own) and all(isinstance(g, dict) for g in groups)):
        raise error(JSON, f"{where}: must be {len(own)} parameter group(s), as the net's optimizer has")
    for i, (group, mine) in enumerate(zip(groups, own)):
        missing = sorted(set(mine) - set(group))
        if missing:
            raise error(JSON, f"{where}[{i}]: lacks {missing[0]!r}, which the net's optimizer has")
        for key in set(group) - set(mine):  # e.g. initial_lr, which LR schedulers add
            if not (group[key] is None or isinstance(group[key], (bool, int, float))):
                raise error(JSON, f"{where}[{i}].{key}: must be a number, got {group[key]!r}")
        if group["params"] != mine["params"]:
            raise error(JSON, f"{where}[{i}].params: must be {mine['params']}")
        for key, value in group.items():
            if key in mine and value is not None and mine[key] is not None and _category(value) != _category(mine[key]):
                raise error(JSON, f"{where}[{i}].{key}: must be {_category(mine[key])}, got {value!r}")
    return groups


def _category(value):
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, numbers.Real):
        return "a number"
    if isinstance(value, (tuple, list)):
        return "a sequence"
    return type(value).__name__


def _read_tensors(archive, net):
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    data = archive.read_bytes(TENSORS)
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise InvalidSave(TENSORS, f"not a valid safetensors file: {error}") from error
    own = {f"{name}.{key}": value.dtype for name in _components(net)
           for key, value in getattr(net, name).state_dict().items()}
    own.update({f"{_PARTS}{name}.{key}": dtype for name, part in net.parts_.items()
                for key, (_, dtype) in part.state_spec(net).items()})
    for key, value in tensors.items():
        dtype = own.get(key)
        if dtype is not None and value.dtype != dtype:
            raise InvalidSave(TENSORS, f"{key} has dtype {value.dtype} in the file, {dtype} in the net")
    return tensors


def _load_transformers(archive, template, trust, error):
    """A Pipeline's fitted transformers from the skops member, checked against ``template``."""
    import skops.io

    data = archive.read_bytes(TRANSFORMERS)
    _archive.check_stored_zip(data, TRANSFORMERS)
    steps = [step for _, step in template.steps[:-1]]
    allowed = {_trust.qualified_name(type(step)) for step in steps}
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
        refused = [name for name in untrusted if name not in allowed and not trust.is_trusted(name)]
        if refused:
            raise Untrusted(TRANSFORMERS, f"names {refused[0]}, which is not on the trust list; if you "
                                          f"trust it, pass trusted=[{refused[0]!r}]")
        loaded = skops.io.loads(data, trusted=untrusted)
    except InvalidSave:
        raise
    except Exception as error:  # skops parses untrusted bytes: any failure is a bad member
        raise InvalidSave(TRANSFORMERS, f"not a valid skops file: {error}") from error
    if not (isinstance(loaded, list) and len(loaded) == len(steps)):
        raise error(TRANSFORMERS, f"must hold the {len(steps)} fitted transformer(s) of the Pipeline")
    for (name, step), fitted in zip(template.steps[:-1], loaded):
        if isinstance(step, str) or step is None:
            if fitted != step:
                raise error(TRANSFORMERS, f"step {name!r}: must be {step!r}")
            continue
        if type(fitted) is not type(step) or _params_json(fitted) != _params_json(step):
            raise error(TRANSFORMERS, f"step {name!r}: holds a {type(fitted).__name__} with other "
                                      "parameters than the Pipeline's")
        try:
            check_is_fitted(fitted)
        except Exception:
            raise error(TRANSFORMERS, f"step {name!r}: is not fitted") from None
    return loaded


def _params_json(estimator):
    return json.dumps(encode(object_params(estimator), "step"), sort_keys=True)


# --- save / load -----------------------------------------------------------------------------


def _members(learner):
    """Every member of the save of ``learner``: name -> (bytes, compressed)."""
    from . import __version__

    arrays = []
    params = encode_params(learner, arrays)
    state = _learner_state(learner)
    meta = {"format": FORMAT, "skal": __version__, "params": params, "fitted": state["fitted"],
            "net": state["net"]}
    members = {JSON: (json.dumps(meta).encode(), True)}
    for i, array in enumerate(arrays):
        members[f"params.{i}.npy"] = (_archive.npy_bytes(array), False)
    for name in ARRAYS:
        members[f"{name}.npy"] = (_archive.npy_bytes(state["arrays"][name]), False)
    for name, array in state["frame_members"].items():
        members[name] = (_archive.npy_bytes(array), False)
    members[TENSORS] = (_safetensors_bytes(state["tensors"]), False)
    if state["transformers"] is not None:
        import skops.io

        try:
            members[TRANSFORMERS] = (skops.io.dumps(state["transformers"]), False)
        except Exception as error:  # skops raises whatever its type handlers raise
            raise TypeError(f"cannot save estimator_: skops cannot store its fitted transformers: "
                            f"{error}") from error
    return members


def _safetensors_bytes(tensors):
    from safetensors.torch import save as save_safetensors

    plain, storages = {}, set()
    for key, value in tensors.items():
        value = value.detach().to("cpu")
        storage = value.untyped_storage()
        if storage.nbytes() and (storage.data_ptr() in storages or storage.nbytes() != value.nbytes
                                 or not value.is_contiguous()):
            value = value.contiguous().clone()  # safetensors refuses shared or partial storage
        storages.add(value.untyped_storage().data_ptr())
        plain[key] = value
    return save_safetensors(plain)


def save(learner, path):
    target, existing = _archive.resolve_target(path)
    members = _members(learner)  # any TypeError names the parameter before anything is written
    _archive.write_archive(target, existing, members)


def _refused(params, cls=None):
    """``"learner.json:<field path>"`` of every value in ``params`` that a file may not set.

    ``cls`` is the learner's class; its own parameters have no value rule that needs it (only a
    net's numbers do), so a file is read without it (this module never imports the learner's).
    """
    owner = _trust.qualified_name(cls) if cls is not None else None
    return {f"{JSON}:{path}" for path, _, kind in _trust.refused_values(params, owner, cls)
            if kind == "untrusted"}


def check_savable(learner):
    """Encode ``learner`` as a save would, without writing; the names a load must trust, and
    the values a load refuses (``"learner.json:<field path>"``)."""
    params = encode_params(learner, [])
    names = names_in(params)
    refused = _refused(params, type(learner))
    if hasattr(learner, "estimator_"):
        members = _members(learner)
        if TRANSFORMERS in members:
            import skops.io

            names |= set(skops.io.get_untrusted_types(data=members[TRANSFORMERS][0]))
    return sorted({name for name in names if _trust.default_lookup(name) is None} | refused)


def get_untrusted_types(path):
    """The classes and functions a save names beyond the default trust list, and the values
    it sets that a load refuses.

    In the manner of :func:`skops.io.get_untrusted_types`: read the names in
    ``path`` without importing or building anything, review them, and pass
    those you trust to :meth:`ActiveLearner.load` as ``trusted=``. Values that a
    file may not set (``compile=True``, ``module__weights``, a DataLoader's
    ``collate_fn``...) are listed as ``"learner.json:<field path>"``; no
    ``trusted=`` entry lets a file set them: load with ``like=`` instead.

    Parameters
    ----------
    path : str or path-like
        A file written by :meth:`ActiveLearner.save`.

    Returns
    -------
    list of str
        Sorted dotted names (``"mypkg.nets.MyNet"``) and refused values
        (``"learner.json:params.estimator.compile"``); empty when every name is
        on the default list and every value may be set by a file.

    Raises
    ------
    ValueError
        If the file is not a valid save.

    See Also
    --------
    ActiveLearner.load : Loads, with ``trusted=`` or ``like=``.
    ActiveLearner.check_savable : The same list, before saving.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from skal import ActiveLearner, ActiveNet, get_untrusted_types
    >>> from skal.models import MLP
    >>> X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    >>> learner = ActiveLearner(ActiveNet(MLP, max_epochs=1, verbose=0), random_state=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "campaign.skal")
    >>> learner.fit(X, (X[:, 0] > 0).astype(int)).save(path)
    >>> get_untrusted_types(path)
    []
    """
    path = check_path(path)
    try:
        return _untrusted_types(path)
    except InvalidSave as error:
        raise ValueError(f"{path} is not a valid skal save: {error}") from error


def _untrusted_types(path):
    with _archive.Archive(path, MEMBERS, (TRANSFORMERS,), _MEMBER_PATTERN) as archive:
        meta = archive.read_json(JSON)
        _check_meta(meta)
        check_params_size(meta["params"])
        names = names_in(meta["params"])
        refused = _refused(meta["params"])
        if archive.has(TRANSFORMERS):
            import skops.io

            data = archive.read_bytes(TRANSFORMERS)
            _archive.check_stored_zip(data, TRANSFORMERS)
            try:
                names |= set(skops.io.get_untrusted_types(data=data))
            except Exception as error:  # skops parses untrusted bytes
                raise InvalidSave(TRANSFORMERS, f"not a valid skops file: {error}") from error
    return sorted({name for name in names if _trust.default_lookup(name) is None} | refused)


def load(cls, path, trusted=None, like=None):
    trust = _trust.TrustList(trusted)
    if like is not None and not isinstance(like, cls):
        raise TypeError(f"like must be an {cls.__name__} (built like the saved one), got "
                        f"{type(like).__name__}.")
    try:
        return _load(cls, path, trust, like)
    except NotHere as error:
        raise ValueError(f"{path} cannot be loaded here: {error}") from error
    except Mismatch as error:
        raise ValueError(f"{path}: the saved learner does not fit like: {error}") from error
    except Untrusted as error:
        raise ValueError(f"{path}: {error}") from error
    except InvalidSave as error:
        raise ValueError(f"{path} is not a valid skal save: {error}") from error


def _load(cls, path, trust, like):
    error = InvalidSave if like is None else Mismatch
    with _archive.Archive(path, MEMBERS, (TRANSFORMERS,), _MEMBER_PATTERN) as archive:
        meta = archive.read_json(JSON)
        _check_meta(meta)
        if like is None:
            def read_array(name):
                if not archive.has(name):
                    raise InvalidSave(name, "missing from the archive")
                return archive.npy_array(name, archive.npy_header(name))

            learner, used = decode_params(cls, meta["params"], trust, read_array)
            unused = sorted(name for name in archive.names() if ARRAY_MEMBER.match(name) and name not in used)
            if unused:
                raise InvalidSave(unused[0], "no parameter refers to this member")
        else:
            learner = clone(like)
            learner._validate_params()
        headers = {name: archive.npy_header(f"{name}.npy") for name in ARRAYS}
        _check_headers(headers, meta["fitted"])
        arrays = {name: archive.npy_array(f"{name}.npy", headers[name]) for name in ARRAYS}
        _check_values(arrays, meta["fitted"])
        arrays["X_labeled"] = _read_frame(archive, meta["fitted"], arrays["X_labeled"])
        if not isinstance(_final_net(learner.estimator), NeuralNet):
            raise error(JSON if like is None else "like",
                        "params.estimator: must be an ActiveNet or a Pipeline ending in one")
        pipeline = isinstance(learner.estimator, Pipeline)
        if archive.has(TRANSFORMERS) != pipeline:
            raise error(TRANSFORMERS, "missing: the estimator is a Pipeline" if pipeline else
                        "present, but the estimator is not a Pipeline")
        if learner.classes is not None and not np.array_equal(np.unique(np.asarray(learner.classes)),
                                                              arrays["classes"]):
            raise error(JSON if like is None else "classes.npy",
                        f"classes: the saved classes_ {arrays['classes'].tolist()} are not the "
                        f"parameter's {np.unique(np.asarray(learner.classes)).tolist()}")
        header = archive.safetensors_header(TENSORS)
        try:
            selector, estimator = _build(learner, arrays["classes"], arrays["X_labeled"].shape[1:])
        except (TypeError, ValueError) as failure:
            raise error(JSON if like is None else "like",
                        f"the selector cannot be set up: {failure}") from failure
        transformers = _load_transformers(archive, estimator, trust, error) if pipeline else None
        sample = arrays["X_labeled"][:1]
        try:
            for step in transformers or ():
                if not isinstance(step, str) and step is not None:
                    sample = step.transform(sample)
            sample = np.asarray(sample.toarray() if hasattr(sample, "toarray") else sample, dtype=np.float32)
        except Exception as failure:  # fitted state from the file that does not fit its samples
            raise error(TRANSFORMERS, f"the fitted transformers cannot transform the saved samples: "
                                      f"{failure}") from failure
        net = _built(learner, selector, estimator, sample, error, archive.info(TENSORS).file_size)
        n_train = int((~arrays["reference_mask"]).sum())
        groups = _check_tensors(header, net, meta["net"], n_train, len(arrays["classes"]), error)
        tensors = _read_tensors(archive, net)
    net_state = {**meta["net"], "optimizers": {name: {**record, "param_groups": groups[name]}
                                               for name, record in meta["net"]["optimizers"].items()}}
    state = {"fitted": meta["fitted"], "net": net_state, "arrays": arrays}
    try:
        return _install_state(learner, selector, estimator, state, tensors, transformers)
    except (RuntimeError, ValueError, KeyError, TypeError) as failure:
        raise error(TENSORS, f"cannot be restored onto the net: {failure}") from failure


def _read_frame(archive, fitted, placeholder):
    """The labeled set kept in its own form (:mod:`skal._frames`), or ``placeholder`` for an array."""
    frame_members = sorted(name for name in archive.names() if _frames.MEMBER.match(name))
    if "frame" not in fitted:
        if frame_members:
            raise InvalidSave(frame_members[0], "no fitted.frame in learner.json refers to this member")
        return placeholder
    read = []

    def member(name):
        if not archive.has(name):
            raise InvalidSave(name, "missing from the archive")
        read.append(name)
        return archive.npy_array(name, archive.npy_header(name))

    try:
        X = _frames.decode(fitted["frame"], member)
    except ValueError as failure:
        raise InvalidSave(JSON, str(failure)) from None
    unused = sorted(set(frame_members) - set(read))
    if unused:
        raise InvalidSave(unused[0], "no column of fitted.frame refers to this member")
    names = fitted["feature_names_in_"]
    if X.shape != placeholder.shape or (names is not None and list(X.columns) != names):
        raise InvalidSave(JSON, "fitted.frame: its columns are not those of X_labeled.npy and feature_names_in_")
    return X


def _built(learner, selector, estimator, sample, error, tensor_bytes):
    """The initialized net of ``estimator``, its lazy modules given their shapes by ``sample``.

    Before anything is allocated, the size of the weights that the parameters describe is
    checked against the bytes of the tensors member, which must hold them all.
    """
    where = JSON if error is InvalidSave else "like"
    net = _final_net(estimator)
    device = torch.device(net.device or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        if error is Mismatch:
            raise NotHere("like", f"its net's device is {net.device!r}, which this machine lacks")
        raise NotHere(where, f"params.estimator.device is {net.device!r}, which this machine lacks; "
                             "build the learner with device='cpu' and load with like=learner")
    try:
        size = _weights_bytes(net)
    except _ProbeTooSlow:
        raise error(where, f"the net that the parameters describe takes more than {PROBE_SECONDS:g} s of "
                           "CPU time to build on the meta device (where nothing is allocated), more "
                           "than any saved net; refused before it is built") from None
    if size is not None and size > tensor_bytes:
        raise error(TENSORS, f"holds {tensor_bytes} bytes, fewer than the {size} bytes of weights "
                             "that the parameters describe")
    # Exception, not narrower: trusted classes given the file's arguments fail in their own ways
    try:
        # initialization draws weights that the saved ones replace: leave torch's RNG as it was
        with _torch_seeded(0, net.device):
            net.initialize()
    except Exception as failure:
        raise error(where, f"the net cannot be built from its parameters: {failure}") from failure
    try:
        with _torch_seeded(0, net.device):
            _materialize(net, sample)
    except Exception as failure:
        raise error(where, f"the net cannot run on the saved samples: {failure}") from failure
    return net


PROBE_SECONDS = 1.0  # CPU time the meta-device size probe may take (ResNet-18: 0.03 s)


_FIND_AND_LOAD = importlib._bootstrap._find_and_load.__code__


@functools.cache
def _warm_up():
    """Import, once, what any net's first build imports (torch's first optimizer imports
    torch._dynamo: 2.5 s of CPU, which is no part of the net's own cost)."""
    with torch.device("meta"):
        torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)


class _ProbeTooSlow(BaseException):
    """Raised by the probe's profiler hook (a BaseException: no library code catches it)."""


def _weights_bytes(net):
    """Bytes of the net's weights and buffers, from an initialization on the meta device.

    Nothing is allocated, so a file naming a net of terabytes is refused before it is built;
    None when the net cannot be built there (it is then checked after the real build). The
    build is stopped once it has taken PROBE_SECONDS of CPU time (a net of millions of layers
    allocates nothing on the meta device, but takes minutes to build): _ProbeTooSlow.
    """
    probe = clone(net).set_params(device="meta")
    _warm_up()
    deadline = time.process_time() + PROBE_SECONDS

    imports = []  # start times of the imports under way: their time is not the net's
    here = sys._getframe()

    def stop(frame, event, arg):
        nonlocal deadline
        if frame.f_code is _FIND_AND_LOAD:
            if event == "call":
                imports.append(time.process_time())
            elif event == "return" and imports:
                deadline += time.process_time() - imports.pop()
        elif event == "call" and not imports and time.process_time() > deadline:
            # Raise only inside this probe: a hook left behind (an interrupt on the line that
            # removes it) removes itself instead.
            caller = frame
            while caller is not None and caller is not here:
                caller = caller.f_back
            if caller is None:
                sys.setprofile(None)
                return
            raise _ProbeTooSlow()

    guard = sys.getprofile() is None  # never replace a profiler the user runs
    try:
        if guard:
            sys.setprofile(stop)
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe.initialize()
        return sum(value.numel() * value.element_size() for name in _components(probe)
                   for value in getattr(probe, name).state_dict().values()
                   if isinstance(value, torch.Tensor) and not is_lazy(value))
    except Exception:  # e.g. a module that computes a buffer from data in __init__
        return None
    finally:
        if guard:
            sys.setprofile(None)


def _materialize(net, sample):
    """Give lazy modules (LazyLinear...) their shapes with one forward pass, as training would.

    Their parameters have no shape before it, so the saved ones could not be checked.
    """
    heads = [getattr(net, name) for name in _components(net)
             if name not in ("module_", "criterion_") and isinstance(getattr(net, name), torch.nn.Module)]
    modules = [net.module_, *heads]
    if not any(is_lazy(value) for module in modules for value in module.state_dict().values()):
        return
    levels, handles = {}, []
    layers = list(getattr(net, "feature_layers_", ())) if heads else []
    for name in layers:
        hook = (lambda key: lambda module, args, out: levels.__setitem__(key, out))(name)
        handles.append(net.module_.get_submodule(name).register_forward_hook(hook))
    modes = [module.training for module in modules]
    try:
        for module in modules:
            module.eval()
        with torch.no_grad():  # not inference_mode: the parameters stay trainable
            net.module_(torch.as_tensor(sample, device=net.device))
            for head in heads:
                head([levels[name] for name in layers])
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in zip(modules, modes):
            module.train(mode)
