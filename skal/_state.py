"""The fitted state of an ActiveLearner, and the interface through which it is saved and restored.

Everything ``fit`` makes is one frozen value, :class:`Fitted`, held by the
learner in one attribute and replaced in one assignment (so an interrupt lands
before or after a change, never inside it). Its labeled set is a
:class:`LabeledSet`, also replaced, never changed.

Persistence (:mod:`skal._persistence`) reads and writes a learner only through
four functions of this module, never through the learner's private names:

- :func:`fitted_state` ``(learner)``: the learner's :class:`Fitted` value;
- :func:`build` ``(learner, classes, sample_shape)``: the selector and the
  configured, untrained estimator that the learner's parameters describe;
- :func:`restored` ``(learner, ...)``: a :class:`Fitted` value for the
  learner from the parts of a save;
- :func:`install` ``(learner, fitted)``: the learner holding ``fitted``.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._bookkeeping import PoolState
from ._samples import concat_rows
from ._training import configured_net, current_selector

__all__ = ["LabeledSet", "Fitted", "fitted_attribute", "pool_rows_attribute", "template", "fitted_state", "install", "build",
           "restored"]

_ATTRIBUTE = "_fitted"  # the one attribute of the learner that holds its fitted state


@dataclass(frozen=True)
class LabeledSet:
    """Every labeled sample with its label, cycle, reference flag and pool row; replaced, never changed.

    ``row`` is the sample's row in the learner's pool, -1 for a sample from elsewhere.
    """

    X: np.ndarray
    y: np.ndarray
    cycle: np.ndarray
    reference: np.ndarray
    row: np.ndarray

    def added(self, X, y, cycle, rows=None):
        rows = np.full(len(y), -1, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        return LabeledSet(concat_rows(self.X, X), np.concatenate([self.y, y]),
                          np.concatenate([self.cycle, np.full(len(y), cycle, dtype=np.int64)]),
                          np.concatenate([self.reference, np.zeros(len(y), dtype=bool)]),
                          np.concatenate([self.row, rows]))


@dataclass(frozen=True)
class Fitted:
    """Everything ``fit`` makes, in one value: the learner changes it in one assignment.

    ``template`` is the ``estimator`` parameter as it was when ``estimator`` was
    last configured, so that a later ``set_params`` is seen and applied.
    """

    estimator: object
    selector: object
    template: object
    classes: np.ndarray
    labeled: LabeledSet
    seed: int
    n_features_in: int
    feature_names_in: object
    stale: bool = False
    pool: PoolState | None = None


def fitted_attribute(field, name, doc):
    """A read-only property showing ``field`` of the fitted state (``labeled.X``: of its labeled set)."""
    def get(self):
        state = self.__dict__.get(_ATTRIBUTE)
        if state is None:
            raise AttributeError(f"{type(self).__name__} is not fitted: {name} exists after fit.")
        value = getattr(state, field) if "." not in field else getattr(state.labeled, field.split(".")[1])
        if value is None:
            raise AttributeError(f"{name} was not set: fit saw no feature names.")
        return value

    return property(get, doc=doc)


def template(value):
    """``clone(value)``, except that parameters which are not estimators stay the same objects.

    :func:`skal._training.apply_changes` finds what ``set_params`` replaced since training by
    comparing the ``estimator`` parameter with this template: a module instance, a transform
    or a function has no equality but identity, which ``clone``'s deep copies would lose (every
    warm-start teach would then see a module instance as changed, and refuse).
    """
    if type(value) is dict:
        return {key: template(item) for key, item in value.items()}
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(template(item) for item in value)
    if not hasattr(value, "get_params") or isinstance(value, type):
        return value
    return type(value)(**{key: template(item) for key, item in value.get_params(deep=False).items()})


# --- the interface of persistence ------------------------------------------------------------


def pool_rows_attribute(kind, doc):
    """A read-only property: the rows of the learner's pool with status ``kind`` (None without a pool)."""
    def get(self):
        pool = fitted_state(self).pool
        return None if pool is None else pool.rows(kind)

    return property(get, doc=doc)


def fitted_state(learner):
    """The learner's :class:`Fitted` value; NotFittedError when it has none."""
    check_is_fitted(learner)
    return learner.__dict__[_ATTRIBUTE]


def install(learner, fitted):
    """Make ``fitted`` the learner's state, in one attribute assignment."""
    setattr(learner, _ATTRIBUTE, fitted)


def build(learner, classes, sample_shape):
    """``(selector, estimator)``: the learner's validated selector and its configured, untrained net."""
    selector = current_selector(learner.selector, sample_shape, classes)
    return selector, configured_net(learner.estimator, selector, classes)


def restored(learner, estimator, selector, classes, labeled, seed, n_features_in, feature_names_in, *,
             stale=False, pool=None):
    """A :class:`Fitted` value for ``learner`` from a save's parts (the template from its parameters)."""
    return Fitted(estimator, selector, template(learner.estimator), classes, labeled, seed, n_features_in,
                  feature_names_in, stale=stale, pool=pool)
