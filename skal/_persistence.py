"""Saving and loading an ActiveLearner without pickle.

A save is one zip file:

- ``learner.json``: the learner's parameters, nested (the net, the selector,
  skorch callbacks), with classes and functions named by import path, and the
  small fitted state (classes, seed, feature count);
- ``*.npy``: the labeled set, its labels, cycles and reference mask
  (``allow_pickle=False``);
- ``tensors.pt``: the net's weights, heads, optimizer state, snapshot and
  training dynamics, read back with ``torch.load(weights_only=True)``.

Loading imports the named classes (only torch modules, optimizers and data
classes, skorch and scikit-learn classes, and functions from skal, torch and
torchvision) and never unpickles anything. Writes go to a temporary file that
replaces the target only once it is complete.
"""

import importlib
import inspect
import io
import json
import os
import pickle
import tempfile
import zipfile
import zlib

import numpy as np
import torch
from sklearn.base import BaseEstimator

FORMAT = 1

_FUNCTION_PACKAGES = ("skal", "torch", "torchvision")
_FITTED_KEYS = {"seed", "n_features_in_", "feature_names_in_", "history"}


# --- parameters <-> JSON -------------------------------------------------------


def _import_path(obj):
    module, name = obj.__module__, obj.__qualname__
    if "<locals>" in name or module == "__main__":
        raise TypeError(f"{obj!r} is not importable (defined in a function or in __main__)")
    return f"{module}:{name}"


