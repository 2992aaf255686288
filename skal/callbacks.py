"""skorch callbacks of skal."""

import sys

import numpy as np
import torch
from skorch.callbacks import Callback
from torch.nn.parameter import is_lazy
from tqdm.auto import tqdm

__all__ = ["ProgressBars", "DivergenceCheck"]


class ProgressBars(Callback):
    """Progress bars for a net's training epochs and its pool passes.

    Add it to an :class:`~skal.ActiveNet`'s callbacks: each ``fit`` shows a bar
    over its epochs, and each pass of a selector over a pool
    (:meth:`skal.ActiveNet.iter_pool`) a bar over its batches. Bars go to
    stderr and disappear when done. ``skal simulate`` adds it unless ``--quiet``.

    Parameters
    ----------
    file : file-like or None, default=None
        Where to draw; ``None`` is ``sys.stderr``.

    Examples
    --------
    >>> from skal import ActiveNet
    >>> from skal.callbacks import ProgressBars
    >>> from skal.models import MLP
    >>> net = ActiveNet(MLP, callbacks=[("progress", ProgressBars())], verbose=0)
    """

    def __init__(self, file=None):
        self.file = file

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.bar_ = tqdm(total=net.max_epochs, desc="training", unit="epoch", leave=False,
                         file=self.file or sys.stderr, mininterval=0)

    def on_epoch_end(self, net, **kwargs):
        self.bar_.update(1)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        self.bar_.close()

    def pool_bar(self, iterable, total):
        """Wrap a pool pass's batches in a bar.

        Parameters
        ----------
        iterable : iterable
            The batches of the pass.
        total : int
            Their number.

        Returns
        -------
        iterable
            The same batches, advancing the bar as they are consumed.
        """
        return tqdm(iterable, total=total, desc="scoring pool", unit="batch", leave=False,
                    file=self.file or sys.stderr, mininterval=0)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("bar_", None)  # a live bar is not saved with the net
        return state


class DivergenceCheck(Callback):
    """Stop training with :class:`FloatingPointError` when it diverges.

    After every epoch it looks at the training losses skorch recorded for its
    batches (already on the host: no device sync); at the end of training it
    checks once that every weight of the net's modules is finite (the last
    step can leave non-finite weights behind a finite loss). skorch itself
    trains on through NaN losses; :class:`~skal.ActiveLearner` adds this
    callback to the nets it trains, so that a diverged ``teach`` keeps the
    previous model (marked stale) instead of installing a broken one.

    Examples
    --------
    >>> import numpy as np
    >>> from skal import ActiveNet
    >>> from skal.callbacks import DivergenceCheck
    >>> from skal.models import MLP
    >>> X = np.full((8, 2), 1e30, dtype=np.float32)
    >>> net = ActiveNet(MLP, module__num_classes=2, lr=1e10, max_epochs=2, verbose=0,
    ...                 callbacks=[("divergence_check", DivergenceCheck())])
    >>> try:
    ...     net.fit(X, np.arange(8) % 2)
    ... except FloatingPointError as error:
    ...     print(str(error)[:18])
    Training diverged:
    """

    def on_epoch_end(self, net, **kwargs):
        losses = [batch.get("train_loss") for batch in net.history[-1].get("batches", [])]
        bad = [loss for loss in losses if loss is not None and not np.isfinite(loss)]
        if bad:
            raise FloatingPointError(
                f"Training diverged: the training loss is {bad[0]} in epoch {len(net.history)}. "
                "Lower the learning rate (lr) or check the data for extreme values."
            )

    def on_train_end(self, net, **kwargs):
        params = [(f"{name}_.{key}", value) for name in net._modules
                  if isinstance(getattr(net, name + "_", None), torch.nn.Module)
                  for key, value in getattr(net, name + "_").named_parameters() if not is_lazy(value)]
        if params and not torch.stack([torch.isfinite(value).all() for _, value in params]).all():
            first = next(key for key, value in params if not torch.isfinite(value).all())
            raise FloatingPointError(
                f"Training diverged: the weights {first} are NaN or infinite after the last "
                "step. Lower the learning rate (lr) or check the data for extreme values."
            )
