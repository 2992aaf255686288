"""Forward hooks that record submodule outputs, and the default layers they read."""

import re
from contextlib import contextmanager

import torch

__all__ = ["tap", "auto_feature_layers", "last_linear"]


@contextmanager
def tap(module, outputs=(), inputs=()):
    """Record submodule outputs (and inputs) during the forward passes inside the block.

    Hooks live only for the block, so nothing is left on the module to pickle,
    clone or move between devices.

    Parameters
    ----------
    module : torch.nn.Module
    outputs : iterable of str
        Submodule names whose output to record, under the same key.
    inputs : iterable of (str, str)
        ``(key, name)`` pairs: record the first input of submodule ``name``
        under ``key``.

    Yields
    ------
    dict of str to torch.Tensor
        Filled by the forward passes run inside the block.
    """
    tapped, handles = {}, []
    try:
        for name in outputs:
            handles.append(module.get_submodule(name).register_forward_hook(_OutputHook(tapped, name)))
        for key, name in inputs:
            handles.append(module.get_submodule(name).register_forward_pre_hook(_InputHook(tapped, key)))
        yield tapped
    finally:
        for handle in handles:
            handle.remove()


class _OutputHook:
    def __init__(self, store, key):
        self.store, self.key = store, key

    def __call__(self, module, args, out):
        self.store[self.key] = out


class _InputHook:
    def __init__(self, store, key):
        self.store, self.key = store, key

    def __call__(self, module, args):
        self.store[self.key] = args[0]


def auto_feature_layers(module):
    """Top-level children named ``layer<k>``, in order of k (ResNet's layer1..layer4)."""
    found = [(int(m.group(1)), name) for name, _ in module.named_children()
             if (m := re.fullmatch(r"layer(\d+)", name))]
    return tuple(name for _, name in sorted(found))


def last_linear(module):
    """Name of the module's last ``torch.nn.Linear`` submodule, or None."""
    names = [name for name, sub in module.named_modules() if isinstance(sub, torch.nn.Linear)]
    return names[-1] if names else None


def submodule_names(module):
    """Every named submodule of ``module`` (for error messages)."""
    return [name for name, _ in module.named_modules() if name]
