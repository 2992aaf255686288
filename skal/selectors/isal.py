"""ISAL: influence selection through an inverse-Hessian-vector product."""

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from .._data import named_errors
from ..influence import influence_scores, lissa, reference_gradient, select_params
from .base import ScoreSelector, TrainingNeeds, shared_docs

__all__ = ["ISAL"]


@shared_docs
class ISAL(ScoreSelector):
    """Influence Selection for Active Learning.

    Scores each pool sample by the first-order effect that training on it
    (with its predicted label) would have on the loss of a reference set:

    1. ``v = sum_{z in R} grad_P CE(z)`` over the parameters ``P``;
    2. ``s ~ scale (H + damping scale I)^-1 v`` by the LiSSA recursion with
       Hessian-vector products on single labeled training samples;
    3. ``I(x) = -<grad_P CE(f(x), y_hat), s>`` for every pool sample, a whole
       batch at a time by one forward-mode JVP.

    The most negative influence (the largest expected reference-loss
    reduction) is picked first; ``return_scores`` reports ``-I``. The model
    is evaluated in eval mode and never changed.

    The reference set ``R`` must not be trained on: near a training optimum
    its summed gradient is about zero and so are all scores. By default the
    learner holds out a stratified, seeded fraction of the initial labeled
    set for it (those samples are kept in ``X_labeled_`` but not trained on).

    Parameters
    ----------
    reference : float or tuple (X_ref, y_ref), default=0.1
        A float in (0, 1): the fraction of the initial labeled set held out
        as ``R``. A tuple: your own reference samples and labels (e.g. a
        validation set); nothing is held out then.
    params : {"all weights", "last layer"} or callable, default="all weights"
        The parameters ``P``: every weight tensor with ``ndim > 1`` (the
        paper's choice for classification), the last linear layer (cheap), or
        a ``(name, parameter) -> bool`` filter.
    damping : float, default=0.01
        LiSSA damping (the reference code's 0.01).
    scale : float, default=1e4
        LiSSA scale (the reference code's 1e4); must exceed the largest
        Hessian eigenvalue for the recursion to converge.
    depth : int, default=250
        LiSSA steps per estimate (the reference code's 250).
    repeats : int, default=4
        Estimates averaged (the reference code's 4): ``depth * repeats``
        labeled samples are drawn, with replacement, for the recursion.
    pseudo_label : {"hard", "expected"}, default="hard"
        ``"hard"``: the predicted class (the paper's choice). ``"expected"``:
        the loss weighted by the predicted probabilities of the top 10
        classes (the reference code's unused variant; identically zero when
        there are at most 10 classes).
    {batch}

    See Also
    --------
    skal.influence : The pure functions behind it.

    References
    ----------
    .. [1] Liu et al., "Influence Selection for Active Learning", ICCV 2021.

    Examples
    --------
    >>> from skal.selectors import ISAL
    >>> ISAL().training_needs().reference
    0.1
    >>> ISAL(params="last layer", depth=50).get_params()["depth"]
    50
    """

    _parameter_constraints = {
        **ScoreSelector._parameter_constraints,
        "reference": [Interval(Real, 0, 1, closed="neither"), tuple],
        "params": [StrOptions({"all weights", "last layer"}), callable],
        "damping": [Interval(Real, 0, 1, closed="left")],
        "scale": [Interval(Real, 0, None, closed="neither")],
        "depth": [Interval(Integral, 1, None, closed="left")],
        "repeats": [Interval(Integral, 1, None, closed="left")],
        "pseudo_label": [StrOptions({"hard", "expected"})],
    }

    def __init__(self, reference=0.1, params="all weights", damping=0.01, scale=1e4, depth=250,
                 repeats=4, pseudo_label="hard", batch="topk"):
        self.reference = reference
        self.params = params
        self.damping = damping
        self.scale = scale
        self.depth = depth
        self.repeats = repeats
        self.pseudo_label = pseudo_label
        self.batch = batch

    def training_needs(self):
        if isinstance(self.reference, Real) and not isinstance(self.reference, bool):
            return TrainingNeeds(reference=float(self.reference))
        return TrainingNeeds()

    def score_pool(self, net, X_pool, *, random_state=None, labeled=None):
        if labeled is None or len(labeled.y) == 0:
            raise ValueError("ISAL needs the labeled set; query it through ActiveLearner.")
        X_ref, y_ref = self._reference(labeled)
        if len(np.unique(y_ref)) < 2:
            warnings.warn(
                f"ISAL's reference set has a single class ({len(y_ref)} samples): influence then "
                "measures the loss of that class alone; use a reference set with every class.",
                UserWarning, stacklevel=3,
            )
        steps = self.depth * self.repeats
        if len(labeled.y) < steps:
            warnings.warn(
                f"ISAL's LiSSA recursion takes depth * repeats = {steps} labeled samples but only "
                f"{len(labeled.y)} are trained on; samples are drawn with replacement, so some "
                "are reused (lower depth or repeats to avoid it).",
                UserWarning, stacklevel=3,
            )
        module = net.module_
        params = select_params(module, self.params)
        v = reference_gradient(module, params, _batches(net, X_ref, y_ref))
        rng = np.random.default_rng(random_state)
        draws = rng.integers(0, len(labeled.y), size=self.depth * self.repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("always", RuntimeWarning)
            s = lissa(module, params, v, _single_samples(net, labeled.X, labeled.y, draws),
                      damping=float(self.damping), scale=float(self.scale), depth=int(self.depth),
                      repeats=int(self.repeats))
        return net.map_pool(
            lambda Xb: -influence_scores(module, params, Xb, s, pseudo_label=self.pseudo_label),
            X_pool)

    def check_labeled(self, sample_shape, classes):
        """Check a reference tuple against the samples and the classes, before any training.

        :class:`~skal.ActiveLearner` calls it at ``fit`` (and again at each
        ``refit`` and ``query``), so a tuple that cannot work fails before the
        net is trained, not at the first query. A fraction needs no check.

        Parameters
        ----------
        sample_shape : tuple of int
            The shape of one labeled sample.
        classes : ndarray of shape (n_classes,)
            The learner's sorted classes.

        Raises
        ------
        ValueError
            Naming ``reference``: not a pair, ``X_ref`` and ``y_ref`` of
            different lengths, empty, of another sample shape, or labels
            outside ``classes``.

        Examples
        --------
        >>> import numpy as np
        >>> from skal.selectors import ISAL
        >>> ISAL(reference=(np.zeros((4, 3)), np.array([0, 1, 0, 2]))).check_labeled((3,), np.arange(2))
        Traceback (most recent call last):
        ...
        ValueError: reference: y_ref has labels not in classes_: ['2'].
        """
        if isinstance(self.reference, tuple):
            self._reference_tuple(tuple(sample_shape), np.asarray(classes))

    def _reference_tuple(self, sample_shape, classes):
        """The reference tuple as float32 samples and encoded labels, checked."""
        if len(self.reference) != 2:
            raise ValueError("reference must be a fraction or a tuple (X_ref, y_ref).")
        with named_errors("reference"):
            X_ref, y_ref = np.asarray(self.reference[0], dtype=np.float32), np.asarray(self.reference[1])
        if X_ref.ndim == 0 or y_ref.ndim != 1 or X_ref.shape[1:] != sample_shape or len(X_ref) != len(y_ref) \
                or len(y_ref) == 0:
            raise ValueError(
                f"reference: X_ref of shape {X_ref.shape} and y_ref of length {len(y_ref)} do "
                f"not match each other or the samples' shape {sample_shape}."
            )
        unknown = set(y_ref.tolist()) - set(classes.tolist())
        if unknown:
            raise ValueError(f"reference: y_ref has labels not in classes_: {sorted(map(repr, unknown))}.")
        return X_ref, np.searchsorted(classes, y_ref)

    def _reference(self, labeled):
        if isinstance(self.reference, tuple):
            return self._reference_tuple(tuple(np.shape(labeled.X)[1:]), labeled.classes)
        if len(labeled.y_reference) == 0:
            raise ValueError(
                "ISAL has no reference set: fit the learner with this selector so that it "
                "holds one out, or pass reference=(X_ref, y_ref)."
            )
        return labeled.X_reference, labeled.y_reference


def _batches(net, X, y):
    """``(x, y)`` tensor batches on the net's device, at its prediction batch size."""
    size = net.get_params_for("iterator_valid").get("batch_size", net.batch_size)
    size = len(y) if size == -1 else size
    for start in range(0, len(y), size):
        yield (torch.as_tensor(X[start:start + size], device=net.device),
               torch.as_tensor(np.asarray(y[start:start + size]), dtype=torch.long, device=net.device))


def _single_samples(net, X, y, draws):
    for i in draws:
        yield (torch.as_tensor(X[i:i + 1], device=net.device),
               torch.as_tensor(np.asarray(y[i:i + 1]), dtype=torch.long, device=net.device))
