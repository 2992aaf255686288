"""The selector contract.

A selector is a small scikit-learn-style object: ``__init__`` stores its
parameters, nothing else, so ``clone``, ``get_params`` and grid search work on
it. It declares what it needs from training as a :class:`TrainingNeeds` value
that :class:`~skal.ActiveLearner` reads (the learner never branches on a
selector's type): the training parts (:mod:`skal.parts`) its net must run,
and whether it needs a held-out reference set. It answers
:meth:`BaseSelector.select`.

Two kinds exist:

* score-based selectors (:class:`ScoreSelector`) implement one hook,
  ``_score_batch``, returning a score per pool sample (higher = more
  informative); the base class streams the pool, ranks on the net's device and
  breaks ties with the given seed;
* set-based selectors (CoreSet) implement ``select`` itself.
"""

import textwrap
from dataclasses import dataclass
from numbers import Integral
from typing import NamedTuple

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from .._data import take
from ..distributed import is_sharded
from ..scores import top_n
from . import _sharded
from .batch import TopK, resolve_batch

__all__ = ["TrainingNeeds", "LabeledData", "BaseSelector", "ScoreSelector"]

# Constraints of the parameters that several selectors share, declared once.
BATCH_CONSTRAINT = [StrOptions({"topk", "stochastic", "cluster"}), HasMethods(["pick"])]
SUBSET_CONSTRAINT = [Interval(Integral, 1, None, closed="left"), None]

# Docstring fragments of those parameters, substituted by :func:`shared_docs`.
_SHARED_DOCS = {
    "batch": """\
batch : {"topk", "stochastic", "cluster"} or BatchRule, default="topk"
    How the scores become a batch of ``n``: the ``n`` highest (the
    papers' rule), a score-weighted random sample
    (:class:`~skal.selectors.StochasticBatch`) or the best of clustered
    candidates (:class:`~skal.selectors.ClusterBatch`); a configured rule
    object for other settings. Checked when the learner is fitted.""",
}


def shared_docs(cls):
    """Class decorator: replace ``{batch}`` lines of the docstring by the shared fragment."""
    doc = cls.__doc__
    for key, text in _SHARED_DOCS.items():
        marker = "    {" + key + "}\n"
        doc = doc.replace(marker, textwrap.indent(text, "    ") + "\n")
    cls.__doc__ = doc
    return cls


class LabeledData(NamedTuple):
    """The labeled set as a selector sees it at query time.

    ``X`` / ``y`` are the samples the net was trained on (``y`` encoded as
    ``0 .. n_classes-1``); ``X_reference`` / ``y_reference`` the held-out
    reference split (empty unless a selector asked for one with
    ``TrainingNeeds.reference``); ``classes`` the learner's ``classes_``, to
    encode labels a selector receives from elsewhere.

    Parameters
    ----------
    X : ndarray of shape (n_train, ...)
        The labeled samples the net was trained on, as the net takes them
        (through a Pipeline's transformers when the estimator is one).
    y : ndarray of shape (n_train,), dtype int64
        Their labels, encoded as positions into ``classes``.
    X_reference : ndarray of shape (n_reference, ...)
        The held-out reference samples (``n_reference`` may be 0).
    y_reference : ndarray of shape (n_reference,), dtype int64
        Their encoded labels.
    classes : ndarray of shape (n_classes,)
        The learner's ``classes_``.

    Examples
    --------
    >>> import numpy as np
    >>> from skal.selectors import LabeledData
    >>> labeled = LabeledData(np.zeros((4, 2)), np.array([0, 1, 1, 0]), np.zeros((0, 2)),
    ...                       np.zeros(0, dtype=int), np.array(["cat", "dog"]))
    >>> len(labeled.y), len(labeled.y_reference), str(labeled.classes[labeled.y[1]])
    (4, 0, 'dog')
    """

    X: object
    y: np.ndarray
    X_reference: object
    y_reference: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class TrainingNeeds:
    """What a selector needs from training, as data the learner reads.

    Parameters
    ----------
    parts : tuple of (str, skal.parts.TrainingPart), default=()
        Training parts, by name, that :class:`~skal.ActiveLearner` adds to its
        clone of the net's callbacks (a part of the same name the user
        already added is kept instead: a selector never overrides what the
        user asked for).
    reference : float or None, default=None
        Hold this fraction of the initial labeled set out of training, as a
        reference set passed to the selector (ISAL); stratified and seeded.

    See Also
    --------
    BaseSelector.training_needs : Where a selector returns it.
    skal.parts : The training parts.

    Examples
    --------
    >>> from skal.parts import DynamicLoss
    >>> from skal.selectors import TrainingNeeds
    >>> needs = TrainingNeeds(parts=(("dynamic_loss", DynamicLoss(weight=0.5)),))
    >>> [name for name, _ in needs.parts], needs.reference
    (['dynamic_loss'], None)
    """

    parts: tuple = ()
    reference: float | None = None


