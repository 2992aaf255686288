"""What a save may name: the trust list of :meth:`skal.ActiveLearner.load`.

A save names classes and functions by import path. Loading looks each name up
here *before* anything is imported, and checks that the object is of the kind
its parameter needs (an ``nn.Module`` class for ``module``, an ``Optimizer``
class for ``optimizer`` ...) *before* anything is built. The default list is
enumerated from namespaces that are already imported (torch, skorch, skal; and
scikit-learn's estimators, listed only when a file names one), so nothing a file
names is ever imported unless the user trusted that exact name.
"""

import functools
import importlib
import inspect
import math
import re

import numpy as np
import torch
from skorch.callbacks import Callback
from skorch.dataset import Dataset as SkorchDataset
from skorch.dataset import ValidSplit
from skorch.net import NeuralNet
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

__all__ = ["TrustList", "qualified_name", "refused_values"]

# skorch callbacks that only compute, print or adjust training. Left out: the ones that write
# or read files (Checkpoint, TrainEndCheckpoint, LoadInitState, TensorBoard) or reach a
# service (WandbLogger, NeptuneLogger, SacredLogger, MlflowLogger).
_SKORCH_CALLBACKS = (
    "BatchScoring", "EarlyStopping", "EpochScoring", "EpochTimer", "Freezer", "GradientNormClipping",
    "Initializer", "InputShapeSetter", "LRScheduler", "ParamMapper", "PassthroughScoring", "PrintLog",
    "ProgressBar", "Unfreezer", "WarmRestartLR",
)
# Free functions, each named: the kind says which parameter may take it.
_FUNCTIONS = {
    "skal.models.resnet18_cifar": "module",
    "builtins.print": "sink",  # skorch's PrintLog / EarlyStopping default sink
    "skorch.utils.to_numpy": "target_extractor",  # skorch's EpochScoring default
    **{f"torch.nn.init.{name}": "initializer" for name in (
        "constant_", "dirac_", "eye_", "kaiming_normal_", "kaiming_uniform_", "normal_", "ones_",
        "orthogonal_", "sparse_", "trunc_normal_", "uniform_", "xavier_normal_", "xavier_uniform_",
        "zeros_")},
}
_SKLEARN_FUNCTIONS = {  # SelectKBest / SelectPercentile score functions (public paths)
    f"sklearn.feature_selection.{name}": "score_func" for name in (
        "chi2", "f_classif", "f_regression", "mutual_info_classif", "mutual_info_regression",
        "r_regression")
}
_SCALAR_TYPES = (bool, int, float, complex, str, np.bool_, np.int8, np.int16, np.int32, np.int64,
                 np.uint8, np.uint16, np.uint32, np.uint64, np.float16, np.float32, np.float64,
                 np.complex64, np.complex128, np.str_,
                 np.dtype)  # as skops stores e.g. OneHotEncoder(dtype=...): a dtype from its name

# kind -> (description, test on the object)
KINDS = {
    "module": ("a torch.nn.Module class (or a listed module factory)",
               lambda obj: _subclass(obj, torch.nn.Module)),
    "criterion": ("a torch.nn.Module (loss) class", lambda obj: _subclass(obj, torch.nn.Module)),
    "optimizer": ("a torch.optim.Optimizer class", lambda obj: _subclass(obj, torch.optim.Optimizer)),
    "lr_scheduler": ("a torch LR scheduler class",
                     lambda obj: _subclass(obj, (LRScheduler, ReduceLROnPlateau))),
    "dataset": ("a torch Dataset class", lambda obj: _subclass(obj, torch.utils.data.Dataset)),
    "iterator": ("a torch DataLoader class", lambda obj: _subclass(obj, torch.utils.data.DataLoader)),
    "callback": ("a skorch callback", lambda obj: _subclass(obj, Callback)),
    "split": ("a skorch train split (ValidSplit)", lambda obj: _subclass(obj, ValidSplit)),
    "net": ("a skorch net", lambda obj: _subclass(obj, NeuralNet)),
    "selector": ("a skal selector", lambda obj: _subclass(obj, _selector_base())),
    "estimator": ("a scikit-learn estimator", lambda obj: _subclass(obj, _sklearn_base())),
}
# kinds whose objects a save rebuilds from their parameters
INSTANCE_KINDS = ("callback", "split", "net", "selector", "estimator")
# kinds that a function may fill (besides the generic one)
FUNCTION_KINDS = ("module",)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _subclass(obj, base):
    return inspect.isclass(obj) and issubclass(obj, base)


