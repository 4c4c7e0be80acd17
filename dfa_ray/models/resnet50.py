"""ResNet-50 for CIFAR as used by the CRD benchmark (`ResNet50`).

The ImageNet ResNet-50 body (Bottleneck blocks [3, 4, 6, 3], widths 64/128/256/512 x 4) with
a CIFAR stem: one 3x3 stride-1 conv-BN-ReLU and no max-pool, so the four groups run at
strides 1, 2, 4, 8. Global average pooling and one Linear(2048, C). Follows
HobbitLong/RepDistiller `models/resnetv2.py` (layers, initialisation; no zero-init of the
last BN).
"""

from __future__ import annotations

import torch
from torch import nn

from dfa_ray.models.init import init_crd
from dfa_ray.models.base import GroupedBlock, GroupedModel
from dfa_ray.models.registry import MODELS


class Bottleneck(GroupedBlock):
    """1x1-BN-ReLU, 3x3 (strided)-BN-ReLU, 1x1 (x4)-BN, plus the shortcut; ReLU is `final_act`."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        self.final_act = nn.ReLU()

    def forward_pre(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + (x if self.shortcut is None else self.shortcut(x))


class ResNetBottleneck(GroupedModel):
    """CIFAR-stem ResNet of Bottleneck blocks, `num_blocks` per group."""

    def __init__(self, num_blocks: tuple[int, ...], num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        planes_per_group = (64, 128, 256, 512)[: len(num_blocks)]
        in_planes = 64
        for g, (planes, n) in enumerate(zip(planes_per_group, num_blocks)):
            blocks = nn.ModuleList()
            for i in range(n):
                stride = 2 if (g > 0 and i == 0) else 1
                blocks.append(Bottleneck(in_planes, planes, stride))
                in_planes = planes * Bottleneck.expansion
            self.groups.append(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        self._declare_groups(
            channels=[p * Bottleneck.expansion for p in planes_per_group],
            strides=[2**g for g in range(len(num_blocks))],
        )
        self.min_size = 1  # only padded convs: even a 1x1 input keeps its size
        init_crd(self, linear="default")

    def forward_head(self, h: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        h = torch.flatten(self.pool(h), 1)
        return h if pre_logits else self.linear(h)


@MODELS.register("ResNet50")
def resnet50(num_classes: int = 100, in_channels: int = 3) -> ResNetBottleneck:
    """CRD's `ResNet50`: Bottleneck [3, 4, 6, 3] with a CIFAR stem."""
    return ResNetBottleneck((3, 4, 6, 3), num_classes, in_channels)
