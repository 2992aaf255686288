"""Training parts: what a selector needs the net to do while it trains.

A training part is a skorch :class:`~skorch.callbacks.Callback` that an
:class:`~skal.ActiveNet` also asks, at each training batch, for a term of the
loss. Each query strategy declares the parts its training needs
(:meth:`skal.selectors.BaseSelector.training_needs`) and
:class:`~skal.ActiveLearner` adds them to its clone of the net's callbacks, so
everything one method does while training lives in its part:

===================================  ======================================================  ============
part                                 what it does                                            declared by
===================================  ======================================================  ============
:class:`TrainingDynamics`            running mean of each sample's training softmax          DISAL, TiDAL
                                     (DISAL eq. 12, TiDAL's ``p_bar``)                       (required)
:class:`DynamicLoss`                 ``weight * KL(f_bar || f_theta)`` (DISAL 13-14)         DISAL
:class:`EpochSnapshot`               the weights at the end of epoch ``T-1``                 DISAL
:class:`LossPredictionHeadTraining`  LL4AL's loss-prediction head and ranking hinge          LL4AL
:class:`DynamicsHeadTraining`        TiDAL's training-dynamics head and its KL               TiDAL
===================================  ======================================================  ============

A part is added to any net by hand like any callback, e.g. DISAL's "w/o S"
ablation, random sampling trained with the dynamic loss::

    ActiveNet(module, callbacks=[("dynamic_loss", DynamicLoss(weight=1.0))])

Parts that read the training batches' sample positions (``uses_indices``) get
them from :attr:`skal.ActiveNet.sample_indices_` at each batch, without any
change to what the module, ``infer``, ``get_loss``, collate functions or
``iterator_train`` see. Parts that others read (:class:`TrainingDynamics`) are
added by the net when missing (:meth:`TrainingPart.requires`).
"""

import copy
import inspect
import math
import numbers
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from skorch.callbacks import Callback
from skorch.utils import to_tensor
from sklearn.utils._param_validation import Interval, validate_parameter_constraints
from torch.nn.parameter import is_lazy

from ._taps import submodule_names
from .heads import LossPredictionHead, TrainingDynamicsHead
from .losses import dynamic_kl_loss, dynamics_prediction_loss, loss_ranking_loss

__all__ = [
    "TrainingPart",
    "TrainingDynamics",
    "DynamicLoss",
    "EpochSnapshot",
    "LossPredictionHeadTraining",
    "DynamicsHeadTraining",
]