def _selector_base():
    from .selectors import BaseSelector

    return BaseSelector


def _sklearn_base():
    from sklearn.base import BaseEstimator

    return BaseEstimator


def qualified_name(obj):
    """``module.qualname`` of a class or function (numpy ufuncs: ``numpy.name``)."""
    if isinstance(obj, np.ufunc):
        return f"numpy.{obj.__name__}"
    return f"{obj.__module__}.{obj.__qualname__}"


def is_function(obj):
    return inspect.isfunction(obj) or inspect.isbuiltin(obj) or isinstance(obj, np.ufunc)


def _public_classes(namespace, test, exclude=()):
    return {qualified_name(obj): obj for name, obj in vars(namespace).items()
            if not name.startswith("_") and name not in exclude and test(obj)}


@functools.cache
def _default_entries():
    """Trusted names -> objects, from namespaces imported with skal itself."""
    import skorch.callbacks

    from . import callbacks, heads, models, net, parts, selectors, semi

    entries = {}
    entries.update(_public_classes(torch.nn, lambda obj: _subclass(obj, torch.nn.Module),
                                   exclude=("DataParallel",)))  # wraps an instance; multi-device
    entries.update(_public_classes(torch.optim, lambda obj: _subclass(obj, torch.optim.Optimizer)))
    entries.update(_public_classes(torch.optim.lr_scheduler, KINDS["lr_scheduler"][1]))
    for obj in (torch.utils.data.DataLoader, torch.utils.data.Dataset, SkorchDataset, ValidSplit,
                *(getattr(skorch.callbacks, name) for name in _SKORCH_CALLBACKS),
                net.ActiveNet, models.MLP, models.SmallCNN, heads.LossPredictionHead,
                heads.TrainingDynamicsHead,
                # skal's own training parts and callbacks (DISAL's "w/o S" adds DynamicLoss by hand)
                *(getattr(callbacks, name) for name in callbacks.__all__),
                *(getattr(parts, name) for name in parts.__all__),
                *(getattr(semi, name) for name in semi.__all__),  # semi-supervised parts
                *(getattr(selectors, name) for name in selectors.__all__
                  if inspect.isclass(getattr(selectors, name))),
                *_SCALAR_TYPES):
        entries[qualified_name(obj)] = obj
    entries.update({qualified_name(obj): obj for obj in vars(np).values() if isinstance(obj, np.ufunc)})
    entries.update({name: _attribute(name) for name in _FUNCTIONS})
    return entries


@functools.cache
def _sklearn_entries():
    """scikit-learn's estimators and listed functions (imports sklearn's modules: ~0.4 s)."""
    from sklearn.utils import all_estimators

    entries = {qualified_name(cls): cls for _, cls in all_estimators()}
    for name in _SKLEARN_FUNCTIONS:
        # a save names a function by its defining module (..._univariate_selection.f_classif):
        # both that path and the public one are trusted
        obj = _attribute(name)
        entries[name] = entries[qualified_name(obj)] = obj
    return entries


@functools.cache
def _sklearn_function_kinds():
    return {qualified_name(_attribute(name)): kind for name, kind in _SKLEARN_FUNCTIONS.items()}


def _attribute(dotted):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def default_lookup(name):
    """The default-trusted object called ``name``, or None."""
    if name.startswith("sklearn."):
        return _sklearn_entries().get(name)
    return _default_entries().get(name)


def function_kind(name):
    if name.startswith("sklearn."):
        return _SKLEARN_FUNCTIONS.get(name) or _sklearn_function_kinds().get(name)
    return _FUNCTIONS.get(name)


