"""CIFAR ResNets (He et al. 2016, section 4.2) as defined by the CRD benchmark.

Depth 6n+2: a 3x3 stem, three groups of n BasicBlocks at strides 1, 2, 4 with widths
16/32/64 (x4 variants: stem 32, groups 64/128/256), global average pooling and one Linear.
The down-sampling shortcut is a 1x1 conv + BN wherever the shape changes (CRD's option B).
Architecture, parameter count and initialisation follow HobbitLong/RepDistiller
`models/resnet.py`; the fixed 8x8 average pool there is an adaptive one here, which is the
same function at 32 px and lets the nets run at any input size.
"""

from __future__ import annotations

import torch
from torch import nn

from dfa_ray.models.init import init_crd
from dfa_ray.models.base import GroupedBlock, GroupedModel
from dfa_ray.models.registry import MODELS


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(GroupedBlock):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut; the ReLU after the sum is `final_act`."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        self.final_act = nn.ReLU()

    def forward_pre(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class CifarResNet(GroupedModel):
    """Three groups of `(depth - 2) / 6` BasicBlocks; `widths` = [stem, group 1, 2, 3]."""

    def __init__(
        self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        strides = (1, 2, 2)
        in_planes = widths[0]
        for planes, stride in zip(widths[1:], strides):
            blocks = nn.ModuleList()
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            self.groups.append(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        self._declare_groups(channels=widths[1:], strides=(1, 2, 4))
        self.min_size = 1  # only padded convs: even a 1x1 input keeps its size
        init_crd(self, linear="default")

    def forward_head(self, h: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        h = torch.flatten(self.pool(h), 1)
        return h if pre_logits else self.fc(h)


_THIN = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)  # the "x4" variants: 4x the group widths, stem 32


@MODELS.register("resnet8")
def resnet8(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(8, _THIN, num_classes, in_channels)


@MODELS.register("resnet14")
def resnet14(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(14, _THIN, num_classes, in_channels)


@MODELS.register("resnet20")
def resnet20(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(20, _THIN, num_classes, in_channels)


@MODELS.register("resnet32")
def resnet32(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(32, _THIN, num_classes, in_channels)


@MODELS.register("resnet44")
def resnet44(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(44, _THIN, num_classes, in_channels)


@MODELS.register("resnet56")
def resnet56(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(56, _THIN, num_classes, in_channels)


@MODELS.register("resnet110")
def resnet110(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(110, _THIN, num_classes, in_channels)


@MODELS.register("resnet8x4")
def resnet8x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(8, _WIDE, num_classes, in_channels)


@MODELS.register("resnet32x4")
def resnet32x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(32, _WIDE, num_classes, in_channels)
