"""Warm starts between active-learning cycles.

``ActiveLearner(warm_start=True)`` keeps the trained weights (the module's
and the training parts' heads') and starts each cycle's training as a new
run: a new optimizer (no momentum or Adam moments carried over), a new
learning-rate schedule from its first epoch and a new epoch count. That is
how LL4AL's and TiDAL's reference code run their cycles (the weights carried
over, a new SGD and MultiStepLR built each cycle). ``warm_start="continue"``
continues skorch's ``partial_fit`` instead: the optimizer's state carries
over and skorch's ``LRScheduler`` resumes at ``len(history)``, so a step
schedule whose milestones were passed in cycle 0 trains every later cycle at
its lowest rate.
"""

__all__ = ["WARM_START_OPTIONS", "prepare_warm", "restart_training"]

#: the values of ``ActiveLearner.warm_start`` besides the booleans
WARM_START_OPTIONS = frozenset({"continue"})


def restart_training(net):
    """Give a fitted net a new optimizer, callbacks and history; its weights stay.

    Parameters
    ----------
    net : skal.ActiveNet
        A fitted net (a copy: it is changed in place).

    Returns
    -------
    net : skal.ActiveNet
        The same net: its next ``partial_fit`` trains ``max_epochs`` epochs
        from the current weights with a fresh optimizer (built on every
        learnable parameter, heads included, with the net's current ``lr``
        and ``optimizer__*`` settings), fresh callbacks (an ``LRScheduler``
        starts its schedule at epoch 0) and an empty history.
    """
    net._initialize_callbacks()
    net.initialize_optimizer()
    net.initialize_history()
    return net


def prepare_warm(net, warm_start):
    """Ready the deep copy of a fitted net for the next cycle's ``partial_fit``.

    Parameters
    ----------
    net : skal.ActiveNet
        The copy (a Pipeline's final step); changed in place.
    warm_start : True or "continue"
        ``True`` restarts the optimizer, schedule and epoch count
        (:func:`restart_training`); ``"continue"`` keeps them, dropping only
        the per-batch records of the history (nothing reads them, and kept
        they would grow with every cycle of a long campaign).

    Returns
    -------
    net : skal.ActiveNet
    """
    if not (isinstance(warm_start, str) and warm_start == "continue"):
        return restart_training(net)
    for epoch in net.history:
        epoch["batches"] = []
    return net