class TrustList:
    """The default trust list plus the user's ``trusted`` entries.

    Parameters
    ----------
    trusted : iterable of str, class or function, or None
        Extra names (``"mypkg.nets.MyNet"``, as :func:`skal.get_untrusted_types`
        lists them) or the objects themselves.
    """

    def __init__(self, trusted=None):
        self.names, self.objects = set(), {}
        if trusted is None:
            return
        if isinstance(trusted, (str, bytes)) or not hasattr(trusted, "__iter__"):
            raise TypeError(f"trusted must be a list of names, classes or functions, got "
                            f"{type(trusted).__name__}.")
        for i, entry in enumerate(trusted):
            if isinstance(entry, str):
                if ":" in entry and not _NAME.match(entry):
                    raise ValueError(
                        f"trusted[{i}]: {entry[:200]!r} is a value that a file may not set (as "
                        "skal.get_untrusted_types lists them); no trusted= entry lets a file set it: "
                        "build the learner in code and load with like=.")
                if not _NAME.match(entry):
                    raise ValueError(f"trusted[{i}]: {entry!r} is not a dotted import path "
                                     "such as 'mypkg.nets.MyNet'.")
                self.names.add(entry)
            elif inspect.isclass(entry) or is_function(entry):
                self.objects[qualified_name(entry)] = entry
            else:
                raise TypeError(f"trusted[{i}] must be a name, a class or a function, got "
                                f"{type(entry).__name__}.")

    def is_trusted(self, name):
        return default_lookup(name) is not None or name in self.names or name in self.objects

    def resolve(self, path, where):
        """The object that ``path`` (``"module:qualname"``) names; a ValueError if untrusted.

        Returns
        -------
        obj : class or function
        by_user : bool
            Whether the user's ``trusted`` let it in (not the default list).
        """
        name = split_path(path, where)[2]
        obj = default_lookup(name)
        if obj is not None:
            return obj, False
        if name in self.objects:
            return self.objects[name], True
        if name not in self.names:
            hint = (" It was defined in the script that saved the learner: build the same learner "
                    "in code and pass it as like=, or pass the class itself in trusted=."
                    if name.startswith("__main__.") else "")
            raise ValueError(f"{where} names {name}, which is not on the trust list; if you trust "
                             f"it, pass trusted=[{name!r}] (skal.get_untrusted_types lists every "
                             f"such name in a file).{hint}")
        module, qualname, _ = split_path(path, where)
        try:
            obj = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"{where}: the trusted name {name} cannot be imported: {error}") from None
        if not (inspect.isclass(obj) or is_function(obj)) or qualified_name(obj) != name:
            raise ValueError(f"{where}: {name} is not a class or function of that name.")
        return obj, True


def split_path(path, where):
    """``(module, qualname, dotted name)`` of a ``"module:qualname"`` path from a file."""
    if not isinstance(path, str):
        raise ValueError(f"{where}: a name must be a string, got {type(path).__name__}")
    module, sep, qualname = path.partition(":")
    if not sep or not _NAME.match(module) or not _NAME.match(qualname):
        raise ValueError(f"{where}: {path!r} is not an import path 'module:name'")
    return module, qualname, f"{module}.{qualname}"


def check_kind(obj, kind, by_user, name, where):
    """Refuse ``obj`` unless it is of ``kind`` (None: any trusted class or function)."""
    if kind is None:
        return
    description, test = KINDS[kind]
    if inspect.isclass(obj):
        if test(obj):
            return
    elif kind in FUNCTION_KINDS and (by_user or function_kind(name) == kind):
        return
    what = "class" if inspect.isclass(obj) else "function"
    raise ValueError(f"{where}: {name} is a {what} that is not {description}")


# --- what a file may set: values --------------------------------------------------------
#
# A trusted class can still be told by its arguments to compile, import, read or write
# files, reach the network, start processes or unpickle. A file may set such an argument
# only to its safe value (what a save of a default learner holds); anything else is refused
# with the field's path, and :func:`refused_values` lists them all (get_untrusted_types).

LAYER_LIMIT = 64  # layers a module's layer-count arguments (num_layers, num_encoder_layers...) add up to
SEQUENCE_LIMIT = 256  # entries of a module's list and tuple arguments (an MLP's hidden_sizes)

# skorch net parameters: name -> (the only value a file may give, what another value does)
_NET_FIXED = {
    "compile": (False, "compiles the module with torch.compile, whose inductor backend runs a C++ "
                       "compiler (a command that compile__options can choose)"),
}
_NET_PREFIXES = {
    "compile__": "an option of torch.compile (it chooses the compiler command, among others)",
    "dataset__": "an argument of the dataset class (a file never sets one)",
}
_TORCH_LOAD_KWARGS = "torch.load's arguments (unpickling): a file may set it only to None or {'weights_only': True}"
# DataLoader arguments a file may set (iterator_train__*, iterator_valid__*); the others take
# functions, processes or generators (collate_fn, worker_init_fn, multiprocessing_context,
# sampler, batch_sampler, generator, pin_memory_device)
_ITERATOR_ALLOWED = frozenset({"batch_size", "shuffle", "num_workers", "pin_memory", "drop_last", "timeout",
                               "prefetch_factor", "persistent_workers", "in_order"})
