"""How the learner trains its net: configuration, seeding, interrupts and warm starts.

Everything here is a function of the learner's parameters and fitted state,
never of the learner object itself:

- :func:`current_selector` and :func:`configured_net` build the selector and
  the net (with the selector's training parts) that a training run uses;
- :func:`derive_seed` gives every (cycle, purpose) of a campaign its own seed,
  :func:`torch_seeded` seeds torch for one run and restores its global state,
  :func:`fit_seeded` trains under both and tells a real Ctrl-C from a
  callback's stop (:func:`interrupt_watch`);
- :func:`reference_mask` holds out a selector's reference set;
- :func:`apply_changes` carries ``set_params`` changes onto a warm-started net.
"""

import copy
import signal
import threading
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.base import clone
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing

from ._warm import prepare_warm
from .semi import pool_fit
from ._samples import as_float32
from .callbacks import DivergenceCheck

__all__ = ["TRAIN", "QUERY", "derive_seed", "torch_seeded", "fit_seeded", "interrupt_watch", "final_net",
           "current_selector", "configured_net", "reference_mask", "same", "same_training", "apply_changes",
           "retrain", "selector_for_query"]

# purposes of a derived seed
TRAIN, QUERY = 0, 1

# Parameters whose change rebuilds the module or a head (skorch re-initialises them).
_REBUILDS = ("module__", "loss_predictor__", "dynamics_predictor__")


def final_net(estimator):
    """The net: ``estimator`` itself, or a Pipeline's last step."""
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


# --- configuration ------------------------------------------------------------------------


def current_selector(selector, sample_shape, classes):
    """A validated clone of the ``selector`` parameter, checked against the labeled data's shape."""
    selector = clone(selector)
    if hasattr(selector, "_parameter_constraints"):
        selector._validate_params()
    selector.check_labeled(sample_shape, classes)
    return selector


def configured_net(estimator, selector, classes):
    """A clone of ``estimator`` whose net runs ``selector``'s training parts, for ``classes``."""
    estimator = clone(estimator)
    net = final_net(estimator)
    net.set_params(classes=np.arange(len(classes)), callbacks=with_parts(net.callbacks, selector))
    return estimator


def with_parts(callbacks, selector):
    """``callbacks`` plus the learner's divergence check and the selector's training parts.

    Added by name; an entry of the same name that the user gave is kept instead.
    """
    callbacks = list(callbacks or [])
    taken = {_callback_name(cb) for cb in callbacks}
    added = [("divergence_check", DivergenceCheck()), *selector.training_needs().parts]
    return callbacks + [(name, cb) for name, cb in added if name not in taken]


def _callback_name(callback):
    """The name skorch gives an entry of ``callbacks``: a tuple's first element, else the class name."""
    return callback[0] if isinstance(callback, tuple) else type(callback).__name__


def same_training(a, b):
    """Whether selectors ``a`` and ``b`` need the same training (parts and reference)."""
    need_a, need_b = a.training_needs(), b.training_needs()
    return need_a.reference == need_b.reference and same(need_a.parts, need_b.parts)


