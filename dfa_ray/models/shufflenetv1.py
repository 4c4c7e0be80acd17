"""ShuffleNet V1 (Zhang et al. 2018) for CIFAR as used by the CRD benchmark (`ShuffleV1`).

A 1x1 conv stem to 24 channels without down-sampling, then three groups of shuffle units
(outputs 240/480/960, 4/8/4 units, 3 convolution groups); the first unit of each group has
stride 2 and concatenates its branch with a 3x3 average-pooled shortcut, so the groups run
at strides 2, 4, 8. Global average pooling and one Linear. Follows HobbitLong/RepDistiller
`models/ShuffleNetv1.py`, which keeps PyTorch's default initialisation; so does this file.
Each shuffle unit is a block; it ends in a ReLU after the sum (or concatenation), so its
pre-activation feature is the tensor before that ReLU, as CRD's `preact`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dfa_ray.models.base import GroupedBlock, GroupedModel
from dfa_ray.models.registry import MODELS


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[N, g*c, H, W] -> interleave the g channel groups -> [N, c*g, H, W]."""
    if groups == 1:
        return x
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV1Unit(GroupedBlock):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1, plus the shortcut.

    `out_planes` is the unit's output width; at stride 2 the branch makes
    `out_planes - in_planes` channels and the pooled input fills the rest.
    `first_groups` is the group count of the first 1x1 conv (1 for the network's first
    unit, whose 24-channel input is too narrow to split, as in the paper).
    """

    def __init__(
        self, in_planes: int, out_planes: int, stride: int, groups: int, first_groups: int
    ) -> None:
        super().__init__()
        self.stride = stride
        branch_planes = out_planes - in_planes if stride == 2 else out_planes
        mid_planes = branch_planes // 4
        self.first_groups = first_groups
        self.conv1 = nn.Conv2d(in_planes, mid_planes, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(
            mid_planes, mid_planes, 3, stride=stride, padding=1, groups=mid_planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, branch_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_planes)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.final_act = nn.ReLU()

    def forward_pre(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return torch.cat([out, res], 1) if self.stride == 2 else out + res


class ShuffleNetV1(GroupedModel):
    """ShuffleNet V1 with group widths `out_planes`, units `num_blocks`, conv `groups`."""

    def __init__(
        self,
        out_planes: tuple[int, int, int],
        num_blocks: tuple[int, int, int],
        groups: int,
        num_classes: int,
        in_channels: int,
    ) -> None:
        super().__init__()
        stem_planes = 24
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_planes, kernel_size=1, bias=False),
            nn.BatchNorm2d(stem_planes),
            nn.ReLU(inplace=True),
        )
        in_planes = stem_planes
        for planes, n in zip(out_planes, num_blocks):
            blocks = nn.ModuleList()
            for i in range(n):
                first_groups = 1 if in_planes == stem_planes else groups
                stride = 2 if i == 0 else 1
                blocks.append(ShuffleV1Unit(in_planes, planes, stride, groups, first_groups))
                in_planes = planes
            self.groups.append(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_planes[-1], num_classes)
        self._declare_groups(channels=out_planes, strides=(2, 4, 8))
        self.min_size = 1  # padded convs and pools only: even a 1x1 input keeps its size

    def forward_head(self, h: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        h = torch.flatten(self.pool(h), 1)
        return h if pre_logits else self.linear(h)


@MODELS.register("ShuffleV1")
def shufflev1(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV1:
    """CRD's `ShuffleV1`: widths 240/480/960, 4/8/4 units, 3 groups."""
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), 3, num_classes, in_channels)
