"""Training-time augmentations: per-sample (torchvision.transforms.v2) and seeded batch views."""

import torch
from torchvision.transforms import v2

__all__ = ["cifar_augmentation", "weak_augment", "strong_augment"]


def cifar_augmentation(size=32, padding=4):
    """The papers' CIFAR training augmentation: random crop with padding, horizontal flip.

    Pass it as ``ActiveNet(..., train_transform=cifar_augmentation())``: it is
    applied to each training sample as it is loaded, never at prediction or
    query time.

    Parameters
    ----------
    size : int, default=32
        Output height and width.
    padding : int, default=4
        Zero padding on each side before cropping.

    Returns
    -------
    torchvision.transforms.v2.Compose

    Examples
    --------
    >>> import torch
    >>> from skal.transforms import cifar_augmentation
    >>> cifar_augmentation()(torch.zeros(3, 32, 32)).shape
    torch.Size([3, 32, 32])
    """
    return v2.Compose([v2.RandomCrop(size, padding=padding), v2.RandomHorizontalFlip()])


# --- batch augmentations for semi-supervised training (skal.semi.FixMatch) -------------------


def _check_images(x, name):
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} augments image batches of shape (n, channels, height, width); "
                         f"got {shape}. Use skal.semi.PseudoLabel for other features.")


def _uniform(n, generator, device):
    return torch.rand(n, generator=generator, device="cpu").to(device)


def _check_flip(flip, name):
    if not isinstance(flip, bool):
        raise ValueError(f"{name}: flip must be True or False; got {flip!r}.")


def weak_augment(x, generator, *, translate=0.125, flip=True):
    """FixMatch's weak view of a batch of images: random horizontal flip, then random translation.

    Each image is flipped with probability 1/2 (when ``flip``) and shifted by
    up to ``translate`` of its height and width in each direction (reflect
    padding), as in Sohn et al. (2020), section 2.3. Every draw comes from
    ``generator`` (on the CPU), so a seeded generator gives the same views on
    any device.

    Parameters
    ----------
    x : torch.Tensor of shape (n, channels, height, width)
    generator : torch.Generator
        A CPU generator.
    translate : float, default=0.125
        The largest shift, a fraction of the side (the paper's 12.5%).
    flip : bool, default=True
        Whether to flip. False for images whose label a mirror changes
        (digits, text): only the translation remains, and no flip is drawn.

    Returns
    -------
    torch.Tensor of the shape of ``x``, on its device

    Examples
    --------
    >>> import torch
    >>> from skal.transforms import weak_augment
    >>> weak_augment(torch.zeros(2, 1, 8, 8), torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 8, 8])
    """
    _check_images(x, "weak_augment")
    _check_flip(flip, "weak_augment")
    n, _, height, width = x.shape
    if flip:
        flipped = _uniform(n, generator, x.device) < 0.5
        x = torch.where(flipped[:, None, None, None], x.flip(3), x)
    pad_h, pad_w = int(round(translate * height)), int(round(translate * width))
    if pad_h == 0 and pad_w == 0:
        return x
    padded = torch.nn.functional.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    dy = torch.randint(0, 2 * pad_h + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad_w + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(height, device=x.device))[:, :, None]  # (n, H, 1)
    cols = (dx[:, None] + torch.arange(width, device=x.device))[:, None, :]  # (n, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # channels last for the gather, so that the three indices broadcast to (n, H, W)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def strong_augment(x, generator, *, translate=0.125, cutout=0.5, contrast=0.5, noise=0.05, flip=True):
    """A strong view of a batch of images: the weak view, random contrast and brightness, noise, Cutout.

    FixMatch's strong view is RandAugment followed by Cutout (Sohn et al.
    2020, section 2.3). This one keeps its shape with plain tensor ops that
    suit any number of channels and any value range: the weak view; each
    image's deviation from its mean scaled by a factor drawn from
    ``[1 - contrast, 1 + contrast]`` and shifted by ``[-contrast, contrast]``
    times its standard deviation; Gaussian noise of ``noise`` times its
    standard deviation; then a square of side up to ``cutout`` of the
    image's side, at a random centre, set to the image's mean (Cutout,
    DeVries and Taylor 2017, with the paper's largest size, half the side).

    Parameters
    ----------
    x : torch.Tensor of shape (n, channels, height, width)
    generator : torch.Generator
        A CPU generator; every draw comes from it.
    translate : float, default=0.125
        As in :func:`weak_augment`.
    cutout : float, default=0.5
        The largest side of the cut square, a fraction of the image's side.
    contrast : float, default=0.5
        The range of the contrast factor and of the brightness shift.
    noise : float, default=0.05
        The noise's standard deviation, relative to each image's.
    flip : bool, default=True
        As in :func:`weak_augment` (False: no flip in the weak view under it).

    Returns
    -------
    torch.Tensor of the shape of ``x``, on its device

    Examples
    --------
    >>> import torch
    >>> from skal.transforms import strong_augment
    >>> strong_augment(torch.ones(2, 1, 8, 8), torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 8, 8])
    """
    _check_images(x, "strong_augment")
    _check_flip(flip, "strong_augment")
    x = weak_augment(x, generator, translate=translate, flip=flip)
    n, channels, height, width = x.shape
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    scale = 1 + contrast * (2 * _uniform(n, generator, x.device) - 1)
    shift = contrast * (2 * _uniform(n, generator, x.device) - 1)
    x = mean + (x - mean) * scale[:, None, None, None] + shift[:, None, None, None] * std
    gaussian = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
    x = x + noise * std * gaussian
    size = (cutout * _uniform(n, generator, x.device) * min(height, width)).round()
    cy = (_uniform(n, generator, x.device) * height).floor()
    cx = (_uniform(n, generator, x.device) * width).floor()
    ys = torch.arange(height, device=x.device, dtype=x.dtype)[None, :, None]
    xs = torch.arange(width, device=x.device, dtype=x.dtype)[None, None, :]
    half = (size / 2)[:, None, None]
    inside = ((ys - cy[:, None, None]).abs() < half) & ((xs - cx[:, None, None]).abs() < half)
    return torch.where(inside[:, None], mean, x)
