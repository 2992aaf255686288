"""ActiveNet: a skorch classifier that knows its samples and their training dynamics."""

import inspect
import numbers
import re
import warnings
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from skorch import NeuralNetClassifier
from skorch.dataset import unpack_data
from skorch.utils import to_tensor
from torch.func import functional_call
from torch.nn.parameter import is_lazy
from torch.utils.data import Dataset

from .heads import LossPredictionHead, TrainingDynamicsHead
from .losses import dynamic_kl_loss, dynamics_prediction_loss, loss_ranking_loss, running_mean_update

__all__ = ["ActiveNet"]

# Keys of the dict a training batch's X becomes; infer() strips them again, so
# the user's module never sees the index.
_INDEX_KEY = "__skal_index__"
_X_KEY = "__skal_X__"


class _IndexedDataset(Dataset):
    """Wrap a dataset so that each item carries its position in it.

    Item ``i`` becomes ``({_X_KEY: Xi, _INDEX_KEY: i}, yi)`` (or ``Xi`` updated
    with the index when ``Xi`` is already a dict), which keeps skorch's
    ``(X, y)`` batch structure intact for callbacks and scorers.
    """

    def __init__(self, dataset, transform=None):
        self.dataset = dataset
        self.transform = transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        Xi, yi = unpack_data(self.dataset[i])
        if isinstance(Xi, Mapping):
            return {**Xi, _INDEX_KEY: i}, yi
        if self.transform is not None:
            Xi = self.transform(torch.as_tensor(Xi))
        return {_X_KEY: Xi, _INDEX_KEY: i}, yi


def _split_index(X):
    """Return ``(X_without_index, index_or_None)`` for a batch's X."""
    if not (isinstance(X, Mapping) and _INDEX_KEY in X):
        return X, None
    index = X[_INDEX_KEY]
    if _X_KEY in X:
        return X[_X_KEY], index
    return {k: v for k, v in X.items() if k != _INDEX_KEY}, index


def _index_on(index, device):
    """The batch's sample indices as a tensor on ``device`` (copied without blocking)."""
    return torch.as_tensor(index).to(device, non_blocking=True)


def _first_output(out):
    # Modules may return (logits, extra, ...); skorch treats the first as the prediction.
    return out[0] if isinstance(out, tuple) else out


@contextmanager
def _tap(module, outputs=(), inputs=()):
    """Record submodule outputs (and inputs) during the forward passes inside the block.

    Hooks live only for the block, so nothing is left on the module to pickle,
    clone or move between devices.

    Parameters
    ----------
    module : torch.nn.Module
    outputs : iterable of str
        Submodule names whose output to record, under the same key.
    inputs : iterable of (str, str)
        ``(key, name)`` pairs: record the first input of submodule ``name``
        under ``key``.

    Yields
    ------
    dict of str to torch.Tensor
        Filled by the forward passes run inside the block.
    """
    tapped, handles = {}, []

    def output_hook(name):
        return lambda mod, args, out: tapped.__setitem__(name, out)

    def input_hook(key):
        return lambda mod, args: tapped.__setitem__(key, args[0])

    try:
        for name in outputs:
            handles.append(module.get_submodule(name).register_forward_hook(output_hook(name)))
        for key, name in inputs:
            handles.append(module.get_submodule(name).register_forward_pre_hook(input_hook(key)))
        yield tapped
    finally:
        for handle in handles:
            handle.remove()


def _auto_feature_layers(module):
    """Top-level children named ``layer<k>``, in order of k (ResNet's layer1..layer4)."""
    found = [(int(m.group(1)), name) for name, _ in module.named_children()
             if (m := re.fullmatch(r"layer(\d+)", name))]
    return tuple(name for _, name in sorted(found))


def _last_linear(module):
    names = [name for name, sub in module.named_modules() if isinstance(sub, torch.nn.Linear)]
    return names[-1] if names else None


