"""Learning-curve plots (needs matplotlib, the ``plot`` extra)."""

__all__ = ["plot_active_learning_curve"]


def plot_active_learning_curve(result, ax=None):
    """Plot score against labeled-set size, one line per learner, with a band over repeats.

    Parameters
    ----------
    result : skal.model_selection.ActiveLearningCurve
        What :func:`~skal.model_selection.active_learning_curve` returned.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure's axes when None.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import numpy as np
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skal.model_selection import ActiveLearningCurve
    >>> from skal.plotting import plot_active_learning_curve
    >>> zeros = np.zeros((1, 2, 3))
    >>> result = ActiveLearningCurve(["random"], np.array([10, 20, 30]),
    ...                              np.array([[[0.5, 0.6, 0.7], [0.5, 0.7, 0.8]]]), zeros, zeros)
    >>> ax = plot_active_learning_curve(result)
    >>> [line.get_label() for line in ax.get_lines()]
    ['random']
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plot_active_learning_curve needs matplotlib: pip install 'skal[plot]'"
        ) from error
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for name, mean, std in zip(result.names, result.mean, result.std):
        (line,) = ax.plot(result.n_labeled, mean, marker="o", label=name)
        if result.scores.shape[1] > 1:
            ax.fill_between(result.n_labeled, mean - std, mean + std, alpha=0.2,
                            color=line.get_color(), linewidth=0)
    ax.set_xlabel("labeled samples")
    ax.set_ylabel(result.scoring)
    repeats = result.scores.shape[1]
    ax.set_title(f"Active learning curves (mean ± std over {repeats} repeat{'s' if repeats > 1 else ''})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax
