"""Pool inference for ActiveNet: batches streamed to the device, OOM-safe maps, tapped forwards."""

import warnings
from collections.abc import Mapping

import numpy as np
import torch
from skorch.dataset import unpack_data
from skorch.utils import to_device, to_tensor
from torch.utils.data import DataLoader

from ._bookkeeping import Rows
from ._taps import tap

__all__ = ["PoolInferenceMixin"]


class PoolInferenceMixin:
    """The pool passes of :class:`~skal.ActiveNet`: what selectors call to score a pool."""

    def iter_pool(self, X):
        """Yield the pool's input batches, moved to the net's device.

        Batches have skorch's validation batch size (``iterator_valid__batch_size``,
        else ``batch_size``); only one batch is on the device at a time. With a
        :class:`skal.callbacks.ProgressBars` callback, a bar shows the pass.

        Parameters
        ----------
        X : array-like, dict of arrays or torch Dataset
            Anything the net can predict on.

        Yields
        ------
        torch.Tensor or dict of torch.Tensor
            One input batch on ``self.device``.
        """
        size = self.get_params_for("iterator_valid").get("batch_size", self.batch_size)
        size = max(len(X), 1) if size == -1 else size
        if isinstance(X, (np.ndarray, torch.Tensor)):
            # Arrays are sliced, a contiguous chunk at a time: the same batches as
            # skorch's loader without collating them row by row.
            batches = (X[start:start + size] for start in range(0, len(X), size))
            total = -(-len(X) // size)
        elif isinstance(X, Rows):  # some rows of a pool, gathered a chunk at a time
            batches = (X.chunk(start, start + size) for start in range(0, len(X), size))
            total = -(-len(X) // size)
        else:
            batches = (unpack_data(batch)[0] for batch in self._inference_iterator(self.get_dataset(X)))
            total = None
        progress = [cb for _, cb in getattr(self, "callbacks_", []) if hasattr(cb, "pool_bar")]
        if progress:
            batches = progress[0].pool_bar(batches, total=total)
        for Xi in batches:
            if isinstance(Xi, np.ndarray):
                # C order: torch takes no negative strides, and a strided or Fortran-ordered
                # batch would give outputs that differ in the last bit from its copy's
                Xi = np.ascontiguousarray(Xi, dtype=np.float32 if Xi.dtype == np.float64 else None)
                if not Xi.flags.writeable:  # a memmap's (joblib's workers): a batch-sized copy, so
                    Xi = Xi.copy()          # that torch neither warns nor lets a module write into it
            elif isinstance(Xi, torch.Tensor):
                Xi = Xi.contiguous()
            yield to_tensor(Xi, device=self.device)

    def forward_iter(self, X, training=False, device="cpu"):
        # skorch's, but prediction loaders leave torch's global random state alone
        dataset = self.get_dataset(X)
        if training:
            iterator = self.get_iterator(dataset, training=True)
        else:
            iterator = self._inference_iterator(dataset)
        for batch in iterator:
            yield to_device(self.evaluation_step(batch, training=training), device=device)

    def _inference_iterator(self, dataset):
        """``get_iterator(dataset, training=False)``, a DataLoader given a generator of its own.

        torch's DataLoader draws its workers' base seed from torch's global
        random state at every pass, shuffled or not; a prediction must not move
        that state (a seeded training in another thread draws from it).
        """
        loader = self.get_iterator(dataset, training=False)
        if isinstance(loader, DataLoader) and loader.generator is None:
            loader.generator = torch.Generator()
        return loader

    def map_pool(self, fn, X):
        """Apply ``fn`` to every pool batch and concatenate its outputs.

        Batches come from :meth:`iter_pool`. If ``fn`` runs out of CUDA
        memory on a batch, the batch is split in two and retried (and the
        rest of the pass keeps the smaller pieces), down to single samples,
        with one ``RuntimeWarning`` per pass; a campaign is not lost to a pool
        batch that was too large for the device at that moment. Only
        :class:`torch.cuda.OutOfMemoryError` is caught.

        Parameters
        ----------
        fn : callable
            ``fn(Xb) -> torch.Tensor`` with one leading row per sample of the
            batch ``Xb``.
        X : array-like, dict of arrays or torch Dataset
            The pool.

        Returns
        -------
        torch.Tensor
            ``fn``'s outputs concatenated along dimension 0 (empty for an
            empty pool).

        Examples
        --------
        >>> import numpy as np
        >>> from skal import ActiveNet
        >>> from skal.models import MLP
        >>> net = ActiveNet(MLP, module__num_classes=2, batch_size=4).initialize()
        >>> net.map_pool(lambda Xb: Xb.sum(1), np.ones((10, 3), dtype=np.float32)).tolist()
        [3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
        """
        parts, rows, warned = [], None, False  # rows: piece size that fits, once one failed
        for Xb in self.iter_pool(X):
            size = batch_len(Xb)
            while True:
                piece = size if rows is None else min(rows, size)
                try:
                    parts.extend([fn(p) for p in split_batch(Xb, -(-size // piece))])
                    break
                except torch.cuda.OutOfMemoryError:
                    if piece == 1:
                        raise
                # outside the handler, so that the failed attempt's tensors are released
                rows = -(-piece // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if not warned:
                    warnings.warn(
                        f"CUDA ran out of memory on a pool batch of {size} samples; retrying in "
                        f"pieces of {rows}. Lower iterator_valid__batch_size to avoid the "
                        "retries.", RuntimeWarning, stacklevel=2)
                    warned = True
        return torch.cat(parts) if parts else torch.empty(0, device=self.device)

    def logits(self, Xb, module=None):
        """Logits of one batch in eval mode under :func:`torch.inference_mode`.

        Like skorch's prediction methods, this leaves the net's modules in eval
        mode; training switches them back.

        Parameters
        ----------
        Xb : torch.Tensor or dict of torch.Tensor
            A batch from :meth:`iter_pool`.
        module : torch.nn.Module, default=None
            Another module to evaluate instead of the net's own (e.g.
            :meth:`skal.parts.EpochSnapshot.module`); called directly.

        Returns
        -------
        torch.Tensor of shape (batch_size, n_classes)
            On the net's device.
        """
        return self.forward_tapped(Xb, module=module)[0]

    def forward_tapped(self, Xb, *, levels=False, embedding=False, module=None):
        """Logits plus tapped features of one batch, in eval mode under inference mode.

        Parameters
        ----------
        Xb : torch.Tensor or dict of torch.Tensor
            A batch from :meth:`iter_pool`.
        levels : bool, default=False
            Also return the ``feature_layers_`` outputs.
        embedding : bool, default=False
            Also return the penultimate embedding, flattened to 2-d.
        module : torch.nn.Module, default=None
            Another module with the same architecture to run instead of the
            net's own (the net's ``infer`` is used only for its own module).

        Returns
        -------
        logits : torch.Tensor of shape (batch_size, n_classes)
        features : dict
            ``"levels"``: list of tensors (with ``levels=True``);
            ``"embedding"``: tensor of shape (batch_size, d) (with ``embedding=True``).
        """
        outputs, inputs = list(self.feature_layers_) if levels else [], ()
        if embedding:
            extra_outputs, inputs = self.embedding_tap()
            outputs += list(extra_outputs)
        self._set_training(False)
        target = self.module_ if module is None else module.eval()
        with torch.inference_mode(), tap(target, outputs, inputs) as tapped:
            if module is None:
                out = self.infer(Xb)
            elif isinstance(Xb, Mapping):
                out = module(**Xb)
            else:
                out = module(Xb)
        features = {}
        if levels:
            features["levels"] = [tapped[name] for name in self.feature_layers_]
        if embedding:
            key = "embedding" if inputs else self.embedding_layer
            features["embedding"] = tapped[key].flatten(1)
        return first_output(out), features

    def iter_logits(self, X, module=None):
        """Yield the logits of ``X`` batch by batch, on the net's device.

        Examples
        --------
        >>> import numpy as np
        >>> from skal import ActiveNet
        >>> from skal.models import MLP
        >>> X = np.zeros((10, 3), dtype=np.float32)
        >>> net = ActiveNet(MLP, module__num_classes=2, batch_size=4).initialize()
        >>> [logits.shape[0] for logits in net.iter_logits(X)]
        [4, 4, 2]
        """
        for Xb in self.iter_pool(X):
            yield self.logits(Xb, module=module)


def first_output(out):
    """The prediction of a module output: skorch treats a tuple's first element as it."""
    return out[0] if isinstance(out, tuple) else out


def batch_len(Xb):
    if isinstance(Xb, Mapping):
        return len(next(iter(Xb.values())))
    return len(Xb[0]) if isinstance(Xb, (tuple, list)) else len(Xb)


def split_batch(Xb, pieces):
    """``Xb`` (a tensor, or a dict, tuple or list of tensors) in ``pieces`` row blocks."""
    if pieces == 1:
        return [Xb]
    if isinstance(Xb, Mapping):
        split = {key: torch.tensor_split(value, pieces) for key, value in Xb.items()}
        return [{key: split[key][i] for key in Xb} for i in range(pieces)]
    if isinstance(Xb, (tuple, list)):
        return [type(Xb)(parts) for parts in zip(*(torch.tensor_split(x, pieces) for x in Xb))]
    return list(torch.tensor_split(Xb, pieces))