# any class's arguments by name: these reach files, the network or unpickling, so a file may
# only leave them unset (None or False)
_PATHLIKE = frozenset({
    "weights", "pretrained", "pretrained_weights", "weights_path", "checkpoint", "checkpoint_path",
    "path", "file", "filename", "fname", "dirname", "root", "url", "download", "cache_dir",
    "model_dir", "hub_dir", "log_dir", "logdir", "f_params", "f_optimizer", "f_criterion",
    "f_history", "f_pickle", "progress_file",
})
# module factories: argument -> its only value from a file (the rest as any module's)
_FACTORY_FIXED = {
    "skal.models.resnet18_cifar": {"weights": None},  # torchvision downloads and unpickles weights
}
# scikit-learn's text vectorizers read files when input is 'filename' or 'file'
_SKLEARN_TEXT_INPUT = ("CountVectorizer", "TfidfVectorizer", "HashingVectorizer")
# the parameters a listed function may fill, by its kind (numpy ufuncs, pure arithmetic, and
# functions the user trusted may fill any)
FUNCTION_SLOTS = {"module": {"module"}, "sink": {"sink"}, "target_extractor": {"target_extractor"},
                  "initializer": {"fn"}, "score_func": {"score_func"}}
_LAYERS = re.compile(r"(^|_)(layers|depth|blocks|num_layers)$")


def _tag(value, tag):
    return isinstance(value, dict) and isinstance(value.get(tag), str)


def _dotted(path):
    return path.replace(":", ".", 1) if isinstance(path, str) else None


def _owner_class(name):
    return default_lookup(name) if name else None


def _is_net(cls):
    return _subclass(cls, NeuralNet)


def _value_reason(owner_name, cls, params, key, value):
    """``(reason, kind)`` when a file may not give ``value`` to ``key``; kind "untrusted" or
    "invalid" (a value no valid save holds); None when it may."""
    last = key.rsplit("__", 1)[-1]
    if _is_net(cls):
        if key in _NET_FIXED:
            safe, what = _NET_FIXED[key]
            if value != safe or isinstance(value, dict):
                return f"{what}; a file may set it only to {safe!r}", "untrusted"
            return None
        for prefix, what in _NET_PREFIXES.items():
            if key.startswith(prefix) and value is not None:  # None: the default, as unset
                return what, "untrusted"
        if key == "torch_load_kwargs":
            if value is None or value == {"__dict__": {"weights_only": True}}:
                return None
            return _TORCH_LOAD_KWARGS, "untrusted"
        if key.startswith(("iterator_train__", "iterator_valid__")):
            if key.split("__", 1)[1] not in _ITERATOR_ALLOWED and value is not None:
                return (f"a DataLoader argument that a file may not set (it may set "
                        f"{', '.join(sorted(_ITERATOR_ALLOWED))})"), "untrusted"
        if key.startswith("module__"):
            module = params.get("module")
            factory = _dotted(module.get("__function__") or module.get("__type__")) if isinstance(module, dict) else None
            sub = key[len("module__"):]
            fixed = _FACTORY_FIXED.get(factory, {})
            if sub in fixed and value != fixed[sub]:
                return (f"{factory}'s {sub} reaches the network and unpickling (pretrained weights are "
                        f"downloaded and torch.load-ed); a file may set it only to {fixed[sub]!r}"), "untrusted"
            bound = _layer_reason(params, sub, value)
            if bound:
                return bound, "invalid"
    # scikit-learn's own parameter names mean other things (KNNImputer(weights="uniform")); its
    # estimators that read files are the text vectorizers, below
    sklearn_owner = cls is not None and _subclass(cls, _sklearn_base()) and not _is_net(cls)
    if last in _PATHLIKE and value not in (None, False) and not (sklearn_owner and "__" not in key):
        return (f"a {last} argument reaches files or the network; a file may set it only to None "
                "or false"), "untrusted"
    if (owner_name or "").startswith("sklearn.feature_extraction.") and owner_name.rsplit(".", 1)[-1] in \
            _SKLEARN_TEXT_INPUT and key == "input" and value != "content":
        return "a text vectorizer's input other than 'content' reads files; a file may set only 'content'", \
            "untrusted"
    for path, slot_at in _functions_in(value, key):
        name = _dotted(path)
        kind = function_kind(name)
        if kind is not None and slot_at.rsplit("__", 1)[-1] not in FUNCTION_SLOTS.get(kind, ()):
            return (f"{name} may only fill {' or '.join(sorted(FUNCTION_SLOTS.get(kind, ())))} "
                    "(the parameters it is listed for), not this one"), "untrusted"
    return _number_reason(cls, key, value)


