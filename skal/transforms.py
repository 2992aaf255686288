"""Training-time augmentations (torchvision.transforms.v2)."""

from torchvision.transforms import v2

__all__ = ["cifar_augmentation"]


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