def same(a, b):
    """Parameter equality: estimators by type and parameters, arrays by value, others by ==."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and bool(np.all(a == b))
    if hasattr(a, "get_params") and not isinstance(a, type):
        return same(a.get_params(deep=False), b.get_params(deep=False))
    if isinstance(a, float) and a != a:  # NaN (SimpleImputer's missing_values) is itself
        return b != b
    try:
        return bool(a == b)
    except Exception:  # a value whose == is not a bool (e.g. a tensor)
        return a is b


def apply_changes(estimator, template, trained_selector, net, selector):
    """Set on the warm ``net`` what changed in ``estimator`` and ``selector`` since it was trained.

    ``template`` is the ``estimator`` parameter as it was at that training, ``trained_selector``
    the selector it was trained for. Changes that cannot carry over raise a ValueError.
    """
    if isinstance(estimator, Pipeline) != isinstance(template, Pipeline) or (
            isinstance(estimator, Pipeline)
            and not same(estimator[:-1].get_params(), template[:-1].get_params())):
        raise ValueError("estimator: the Pipeline's transformers changed after fit; with "
                         "warm_start=True the fitted ones are kept, so call fit() to start again.")
    new, old = final_net(estimator).get_params(), final_net(template).get_params()
    changed = {key: value for key, value in new.items()
               if key != "callbacks" and not key.startswith("callbacks__")
               and not (key in old and same(value, old[key]))}
    fixed = [key for key in changed if key in ("module", "classes") or key.startswith(_REBUILDS)]
    if fixed:
        raise ValueError(
            f"estimator__{fixed[0]} changed after fit: with warm_start=True the trained "
            "weights cannot carry over to a different module or head; call fit() to start again."
        )
    old_parts = [(name, type(part)) for name, part in trained_selector.training_needs().parts]
    new_parts = [(name, type(part)) for name, part in selector.training_needs().parts]
    if old_parts != new_parts:
        raise ValueError(
            f"selector: {selector!r} needs the training parts {[n for n, _ in new_parts]}, the "
            f"net was trained with {[n for n, _ in old_parts]}; with warm_start=True the trained "
            "net cannot take other parts, so call fit() to start again."
        )
    target = final_net(net)
    if changed:
        target.set_params(**changed)
    user = final_net(estimator).callbacks
    if not same(user, final_net(template).callbacks) or not same(
            selector.training_needs().parts, trained_selector.training_needs().parts):
        target.set_params(callbacks=with_parts(user, selector))
        # skorch's set_params stores callbacks but rebuilds callbacks_ only in
        # initialize(), which partial_fit skips on a fitted net
        target._initialize_callbacks()


def selector_for_query(selector, state):
    """A clone of the ``selector`` parameter, if the net of ``state`` was trained for what it needs."""
    selector = current_selector(selector, state.labeled.X.shape[1:], state.classes)
    if not same_training(selector, state.selector):
        raise ValueError(
            f"selector was changed after the net was trained, to {selector!r}, which needs "
            f"other training than {state.selector!r} (its training parts or reference set); "
            "call refit() (or teach) to train for it, or fit() to start again."
        )
    return selector


def retrain(state, estimator, selector, warm_start, X_pool=None):
    """A net trained on the labeled set of ``state``; nothing else is changed.

    ``estimator`` is the learner's ``estimator`` parameter, ``selector`` the selector to
    train for; with ``warm_start`` training continues from the weights of ``state``.
    ``X_pool``, the learner's pool (or None), is lent to parts that train on its unlabeled
    rows (:mod:`skal.semi`) while the net trains.
    """
    labeled = state.labeled
    train = np.flatnonzero(~labeled.reference)
    X, y = _safe_indexing(labeled.X, train), labeled.y[train]
    cycle = int(labeled.cycle[-1])
    if warm_start:
        net = copy.deepcopy(state.estimator)
        apply_changes(estimator, state.template, state.selector, net, selector)
        prepare_warm(final_net(net), warm_start)  # True: a new optimizer, schedule and epoch count
        if isinstance(net, Pipeline):
            # the fitted transformers stay; the net continues on their output
            def fit(X, y):
                final_net(net).partial_fit(as_float32(net[:-1].transform(X)), y)
        else:
            fit = net.partial_fit
    else:
        net = configured_net(estimator, selector, state.classes)
        fit = net.fit
    fit = pool_fit(fit, net, X_pool, state.pool)
    fit_seeded(fit, X, np.searchsorted(state.classes, y), derive_seed(state.seed, cycle, TRAIN),
               final_net(net).device, "the previous model is kept, marked stale; call refit() to train again")
    return net


def reference_mask(y, fraction, seed):
    """Boolean mask of a stratified, seeded held-out split of ``y`` (all False if no fraction).

    scikit-learn's stratified split when every class has two labels; else (a
    class with a single label, as at 20 initial labels over 10 classes) the
    held-out samples are drawn class by class, each class giving its share
    rounded down and never its last label, the rest drawn at random from the
    classes' remaining spare labels.
    """
    mask = np.zeros(len(y), dtype=bool)
    if not fraction:
        return mask
    n_reference = int(round(fraction * len(y)))
    if not 1 <= n_reference < len(y):
        raise ValueError(
            f"The selector holds out a reference fraction {fraction} of the {len(y)} labeled "
            "samples, which leaves no reference or no training sample; label more samples."
        )
    classes, encoded, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() >= 2 and n_reference >= len(classes) and len(y) - n_reference >= len(classes):
        _, held_out = train_test_split(np.arange(len(y)), test_size=n_reference, stratify=y,
                                       random_state=seed)
        mask[held_out] = True
        return mask
    spare = counts - 1  # every class keeps one training label
    if n_reference > spare.sum():
        raise ValueError(
            f"Cannot hold out a reference set of {n_reference} of the {len(y)} labeled samples "
            f"and keep a training label of each of the {len(classes)} classes; label more "
            "samples per class, or pass the selector its own reference set."
        )
    rng = np.random.default_rng(seed)
    share = np.minimum(np.floor(n_reference * counts / len(y)).astype(int), spare)
    extra = rng.choice(np.repeat(np.arange(len(classes)), spare - share),
                       n_reference - share.sum(), replace=False)
    share += np.bincount(extra, minlength=len(classes))
    for c in range(len(classes)):
        members = np.flatnonzero(encoded == c)
        mask[rng.choice(members, share[c], replace=False)] = True
    return mask


# --- seeding --------------------------------------------------------------------------------


def derive_seed(seed, cycle, purpose):
    """An independent 31-bit seed for one (cycle, purpose) of a campaign."""
    return int(np.random.SeedSequence([seed, cycle, purpose]).generate_state(1)[0] >> 1)


# torch draws weight initialisation, shuffling and dropout from one random state
# per process; two threads training at once (joblib's threading or Dask's thread
# workers) would interleave their draws, so seeded training is serialised.
TORCH_RNG_LOCK = threading.RLock()


@contextmanager
def torch_seeded(seed, device):
    """Seed torch for one training run and restore its global state afterwards."""
    with TORCH_RNG_LOCK:
        with _forked_and_seeded(seed, device):
            yield


@contextmanager
def _forked_and_seeded(seed, device):
    device = torch.device(device or "cpu")
    cuda = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(cuda[0]):
                torch.cuda.manual_seed(seed)
        yield


def fit_seeded(fit, X, y, seed, device, consequence):
    """``fit(X, y)`` under ``torch_seeded(seed, device)``; a real Ctrl-C raises, naming ``consequence``."""
    with torch_seeded(seed, device), interrupt_watch() as watch:
        fit(X, y)
    if watch.interrupted:
        # skorch ends training quietly on KeyboardInterrupt and keeps the partly trained
        # net; after a real Ctrl-C a learner must not take that for a finished one
        raise KeyboardInterrupt(f"Training was interrupted (Ctrl-C); {consequence}.")


# --- interrupts -------------------------------------------------------------------------------


class _InterruptWatch:
    interrupted = False


@contextmanager
def interrupt_watch():
    """Tell a real Ctrl-C from the KeyboardInterrupt by which a callback stops training.

    skorch's callbacks (EarlyStopping) stop training by raising KeyboardInterrupt,
    which skorch catches, as it catches Ctrl-C. Signals reach only the main thread,
    so there a SIGINT handler notes a real one; elsewhere every KeyboardInterrupt
    is a callback's.
    """
    watch = _InterruptWatch()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield watch  # SIG_IGN / SIG_DFL: Ctrl-C raises no KeyboardInterrupt
        return

    def handler(signum, frame):
        # uninstalled first, so that a Ctrl-C landing in the finally below cannot leave it installed
        signal.signal(signal.SIGINT, previous)
        try:
            previous(signum, frame)
        except KeyboardInterrupt:
            watch.interrupted = True
            raise

    try:  # installed inside the try: an interrupt on any line still restores the previous one
        signal.signal(signal.SIGINT, handler)
        yield watch
    finally:
        signal.signal(signal.SIGINT, previous)