def _functions_in(value, slot):
    """``(path, slot)`` of every function named in ``value`` outside nested objects."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if _tag(item, "__function__"):
                yield item["__function__"], slot
            elif "__object__" not in item:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _layer_reason(params, sub, value):
    """Bounds on a module's arguments that keep its build (and the size probe) short: a layer
    of a transformer takes ~10 ms to build even on the meta device, where nothing is allocated."""
    if _LAYERS.search(sub) and isinstance(value, int) and not isinstance(value, bool):
        total = sum(v for k, v in params.items() if k.startswith("module__") and _LAYERS.search(k[8:])
                    and isinstance(v, int) and not isinstance(v, bool) and v > 0)
        if total > LAYER_LIMIT:
            return (f"{value} layers ({total} in all), over the bound of {LAYER_LIMIT} that a save is "
                    "read with")
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict) and isinstance(item.get("__tuple__"), list):
            item = item["__tuple__"]
        if isinstance(item, list):
            count += len(item)
            if count > SEQUENCE_LIMIT:
                return f"sequences of more than {SEQUENCE_LIMIT} entries, over the bound that a save is read with"
            stack.extend(item)
    return None


@functools.cache
def _defaults(cls):
    """Defaults of ``cls``'s arguments, its bases' included (ActiveNet passes skorch's on)."""
    defaults = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        try:
            parameters = inspect.signature(vars(klass)["__init__"]).parameters
        except (TypeError, ValueError):
            continue
        for name, parameter in parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                defaults.setdefault(name, parameter.default)
    return defaults


def _number_reason(cls, key, value):
    """Numbers must be finite (but scikit-learn estimators', which validate their own at load);
    a net's own numbers of the type of their default (max_epochs, batch_size, verbose
    integers; warm_start a bool)."""
    if cls is not None and _subclass(cls, _sklearn_base()) and not (_is_net(cls) or _subclass(cls, _selector_base())):
        return None  # scikit-learn validates its own (missing_values=nan is one of its values)
    if isinstance(value, float) and not math.isfinite(value):
        if not (value == math.inf and key.endswith("norm_type")):  # e.g. an infinity norm
            return f"{value} is not a finite number", "invalid"
    if not _is_net(cls):  # elsewhere an integer default often takes a fraction too (ValidSplit(0.2))
        return None
    default = _defaults(cls).get(key, inspect.Parameter.empty)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            return f"must be true or false (as its default {default!r}), got {_shown(value)}", "invalid"
    elif isinstance(default, int):
        if isinstance(value, bool) or isinstance(value, float):
            return f"must be an integer (as its default {default!r}), got {_shown(value)}", "invalid"
    elif isinstance(default, float):
        if isinstance(value, bool):
            return f"must be a number (as its default {default!r}), got {_shown(value)}", "invalid"
    return None


def _shown(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def param_refusals(owner_name, cls, params, where):
    """``[(field path, reason, kind)]`` for one object's parameters (not descending into
    nested objects); ``cls`` None for a class off the default list."""
    if not isinstance(params, dict):
        return []
    out = []
    for key, value in params.items():
        found = _value_reason(owner_name, cls, params, key, value)
        if found:
            out.append((f"{where}.{key}", *found))
    return out


def refused_values(params, owner_name, cls, where="params"):
    """Every value of an encoded parameter tree that a file may not set, with its path.

    Returns
    -------
    list of (str, str, str)
        ``(field path, reason, kind)``, kind "untrusted" or "invalid".
    """
    out = param_refusals(owner_name, cls, params, where)
    refused = {path for path, _, _ in out}
    stack = [(value, f"{where}.{key}") for key, value in params.items()
             if f"{where}.{key}" not in refused] if isinstance(params, dict) else []
    while stack:
        item, at = stack.pop()
        if isinstance(item, dict):
            if _tag(item, "__object__") and isinstance(item.get("params"), dict):
                name = _dotted(item["__object__"])
                out.extend(refused_values(item["params"], name, _owner_class(name), at))
            elif isinstance(item.get("__tuple__"), list):
                stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item["__tuple__"]))
            elif isinstance(item.get("__dict__"), dict):
                stack.extend((v, f"{at}[{k!r}]") for k, v in item["__dict__"].items())
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))
    return sorted(out)
