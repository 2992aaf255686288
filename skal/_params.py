"""Parameters <-> JSON for saves, with every name checked against the trust list.

Saving writes each parameter value as JSON: numbers, strings, containers and small
arrays as themselves (tuples and dicts tagged), classes and functions by import
path, and objects with ``get_params`` (estimators, selectors, callbacks, skorch's
``ValidSplit``) as their class and parameters. Loading rebuilds them with
:class:`_Decoder`, which looks every name up in :class:`skal._trust.TrustList`
and checks its kind for the parameter it fills before importing, calling or
instantiating anything.
"""

import inspect
import numbers
import re

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from skorch.callbacks import LRScheduler
from skorch.dataset import ValidSplit
from skorch.net import NeuralNet

from . import _archive, _trust
from ._archive import InvalidSave

JSON = "learner.json"
_NET_SLOTS = {"module": "module", "criterion": "criterion", "optimizer": "optimizer",
              "callbacks": "callbacks", "train_split": "split", "dataset": "dataset",
              "iterator_train": "iterator", "iterator_valid": "iterator",
              "torch_load_kwargs": "torch_load_kwargs"}
_CLASS_KINDS = ("module", "criterion", "optimizer", "lr_scheduler", "dataset", "iterator")
_TAGS = {"__tuple__": (), "__dict__": (), "__array__": ("dtype", "shape"), "__npy__": (), "__type__": (),
         "__function__": (), "__object__": ("params",), "__device__": (), "__torch_dtype__": ()}
INLINE_ARRAY = 1024  # elements; larger arrays in parameters (an ISAL reference set) go to npy members
ARRAY_MEMBER = re.compile(r"^params\.[0-9]{1,6}\.npy$")
_DTYPE = re.compile(r"^[<>|=]?(b1|[iu][1248]|f[248]|U[0-9]{1,6})$")


class Untrusted(InvalidSave):
    """A file that names something outside the trust list."""


# --- parameters -> JSON ----------------------------------------------------------------


def _import_path(obj, where):
    name = _trust.qualified_name(obj)
    if "<" in name:  # <lambda>, <locals>
        raise TypeError(f"cannot save {where}: {obj!r} is not importable (a lambda, or defined "
                        "inside a function); define it at module level, or use joblib.dump.")
    module = "numpy" if isinstance(obj, np.ufunc) else obj.__module__
    return f"{module}:{name[len(module) + 1:]}"