class TrainingPart(Callback):
    """Base class of training parts.

    A part is a skorch callback (its ``on_*`` hooks run as any callback's) with
    three more hooks, all optional:

    * :meth:`loss` returns its term of a training batch's loss (or None);
    * :meth:`modules` returns auxiliary modules for the net to build and
      register (they are then trained, moved, saved and loaded with it);
    * :meth:`requires` names other parts it reads.

    Like every skorch callback, its parameters are its ``__init__``
    arguments and its state ends with ``_``. Parameters are checked by
    ``_parameter_constraints`` when the net is initialised.

    See Also
    --------
    skal.ActiveNet : Runs the parts it finds among its callbacks.

    Examples
    --------
    A part that adds an L1 penalty on the logits:

    >>> import numpy as np
    >>> from skal import ActiveNet
    >>> from skal.models import MLP
    >>> from skal.parts import TrainingPart
    >>> class LogitPenalty(TrainingPart):
    ...     def __init__(self, weight=0.01):
    ...         self.weight = weight
    ...     def loss(self, net, logits, y_true):
    ...         return self.weight * logits.abs().mean()
    >>> X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    >>> net = ActiveNet(MLP, module__num_classes=2, max_epochs=1, verbose=0,
    ...                 callbacks=[("penalty", LogitPenalty())])
    >>> list(net.fit(X, (X[:, 0] > 0).astype(np.int64)).parts_)
    ['penalty']
    """

    #: whether the part reads the sample positions of the training batches
    uses_indices = False
    #: whether the part runs the module on the pool's unlabeled rows (skal.semi): its
    #: loss is asked last, after the parts that read the labeled batch's forward
    reads_pool = False
    _parameter_constraints = {}

    def initialize(self):
        validate_parameter_constraints(
            self._parameter_constraints, self.get_params(deep=False), caller_name=type(self).__name__)
        return super().initialize()

    def __repr__(self):
        # like a scikit-learn estimator: the parameters that differ from their defaults
        defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{key}={value!r}" for key, value in self.get_params(deep=False).items()
                   if key not in defaults or defaults[key] is not value and defaults[key] != value]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __getstate__(self):
        # Tensors travel on the CPU, so that a net trained on CUDA unpickles (or is
        # deep-copied for a warm start) anywhere; a part's state is only read in
        # training (reset when a fit starts) or copied into a module (the snapshot).
        return {key: _to_cpu(value) for key, value in self.__dict__.items()}

    def requires(self):
        """Parts this one reads, which the net adds when it has none of their type.

        Returns
        -------
        list of (str, TrainingPart)
        """
        return []

    def modules(self, net):
        """Auxiliary modules to build, as ``{name: module}``.

        The net registers each as ``name_`` (so ``name__param`` parameters
        configure it), when its own module is built.

        Parameters
        ----------
        net : skal.ActiveNet
            With ``module_`` and ``feature_layers_`` already set.

        Returns
        -------
        dict of str to torch.nn.Module
        """
        return {}

    def state_dict(self):
        """The part's fitted tensors, for saving: a flat dict of str to tensor.

        Returns
        -------
        dict of str to torch.Tensor
            Empty by default.
        """
        return {}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned.

        Parameters
        ----------
        state : dict of str to torch.Tensor

        Raises
        ------
        ValueError
            If a key is missing or unknown, or a shape does not fit.
        """
        _check_keys(self, state, set())

    def state_spec(self, net):
        """What :meth:`state_dict` holds once ``net`` has trained with this part.

        Lets a save be checked before any tensor is read.

        Parameters
        ----------
        net : skal.ActiveNet
            Initialised, with this part among its callbacks.

        Returns
        -------
        dict of str to (tuple, torch.dtype)
            Each key's shape (a leading ``None``: one row per training
            sample) and dtype.
        """
        return {}

    def loss(self, net, logits, y_true):
        """This part's term of a training batch's loss.

        Parameters
        ----------
        net : skal.ActiveNet
        logits : torch.Tensor of shape (batch_size, n_classes)
            The module's training-forward output (first element of a tuple).
        y_true : torch.Tensor of shape (batch_size,)
            The batch's targets, on the net's device.

        Returns
        -------
        torch.Tensor or None
            A scalar added to the criterion's loss, or None.
        """
        return None


class TrainingDynamics(TrainingPart):
    """The running mean of each training sample's softmax over the epochs of a fit.

    ``mean_[i]`` is sample ``i``'s mean training-forward softmax over its
    visits in the current ``fit``/``partial_fit`` (DISAL eq. 12,
    ``f_bar_t = f_bar_{t-1} (t-1)/t + f_t / t``; TiDAL's ``p_bar``). With
    skorch's default loaders every sample is visited once per epoch; with a
    sampler or ``drop_last`` that skips or repeats samples it is still a
    proper mean over visits. A batch updates it once, however many times an
    optimizer such as LBFGS evaluates the loss.

    With ``decay``, the mean is recency-weighted instead, as in temporal
    ensembling (Laine and Aila, ICLR 2017): ``e_t = decay e_{t-1} + (1 -
    decay) f_t`` and ``f_bar_t = e_t / (1 - decay^t)`` (the bias-corrected
    exponential moving average, so the first epochs' near-uniform
    predictions fade out).

    Parameters
    ----------
    decay : float in (0, 1) or None, default=None
        None: the running mean of eq. 12 (every epoch weighs the same).
        A float: the weight of the past in the recency-weighted mean.

    Attributes
    ----------
    mean_ : torch.Tensor of shape (n_train, n_classes) or None
        On the net's device, rows in the order of the training data (its
        training part when ``train_split`` is set); computed from ``sum_``.
    sum_ : torch.Tensor of shape (n_train, n_classes) or None
        The sum of each sample's softmax over its visits (with ``decay``: the
        uncorrected moving average); allocated at the first batch of each fit.
    visits_ : torch.Tensor of shape (n_train,) or None
        How many times each sample was folded in.

    References
    ----------
    .. [1] DISAL, "Tracing Training Progress: Dynamic Influence Based Selection
       for Active Learning", eq. 12.

    Examples
    --------
    >>> import numpy as np
    >>> from skal import ActiveNet
    >>> from skal.models import MLP
    >>> from skal.parts import TrainingDynamics
    >>> X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    >>> net = ActiveNet(MLP, module__num_classes=2, max_epochs=3, verbose=0,
    ...                 callbacks=[("dynamics", TrainingDynamics())])
    >>> net = net.fit(X, (X[:, 0] > 0).astype(np.int64))
    >>> net.parts_["dynamics"].mean_.shape, int(net.parts_["dynamics"].visits_.min())
    (torch.Size([40, 2]), 3)
    """

    uses_indices = True
    _parameter_constraints = {"decay": [Interval(Real, 0, 1, closed="neither"), None]}

    def __init__(self, decay=None):
        self.decay = decay

    def initialize(self):
        self.sum_ = self.visits_ = self.n_samples_ = self.batch_rows_ = None
        return super().initialize()

    @property
    def mean_(self):
        """The running mean (0 for a sample not visited yet), or None before training."""
        if self.sum_ is None:
            return None
        return self._mean(self.sum_, self.visits_)

    def _mean(self, total, visits):
        if self.decay is None:
            return total / visits.clamp_min(1).unsqueeze(1)
        correction = 1 - torch.pow(torch.as_tensor(float(self.decay), device=visits.device), visits)
        return total / correction.clamp_min(torch.finfo(total.dtype).tiny).unsqueeze(1)

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        # each fit (and partial_fit) starts a new mean: eq. 12's t counts this fit's epochs
        self.sum_ = self.visits_ = self.batch_rows_ = None

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self.n_samples_ = len(dataset_train)

    def on_batch_begin(self, net, batch=None, training=None, **kwargs):
        if training:
            self.batch_rows_ = None  # this batch is folded in at its first loss evaluation

    def loss(self, net, logits, y_true):
        self.rows(net, logits)
        return None

    def rows(self, net, logits):
        """This batch's rows of ``mean_``, this batch's own prediction included.

        Folds the batch's softmax in at the first call of a batch; later calls
        for the same batch return the same rows. The mean is kept as a sum and
        a visit count, so a sample that a sampler puts twice in one batch
        counts twice (eq. 12's running mean is the same number).

        Parameters
        ----------
        net : skal.ActiveNet
        logits : torch.Tensor of shape (batch_size, n_classes)

        Returns
        -------
        torch.Tensor of shape (batch_size, n_classes)
        """
        if self.batch_rows_ is not None:
            return self.batch_rows_
        index = net.sample_indices_.current
        if self.sum_ is None:
            n_classes = logits.shape[1]
            if net.classes is not None and n_classes != len(net.classes):
                raise ValueError(
                    f"The module returns {n_classes} logits per sample but there are "
                    f"{len(net.classes)} classes; set module__num_classes={len(net.classes)}."
                )
            self.sum_ = torch.zeros(self.n_samples_, n_classes, dtype=torch.float32, device=logits.device)
            self.visits_ = torch.zeros(self.n_samples_, dtype=torch.float32, device=logits.device)
        with torch.no_grad():
            probs = torch.softmax(logits.detach().float(), dim=1)
            self.visits_.index_add_(0, index, probs.new_ones(len(index)))
            if self.decay is None:
                self.sum_.index_add_(0, index, probs)
                totals = self.sum_.index_select(0, index)
            else:  # a sample twice in one batch: its last visit counts
                totals = self.sum_.index_select(0, index).mul_(self.decay).add_(probs, alpha=1 - self.decay)
                self.sum_.index_copy_(0, index, totals)
            rows = self._mean(totals, self.visits_.index_select(0, index))
        self.batch_rows_ = rows
        return rows

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if training:
            self.batch_rows_ = None

    def state_dict(self):
        return {} if self.sum_ is None else {"sum": self.sum_, "visits": self.visits_}

    def state_spec(self, net):
        n_classes = None if net.classes is None else len(net.classes)
        return {"sum": ((None, n_classes), torch.float32), "visits": ((None,), torch.float32)}

    def load_state_dict(self, state):
        _check_keys(self, state, {"sum", "visits"} if state else set())
        total, visits = state.get("sum"), state.get("visits")
        if total is not None and (total.ndim != 2 or visits.shape != total.shape[:1]):
            raise ValueError(f"{type(self).__name__}: sum of shape {tuple(total.shape)} and "
                             f"visits of shape {tuple(visits.shape)} do not match.")
        self.sum_, self.visits_ = total, visits
        self.n_samples_ = None if total is None else len(total)


class DynamicLoss(TrainingPart):
    """DISAL's dynamic loss: ``weight * KL(f_bar || softmax(logits))``.

    Added to the criterion's loss of every training batch, averaged over the
    batch, with ``f_bar`` the batch's rows of :class:`TrainingDynamics`
    (which already include this batch's prediction) detached (DISAL eq.
    13-14). Declared by :class:`~skal.selectors.DISAL`; add it to any other
    selector's net by hand for DISAL's "w/o S" ablation.

    Parameters
    ----------
    weight : float, default=1.0
        ``lambda`` of DISAL eq. 14; 1.0 was best in the paper's Table 3. 0
        trains exactly like a net without the part.
    ramp_up : int, default=0
        Epochs over which the weight rises from ~0 to ``weight`` along
        temporal ensembling's Gaussian ramp ``exp(-5 (1 - t / ramp_up)^2)``
        (Laine and Aila, ICLR 2017), so that the first epochs' near-uniform
        ``f_bar`` pulls less. 0: the full weight from the start (the paper).

    Attributes
    ----------
    epoch_ : int
        Epochs completed in the current fit.

    References
    ----------
    .. [1] DISAL, "Tracing Training Progress: Dynamic Influence Based Selection
       for Active Learning", eq. 13-14 and Table 3.
    .. [2] Laine and Aila, "Temporal Ensembling for Semi-Supervised Learning",
       ICLR 2017 (the ramp-up).

    Examples
    --------
    >>> from skal.parts import DynamicLoss
    >>> [name for name, _ in DynamicLoss().requires()]
    ['dynamics']
    """

    _parameter_constraints = {"weight": [Interval(Real, 0, None, closed="left")],
                              "ramp_up": [Interval(Integral, 0, None, closed="left")]}

    def __init__(self, weight=1.0, ramp_up=0):
        self.weight = weight
        self.ramp_up = ramp_up

    def initialize(self):
        self.epoch_ = 0
        return super().initialize()

    def requires(self):
        return [("dynamics", TrainingDynamics())]

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.epoch_ = 0

    def on_epoch_end(self, net, **kwargs):
        self.epoch_ += 1

    def current_weight(self):
        """The weight of this epoch: ``weight``, times the Gaussian ramp during ``ramp_up``."""
        if self.ramp_up and self.epoch_ < self.ramp_up:
            return self.weight * math.exp(-5.0 * (1.0 - self.epoch_ / self.ramp_up) ** 2)
        return self.weight

    def loss(self, net, logits, y_true):
        if not self.weight:
            return None
        f_bar = net.get_part(TrainingDynamics).rows(net, logits)
        return self.current_weight() * dynamic_kl_loss(logits, f_bar)


class EpochSnapshot(TrainingPart):
    """The module's weights and buffers at the end of epoch ``T-1`` (and earlier), for DISAL's query.

    Copied at the start of every epoch into preallocated tensors, so after
    the last epoch it holds the state at the end of the one before, however
    training stopped (early stopping included); one weight copy of memory per
    kept epoch. BatchNorm statistics are included.

    Parameters
    ----------
    keep : int, default=1
        How many epoch ends to keep: 1 keeps ``T-1`` (the paper), ``k`` keeps
        ``T-1, ..., T-k`` (for DISAL's ``transitions``).

    Attributes
    ----------
    states_ : list of dict of str to torch.Tensor
        The module's ``state_dict`` at the start of each of the last ``keep``
        trained epochs, the latest (``T-1``) first; empty before the first
        epoch, and while a lazy module has no weights.
    state_ : dict of str to torch.Tensor or None
        ``states_[0]``, the state at the end of epoch ``T-1``, or None.

    Examples
    --------
    >>> import numpy as np
    >>> from skal import ActiveNet
    >>> from skal.models import MLP
    >>> from skal.parts import EpochSnapshot
    >>> X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    >>> net = ActiveNet(MLP, module__num_classes=2, module__in_features=3, max_epochs=3,
    ...                 verbose=0, callbacks=[("snapshot", EpochSnapshot(keep=2))])
    >>> net = net.fit(X, (X[:, 0] > 0).astype(np.int64))
    >>> len(net.parts_["snapshot"].states_), sorted(net.parts_["snapshot"].state_)[:2]
    (2, ['layers.1.bias', 'layers.1.weight'])
    """

    _parameter_constraints = {"keep": [Interval(Integral, 1, None, closed="left")]}

    def __init__(self, keep=1):
        self.keep = keep

    def initialize(self):
        self.states_ = []
        return super().initialize()

    @property
    def state_(self):
        return self.states_[0] if self.states_ else None

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.states_ = []

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        state = net.module_.state_dict()
        if any(is_lazy(value) for value in state.values()):
            self.states_ = []  # lazy modules have no weights before their first batch
            return
        with torch.no_grad():
            # the oldest kept state's storage is reused for the newest
            if len(self.states_) == self.keep and self.states_[-1].keys() == state.keys():
                target = self.states_.pop()
                for key, value in state.items():
                    target[key].copy_(value)
            else:
                target = {key: value.detach().clone() for key, value in state.items()}
                if len(self.states_) == self.keep:
                    self.states_.pop()
            self.states_.insert(0, target)

    def state_dict(self):
        return {f"{i}.{key}": value for i, state in enumerate(self.states_) for key, value in state.items()}

    def state_spec(self, net):
        return {f"{i}.{key}": (tuple(value.shape), value.dtype)
                for i in range(self.keep) for key, value in net.module_.state_dict().items()}

    def load_state_dict(self, state):
        states = {}
        for name, value in state.items():
            index, _, key = name.partition(".")
            if not (index.isdigit() and int(index) < self.keep and key):
                raise ValueError(f"{type(self).__name__}: saved state key {name!r} is not "
                                 f"'<epoch index below keep={self.keep}>.<module key>'.")
            states.setdefault(int(index), {})[key] = value
        if sorted(states) != list(range(len(states))):
            raise ValueError(f"{type(self).__name__}: saved epochs {sorted(states)} are not 0 .. k-1.")
        self.states_ = [states[i] for i in range(len(states))]  # checked against the module when used

    def module(self, net, back=1):
        """A copy of ``net.module_`` holding the state at the end of epoch ``T - back``, in eval mode.

        The net's own module is never touched, so a prediction running at the
        same time sees only its own weights.

        Parameters
        ----------
        net : skal.ActiveNet
            The net that trained with this part.
        back : int, default=1
            1 for ``T-1``, up to ``keep``.

        Returns
        -------
        torch.nn.Module
        """
        if len(self.states_) < back:
            raise ValueError(
                f"The net has {len(self.states_)} epoch snapshot(s), not the {back} asked for: train "
                f"it for at least {back + 1} epochs with an EpochSnapshot(keep>={back}) part "
                "(ActiveLearner adds one for DISAL), one more when the module has lazy layers "
                "(such as skal.models.MLP's without in_features), whose weights do not exist "
                "before the first batch."
            )
        module = copy.deepcopy(net.module_)
        module.load_state_dict(self.states_[back - 1])
        return module.eval()


class _FeatureTraining(TrainingPart):
    """Base of the head parts: taps ``net.feature_layers_`` during training forwards."""

    def initialize(self):
        self.handles_, self.features_, self.epoch_ = [], {}, 0
        return super().initialize()

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self._remove_hooks()
        self.epoch_ = 0
        for name in net.feature_layers_:
            submodule = net.module_.get_submodule(name)
            self.handles_.append(submodule.register_forward_hook(_TrainingTap(self.features_, name)))

    def on_epoch_end(self, net, **kwargs):
        self.epoch_ += 1

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        self.features_.clear()  # never kept past the step

    def on_train_end(self, net, X=None, y=None, **kwargs):
        self._remove_hooks()
        self.features_.clear()

    def state_dict(self):
        return {"epoch": torch.tensor(self.epoch_)}

    def state_spec(self, net):
        return {"epoch": ((), torch.int64)}

    def load_state_dict(self, state):
        _check_keys(self, state, {"epoch"})
        self.epoch_ = int(state["epoch"])

    def _remove_hooks(self):
        for handle in self.handles_:
            handle.remove()
        self.handles_ = []

    def _features(self, net):
        missing = [name for name in net.feature_layers_ if name not in self.features_]
        if missing:
            raise RuntimeError(
                f"{type(self).__name__}: the training forward pass did not run the feature "
                f"layer(s) {missing}; an infer override must call the module."
            )
        return [self.features_[name] for name in net.feature_layers_]

    def __getstate__(self):
        state = super().__getstate__()
        state["handles_"], state["features_"] = [], {}  # hooks belong to the live module
        return state

    @staticmethod
    def _check_levels(net, owner):
        if not net.feature_layers_:
            raise ValueError(
                f"{owner} needs multi-level features, but the module has no submodules named "
                "layer1, layer2, ... (as ResNets have); set the net's feature_layers to some of: "
                f"{submodule_names(net.module_)}."
            )


class _TrainingTap:
    """Forward hook that keeps a submodule's output of training-mode forwards."""

    def __init__(self, store, key):
        self.store, self.key = store, key

    def __call__(self, module, args, out):
        if module.training:
            self.store[self.key] = out


class LossPredictionHeadTraining(_FeatureTraining):
    """LL4AL's training side: a loss-prediction head trained with a ranking hinge.

    Builds ``net.loss_predictor_`` (:class:`skal.heads.LossPredictionHead`,
    configured by the net's ``loss_predictor__hidden`` style parameters) on the
    outputs of the net's ``feature_layers`` and adds
    ``weight * ranking_hinge(predicted, per-sample CE, margin)``
    (:func:`skal.losses.loss_ranking_loss`) to each training batch's loss.
    From epoch ``stop_grad_epoch`` of each fit on, the features reach the head
    detached, so its gradient no longer reaches the backbone.

    Parameters
    ----------
    weight : float, default=1.0
        Weight of the ranking loss (the paper's lambda = 1).
    margin : float, default=1.0
        Hinge margin (the paper's xi = 1).
    stop_grad_epoch : int, float or None, default=0.6
        Epoch (0-based, within each fit) from which the head's gradient is
        detached from the backbone; a float in (0, 1) is a fraction of the
        net's ``max_epochs`` (0.6 = the paper's epoch 120 of 200); None never.

    Attributes
    ----------
    epoch_ : int
        Epochs completed in the current fit.

    References
    ----------
    .. [1] Yoo and Kweon, "Learning Loss for Active Learning", CVPR 2019.

    Examples
    --------
    >>> from skal.parts import LossPredictionHeadTraining
    >>> part = LossPredictionHeadTraining(stop_grad_epoch=0.5).initialize()
    >>> part.stop_epoch(max_epochs=10)
    5
    """

    _parameter_constraints = {
        "weight": [Interval(Real, 0, None, closed="neither")],
        "margin": [Interval(Real, 0, None, closed="left")],
        "stop_grad_epoch": [Interval(Integral, 0, None, closed="left"),
                            Interval(Real, 0, 1, closed="neither"), None],
    }

    def __init__(self, weight=1.0, margin=1.0, stop_grad_epoch=0.6):
        self.weight = weight
        self.margin = margin
        self.stop_grad_epoch = stop_grad_epoch

    def modules(self, net):
        self._check_levels(net, "LL4AL's loss-prediction head")
        return {"loss_predictor": LossPredictionHead(
            n_levels=len(net.feature_layers_), **net.get_params_for("loss_predictor"))}

    def stop_epoch(self, max_epochs):
        """The epoch of a fit from which the head's gradient stops at the features.

        Parameters
        ----------
        max_epochs : int
            The net's ``max_epochs``.

        Returns
        -------
        int or None
        """
        stop = self.stop_grad_epoch
        if stop is not None and not isinstance(stop, numbers.Integral):
            stop = round(stop * max_epochs)
        return stop

    def loss(self, net, logits, y_true):
        features = self._features(net)
        stop = self.stop_epoch(net.max_epochs)
        if stop is not None and self.epoch_ >= stop:
            features = [f.detach() for f in features]
        per_sample = F.cross_entropy(logits, to_tensor(y_true, device=logits.device), reduction="none")
        predicted = net.loss_predictor_(features)
        return self.weight * loss_ranking_loss(predicted, per_sample, self.margin)


class DynamicsHeadTraining(_FeatureTraining):
    """TiDAL's training side: a head that learns each sample's training dynamics.

    Builds ``net.dynamics_predictor_`` (:class:`skal.heads.TrainingDynamicsHead`)
    on the outputs of the net's ``feature_layers`` and adds
    ``weight * KL(p_bar || softmax(head))`` (:func:`skal.losses.dynamics_prediction_loss`)
    towards the batch's rows of :class:`TrainingDynamics` to each training
    batch's loss. The head needs the net's ``classes`` (ActiveLearner sets them).

    Parameters
    ----------
    weight : float, default=1.0
        Weight of the head's KL loss (the paper's lambda = 1).

    References
    ----------
    .. [1] Kye et al., "TiDAL: Learning Training Dynamics for Active Learning",
       ICCV 2023.

    Examples
    --------
    >>> from skal.parts import DynamicsHeadTraining
    >>> [name for name, _ in DynamicsHeadTraining().requires()]
    ['dynamics']
    """

    _parameter_constraints = {"weight": [Interval(Real, 0, None, closed="neither")]}

    def __init__(self, weight=1.0):
        self.weight = weight

    def requires(self):
        return [("dynamics", TrainingDynamics())]

    def modules(self, net):
        self._check_levels(net, "TiDAL's training-dynamics head")
        if net.classes is None:
            raise ValueError("TiDAL's training-dynamics head needs the net's `classes` to size "
                             "its output; set classes (ActiveLearner does).")
        return {"dynamics_predictor": TrainingDynamicsHead(
            num_classes=len(net.classes), n_levels=len(net.feature_layers_),
            **net.get_params_for("dynamics_predictor"))}

    def loss(self, net, logits, y_true):
        target = net.get_part(TrainingDynamics).rows(net, logits)
        predicted = net.dynamics_predictor_(self._features(net))
        return self.weight * dynamics_prediction_loss(predicted, target)


def _check_keys(part, state, expected):
    if set(state) != expected:
        raise ValueError(f"{type(part).__name__}: saved state has keys {sorted(state)}, "
                         f"expected {sorted(expected)}.")


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_cpu(item) for item in value]
    return value
