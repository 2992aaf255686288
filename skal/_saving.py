"""The ActiveLearner's persistence methods: ``save``, ``check_savable`` and ``load``.

They are methods of :class:`skal.ActiveLearner` (its class body names them), kept
here with their documentation so that the learner's module shows the learning
loop; the file format and its checks are in :mod:`skal._persistence`.
"""

from sklearn.utils.validation import check_is_fitted

from . import _persistence
from ._data import check_path

__all__ = ["save", "check_savable", "load"]


def save(self, path):
    """Save the fitted learner to one file, without pickle.

    The parameters go to JSON (classes and functions by import path), the
    labeled set to ``.npy`` arrays, every tensor of the net (weights,
    heads, optimizer state, snapshot, training dynamics) to safetensors,
    and a Pipeline's fitted transformers to :mod:`skops.io`. The file is
    written to a temporary name in the target's directory and moved into
    place when complete, so an interrupted save leaves the previous one
    intact. A symlink is written through to its target; an existing file
    keeps its permissions, a new one gets the usual ones (umask).

    Parameters
    ----------
    path : str or path-like
        Target file (conventionally ``*.skal``): a regular file or a new
        name, never a directory, device, fifo or socket.

    Raises
    ------
    TypeError
        If something cannot be stored without pickle (a lambda, an object
        without ``get_params``, labels that are not str, int, float or
        bool); the message names it, and nothing is written.
        :meth:`check_savable` finds these before training.

    See Also
    --------
    load : The inverse.
    check_savable : The same checks, without writing.
    """
    with self._serialised():
        check_is_fitted(self)
        _persistence.save(self, check_path(path))


def check_savable(self):
    """Check that :meth:`save` can store this learner, without training or writing.

    Encodes the parameters (and, once fitted, the whole fitted state) as
    :meth:`save` would. Works on an unfitted learner, so a set-up that
    cannot be saved fails before hours of training, not after.

    Returns
    -------
    untrusted : list of str
        The classes and functions the save would name beyond the default
        trust list of :meth:`load` (e.g. a module class of your own): pass
        them as ``trusted=`` to :meth:`load`, or load with ``like=``.

    Raises
    ------
    TypeError
        Naming the first parameter (or fitted attribute) that cannot be
        saved.

    See Also
    --------
    save : Writes the file.
    skal.get_untrusted_types : The same list, read from a file.

    Examples
    --------
    >>> from skal import ActiveLearner, ActiveNet
    >>> from skal.models import MLP
    >>> ActiveLearner(ActiveNet(MLP)).check_savable()
    []
    >>> ActiveLearner(ActiveNet(MLP, train_transform=lambda x: x)).check_savable()
    Traceback (most recent call last):
    ...
    TypeError: cannot save estimator.train_transform: <function <lambda> at ...> is not importable (a lambda, or defined inside a function); define it at module level, or use joblib.dump.
    """
    with self._serialised():
        return _persistence.check_savable(self)


def load(cls, path, *, trusted=None, like=None):
    """Load a learner written by :meth:`save`; runs no pickle and nothing untrusted.

    Every class and function that the file names is looked up in a trust
    list (torch modules, optimizers and LR schedulers; skorch callbacks and
    ``ValidSplit``; scikit-learn estimators; skal's classes; a few named
    functions such as :func:`skal.models.resnet18_cifar`) and checked to
    be of the kind its parameter needs before anything is imported or
    built. Tensors are read by safetensors, arrays without pickle, a
    Pipeline's transformers by :mod:`skops.io`. Sizes are checked before
    anything is inflated. The learner is built whole before it is returned.

    Parameters
    ----------
    path : str or path-like
    trusted : list of str, class or function, default=None
        Names (as :func:`skal.get_untrusted_types` lists them, e.g.
        ``"mypkg.nets.MyNet"``) or objects to trust beyond the default list.
    like : ActiveLearner, default=None
        Restore the saved state onto a clone of this learner instead of
        rebuilding the parameters from the file, which then names nothing
        that is imported (skorch's ``initialize()`` + ``load_params``
        pattern). For a module class defined in a script (``__main__``):
        build the same learner in code and pass it here. Its parameters are
        used as they are; the saved weights, labeled set and fitted state
        must fit it.

    Returns
    -------
    ActiveLearner
        Fitted, with the same labeled set, cycles, seed and weights: a
        campaign resumed from it continues exactly as if uninterrupted.

    Raises
    ------
    ValueError
        If the file is not a valid save (the message names the member at
        fault), names something that is not trusted (it names it), or does
        not fit ``like`` (it names what differs: a tensor's key or shape,
        the classes, the optimizer).

    See Also
    --------
    skal.get_untrusted_types : What a file names beyond the default list.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from skal import ActiveLearner, ActiveNet
    >>> from skal.models import MLP
    >>> from skal.selectors import Entropy
    >>> X = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> learner = ActiveLearner(ActiveNet(MLP, max_epochs=2, verbose=0), Entropy(),
    ...                         random_state=0).fit(X, y)
    >>> path = os.path.join(tempfile.mkdtemp(), "campaign.skal")
    >>> learner.save(path)
    >>> loaded = ActiveLearner.load(path)
    >>> bool(np.array_equal(loaded.predict_proba(X), learner.predict_proba(X)))
    True
    >>> same = ActiveLearner.load(path, like=ActiveLearner(ActiveNet(MLP, max_epochs=2), Entropy()))
    >>> bool(np.array_equal(same.predict_proba(X), learner.predict_proba(X)))
    True
    """
    return _persistence.load(cls, check_path(path), trusted=trusted, like=like)