def encode(value, where, data_only=False, arrays=None):
    """JSON form of a parameter value; ``where`` names it in a TypeError.

    With ``arrays`` (a list), arrays of more than INLINE_ARRAY elements are appended to it and
    named by their member (``{"__npy__": "params.<i>.npy"}``) instead of written out as JSON.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        dtype = _array_dtype(value, where)
        if arrays is not None and value.size > INLINE_ARRAY and dtype != "object":
            arrays.append(value)
            return {"__npy__": f"params.{len(arrays) - 1}.npy"}
        return {"__array__": _array_list(value, where), "dtype": dtype, "shape": list(value.shape)}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, f"{where}[{i}]", data_only, arrays) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode(v, f"{where}[{i}]", data_only, arrays) for i, v in enumerate(value)]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"cannot save {where}: a dict key {bad[0]!r} is not a string.")
        return {"__dict__": {k: encode(v, f"{where}[{k!r}]", data_only, arrays) for k, v in value.items()}}
    if isinstance(value, torch.device):
        return {"__device__": str(value)}
    if isinstance(value, torch.dtype):
        return {"__torch_dtype__": str(value).removeprefix("torch.")}
    if data_only:
        raise TypeError(f"cannot save {where}: a {type(value).__name__} where only data can be.")
    if inspect.isclass(value):
        return {"__type__": _import_path(value, where)}
    if _trust.is_function(value):
        return {"__function__": _import_path(value, where)}
    if hasattr(value, "get_params") or isinstance(value, ValidSplit):
        return {"__object__": _import_path(type(value), where),
                "params": {k: _encode_param(type(value), k, v, f"{where}.{k}", arrays)
                           for k, v in object_params(value).items()}}
    if isinstance(value, torch.nn.Module):
        raise TypeError(f"cannot save {where}: a module instance ({type(value).__name__}); pass the "
                        "class and its arguments (module=MyNet, module__width=...) instead.")
    raise TypeError(
        f"cannot save {where}: a {type(value).__name__}; only numbers, strings, arrays, containers, "
        "importable classes and functions, and objects with get_params can be saved without "
        "pickle (use joblib.dump for anything else)."
    )


def _encode_param(owner, key, value, where, arrays=None):
    if key == "memory" and value is not None and issubclass(owner, BaseEstimator):
        raise TypeError(f"cannot save {where}: a cache location; a loaded learner never caches "
                        "(joblib's cache reads pickles), so set it to None before saving.")
    return encode(value, where, arrays=arrays)


def object_params(value):
    if isinstance(value, ValidSplit) and not hasattr(value, "get_params"):
        return {"cv": value.cv, "stratified": value.stratified, "random_state": value.random_state}
    # skorch's get_params also lists private bookkeeping (``_params_to_validate``),
    # which its __init__ rebuilds
    return {k: v for k, v in value.get_params(deep=False).items() if not k.startswith("_")}


def _array_dtype(value, where):
    if value.dtype == object:
        return "object"
    if value.dtype.kind not in "biufU":
        raise TypeError(f"cannot save {where}: an array of dtype {value.dtype}.")
    return value.dtype.str


def _array_list(value, where):
    items = value.tolist()
    if value.dtype == object:
        for item in value.reshape(-1).tolist():
            if not isinstance(item, (str, bool, int, float)):
                raise TypeError(f"cannot save {where}: an object array holding a "
                                f"{type(item).__name__}.")
    return items


def encode_params(learner, arrays=None):
    return {k: _encode_param(type(learner), k, v, k, arrays)
            for k, v in learner.get_params(deep=False).items()}


def names_in(value):
    """Every class or function name (dotted) in an encoded value."""
    names, stack = set(), [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for tag in ("__type__", "__function__", "__object__"):
                if isinstance(item.get(tag), str):
                    names.add(item[tag].replace(":", ".", 1))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return names


# --- JSON -> parameters ----------------------------------------------------------------


def _param_kind(owner, key, learner_cls=None):
    if learner_cls is not None and issubclass(owner, learner_cls):
        return {"estimator": "learner_estimator", "selector": "selector"}.get(key)
    if issubclass(owner, NeuralNet):
        return _NET_SLOTS.get(key)
    if issubclass(owner, LRScheduler) and key == "policy":
        return "policy"
    if issubclass(owner, Pipeline) and key == "steps":
        return "steps"
    if issubclass(owner, BaseEstimator) and key == "memory":
        return "none"
    return None


class _Decoder:
    """Rebuild parameters from ``learner.json``, checking every name and its kind first."""

    def __init__(self, trust, read_array=None, learner_cls=None):
        self.trust, self.read_array, self.members = trust, read_array, set()
        self.learner_cls = learner_cls  # the class being loaded: its estimator and selector are checked

    def params(self, owner, params, where, depth):
        if not isinstance(params, dict):
            raise InvalidSave(JSON, f"{where}: the parameters must be a JSON object")
        # Values no save holds (out of bounds) are refused first; then names and kinds (a name
        # off the list is named as such), then the values a file may not set: all before
        # ``owner`` is built with them (a nested object's values were checked before it was).
        refused = _trust.param_refusals(_trust.qualified_name(owner), owner, params, where)
        for at, reason, kind in refused:
            if kind != "untrusted":
                raise InvalidSave(JSON, f"{at}: {reason}")
        decoded = {k: self.value(v, f"{where}.{k}", _param_kind(owner, k, self.learner_cls), depth + 1)
                   for k, v in params.items()}
        for at, reason, _ in refused:
            raise Untrusted(JSON, f"{at}: {reason}. A file may not set it: build the learner in code "
                                  "and load with like= to use your own value")
        return decoded

    def value(self, value, where, kind, depth):
        if depth > _archive.DEPTH_LIMIT:
            raise InvalidSave(JSON, f"{where}: nested deeper than {_archive.DEPTH_LIMIT} levels")
        if kind in ("none", "callbacks", "steps", "policy", "torch_load_kwargs"):
            return getattr(self, f"_{kind}")(value, where, depth)
        if isinstance(value, dict):
            return self._tagged(value, where, kind, depth)
        if kind is not None and not (value is None and kind == "split"):
            raise InvalidSave(JSON, f"{where}: must name {_describe(kind)}, got {_json_type(value)}")
        if isinstance(value, list):
            return [self.value(v, f"{where}[{i}]", None, depth + 1) for i, v in enumerate(value)]
        return value

    def _tagged(self, value, where, kind, depth):
        tags = [tag for tag in _TAGS if tag in value]
        if len(tags) != 1 or set(value) != {tags[0], *_TAGS[tags[0]]}:
            raise InvalidSave(JSON, f"{where}: unknown entry with keys {sorted(value)}")
        tag = tags[0]
        if tag in ("__type__", "__function__", "__object__"):
            return self._named(tag, value, where, kind, depth)
        if kind is not None:
            raise InvalidSave(JSON, f"{where}: must name {_describe(kind)}, got {tag}")
        content = value[tag]
        if tag == "__tuple__":
            if not isinstance(content, list):
                raise InvalidSave(JSON, f"{where}: __tuple__ must hold a list")
            return tuple(self.value(v, f"{where}[{i}]", None, depth + 1) for i, v in enumerate(content))
        if tag == "__dict__":
            if not isinstance(content, dict):
                raise InvalidSave(JSON, f"{where}: __dict__ must hold an object")
            return {k: self.value(v, f"{where}[{k!r}]", None, depth + 1) for k, v in content.items()}
        if tag == "__array__":
            return _decode_array(value, where)
        if tag == "__npy__":
            if self.read_array is None or not (isinstance(content, str) and ARRAY_MEMBER.match(content)):
                raise InvalidSave(JSON, f"{where}: {content!r} is not an array member of this save")
            self.members.add(content)
            return self.read_array(content)
        if tag == "__device__":
            try:
                return torch.device(content)
            except (TypeError, RuntimeError) as error:
                raise InvalidSave(JSON, f"{where}: not a device: {error}") from None
        dtype = getattr(torch, content, None) if isinstance(content, str) else None
        if not isinstance(dtype, torch.dtype):
            raise InvalidSave(JSON, f"{where}: {content!r} is not a torch dtype")
        return dtype

    def _named(self, tag, value, where, kind, depth):
        path = value[tag]
        if self.trust is None:
            raise InvalidSave(JSON, f"{where}: must be plain data, not a {tag.strip('_')} name")
        try:
            _trust.split_path(path, where)
        except ValueError as error:
            raise InvalidSave(JSON, str(error)) from None
        try:
            obj, by_user = self.trust.resolve(path, where)
        except ValueError as error:
            raise Untrusted(JSON, str(error)) from None
        name = _trust.qualified_name(obj)
        if tag == "__function__" and not _trust.is_function(obj) or tag != "__function__" and not inspect.isclass(obj):
            raise InvalidSave(JSON, f"{where}: {name} is not a {'function' if tag == '__function__' else 'class'}")
        if tag != "__object__":
            if kind in ("learner_estimator", "selector", "callback", "net", "estimator") or (
                    kind == "split" and not (tag == "__function__" and by_user)):
                raise InvalidSave(JSON, f"{where}: must be {_describe(kind)}, got the {name} "
                                        f"{'class' if tag == '__type__' else 'function'} itself")
            if kind != "split":
                _check_kind(obj, kind, by_user, name, where)
            return obj
        if kind in _CLASS_KINDS:
            raise InvalidSave(JSON, f"{where}: must name {_describe(kind)}, got an instance of {name}")
        if kind == "learner_estimator":
            if not issubclass(obj, (NeuralNet, Pipeline)):
                raise InvalidSave(JSON, f"{where}: {name} is not an ActiveNet or a Pipeline")
        elif kind is not None:
            _check_kind(obj, kind, by_user, name, where)
        elif not (any(_trust.KINDS[k][1](obj) for k in _trust.INSTANCE_KINDS)
                  or by_user and hasattr(obj, "get_params")):
            raise InvalidSave(JSON, f"{where}: {name} is not a class that a save rebuilds from its "
                                    "parameters (an estimator, a selector, a callback or a split)")
        params = self.params(obj, value["params"], where, depth)
        try:
            built = obj(**params)
            if (isinstance(built, BaseEstimator) and not isinstance(built, (NeuralNet, _trust._selector_base()))
                    and hasattr(built, "_validate_params")):
                built._validate_params()  # scikit-learn's own checks, at load rather than at fit
            return built
        except Exception as error:  # a trusted class refusing the file's arguments, however it does
            raise InvalidSave(JSON, f"{where}: cannot rebuild {name}: {error}") from None

    def _none(self, value, where, depth):
        if value is not None:
            raise InvalidSave(JSON, f"{where}: must be None (a loaded learner never caches)")
        return None

    def _callbacks(self, value, where, depth):
        if value is None or value == "disable":
            return value
        if not isinstance(value, list):
            raise InvalidSave(JSON, f"{where}: must be a list of callbacks, got {_json_type(value)}")
        callbacks = []
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            if isinstance(item, dict) and "__tuple__" in item:
                pair = item["__tuple__"]
                if set(item) != {"__tuple__"} or not (isinstance(pair, list) and len(pair) == 2
                                                      and isinstance(pair[0], str)):
                    raise InvalidSave(JSON, f"{at}: must be a (name, callback) pair")
                callbacks.append((pair[0], self.value(pair[1], f"{at}[1]", "callback", depth + 2)))
            else:
                callbacks.append(self.value(item, at, "callback", depth + 1))
        return callbacks

    def _steps(self, value, where, depth):
        if not isinstance(value, list):
            raise InvalidSave(JSON, f"{where}: must be a list of (name, estimator) pairs")
        steps = []
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            pair = item.get("__tuple__") if isinstance(item, dict) and set(item) == {"__tuple__"} else None
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise InvalidSave(JSON, f"{at}: must be a (name, estimator) pair")
            step = pair[1] if pair[1] in (None, "passthrough") else self.value(
                pair[1], f"{at}[1]", "estimator", depth + 2)
            steps.append((pair[0], step))
        return steps

    def _policy(self, value, where, depth):
        if isinstance(value, str):
            import skorch.callbacks.lr_scheduler as module

            # skorch looks a policy name up in this module when training starts
            policy = vars(module).get(value)
            if not _trust.KINDS["lr_scheduler"][1](policy):
                raise InvalidSave(JSON, f"{where}: {value!r} is not the name of a torch LR scheduler")
            return value
        return self.value(value, where, "lr_scheduler", depth)

    def _torch_load_kwargs(self, value, where, depth):
        # anything but None or {"weights_only": True} was refused with the net's other values
        return self.value(value, where, None, depth)


def _check_kind(obj, kind, by_user, name, where):
    try:
        _trust.check_kind(obj, kind, by_user, name, where)
    except ValueError as error:
        raise InvalidSave(JSON, str(error)) from None


def _describe(kind):
    special = {"learner_estimator": "an ActiveNet or a Pipeline", "split": "a train split or None"}
    return special.get(kind) or _trust.KINDS[kind][0]


def _json_type(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a bool", int: "a number",
            float: "a number", type(None): "null"}[type(value)]


def _decode_array(value, where):
    items, dtype, shape = value["__array__"], value["dtype"], value["shape"]
    if not (isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                            for n in shape)):
        raise InvalidSave(JSON, f"{where}: malformed array shape")
    if not (dtype == "object" or isinstance(dtype, str) and _DTYPE.match(dtype)):
        raise InvalidSave(JSON, f"{where}: unsupported array dtype {dtype!r}")
    try:
        array = np.array(items, dtype=object if dtype == "object" else np.dtype(dtype))
        return array.reshape(shape)
    except (TypeError, ValueError, OverflowError) as error:
        raise InvalidSave(JSON, f"{where}: malformed array: {error}") from None


PARAMS_NODE_LIMIT = 1 << 16  # values in the parameters (larger arrays go to npy members)


def check_params_size(params):
    """Refuse parameters of more than PARAMS_NODE_LIMIT values before any is decoded.

    A save writes arrays of more than INLINE_ARRAY elements to their own members, so its
    parameters are a few hundred values; decoding a million would take seconds.
    """
    count, stack = 0, [params]
    while stack:
        item = stack.pop()
        count += 1
        if count > PARAMS_NODE_LIMIT:
            raise InvalidSave(JSON, f"params: more than {PARAMS_NODE_LIMIT} values, more than a save's "
                                    "parameters hold (large arrays are members of their own)")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def decode_params(cls, params, trust, read_array=None):
    """The learner that ``params`` describe, and the array members it read."""
    check_params_size(params)
    decoder = _Decoder(trust, read_array, cls)
    learner = cls(**_cls_params(cls, decoder.params(cls, params, "params", 1)))
    try:
        learner._validate_params()
    except (TypeError, ValueError) as error:
        raise InvalidSave(JSON, f"params: {error}") from None
    return learner, decoder.members


def _cls_params(cls, params):
    from inspect import signature

    unknown = sorted(set(params) - set(signature(cls).parameters))
    if unknown:
        raise InvalidSave(JSON, f"params: {unknown[0]!r} is not a parameter of {cls.__name__}")
    return params


