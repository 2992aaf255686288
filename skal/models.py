"""Small backbones for quick work and tests.

All of them return logits and take a ``num_classes`` argument, which
:class:`~skal.ActiveNet` fills in from the learner's classes when it is not
given.
"""

import torch
from torch import nn

__all__ = ["MLP", "SmallCNN"]


class MLP(nn.Module):
    """A multilayer perceptron on flattened inputs.

    Parameters
    ----------
    num_classes : int, default=10
        Number of output logits.
    hidden_sizes : tuple of int, default=(64,)
        Widths of the hidden ReLU layers.
    in_features : int or None, default=None
        Input width after flattening; ``None`` infers it at the first forward
        pass (``torch.nn.LazyLinear``).
    dropout : float, default=0.0
        Dropout probability after each hidden layer.

    Examples
    --------
    >>> import torch
    >>> from skal.models import MLP
    >>> MLP(num_classes=3, in_features=4)(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(self, num_classes=10, hidden_sizes=(64,), in_features=None, dropout=0.0):
        super().__init__()
        layers = [nn.Flatten()]
        width = in_features
        for size in hidden_sizes:
            layers.append(nn.Linear(width, size) if width else nn.LazyLinear(size))
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes) if width else nn.LazyLinear(num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class SmallCNN(nn.Module):
    """A two-block convolutional net for small images ``(N, C, H, W)``.

    conv3x3(32)-BN-ReLU-maxpool2, conv3x3(64)-BN-ReLU, global average pool
    (the 64-d penultimate embedding, submodule ``pool``), then a linear
    classifier ``fc``. Fits 8x8 digits and 28x28 Fashion-MNIST alike.

    Parameters
    ----------
    num_classes : int, default=10
        Number of output logits.
    in_channels : int, default=1
        Channels of the input images.
    width : int, default=32
        Channels of the first block; the second has twice as many.

    Examples
    --------
    >>> import torch
    >>> from skal.models import SmallCNN
    >>> SmallCNN(num_classes=10)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes=10, in_channels=1, width=32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)))
