"""Auxiliary heads that read multi-level features: LL4AL's loss prediction, TiDAL's TD head.

Both have the LossNet architecture of LL4AL (Yoo and Kweon, CVPR 2019): for
each tapped level, global average pooling, ``Linear(C_i, hidden)`` and ReLU;
the levels concatenated; a final linear layer. The per-level layers are lazy,
so the heads adapt to any backbone's channel counts at their first forward
pass. With ResNet-18's four levels (64+128+256+512 channels) and
``hidden=128`` the loss head has LL4AL's 123,905 parameters.
"""

import torch
from torch import nn

__all__ = ["LossPredictionHead", "TrainingDynamicsHead"]


class _MultiLevelHead(nn.Module):
    def __init__(self, out_features, n_levels, hidden):
        super().__init__()
        self.levels = nn.ModuleList(
            nn.Sequential(nn.LazyLinear(hidden), nn.ReLU()) for _ in range(n_levels)
        )
        self.out = nn.Linear(n_levels * hidden, out_features)

    def forward(self, features):
        if len(features) != len(self.levels):
            raise ValueError(f"expected {len(self.levels)} feature levels, got {len(features)}")
        pooled = [f.flatten(2).mean(dim=2) if f.ndim > 2 else f for f in features]
        return self.out(torch.cat([layer(p) for layer, p in zip(self.levels, pooled)], dim=1))


class LossPredictionHead(_MultiLevelHead):
    """LL4AL's loss-prediction module: predicts each sample's training loss.

    Parameters
    ----------
    n_levels : int, default=4
        Number of feature maps it reads (ResNet's ``layer1..layer4``).
    hidden : int, default=128
        Width of each level's linear layer (the paper's 128).

    References
    ----------
    .. [1] Yoo and Kweon, "Learning Loss for Active Learning", CVPR 2019, Fig. 3.

    Examples
    --------
    >>> import torch
    >>> from skal.heads import LossPredictionHead
    >>> head = LossPredictionHead(n_levels=2)
    >>> head([torch.zeros(5, 8, 4, 4), torch.zeros(5, 16, 2, 2)]).shape
    torch.Size([5])
    """

    def __init__(self, n_levels=4, hidden=128):
        super().__init__(1, n_levels, hidden)
        self.n_levels = n_levels
        self.hidden = hidden

    def forward(self, features):
        return super().forward(features).squeeze(1)


class TrainingDynamicsHead(_MultiLevelHead):
    """TiDAL's training-dynamics head: predicts each sample's mean training softmax.

    Outputs logits ``(N, num_classes)``; ``softmax`` of them is the predicted
    training dynamics ``q`` that is trained towards the net's ``p_bar``.

    Parameters
    ----------
    num_classes : int
        Number of classes.
    n_levels : int, default=4
        Number of feature maps it reads.
    hidden : int, default=128
        Width of each level's linear layer.

    References
    ----------
    .. [1] Kye et al., "TiDAL: Learning Training Dynamics for Active Learning",
       ICCV 2023.

    Examples
    --------
    >>> import torch
    >>> from skal.heads import TrainingDynamicsHead
    >>> head = TrainingDynamicsHead(num_classes=3, n_levels=1)
    >>> head([torch.zeros(5, 8, 4, 4)]).shape
    torch.Size([5, 3])
    """

    def __init__(self, num_classes, n_levels=4, hidden=128):
        super().__init__(num_classes, n_levels, hidden)
        self.num_classes = num_classes
        self.n_levels = n_levels
        self.hidden = hidden