class BaseSelector(BaseEstimator):
    """Base class of all selectors.

    Subclasses store their parameters in ``__init__`` and implement
    :meth:`select`; those that need more than plain training override
    :meth:`training_needs`. Set-based strategies (such as
    :class:`~skal.selectors.CoreSet`) derive from it directly; score-based
    ones from :class:`ScoreSelector`.

    See Also
    --------
    ScoreSelector : Base class of selectors that rank by a per-sample score.

    Examples
    --------
    A set-based selector that takes the first ``n`` pool samples:

    >>> import numpy as np
    >>> from skal.selectors import BaseSelector
    >>> class FirstN(BaseSelector):
    ...     def select(self, net, X_pool, n, *, random_state=None, labeled=None):
    ...         return np.arange(n), np.zeros(n)
    >>> FirstN().select(None, np.zeros((5, 2)), 2)
    (array([0, 1]), array([0., 0.]))
    >>> FirstN().training_needs()
    TrainingNeeds(parts=(), reference=None)
    """

    def training_needs(self):
        """What the net must do while training for this selector.

        Returns
        -------
        TrainingNeeds
            Nothing by default: the net trains as a plain classifier.
        """
        return TrainingNeeds()

    def check_labeled(self, sample_shape, classes):
        """Check the selector's parameters against the labeled samples, before any training.

        :class:`~skal.ActiveLearner` calls it at ``fit``, ``refit`` and
        ``query`` with the shape of one labeled sample and the sorted
        classes, so that a setting that cannot work fails before the net is
        trained. Nothing to check by default; :class:`~skal.selectors.ISAL`
        checks its reference tuple.
        """

    def select(self, net, X_pool, n, *, random_state=None, labeled=None):
        """Choose ``n`` pool samples to label.

        Parameters
        ----------
        net : skal.ActiveNet
            The fitted net, trained with :meth:`training_needs` honoured.
        X_pool : array-like or torch Dataset of length n_pool
            The validated unlabeled pool, as the net takes it.
        n : int
            Number of samples to choose, ``1 <= n <= n_pool``.
        random_state : int, default=None
            Seed for every random choice (subsets, tie-breaking).
        labeled : LabeledData or None, default=None
            The labeled set; :class:`~skal.ActiveLearner` always passes it.

        Returns
        -------
        indices : ndarray of shape (n,), dtype int64
            Distinct positions into ``X_pool``, most informative first.
        scores : ndarray of shape (n,), dtype float
            Each choice's score, higher = more informative, non-increasing.
        """
        raise NotImplementedError

    def _draw_subset(self, n_pool, n, random_state):
        """Sorted positions of the random candidate subset, or None for the whole pool."""
        subset = getattr(self, "subset", None)
        if subset is None or subset >= n_pool:
            return None
        if n > subset:
            raise ValueError(
                f"n={n} exceeds {type(self).__name__}'s subset={subset}: raise subset or "
                "set it to None to score the whole pool."
            )
        rng = np.random.default_rng(random_state)
        return np.sort(rng.choice(n_pool, subset, replace=False))