class ActiveNet(NeuralNetClassifier):
    """A skorch classifier for active learning, with DISAL's dynamic loss.

    ``ActiveNet`` is a :class:`skorch.NeuralNetClassifier` that works with any
    ``torch.nn.Module`` returning logits. On top of skorch it:

    * passes each training sample's index along with its batch (the module
      never sees it), so per-sample state lives on the net, not in the data;
    * keeps the training dynamics ``training_dynamics_``: for each training
      sample, the running mean over the epochs of the current fit of its
      training-forward softmax (DISAL eq. 12; TiDAL's ``p_bar``), on the net's
      device;
    * adds the dynamic loss ``CE + dynamic_weight * KL(f_bar || f_theta)``
      (DISAL eq. 13-14) with ``f_bar`` detached;
    * optionally keeps ``snapshot_``, the module's weights and buffers at the
      end of the second-to-last epoch (epoch ``T-1``), for DISAL's query;
    * streams pool inference chunk by chunk on its own device under
      :func:`torch.inference_mode` (:meth:`iter_pool`, :meth:`logits`).

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
    dynamic_weight : float, default=1.0
        Weight ``lambda`` of the dynamic KL loss (DISAL eq. 14; 1.0 was best in
        the paper's Table 3). ``0`` trains exactly like a plain
        ``NeuralNetClassifier``.
    snapshot : bool, default=False
        Keep ``snapshot_``, the weights at the end of epoch ``T-1``. Set by
        :class:`~skal.ActiveLearner` when its selector needs it.
    feature_layers : "auto" or tuple of str, default="auto"
        Names of the submodules whose outputs are the multi-level features
        the auxiliary heads read. ``"auto"``: the top-level children named
        ``layer1``, ``layer2``, ... (ResNet's ``layer1..layer4``).
    embedding_layer : "auto" or str, default="auto"
        The penultimate embedding (CoreSet): ``"auto"`` takes the input of
        the module's last ``torch.nn.Linear``; a name takes that submodule's
        output, flattened.
    loss_head_weight : float, default=0.0
        Weight of LL4AL's loss-prediction head ``loss_predictor_`` and its ranking
        loss; 0 builds no head. Set by the learner for
        :class:`~skal.selectors.LL4AL`; the head's own parameters are
        ``loss_predictor__hidden`` etc.
    loss_head_margin : float, default=1.0
        Margin of the ranking hinge (LL4AL's xi).
    loss_head_stop_epoch : int, float or None, default=0.6
        Epoch (0-based, within each fit) from which the loss head's gradient
        no longer reaches the backbone: an int is an epoch, a float in (0, 1)
        a fraction of ``max_epochs`` (0.6 = LL4AL's epoch 120 of 200), None
        never stops it.
    dynamics_head_weight : float, default=0.0
        Weight of TiDAL's training-dynamics head ``dynamics_predictor_`` and its
        loss ``KL(p_bar || q)`` against ``training_dynamics_``; 0 builds no
        head. Set by the learner for :class:`~skal.selectors.TiDAL`.
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
    training_dynamics_ : torch.Tensor of shape (n_train_samples, n_classes)
        Running mean of each training sample's softmax over the epochs of the
        last ``fit``/``partial_fit`` call, rows in the order of the training
        data (its training part when ``train_split`` is set). Reset when a
        training call starts, allocated at its first batch.
    snapshot_ : dict of str to torch.Tensor or None
        Module state (weights and buffers) at the start of the last training
        epoch, i.e. the end of epoch ``T-1``. Set by training; ``None`` unless
        ``snapshot=True``.
    feature_layers_ : tuple of str
        The resolved ``feature_layers``.
    loss_predictor_, dynamics_predictor_ : torch.nn.Module
        The auxiliary heads, when their weights are positive; registered with
        skorch, so they are trained by the optimizer, moved, saved and loaded
        with the net.

    See Also
    --------
    skal.ActiveLearner : The active-learning meta-estimator that drives it.

    References
    ----------
    .. [1] DISAL, "Tracing Training Progress: Dynamic Influence Based Selection
       for Active Learning", eq. 12-14.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skal import ActiveNet
    >>> from skal.models import MLP
    >>> X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(np.int64)
    >>> net = ActiveNet(MLP, module__num_classes=2, max_epochs=3, verbose=0)
    >>> net = net.fit(X, y)
    >>> net.training_dynamics_.shape
    torch.Size([40, 2])
    """

    def __init__(
        self,
        module,
        *args,
        criterion=torch.nn.CrossEntropyLoss,
        train_split=None,
        dynamic_weight=1.0,
        snapshot=False,
        feature_layers="auto",
        embedding_layer="auto",
        loss_head_weight=0.0,
        loss_head_margin=1.0,
        loss_head_stop_epoch=0.6,
        dynamics_head_weight=0.0,
        train_transform=None,
        **kwargs,
    ):
        kwargs.setdefault("iterator_train__shuffle", True)
        super().__init__(module, *args, criterion=criterion, train_split=train_split, **kwargs)
        self.train_transform = train_transform
        self.dynamic_weight = dynamic_weight
        self.snapshot = snapshot
        self.feature_layers = feature_layers
        self.embedding_layer = embedding_layer
        self.loss_head_weight = loss_head_weight
        self.loss_head_margin = loss_head_margin
        self.loss_head_stop_epoch = loss_head_stop_epoch
        self.dynamics_head_weight = dynamics_head_weight

    # Saved with the net and mapped to the right device on unpickling, like module_.
    cuda_dependent_attributes_ = ["training_dynamics_", "snapshot_"]

    def __setattr__(self, name, attr):
        if name == "train_transform":
            # A torchvision v2 transform is an nn.Module, which skorch would
            # take for a component to register; it is a plain parameter here.
            object.__setattr__(self, name, attr)
            return
        super().__setattr__(name, attr)

    # --- module construction ------------------------------------------------

    def initialize_module(self):
        kwargs = self.get_params_for("module")
        if "num_classes" not in kwargs and self.classes is not None and _accepts_num_classes(self.module):
            kwargs["num_classes"] = len(self.classes)
        self.module_ = self.initialized_instance(self.module, kwargs)
        self.feature_layers_ = self._resolve_feature_layers()
        if self.embedding_layer != "auto":
            self._embedding_tap()  # a named layer that does not exist fails at fit
        for name, weight in (("loss_predictor_", self.loss_head_weight),
                             ("dynamics_predictor_", self.dynamics_head_weight)):
            if not weight and hasattr(self, name):
                delattr(self, name)  # a head switched off is no longer trained or saved
        if self.loss_head_weight:
            self.loss_predictor_ = LossPredictionHead(
                n_levels=len(self.feature_layers_), **self.get_params_for("loss_predictor"))
        if self.dynamics_head_weight:
            if self.classes is None:
                raise ValueError("dynamics_head_weight > 0 needs `classes` to size the head.")
            self.dynamics_predictor_ = TrainingDynamicsHead(
                num_classes=len(self.classes), n_levels=len(self.feature_layers_),
                **self.get_params_for("dynamics_predictor"))
        return self

    def _resolve_feature_layers(self):
        available = [name for name, _ in self.module_.named_modules() if name]
        if self.feature_layers == "auto":
            layers = _auto_feature_layers(self.module_)
        else:
            layers = tuple(self.feature_layers)
            missing = [name for name in layers if name not in available]
            if missing:
                raise ValueError(
                    f"feature_layers: the module has no submodule {missing[0]!r}; "
                    f"available: {available}."
                )
        if (self.loss_head_weight or self.dynamics_head_weight) and not layers:
            raise ValueError(
                "The auxiliary heads need multi-level features, but the module has no "
                "submodules named layer1, layer2, ... (as ResNets have); set "
                f"feature_layers to some of: {available}."
            )
        return layers

    def _embedding_tap(self):
        """``(outputs, inputs)`` arguments of :func:`_tap` for the embedding."""
        if self.embedding_layer == "auto":
            name = _last_linear(self.module_)
            if name is None:
                raise ValueError(
                    "embedding_layer='auto' needs a torch.nn.Linear classifier in the module; "
                    "set embedding_layer to the submodule whose output is the embedding."
                )
            return (), (("embedding", name),)
        try:
            self.module_.get_submodule(self.embedding_layer)
        except AttributeError:
            available = [name for name, _ in self.module_.named_modules() if name]
            raise ValueError(
                f"embedding_layer: the module has no submodule {self.embedding_layer!r}; "
                f"available: {available}."
            ) from None
        return (self.embedding_layer,), ()

    def get_dataset(self, X, y=None):
        # float64 arrays (e.g. from a scikit-learn transformer) to torch's float32
        if isinstance(X, np.ndarray) and X.dtype == np.float64:
            X = X.astype(np.float32)
        return super().get_dataset(X, y)

    # --- sample indices -------------------------------------------------------

    def get_iterator(self, dataset, training=False):
        if training:
            dataset = _IndexedDataset(dataset, self.train_transform)
            self._train_size_ = len(dataset)
        return super().get_iterator(dataset, training=training)

    def infer(self, x, **fit_params):
        x, index = _split_index(x)
        if index is None or not (self.loss_head_weight or self.dynamics_head_weight):
            return super().infer(x, **fit_params)
        # A training forward (only training batches carry indices): tap the
        # feature maps for the heads, whose losses get_loss adds. Living in
        # infer/get_loss, this works with any train_step (skorch's own,
        # AccelerateMixin's).
        with _tap(self.module_, self.feature_layers_) as tapped:
            out = super().infer(x, **fit_params)
        self._head_features_ = [tapped[name] for name in self.feature_layers_]
        return out

    # --- training dynamics and the dynamic loss ------------------------------

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        # Each fit (and partial_fit) starts a new running mean: eq. 12's t counts
        # the epochs of the current training cycle.
        super().on_train_begin(net, X=X, y=y, **kwargs)
        self.training_dynamics_ = None
        self.dynamics_visits_ = None
        self.dynamics_epoch_ = 0
        self.snapshot_ = None
        self._head_features_ = None
        self._interrupted = False

    def fit_loop(self, X, y=None, **fit_params):
        # skorch ends training quietly on KeyboardInterrupt (Ctrl-C) and keeps the
        # partly trained net; note it, so that ActiveLearner can treat it as a failure.
        try:
            return super().fit_loop(X, y, **fit_params)
        except KeyboardInterrupt:
            self._interrupted = True
            raise

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        super().on_epoch_begin(net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs)
        if self.snapshot:
            # Weights at the start of this epoch = end of the previous one, so
            # after the last epoch this holds epoch T-1 however training stopped.
            self._take_snapshot()

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        super().on_epoch_end(net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs)
        self.dynamics_epoch_ += 1
        # skorch already recorded each batch's loss on the host: checking them costs no sync
        losses = [batch.get("train_loss") for batch in self.history[-1].get("batches", [])]
        bad = [loss for loss in losses if loss is not None and not np.isfinite(loss)]
        if bad:
            raise FloatingPointError(
                f"Training diverged: the training loss is {bad[0]} in epoch {len(self.history)}. "
                "Lower the learning rate (lr) or check the data for extreme values."
            )

    def on_train_end(self, net, X=None, y=None, **kwargs):
        super().on_train_end(net, X=X, y=y, **kwargs)
        # Each recorded loss comes before its step, so the last step can still leave
        # non-finite weights behind a finite loss; one check (one sync) per fit.
        params = [(f"{name}.{key}", value) for name in ("module_", "loss_predictor_", "dynamics_predictor_")
                  if getattr(self, name, None) is not None
                  for key, value in getattr(self, name).named_parameters() if not is_lazy(value)]
        if params and not torch.stack([torch.isfinite(value).all() for _, value in params]).all():
            first = next(key for key, value in params if not torch.isfinite(value).all())
            raise FloatingPointError(
                f"Training diverged: the weights {first} are NaN or infinite after the last "
                "step. Lower the learning rate (lr) or check the data for extreme values."
            )

    def get_loss(self, y_pred, y_true, X=None, training=False):
        logits = _first_output(y_pred)
        loss = super().get_loss(logits, y_true, X=X, training=training)
        _, index = _split_index(X)
        if not training or index is None:
            return loss
        index = _index_on(index, logits.device)
        f_bar = self._update_dynamics(logits, index)
        if self.dynamic_weight:
            loss = loss + self.dynamic_weight * dynamic_kl_loss(logits, f_bar)
        features = getattr(self, "_head_features_", None)
        if features is not None:
            self._head_features_ = None  # consumed; never kept past the step
            loss = loss + self._head_loss(logits, y_true, features, index)
        return loss

    def _head_loss(self, logits, y_true, features, index):
        loss = 0.0
        if self.loss_head_weight:
            if self._loss_predictor_stopped():
                features_for_loss = [f.detach() for f in features]
            else:
                features_for_loss = features
            per_sample = F.cross_entropy(logits, to_tensor(y_true, device=logits.device), reduction="none")
            predicted = self.loss_predictor_(features_for_loss)
            loss = loss + self.loss_head_weight * loss_ranking_loss(predicted, per_sample, self.loss_head_margin)
        if self.dynamics_head_weight:
            target = self.training_dynamics_[index]
            loss = loss + self.dynamics_head_weight * dynamics_prediction_loss(self.dynamics_predictor_(features), target)
        return loss

    def _loss_predictor_stopped(self):
        stop = self.loss_head_stop_epoch
        if stop is None:
            return False
        if not isinstance(stop, numbers.Integral) and 0 < stop < 1:
            stop = round(stop * self.max_epochs)
        return self.dynamics_epoch_ >= stop

    def _update_dynamics(self, logits, index):
        """Fold this batch's softmax into ``training_dynamics_``; return its rows.

        Each row is the mean over the visits of its sample in this fit: one per
        epoch with the default loaders (eq. 12's 1/t), and still a proper mean
        when a sampler or ``drop_last`` skips or repeats samples.
        """
        if self.training_dynamics_ is None:
            n_classes = logits.shape[1]
            if self.classes is not None and n_classes != len(self.classes):
                raise ValueError(
                    f"The module returns {n_classes} logits per sample but there are "
                    f"{len(self.classes)} classes; set module__num_classes={len(self.classes)}."
                )
            self.training_dynamics_ = torch.zeros(
                self._train_size_, n_classes, dtype=torch.float32, device=logits.device
            )
            self.dynamics_visits_ = torch.zeros(self._train_size_, dtype=torch.float32, device=logits.device)
        with torch.no_grad():
            probs = torch.softmax(logits.detach().float(), dim=1)
            visits = self.dynamics_visits_[index].unsqueeze(1)
            rows = running_mean_update(self.training_dynamics_[index], probs, visits)
            self.training_dynamics_[index] = rows
            self.dynamics_visits_[index] += 1
        return rows

    def _take_snapshot(self):
        state = self.module_.state_dict()
        if any(is_lazy(value) for value in state.values()):
            # Lazy modules have no weights before their first forward pass.
            self.snapshot_ = None
            return
        with torch.no_grad():
            if getattr(self, "snapshot_", None) is not None and self.snapshot_.keys() == state.keys():
                # reused across the epochs of one fit (reset when a fit starts)
                for key, value in state.items():
                    self.snapshot_[key].copy_(value)
            else:
                self.snapshot_ = {key: value.detach().clone() for key, value in state.items()}

    # --- pool inference -------------------------------------------------------

    def iter_pool(self, X):
        """Yield the pool's input batches, moved to the net's device.

        Batches have skorch's validation batch size (``iterator_valid__batch_size``,
        else ``batch_size``); only one batch is on the device at a time. With a
        :class:`skal.callbacks.ProgressBars` callback, a bar shows the pass.

        Parameters
        ----------
        X : array-like, dict of arrays or torch Dataset
            Anything the net can predict on.

        Yields
        ------
        torch.Tensor or dict of torch.Tensor
            One input batch on ``self.device``.
        """
        if isinstance(X, (np.ndarray, torch.Tensor)):
            # Arrays are sliced, a contiguous chunk at a time: the same batches as
            # skorch's loader without collating them row by row.
            size = self.get_params_for("iterator_valid").get("batch_size", self.batch_size)
            size = len(X) if size == -1 else size
            batches = (X[start:start + size] for start in range(0, len(X), size))
            total = -(-len(X) // size)
        else:
            batches = (unpack_data(batch)[0]
                       for batch in self.get_iterator(self.get_dataset(X), training=False))
            total = None
        progress = [cb for _, cb in getattr(self, "callbacks_", []) if hasattr(cb, "pool_bar")]
        if progress:
            batches = progress[0].pool_bar(batches, total=total)
        for Xi in batches:
            if isinstance(Xi, np.ndarray) and Xi.dtype == np.float64:
                Xi = Xi.astype(np.float32)
            yield to_tensor(Xi, device=self.device)

    def map_pool(self, fn, X):
        """Apply ``fn`` to every pool batch and concatenate its outputs.

        Batches come from :meth:`iter_pool`. If ``fn`` runs out of CUDA
        memory on a batch, the batch is split in two and retried (and the
        rest of the pass keeps the smaller pieces), down to single samples,
        with one ``RuntimeWarning`` per pass; a campaign is not lost to a pool
        batch that was too large for the device at that moment. Only
        :class:`torch.cuda.OutOfMemoryError` is caught.

        Parameters
        ----------
        fn : callable
            ``fn(Xb) -> torch.Tensor`` with one leading row per sample of the
            batch ``Xb``.
        X : array-like, dict of arrays or torch Dataset
            The pool.

        Returns
        -------
        torch.Tensor
            ``fn``'s outputs concatenated along dimension 0 (empty for an
            empty pool).

        Examples
        --------
        >>> import numpy as np
        >>> from skal import ActiveNet
        >>> from skal.models import MLP
        >>> net = ActiveNet(MLP, module__num_classes=2, batch_size=4).initialize()
        >>> net.map_pool(lambda Xb: Xb.sum(1), np.ones((10, 3), dtype=np.float32)).tolist()
        [3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
        """
        parts, rows, warned = [], None, False  # rows: piece size that fits, once one failed
        for Xb in self.iter_pool(X):
            size = _batch_len(Xb)
            while True:
                piece = size if rows is None else min(rows, size)
                try:
                    parts.extend([fn(p) for p in _split_batch(Xb, -(-size // piece))])
                    break
                except torch.cuda.OutOfMemoryError:
                    if piece == 1:
                        raise
                # outside the handler, so that the failed attempt's tensors are released
                rows = -(-piece // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if not warned:
                    warnings.warn(
                        f"CUDA ran out of memory on a pool batch of {size} samples; retrying in "
                        f"pieces of {rows}. Lower iterator_valid__batch_size to avoid the "
                        "retries.", RuntimeWarning, stacklevel=2)
                    warned = True
        return torch.cat(parts) if parts else torch.empty(0, device=self.device)

    def logits(self, Xb, state=None):
        """Logits of one batch in eval mode under :func:`torch.inference_mode`.

        Like skorch's prediction methods, this leaves the net's modules in eval
        mode; training switches them back.

        Parameters
        ----------
        Xb : torch.Tensor or dict of torch.Tensor
            A batch from :meth:`iter_pool`.
        state : dict of str to torch.Tensor, default=None
            Weights and buffers to evaluate with instead of the module's own
            (e.g. ``snapshot_``), through :func:`torch.func.functional_call`;
            no copy of the module is made.

        Returns
        -------
        torch.Tensor of shape (batch_size, n_classes)
            On the net's device.
        """
        return self.forward_tapped(Xb, state=state)[0]

    def forward_tapped(self, Xb, *, levels=False, embedding=False, state=None):
        """Logits plus tapped features of one batch, in eval mode under inference mode.

        Parameters
        ----------
        Xb : torch.Tensor or dict of torch.Tensor
            A batch from :meth:`iter_pool`.
        levels : bool, default=False
            Also return the ``feature_layers_`` outputs.
        embedding : bool, default=False
            Also return the penultimate embedding, flattened to 2-d.
        state : dict of str to torch.Tensor, default=None
            Weights and buffers to use instead of the module's own.

        Returns
        -------
        logits : torch.Tensor of shape (batch_size, n_classes)
        features : dict
            ``"levels"``: list of tensors (with ``levels=True``);
            ``"embedding"``: tensor of shape (batch_size, d) (with ``embedding=True``).
        """
        outputs, inputs = list(self.feature_layers_) if levels else [], ()
        if embedding:
            extra_outputs, inputs = self._embedding_tap()
            outputs += list(extra_outputs)
        self._set_training(False)
        with torch.inference_mode(), _tap(self.module_, outputs, inputs) as tapped:
            if state is None:
                out = self.infer(Xb)
            elif isinstance(Xb, Mapping):
                out = functional_call(self.module_, state, args=(), kwargs=dict(Xb))
            else:
                out = functional_call(self.module_, state, (Xb,))
        features = {}
        if levels:
            features["levels"] = [tapped[name] for name in self.feature_layers_]
        if embedding:
            key = "embedding" if inputs else self.embedding_layer
            features["embedding"] = tapped[key].flatten(1)
        return _first_output(out), features

    def iter_logits(self, X, state=None):
        """Yield the logits of ``X`` batch by batch, on the net's device.

        Examples
        --------
        >>> import numpy as np
        >>> from skal import ActiveNet
        >>> from skal.models import MLP
        >>> X = np.zeros((10, 3), dtype=np.float32)
        >>> net = ActiveNet(MLP, module__num_classes=2, batch_size=4).initialize()
        >>> [logits.shape[0] for logits in net.iter_logits(X)]
        [4, 4, 2]
        """
        for Xb in self.iter_pool(X):
            yield self.logits(Xb, state=state)


def _batch_len(Xb):
    if isinstance(Xb, Mapping):
        return len(next(iter(Xb.values())))
    return len(Xb[0]) if isinstance(Xb, (tuple, list)) else len(Xb)


def _split_batch(Xb, pieces):
    """``Xb`` (a tensor, or a dict, tuple or list of tensors) in ``pieces`` row blocks."""
    if pieces == 1:
        return [Xb]
    if isinstance(Xb, Mapping):
        split = {key: torch.tensor_split(value, pieces) for key, value in Xb.items()}
        return [{key: split[key][i] for key in Xb} for i in range(pieces)]
    if isinstance(Xb, (tuple, list)):
        return [type(Xb)(parts) for parts in zip(*(torch.tensor_split(x, pieces) for x in Xb))]
    return list(torch.tensor_split(Xb, pieces))


def _accepts_num_classes(module):
    if isinstance(module, torch.nn.Module) or not callable(module):
        return False
    try:
        return "num_classes" in inspect.signature(module).parameters
    except (TypeError, ValueError):
        return False
