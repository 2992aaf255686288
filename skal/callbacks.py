"""skorch callbacks of skal."""

import sys

from skorch.callbacks import Callback
from tqdm.auto import tqdm

__all__ = ["ProgressBars"]


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