class ScoreSelector(BaseSelector):
    """Base class of selectors that rank the pool by a per-sample score.

    Subclasses implement ``_score_batch(net, X_batch)`` returning one score per
    sample of a device batch (higher = more informative), or override
    :meth:`score_pool` when the score does not come batch by batch. A
    subclass with a ``subset`` parameter scores only a random subset of that
    many pool samples per query (drawn from the query seed; ``None`` = all).

    See Also
    --------
    BaseSelector : The contract every selector keeps.

    Examples
    --------
    A selector that queries the samples whose largest logit is smallest:

    >>> import numpy as np
    >>> from skal import ActiveLearner, ActiveNet
    >>> from skal.models import MLP
    >>> from skal.selectors import ScoreSelector
    >>> class SmallestMaxLogit(ScoreSelector):
    ...     def _score_batch(self, net, X_batch):
    ...         return -net.logits(X_batch).max(dim=1).values
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 3)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> net = ActiveNet(MLP, max_epochs=2, verbose=0)
    >>> learner = ActiveLearner(net, SmallestMaxLogit(), random_state=0).fit(X[:20], y[:20])
    >>> idx, scores = learner.query(X[20:], n=3, return_scores=True)
    >>> len(set(idx.tolist())), bool(scores[0] >= scores[-1])
    (3, True)
    """

    _parameter_constraints = {"batch": BATCH_CONSTRAINT, "subset": SUBSET_CONSTRAINT}

    def score_pool(self, net, X_pool, *, random_state=None, labeled=None):
        """Score every pool sample on the net's device.

        Parameters
        ----------
        net : skal.ActiveNet
            The fitted net.
        X_pool : array-like or torch Dataset of length n_pool
            The pool.
        random_state : int, default=None
            Seed for selectors whose score is random.
        labeled : LabeledData or None, default=None
            The labeled set, for selectors whose score depends on it.

        Returns
        -------
        torch.Tensor of shape (n_pool,)
            Scores on ``net.device``, higher = more informative.
        """
        return net.map_pool(lambda Xb: self._score_batch(net, Xb), X_pool)

    def _score_batch(self, net, X_batch):
        raise NotImplementedError

    def select(self, net, X_pool, n, *, random_state=None, labeled=None):
        if is_sharded():
            return _sharded.score_select(self, net, X_pool, n, random_state, labeled)
        candidates = self._draw_subset(len(X_pool), n, random_state)
        if candidates is not None:
            X_pool = take(X_pool, candidates)
        scores = self.score_pool(net, X_pool, random_state=random_state, labeled=labeled)
        _check_scores(self, scores, len(X_pool))
        generator = _generator(scores.device, random_state)
        rule = resolve_batch(getattr(self, "batch", "topk"))
        if type(rule) is TopK:
            order = top_n(scores, n, generator=generator)
        else:
            def embed(positions):
                return embeddings(net, take(X_pool, positions.cpu().numpy()))

            order = rule.pick(scores, n, generator=generator, embed=embed)
            _check_picks(rule, order, n, len(scores))
            # a batch is a set: report it best score first, like top-k
            order = order[torch.sort(scores[order], descending=True, stable=True).indices]
        return _pool_indices(order, candidates), scores[order].cpu().numpy()


def _check_scores(selector, scores, n_pool):
    """Raise unless ``scores`` holds one score, not NaN, for each of the ``n_pool`` samples."""
    if scores.ndim != 1 or scores.shape[0] != n_pool:
        raise RuntimeError(
            f"{type(selector).__name__} returned {tuple(scores.shape)} scores for a pool "
            f"of {n_pool} samples."
        )
    if torch.isnan(scores).any():
        raise ValueError(
            f"{type(selector).__name__} produced NaN scores; the net's outputs are not "
            "finite (did training diverge?)."
        )


def _pool_indices(positions, candidates):
    """``positions`` among the queried rows as int64 pool indices (``candidates``: the subset)."""
    indices = positions.cpu().numpy().astype(np.int64)
    return indices if candidates is None else candidates[indices]


def _check_picks(rule, order, n, n_pool):
    order = torch.as_tensor(order)
    if (order.ndim != 1 or len(order) != n or order.dtype not in (torch.int32, torch.int64)
            or (n and (order.min() < 0 or order.max() >= n_pool))
            or len(torch.unique(order)) != n):
        raise RuntimeError(
            f"{rule!r}.pick must return {n} distinct integer positions in [0, {n_pool}); "
            f"got {tuple(order.shape)} values of dtype {order.dtype}."
        )


def embeddings(net, X):
    """Penultimate embeddings of ``X``, shape (n_samples, d), on the net's device."""
    return net.map_pool(lambda Xb: net.forward_tapped(Xb, embedding=True)[1]["embedding"],
                        X).float()


def _generator(device, random_state):
    """A torch Generator on ``device`` seeded from ``random_state`` (int or None)."""
    generator = torch.Generator(device=device)
    if random_state is None:
        generator.seed()
    else:
        generator.manual_seed(int(random_state))
    return generator