def encode(value, where):
    """JSON-able form of a parameter value; ``where`` names it in errors."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"cannot save {where}: an object array")
        return {"__array__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {"__dict__": {str(k): encode(v, f"{where}[{k!r}]") for k, v in value.items()}}
    if inspect.isclass(value) or inspect.isfunction(value):
        try:
            return {"__import__": _import_path(value)}
        except TypeError as error:
            raise TypeError(f"cannot save {where}: {error}; use joblib.dump") from None
    if hasattr(value, "get_params"):
        # skorch's get_params also lists private bookkeeping (``_params_to_validate``),
        # which its __init__ rebuilds
        params = {k: v for k, v in value.get_params(deep=False).items() if not k.startswith("_")}
        return {"__object__": _import_path(type(value)),
                "params": {k: encode(v, f"{where}.{k}") for k, v in params.items()}}
    raise TypeError(
        f"cannot save {where} of type {type(value).__name__}: only numbers, strings, arrays, "
        "containers, importable classes and functions, and objects with get_params can be saved "
        "without pickle (use joblib.dump for anything else)"
    )


def _allowed(target):
    if inspect.isclass(target):
        allowed_bases = (torch.nn.Module, torch.optim.Optimizer, torch.utils.data.Dataset,
                         torch.utils.data.DataLoader, BaseEstimator)
        module = target.__module__
        return issubclass(target, allowed_bases) or module.startswith(("skorch", "sklearn", "skal"))
    if inspect.isfunction(target) or inspect.isbuiltin(target):
        return target.__module__.split(".")[0] in _FUNCTION_PACKAGES
    return False


def _resolve(path):
    module_name, _, qualname = path.partition(":")
    target = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not _allowed(target):
        raise ValueError(f"refusing to load {path}: not a torch, skorch, scikit-learn or skal "
                         "class, nor a function from skal, torch or torchvision")
    return target


def decode(value):
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        return np.array(value["__array__"], dtype=np.dtype(value["dtype"]))
    if "__tuple__" in value:
        return tuple(decode(v) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: decode(v) for k, v in value["__dict__"].items()}
    if "__import__" in value:
        return _resolve(value["__import__"])
    if "__object__" in value:
        cls = _resolve(value["__object__"])
        return cls(**{k: decode(v) for k, v in value["params"].items()})
    raise ValueError(f"unknown entry in the saved parameters: {sorted(value)}")


# --- arrays and tensors ----------------------------------------------------------


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _read_npy(archive, name):
    return np.load(io.BytesIO(archive.read(name)), allow_pickle=False).copy()  # writable


def _net_tensors(net):
    state = {f"{name}_": getattr(net, name + "_").state_dict() for name in net._modules}
    state["optimizer_"] = net.optimizer_.state_dict()
    state["parts"] = {name: part.state_dict() for name, part in net.parts_.items()}
    return state


def _restore_net(net, state):
    device = torch.device(net.device or "cpu")
    expected = {f"{name}_" for name in net._modules} | {"optimizer_", "parts"}
    if set(state) != expected:
        raise ValueError(f"tensors.pt has {sorted(state)}, expected {sorted(expected)}")
    for name in net._modules:
        getattr(net, name + "_").load_state_dict(state[name + "_"])
    net.optimizer_.load_state_dict(state["optimizer_"])
    if set(state["parts"]) != set(net.parts_):
        raise ValueError(f"tensors.pt has training parts {sorted(state['parts'])}, the net "
                         f"{sorted(net.parts_)}")
    for name, part in net.parts_.items():
        part.load_state_dict({k: v.to(device) for k, v in state["parts"][name].items()})


# --- save / load ---------------------------------------------------------------------


def save(learner, path):
    from sklearn.pipeline import Pipeline

    if isinstance(learner.estimator_, Pipeline):
        raise TypeError("ActiveLearner.save does not support Pipeline estimators (their fitted "
                        "transformers would need pickle); use joblib.dump for those.")
    state = learner._state()
    learner_json = {
        "format": FORMAT,
        "params": {k: encode(v, k) for k, v in learner.get_params(deep=False).items()},
        "fitted": {
            "seed": int(state.seed),
            "n_features_in_": int(state.n_features_in),
            "feature_names_in_": (state.feature_names_in.tolist()
                                  if state.feature_names_in is not None else None),
            "history": state.estimator.history.to_list(),
            "stale": bool(state.stale),  # a failed teach stays failed
        },
    }
    buffer = io.BytesIO()
    torch.save(_net_tensors(state.estimator), buffer)
    members = {
        "learner.json": json.dumps(learner_json).encode(),
        "classes.npy": _npy(state.classes),
        "X_labeled.npy": _npy(state.labeled.X),
        "y_labeled.npy": _npy(state.labeled.y),
        "labeled_cycle.npy": _npy(state.labeled.cycle),
        "reference_mask.npy": _npy(state.labeled.reference),
        "tensors.pt": buffer.getvalue(),
    }
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".skal-save-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for name, data in members.items():
                    archive.writestr(name, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)  # atomic: the old save stays until the new one is whole
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def load(cls, path):
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"member {bad} fails its checksum")
            meta = json.loads(archive.read("learner.json"))
            version = meta.get("format") if isinstance(meta, dict) else None
            if version != FORMAT:
                raise ValueError(f"unsupported save format {version!r}")
            if not (isinstance(meta.get("params"), dict) and isinstance(meta.get("fitted"), dict)
                    and _FITTED_KEYS <= meta["fitted"].keys()):
                raise ValueError("learner.json lacks the parameters or the fitted state")
            arrays = {name: _read_npy(archive, f"{name}.npy")
                      for name in ("classes", "X_labeled", "y_labeled", "labeled_cycle", "reference_mask")}
            tensors = torch.load(io.BytesIO(archive.read("tensors.pt")), weights_only=True,
                                 map_location="cpu")
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, EOFError, OSError, RuntimeError,
            json.JSONDecodeError, pickle.UnpicklingError) as error:
        # zlib.error: a damaged deflate stream can fail before the checksum is compared
        raise ValueError(f"{os.fspath(path)} is not a valid skal save: {error}") from error
    lengths = {name: arrays[name].shape[:1] for name in ("X_labeled", "y_labeled", "labeled_cycle", "reference_mask")}
    if len(set(lengths.values())) != 1 or () in lengths.values():
        raise ValueError(f"{os.fspath(path)} is not a valid skal save: the labeled-set arrays "
                         f"have different lengths {lengths}")

    from .learner import _Fitted, _LabeledSet, _template

    try:
        learner = cls(**{k: decode(v) for k, v in meta["params"].items()})
        learner._validate_params()
        classes = arrays["classes"]
        selector = learner._current_selector(arrays["X_labeled"].shape[1:], classes)
        net = learner._configured_net(selector, classes)
        net.initialize()
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        raise ValueError(f"{os.fspath(path)}: cannot restore the saved parameters: {error}") from error
    fitted = meta["fitted"]
    try:
        _restore_net(net, tensors)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{os.fspath(path)} does not match its own parameters: {error}") from error
    from skorch.history import History

    net.history_ = History(fitted["history"])
    names = fitted["feature_names_in_"]
    labeled = _LabeledSet(arrays["X_labeled"], arrays["y_labeled"], arrays["labeled_cycle"],
                          arrays["reference_mask"].astype(bool))
    learner._commit(_Fitted(net, selector, _template(learner.estimator), classes, labeled, fitted["seed"],
                            fitted["n_features_in_"],
                            None if names is None else np.asarray(names, dtype=object),
                            stale=bool(fitted.get("stale", False))))
    return learner
