"""VGG with batch norm for CIFAR, as defined by the CRD benchmark (`vgg8` ... `vgg19`).

Five conv blocks of 3x3 conv(bias)-BN-ReLU units; a 2x2 max-pool after each of the first
three; global average pooling; one Linear(512, C) (no VGG fully connected layers).
Follows HobbitLong/RepDistiller `models/vgg.py` with `batch_norm=True` (CRD's `vgg8` is its
`vgg8_bn`, etc.), including the initialisation.

Layer groups. CRD skips the fourth max-pool unless the input is 64 px, so at 32 px the
fourth and fifth conv blocks both run at 4x4. A layer group is a run of one spatial size, so
they form one group: four groups at strides 1, 2, 4, 8 (channels 64, 128, 256, 512). Here
that fourth pool is never applied, at any input size: the architecture is fixed at
construction (group_info cannot depend on the input), and it is CRD's at 32 px.
Each conv-BN-ReLU unit is a block. CRD leaves the ReLU off the last unit of each conv block
and applies it after the block; that is the same function, and its "pre-activation" feature
is this block's pre-activation tensor.
"""

from __future__ import annotations


import torch
from torch import nn

from dfa_ray.models.init import init_crd
from dfa_ray.models.base import GroupedBlock, GroupedModel
from dfa_ray.models.registry import MODELS

# Output widths of the conv units of CRD's five conv blocks.
_CFGS: dict[str, list[list[int]]] = {
    "S": [[64], [128], [256], [512], [512]],
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "D": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "E": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


class ConvBNReLU(GroupedBlock):
    """One VGG unit: 3x3 conv (with bias, as CRD) - BN; the ReLU is `final_act`."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(out_planes)
        self.final_act = nn.ReLU()

    def forward_pre(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class VGG(GroupedModel):
    """CRD's VGG-BN for a configuration of five conv blocks (see `_CFGS`)."""

    def __init__(self, cfg: list[list[int]], num_classes: int, in_channels: int) -> None:
        super().__init__()
        # Conv blocks 0, 1, 2 are groups 0, 1, 2; blocks 3 and 4 share group 3 (no pool between).
        group_widths = [cfg[0], cfg[1], cfg[2], cfg[3] + cfg[4]]
        in_planes = in_channels
        for widths in group_widths:
            blocks = nn.ModuleList()
            for width in widths:
                blocks.append(ConvBNReLU(in_planes, width))
                in_planes = width
            self.groups.append(blocks)
        pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.transitions = nn.ModuleList([nn.Identity(), pool, pool, pool])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_planes, num_classes)
        self._declare_groups(channels=[w[-1] for w in group_widths], strides=(1, 2, 4, 8))
        self.min_size = 8  # three 2x2 max-pools: 8 -> 4 -> 2 -> 1
        init_crd(self, linear="normal")

    def forward_head(self, h: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        h = torch.flatten(self.pool(h), 1)
        return h if pre_logits else self.classifier(h)


@MODELS.register("vgg8")
def vgg8(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return VGG(_CFGS["S"], num_classes, in_channels)


@MODELS.register("vgg11")
def vgg11(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return VGG(_CFGS["A"], num_classes, in_channels)


@MODELS.register("vgg13")
def vgg13(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return VGG(_CFGS["B"], num_classes, in_channels)


@MODELS.register("vgg16")
def vgg16(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return VGG(_CFGS["D"], num_classes, in_channels)


@MODELS.register("vgg19")
def vgg19(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return VGG(_CFGS["E"], num_classes, in_channels)
