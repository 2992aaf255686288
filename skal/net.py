"""ActiveNet: a skorch classifier that runs the training parts of active-learning methods."""

import inspect

import numpy as np
import torch
from scipy.sparse import issparse
from skorch import NeuralNetClassifier
from skorch.dataset import get_len
from sklearn.utils._param_validation import StrOptions, validate_parameter_constraints

from ._data import check_device
from ._loader import SampleIndexQueue, training_loader
from ._pool import PoolInferenceMixin, first_output
from ._taps import auto_feature_layers, last_linear, submodule_names
from .parts import TrainingPart

__all__ = ["ActiveNet"]


class ActiveNet(PoolInferenceMixin, NeuralNetClassifier):
    """A skorch classifier for active learning.

    ``ActiveNet`` is a :class:`skorch.NeuralNetClassifier` that works with any
    ``torch.nn.Module`` returning logits; what works on a
    ``NeuralNetClassifier`` works on it. On top of skorch it:

    * runs the training parts (:mod:`skal.parts`) among its callbacks: each
      adds its term to the training loss, and may build an auxiliary head
      and read per-sample state. :class:`~skal.ActiveLearner` adds the parts
      its selector declares (DISAL's dynamic loss and epoch ``T-1`` snapshot,
      LL4AL's and TiDAL's heads); without parts it trains exactly like a
      ``NeuralNetClassifier`` with the same seed;
    * reports each training batch's sample positions to the parts that need
      them (:attr:`sample_indices_`), without changing what the module,
      ``infer``, ``get_loss``, collate functions, callbacks or
      ``iterator_train`` see;
    * batches in-memory arrays by gathering rows when ``iterator_train`` is
      skorch's default DataLoader (same batches, order and random draws as
      the DataLoader, without fetching and collating items one by one);
    * streams pool inference chunk by chunk on its own device under
      :func:`torch.inference_mode` (:meth:`iter_pool`, :meth:`map_pool`,
      :meth:`logits`, :meth:`forward_tapped`);

    Parameters
    ----------
    module : torch.nn.Module class or instance
        Returns logits of shape ``(batch_size, n_classes)`` (or a tuple whose
        first element is that). If it is a class or factory taking a
        ``num_classes`` argument that is not given as ``module__num_classes``,
        and ``classes`` is set, ``len(classes)`` is passed.
    criterion : torch criterion class, default=torch.nn.CrossEntropyLoss
        Loss on the logits. skorch's classifier defaults to ``NLLLoss`` on
        probabilities; an active-learning net works on logits.
    train_split : callable or None, default=None
        skorch's validation split. ``None`` trains on every labeled sample, as
        the active-learning papers do: labels are too scarce to hold 20% out.
        Callbacks that monitor a validation score (``EarlyStopping(monitor=
        "valid_loss")``) need one, e.g. ``skorch.dataset.ValidSplit(5)``.
    feature_layers : "auto" or tuple of str, default="auto"
        Names of the submodules whose outputs are the multi-level features
        the auxiliary heads read. ``"auto"``: the top-level children named
        ``layer1``, ``layer2``, ... (ResNet's ``layer1..layer4``).
    embedding_layer : "auto" or str, default="auto"
        The penultimate embedding (CoreSet, ClusterBatch): ``"auto"`` takes
        the input of the module's last ``torch.nn.Linear``; a name takes that
        submodule's output, flattened.
    train_transform : callable or None, default=None
        Applied to each training sample (as a tensor) when it is loaded for
        training only, e.g. :func:`skal.transforms.cifar_augmentation`;
        prediction and pool scoring never see it. Not applied to dict inputs
        (transform those in your Dataset).
    *args, **kwargs
        Everything else of :class:`skorch.NeuralNetClassifier`. Training
        batches are shuffled by default (``iterator_train__shuffle=True``).

    Attributes
    ----------
    parts_ : dict of str to skal.parts.TrainingPart
        The training parts among the initialised callbacks, by name.
    sample_indices_ : SampleIndexQueue
        During a training step, ``sample_indices_.current`` holds the batch's
        positions in the training data (its training part when
        ``train_split`` is set).
    feature_layers_ : tuple of str
        The resolved ``feature_layers``.

    See Also
    --------
    skal.ActiveLearner : The active-learning meta-estimator that drives it.
    skal.parts : The training parts.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skal import ActiveNet
    >>> from skal.models import MLP
    >>> from skal.parts import DynamicLoss
    >>> X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(np.int64)
    >>> net = ActiveNet(MLP, module__num_classes=2, max_epochs=3, verbose=0,
    ...                 callbacks=[("dynamic_loss", DynamicLoss(weight=1.0))])
    >>> net = net.fit(X, y)
    >>> list(net.parts_), net.parts_["dynamics"].mean_.shape
    (['dynamic_loss', 'dynamics'], torch.Size([40, 2]))
    """

    _own_parameter_constraints = {
        "feature_layers": [StrOptions({"auto"}), tuple, list],
        "embedding_layer": [str],
        "train_transform": [callable, None],
    }

    def __init__(
        self,
        module,
        *args,
        criterion=torch.nn.CrossEntropyLoss,
        train_split=None,
        feature_layers="auto",
        embedding_layer="auto",
        train_transform=None,
        **kwargs,
    ):
        kwargs.setdefault("iterator_train__shuffle", True)
        super().__init__(module, *args, criterion=criterion, train_split=train_split, **kwargs)
        self.train_transform = train_transform
        self.feature_layers = feature_layers
        self.embedding_layer = embedding_layer


    def __setattr__(self, name, attr):
        if name == "train_transform":
            # A torchvision v2 transform is an nn.Module, which skorch would
            # take for a component to register; it is a plain parameter here.
            object.__setattr__(self, name, attr)
            return
        super().__setattr__(name, attr)

    # --- initialisation -------------------------------------------------------

    def initialize(self):
        # checked before anything is reset, so a bad value changes nothing
        validate_parameter_constraints(
            self._own_parameter_constraints,
            {key: getattr(self, key) for key in self._own_parameter_constraints},
            caller_name=type(self).__name__,
        )
        check_device(self.device)
        # skorch skips initialize_callbacks for callbacks="disable": there are no parts then
        self.sample_indices_ = SampleIndexQueue()
        return super().initialize()

    def initialize_callbacks(self):
        super().initialize_callbacks()
        parts = self.parts_
        for part in list(parts.values()):
            for name, required in part.requires():
                if not any(isinstance(p, type(required)) for p in parts.values()):
                    if name in dict(self.callbacks_):
                        raise ValueError(f"callbacks: {type(part).__name__} needs a "
                                         f"{type(required).__name__} part named {name!r}, but "
                                         "another callback has that name.")
                    self.callbacks_.append((name, required.initialize()))
                    parts[name] = required
        self.sample_indices_ = SampleIndexQueue()
        if self.train_split is None:
            for name, cb in self.callbacks_:
                monitor = getattr(cb, "monitor", None)
                if isinstance(monitor, str) and monitor.startswith("valid"):
                    raise ValueError(
                        f"callbacks: {name!r} ({type(cb).__name__}) monitors {monitor!r}, but "
                        "ActiveNet has train_split=None, so there is no validation score; "
                        "monitor 'train_loss' instead, or set train_split (e.g. "
                        "skorch.dataset.ValidSplit(5))."
                    )
        return self

    def initialize_module(self):
        kwargs = self.get_params_for("module")
        if "num_classes" not in kwargs and self.classes is not None and _accepts_num_classes(self.module):
            kwargs["num_classes"] = len(self.classes)
        self.module_ = self.initialized_instance(self.module, kwargs)
        self.feature_layers_ = self._resolve_feature_layers()
        if self.embedding_layer != "auto":
            self.embedding_tap()  # a named layer that does not exist fails at fit
        built = {}
        for part in self._parts():
            built.update(part.modules(self))
        for name in getattr(self, "part_modules_", ()):
            if name not in built and hasattr(self, name + "_"):
                delattr(self, name + "_")  # a head no part declares is no longer trained or saved
        for name, module in built.items():
            setattr(self, name + "_", module)
        self.part_modules_ = tuple(built)
        return self

    def _resolve_feature_layers(self):
        if self.feature_layers == "auto":
            return auto_feature_layers(self.module_)
        layers = tuple(self.feature_layers)
        available = submodule_names(self.module_)
        missing = [name for name in layers if name not in available]
        if missing:
            raise ValueError(f"feature_layers: the module has no submodule {missing[0]!r}; "
                             f"available: {available}.")
        return layers

    def embedding_tap(self):
        """``(outputs, inputs)`` arguments of :func:`skal._taps.tap` for the embedding.

        Returns
        -------
        tuple
            ``((), (("embedding", name),))`` to record the input of the last
            linear layer ``name``, or ``((embedding_layer,), ())`` to record a
            named submodule's output.
        """
        if self.embedding_layer == "auto":
            name = last_linear(self.module_)
            if name is None:
                raise ValueError(
                    "embedding_layer='auto' needs a torch.nn.Linear classifier in the module; "
                    "set embedding_layer to the submodule whose output is the embedding."
                )
            return (), (("embedding", name),)
        try:
            self.module_.get_submodule(self.embedding_layer)
        except AttributeError:
            raise ValueError(
                f"embedding_layer: the module has no submodule {self.embedding_layer!r}; "
                f"available: {submodule_names(self.module_)}."
            ) from None
        return (self.embedding_layer,), ()

    @property
    def parts_(self):
        """The training parts among the initialised callbacks, by name (a new dict each time)."""
        # read from callbacks_ each time, so that it follows whatever changes callbacks_
        # (skorch allows initialize_module without callbacks, and callbacks_ to be reset)
        return {name: cb for name, cb in getattr(self, "callbacks_", ()) if isinstance(cb, TrainingPart)}

    def _parts(self):
        return self.parts_.values()

    def get_part(self, kind):
        """The training part of type ``kind`` among the callbacks.

        Parameters
        ----------
        kind : type
            A :class:`~skal.parts.TrainingPart` subclass.

        Returns
        -------
        skal.parts.TrainingPart

        Raises
        ------
        LookupError
            If the net has no such part.
        """
        for part in self._parts():
            if isinstance(part, kind):
                return part
        raise LookupError(f"The net has no {kind.__name__} part; add one to its callbacks "
                          "(ActiveLearner adds the parts its selector declares).")

    # --- data -------------------------------------------------------------------

    def get_dataset(self, X, y=None):
        # float64 arrays (e.g. from a scikit-learn transformer) to torch's float32;
        # torch takes no negative strides (reversed views)
        if issparse(X):  # e.g. a OneHotEncoder's output: the net takes dense float32
            X = X.toarray().astype(np.float32, copy=False)
        elif isinstance(X, np.ndarray) and X.dtype == np.float64:
            X = X.astype(np.float32)
        elif isinstance(X, np.ndarray) and any(stride < 0 for stride in X.strides):
            X = np.ascontiguousarray(X)
        return super().get_dataset(X, y)

    def get_iterator(self, dataset, training=False):
        if training:
            kwargs = self.get_params_for("iterator_train")
            kwargs.setdefault("batch_size", self.batch_size)
            if kwargs["batch_size"] == -1:
                kwargs["batch_size"] = len(dataset)
            queue = self.sample_indices_ if any(p.uses_indices for p in self._parts()) else None
            # Accelerate shards DataLoaders across processes, so it gets one
            loader = training_loader(self.iterator_train, dataset, kwargs, queue=queue,
                                     transform=self.train_transform,
                                     array_path=getattr(self, "accelerator", None) is None)
            if loader is not None:
                return loader
        return super().get_iterator(dataset, training=training)

    # --- the training loop's hooks ------------------------------------------------

    def _set_training(self, training=True):
        # skorch sets every module's mode at every batch; on a small model the
        # recursive train() is ~7% of a step, so modules already wholly in that
        # mode are skipped (a submodule set otherwise is still reset, as by skorch).
        for name in self._modules + self._criteria:
            module = getattr(self, name + "_")
            if isinstance(module, torch.nn.Module) and any(m.training != training for m in module.modules()):
                module.train(training)

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        super().on_epoch_begin(net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs)
        if getattr(self, "sample_indices_", None) is not None:
            self.sample_indices_.clear()  # nothing left over from an epoch that was cut short

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        super().on_batch_begin(net, batch=batch, training=training, **kwargs)
        if training and any(p.uses_indices for p in self._parts()):
            size = get_len(batch[0]) if isinstance(batch, (tuple, list)) else get_len(batch)
            self.sample_indices_.advance(size, self.device or "cpu")

    def get_loss(self, y_pred, y_true, X=None, training=False):
        logits = first_output(y_pred)
        loss = super().get_loss(logits, y_true, X=X, training=training)
        if training:
            # stable sort: parts that run the module on unlabeled rows come after those
            # reading this batch's forward (their taps keep the labeled batch's features)
            for part in sorted(self._parts(), key=lambda part: part.reads_pool):
                term = part.loss(self, logits, y_true)
                if term is not None:
                    loss = loss + term
        return loss

def _accepts_num_classes(module):
    if isinstance(module, torch.nn.Module) or not callable(module):
        return False
    try:
        return "num_classes" in inspect.signature(module).parameters
    except (TypeError, ValueError):
        return False
