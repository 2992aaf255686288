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
import re

import numpy as np
import torch
from skorch.callbacks import Callback
from skorch.dataset import Dataset as SkorchDataset
from skorch.dataset import ValidSplit
from skorch.net import NeuralNet
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

__all__ = ["TrustList", "qualified_name"]

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
_SKLEARN_FUNCTIONS = {  # SelectKBest / SelectPercentile score functions
    f"sklearn.feature_selection.{name}": "score_func" for name in (
        "chi2", "f_classif", "f_regression", "mutual_info_classif", "mutual_info_regression",
        "r_regression")
}
_SCALAR_TYPES = (bool, int, float, complex, str, np.bool_, np.int8, np.int16, np.int32, np.int64,
                 np.uint8, np.uint16, np.uint32, np.uint64, np.float16, np.float32, np.float64,
                 np.complex64, np.complex128, np.str_)

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

    from . import callbacks, heads, models, net, selectors

    entries = {}
    entries.update(_public_classes(torch.nn, lambda obj: _subclass(obj, torch.nn.Module),
                                   exclude=("DataParallel",)))  # wraps an instance; multi-device
    entries.update(_public_classes(torch.optim, lambda obj: _subclass(obj, torch.optim.Optimizer)))
    entries.update(_public_classes(torch.optim.lr_scheduler, KINDS["lr_scheduler"][1]))
    for obj in (torch.utils.data.DataLoader, torch.utils.data.Dataset, SkorchDataset, ValidSplit,
                *(getattr(skorch.callbacks, name) for name in _SKORCH_CALLBACKS),
                net.ActiveNet, models.MLP, models.SmallCNN, heads.LossPredictionHead,
                heads.TrainingDynamicsHead, callbacks.ProgressBars,
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
    entries.update({name: _attribute(name) for name in _SKLEARN_FUNCTIONS})
    return entries


def _attribute(dotted):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def default_lookup(name):
    """The default-trusted object called ``name``, or None."""
    if name.startswith("sklearn."):
        return _sklearn_entries().get(name)
    return _default_entries().get(name)


def function_kind(name):
    return _FUNCTIONS.get(name) or _SKLEARN_FUNCTIONS.get(name)


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
