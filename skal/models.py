"""Backbones: ResNet-18 for 32x32 images, and small nets for quick work and tests.

All of them return logits and take a ``num_classes`` argument, which
:class:`~skal.ActiveNet` fills in from the learner's classes when it is not
given. Convolutional ones name their stages ``layer1``, ``layer2``, ... so
that ActiveNet's feature taps find the multi-level maps that the TiDAL and
LL4AL heads read.
"""

from torch import nn
from torchvision.models import resnet18

__all__ = ["MLP", "SmallCNN", "resnet18_cifar"]


def resnet18_cifar(num_classes=10, in_channels=3, weights=None, dropout=0.0):
    """torchvision's ResNet-18 with the 3x3 stem used for 32x32 images.

    The papers behind skal (LL4AL, TiDAL, ISAL, DISAL) train ResNet-18 on
    CIFAR with the first convolution replaced by a 3x3, stride-1 one and no
    max-pool, so a 32x32 input reaches ``layer4`` as 4x4 maps (64x32x32,
    128x16x16, 256x8x8, 512x4x4 after ``layer1..layer4``). Everything else is
    torchvision's module, so its ``state_dict`` keys are torchvision's.

    Parameters
    ----------
    num_classes : int, default=10
        Number of output logits.
    in_channels : int, default=3
        Input channels (1 for grey-scale images).
    weights : torchvision weights enum or str, default=None
        Pretrained ImageNet weights to start from, as torchvision's
        ``resnet18(weights=...)`` takes them (this may download them). The
        stem and the classifier do not match those weights' shapes and are
        freshly initialised. ``None``: random initialisation, no download.
    dropout : float, default=0.0
        Dropout probability on the pooled 512-d features, before ``fc`` (as
        MC-dropout models such as :class:`~skal.selectors.BALD` need). It is
        appended to ``avgpool``, which has no weights, so the ``state_dict``
        keys stay torchvision's; ``0`` adds nothing.

    Returns
    -------
    torchvision.models.ResNet

    Examples
    --------
    >>> import torch
    >>> from skal.models import resnet18_cifar
    >>> net = resnet18_cifar(num_classes=10)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> net.conv1
    Conv2d(3, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
    """
    model = resnet18(weights=weights)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    if weights is not None or num_classes != model.fc.out_features:
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    if dropout:
        model.avgpool = nn.Sequential(model.avgpool, nn.Dropout(dropout))
    return model


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
        Dropout probability after each hidden layer (so the last one acts
        before the classifier); ``0`` adds no dropout layer.

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
    """A two-stage convolutional net for small images ``(N, C, H, W)``.

    ``layer1``: conv3x3(width)-BN-ReLU-maxpool2; ``layer2``: conv3x3(2 width)-BN-ReLU;
    ``pool``: global average pool (the penultimate embedding); ``dropout`` (only with
    ``dropout > 0``); ``fc``: the linear classifier. Fits 8x8 digits and 28x28
    Fashion-MNIST alike.

    Parameters
    ----------
    num_classes : int, default=10
        Number of output logits.
    in_channels : int, default=1
        Channels of the input images.
    width : int, default=32
        Channels of the first stage; the second has twice as many.
    dropout : float, default=0.0
        Dropout probability on the pooled embedding, before ``fc`` (as
        MC-dropout models such as :class:`~skal.selectors.BALD` need);
        ``0`` adds no dropout layer, leaving the module as without it.

    Examples
    --------
    >>> import torch
    >>> from skal.models import SmallCNN
    >>> SmallCNN(num_classes=10)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> SmallCNN(dropout=0.5).dropout
    Dropout(p=0.5, inplace=False)
    """

    def __init__(self, num_classes=10, in_channels=1, width=32, dropout=0.0):
        super().__init__()
        self.layer1 = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.layer2 = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout) if dropout else None
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        features = self.pool(self.layer2(self.layer1(x)))
        if self.dropout is not None:
            features = self.dropout(features)
        return self.fc(features)
