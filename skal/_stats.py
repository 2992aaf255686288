"""Paired comparisons of campaign results: differences to a reference over repeats."""

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["PairedDifferences", "paired_t_interval"]


def paired_t_interval(differences, confidence=0.95, axis=0):
    """Mean of paired differences and its Student t confidence interval.

    ``mean ± t_{(1 + confidence) / 2, n - 1} * sd / sqrt(n)`` over ``axis``,
    with ``sd`` the sample standard deviation (``ddof=1``) of the ``n``
    differences. With ``n < 2`` the spread, and so the interval, is
    undefined: ``low`` and ``high`` are NaN.

    Parameters
    ----------
    differences : array-like
        Per-repeat differences (method minus reference), repeats on ``axis``.
    confidence : float, default=0.95
        Coverage of the interval, in (0, 1).
    axis : int, default=0
        The repeats' axis.

    Returns
    -------
    mean, low, high : ndarray
        Float64, with ``axis`` removed.
    """
    d = np.asarray(differences, dtype=np.float64)
    n = d.shape[axis]
    mean = d.mean(axis=axis)
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan.copy()
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(axis=axis, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class PairedDifferences:
    """Paired differences of each method to a reference, over repeats.

    Every repeat of a campaign gives all methods the same initial set and
    seed, so ``method - reference`` within a repeat removes what the repeats
    share; the interval is the paired Student t interval over the ``n``
    repeats, ``mean ± t_{0.975, n-1} * sd / sqrt(n)`` at 95% confidence
    (``sd`` with ``ddof=1``). It assumes the per-repeat differences are
    independent and roughly normal; with ``n < 2`` it is undefined (NaN).

    Attributes
    ----------
    names : list of str
        The methods compared to the reference (the reference excluded).
    reference : str
        The reference method.
    metric : {"auc", "final", "cycles"}
        What is differenced: the normalised area under each repeat's curve,
        the score of the last cycle, or the score of every cycle.
    values : ndarray of shape (n_methods, n) or (n_methods, n, n_cycles + 1)
        The per-repeat differences.
    mean, low, high : ndarray of shape (n_methods,) or (n_methods, n_cycles + 1)
        Mean difference and interval bounds (NaN bounds when ``n < 2``).
    n : int
        Number of repeats.
    confidence : float
        The interval's coverage.

    See Also
    --------
    ActiveLearningCurve.paired_differences : Computes it from a result.

    Examples
    --------
    >>> import numpy as np
    >>> from skal.model_selection import ActiveLearningCurve
    >>> scores = np.array([[[0.5, 0.6], [0.6, 0.8], [0.4, 0.7]],    # "margin": 3 repeats, 2 cycles
    ...                    [[0.5, 0.5], [0.6, 0.7], [0.4, 0.5]]])   # "random"
    >>> zeros = np.zeros_like(scores)
    >>> result = ActiveLearningCurve(["margin", "random"], np.array([10, 20]), scores, zeros, zeros)
    >>> diff = result.paired_differences("final")
    >>> diff.names, diff.reference, diff.values.round(2).tolist()
    (['margin'], 'random', [[0.1, 0.1, 0.2]])
    >>> diff.mean.round(4).tolist(), diff.low.round(4).tolist(), diff.high.round(4).tolist()
    ([0.1333], [-0.0101], [0.2768])
    """

    names: list
    reference: str
    metric: str
    values: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int
    confidence: float = 0.95

    @property
    def no_spread(self):
        """Whether each method's differences are the same in every repeat (up to float rounding).

        Common with few repeats and accuracies on a small test set; the t
        interval then has (almost) no width, yet there is no spread to
        estimate the error from. Shape of ``mean``.
        """
        values = np.asarray(self.values, dtype=np.float64)
        scale = np.maximum(1.0, np.abs(values).max(axis=1))
        return (self.n >= 2) & (np.ptp(values, axis=1) <= 1e-12 * scale)

    @property
    def excludes_zero(self):
        """Whether each interval lies wholly above or below zero.

        False where the interval is undefined (one repeat) or where there is
        no spread (:attr:`no_spread`): a zero-width interval would claim a
        certainty that identical differences do not give.
        """
        return ((self.low > 0) | (self.high < 0)) & ~self.no_spread

    def to_dict(self):
        """JSON-able form: arrays as lists, undefined bounds as None."""
        return {
            "names": list(self.names), "reference": self.reference, "metric": self.metric,
            "n": self.n, "confidence": self.confidence,
            "interval": "paired Student t over repeats",
            "values": _jsonable(self.values), "mean": _jsonable(self.mean),
            "low": _jsonable(self.low), "high": _jsonable(self.high),
            "excludes_zero": self.excludes_zero.tolist(), "no_spread": self.no_spread.tolist(),
        }


def _jsonable(array):
    array = np.asarray(array, dtype=np.float64)
    return np.where(np.isfinite(array), array, None).tolist()
