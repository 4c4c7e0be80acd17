"""Wide ResNets (Zagoruyko & Komodakis 2016) as defined by the CRD benchmark.

WRN-d-k: a 3x3 conv stem (no BN), three groups of (d - 4) / 6 pre-activation BasicBlocks of
widths 16k/32k/64k at strides 1, 2, 4, then BN-ReLU, global average pooling and one Linear.
Dropout is 0 in every CRD and DFA configuration, so it is left out.
Follows HobbitLong/RepDistiller `models/wrn.py` (layers, widths, initialisation); the
fixed 8x8 pool there is adaptive here. wrn_16_4, wrn_28_2 and wrn_28_4 (the DFA paper's
teacher and students) are the same class at other depths and widths.

Pre-activation blocks end with the residual sum, so `final_act` is the identity and their
pre-activation and post-activation features coincide; the final BN-ReLU is in the head.
"""

from __future__ import annotations


import torch
from torch import nn

from dfa_ray.models.init import init_crd
from dfa_ray.models.base import GroupedBlock, GroupedModel
from dfa_ray.models.registry import MODELS


class WideBasicBlock(GroupedBlock):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the shortcut (a 1x1 conv where the shape changes).

    Where the shape changes the shortcut conv sees the block's BN-ReLU output, otherwise the
    shortcut is the raw input: the usual pre-activation WRN wiring.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if in_planes != out_planes or stride != 1:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        self.final_act = nn.Identity()

    def forward_pre(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        shortcut = x if self.shortcut is None else self.shortcut(act)
        return shortcut + out


class WideResNet(GroupedModel):
    """WRN-`depth`-`widen`; depth must be 6n+4."""

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.stem = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False)
        in_planes = 16
        for planes, stride in zip(widths, (1, 2, 2)):
            blocks = nn.ModuleList()
            for i in range(n):
                blocks.append(WideBasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            self.groups.append(blocks)
        self.bn = nn.BatchNorm2d(widths[-1])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        self._declare_groups(channels=widths, strides=(1, 2, 4))
        self.min_size = 1  # only padded convs: even a 1x1 input keeps its size
        init_crd(self, linear="zero_bias")

    def forward_head(self, h: torch.Tensor) -> torch.Tensor:
        # `h` may be a caller's tensor (forward_from): the in-place ReLU acts on BN's output.
        h = self.relu(self.bn(h))
        return self.fc(torch.flatten(self.pool(h), 1))


@MODELS.register("wrn_16_1")
def wrn_16_1(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return WideResNet(16, 1, num_classes, in_channels)


@MODELS.register("wrn_16_2")
def wrn_16_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return WideResNet(16, 2, num_classes, in_channels)


@MODELS.register("wrn_16_4")
def wrn_16_4(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return WideResNet(16, 4, num_classes, in_channels)


@MODELS.register("wrn_28_2")
def wrn_28_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return WideResNet(28, 2, num_classes, in_channels)


@MODELS.register("wrn_28_4")
def wrn_28_4(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return WideResNet(28, 4, num_classes, in_channels)


@MODELS.register("wrn_40_1")
def wrn_40_1(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return WideResNet(40, 1, num_classes, in_channels)


@MODELS.register("wrn_40_2")
def wrn_40_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return WideResNet(40, 2, num_classes, in_channels)
