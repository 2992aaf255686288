"""Learning-curve plots (needs matplotlib, the ``plot`` extra)."""

__all__ = ["plot_active_learning_curve"]


def plot_active_learning_curve(result, ax=None, *, differences=False, reference=None):
    """Plot score against labeled-set size, one line per learner, with a band over repeats.

    Parameters
    ----------
    result : skal.model_selection.ActiveLearningCurve
        What :func:`~skal.model_selection.active_learning_curve` returned.
    ax : matplotlib Axes, or a pair of Axes with ``differences``, default=None
        Where to draw; new axes when None (with ``differences``, a figure
        with the curves above and the differences below, sharing the x axis).
    differences : bool, default=False
        Also draw, per cycle, each method's mean paired difference to the
        reference with its 95% paired t interval over repeats as a band
        (:meth:`~skal.model_selection.ActiveLearningCurve.paired_differences`
        with ``metric="cycles"``; no band with one repeat), and a line at 0.
    reference : str or None, default=None
        The reference method for ``differences``; None: the result's
        (the method named ``"random"``).

    Returns
    -------
    matplotlib.axes.Axes, or (Axes, Axes) with ``differences``
        The curves' axes (and the differences' axes).

    Examples
    --------
    >>> import numpy as np
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skal.model_selection import ActiveLearningCurve
    >>> from skal.plotting import plot_active_learning_curve
    >>> zeros = np.zeros((2, 2, 3))
    >>> scores = np.array([[[0.5, 0.6, 0.7], [0.5, 0.7, 0.8]], [[0.5, 0.5, 0.6], [0.5, 0.6, 0.6]]])
    >>> result = ActiveLearningCurve(["margin", "random"], np.array([10, 20, 30]), scores, zeros, zeros)
    >>> ax = plot_active_learning_curve(result)
    >>> [line.get_label() for line in ax.get_lines()]
    ['margin', 'random']
    >>> top, bottom = plot_active_learning_curve(result, differences=True)
    >>> bottom.get_lines()[0].get_ydata().round(2).tolist()
    [0.0, 0.1, 0.15]
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plot_active_learning_curve needs matplotlib: pip install 'skal[plot]'"
        ) from error
    if not isinstance(differences, bool):
        raise TypeError(f"differences must be a bool, got {type(differences).__name__}.")
    diff = result.paired_differences("cycles", reference) if differences else None
    if differences:
        if ax is None:
            _, (ax, ax_diff) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True,
                                            gridspec_kw={"height_ratios": [3, 2]})
        else:
            try:
                ax, ax_diff = ax
            except (TypeError, ValueError):
                raise TypeError("ax: with differences=True, pass a pair of Axes (curves, differences) "
                                "or None.") from None
    elif ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    repeats = result.scores.shape[1]
    colors = {}
    for name, mean, std in zip(result.names, result.mean, result.std):
        (line,) = ax.plot(result.n_labeled, mean, marker="o", label=name)
        colors[name] = line.get_color()
        if repeats > 1:
            ax.fill_between(result.n_labeled, mean - std, mean + std, alpha=0.2,
                            color=line.get_color(), linewidth=0)
    ax.set_xlabel("labeled samples")
    ax.set_ylabel(result.scoring)
    ax.set_title(f"Active learning curves (mean ± std over {repeats} repeat{'s' if repeats > 1 else ''})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if not differences:
        return ax
    for j, name in enumerate(diff.names):
        ax_diff.plot(result.n_labeled, diff.mean[j], marker="o", color=colors[name], label=name)
        if diff.n > 1:
            ax_diff.fill_between(result.n_labeled, diff.low[j], diff.high[j], alpha=0.2,
                                 color=colors[name], linewidth=0)
    ax_diff.axhline(0.0, color=colors[diff.reference], linewidth=1, linestyle="--",
                    label=f"{diff.reference} (reference)")
    ax.set_xlabel("")
    ax_diff.set_xlabel("labeled samples")
    ax_diff.set_ylabel(f"Δ {result.scoring} vs {diff.reference}")
    ax_diff.set_title("Paired difference to the reference (mean, 95% paired t interval)" if diff.n > 1
                      else "Paired difference to the reference (1 repeat: no interval)", fontsize=10)
    ax_diff.grid(True, alpha=0.3)
    ax_diff.legend(fontsize=8)
    return ax, ax_diff
