"""ShuffleNet V2 (Ma et al. 2018) for CIFAR as used by the CRD benchmark (`ShuffleV2`).

Net size 1: a 1x1 conv stem to 24 channels without down-sampling, three groups (116/232/464
channels) each of one stride-2 down-sampling unit and 3/7/3 basic units, so the groups run at
strides 2, 4, 8 with 4/8/4 units; then a 1x1 conv to 1024 with BN-ReLU (in the head), global
average pooling and one Linear. Follows HobbitLong/RepDistiller `models/ShuffleNetv2.py`,
which keeps PyTorch's default initialisation; so does this file.

Pre-activation features. A unit's output is the channel shuffle of two halves that each end
in a ReLU: the branch's last BN followed by a ReLU, and (in a basic unit) the untouched half
of the input, itself the output of a ReLU. CRD's pre-activation feature for this net is the
concatenation with the branch's BN output *before* its ReLU. Because the passthrough half is
already non-negative, ReLU(shuffle(concat(x1, b))) = shuffle(concat(x1, ReLU(b))) exactly, so
here the ReLU is moved behind the shuffle and becomes the unit's `final_act`: `preact=True`
reports shuffle(concat(x1, BN output)), which is CRD's tensor up to a fixed channel
permutation (immaterial to a 1x1 connector), and `forward_from` can re-enter from it. The
down-sampling unit is treated the same way (both branches end in BN-ReLU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dfa_ray.models.base import GroupedBlock, GroupedModel
from dfa_ray.models.registry import MODELS
from dfa_ray.models.shufflenetv1 import channel_shuffle


class ShuffleV2Unit(GroupedBlock):
    """Basic unit: split the channels in half, transform one half, concatenate, shuffle."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        half = planes // 2
        self.split = half
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, stride=1, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)
        # the branch's ReLU, moved behind the shuffle (exact: the passthrough half is >= 0)
        self.final_act = nn.ReLU()

    def forward_pre(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = self.bn3(self.conv3(out))
        return channel_shuffle(torch.cat([x1, out], 1), 2)


class ShuffleV2DownUnit(GroupedBlock):
    """Down-sampling unit: two stride-2 branches of `out_planes / 2` each, concatenated."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        mid = out_planes // 2
        # left: depthwise 3x3 (stride 2) - 1x1
        self.conv1 = nn.Conv2d(in_planes, in_planes, 3, 2, 1, groups=in_planes, bias=False)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv2 = nn.Conv2d(in_planes, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right: 1x1 - depthwise 3x3 (stride 2) - 1x1
        self.conv3 = nn.Conv2d(in_planes, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.final_act = nn.ReLU()  # both branches' last ReLU, behind the shuffle

    def forward_pre(self, x: torch.Tensor) -> torch.Tensor:
        left = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn5(self.conv5(self.bn4(self.conv4(right))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(GroupedModel):
    """ShuffleNet V2 with group widths `out_channels[:3]`, head width `out_channels[3]`."""

    def __init__(
        self,
        out_channels: tuple[int, int, int, int],
        num_blocks: tuple[int, int, int],
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
        for planes, n in zip(out_channels[:3], num_blocks):
            blocks = nn.ModuleList([ShuffleV2DownUnit(in_planes, planes)])
            blocks.extend(ShuffleV2Unit(planes) for _ in range(n))
            self.groups.append(blocks)
            in_planes = planes
        self.conv_last = nn.Conv2d(in_planes, out_channels[3], 1, bias=False)
        self.bn_last = nn.BatchNorm2d(out_channels[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_channels[3], num_classes)
        self._declare_groups(channels=out_channels[:3], strides=(2, 4, 8))
        self.min_size = 1  # padded convs only: even a 1x1 input keeps its size

    def forward_head(self, h: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        h = F.relu(self.bn_last(self.conv_last(h)))
        h = torch.flatten(self.pool(h), 1)
        return h if pre_logits else self.linear(h)


@MODELS.register("ShuffleV2")
def shufflev2(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV2:
    """CRD's `ShuffleV2` (net size 1): widths 116/232/464, head 1024, 3/7/3 basic units."""
    return ShuffleNetV2((116, 232, 464, 1024), (3, 7, 3), num_classes, in_channels)
