"""MobileNetV2 (Sandler et al. 2018) for CIFAR as used by the CRD benchmark (`MobileNetV2`).

CRD's `mobile_half`: expansion T = 6, width multiplier 0.5, a stride-2 3x3 stem, seven stages
of inverted residuals (t, c, n, s) = (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2),
(6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1) with c halved, a 1x1 conv to
1280, global average pooling and one Linear. Follows HobbitLong/RepDistiller
`models/mobilenetv2.py` (layers, widths, initialisation); its 2x2 average pool (ceil mode)
is adaptive here, the same function at 32 px.

Layer groups. The four spatial sizes (strides 2, 4, 8, 16) are the four groups, and each
group's distillation point is where CRD takes its features (after stages 1, 2, 4 and 6).
Two stages share a spatial size with the next one but not its width (stage 0: 8 ch before
stage 1's 12; stage 3: 32 ch before stage 4's 48; stage 5: 80 ch before stage 6's 160). A
group's candidates must have one channel count (DFA sums them), so those stages run *before*
their group's candidates: stage 0 in the stem, stages 3 and 5 as the transitions of groups 2
and 3. Their blocks are part of the network but not aggregation candidates. The 1x1 conv to
1280 is in the head.

Pre-activation features. An inverted residual ends in a linear projection (1x1 conv + BN, no
ReLU) plus the residual: no ReLU is ever applied to a block output, and the next block starts
with a conv, not a BN, so there is no distinct pre-activation tensor of the block's own shape.
The block outputs are therefore the features in both modes (`preact=True` and `False` give the
same tensors), which is also what CRD distils from this net.
"""

from __future__ import annotations


import torch
from torch import nn

from dfa_ray.models.init import init_crd
from dfa_ray.models.base import GroupedBlock, GroupedModel
from dfa_ray.models.registry import MODELS


def _conv_bn_relu(in_planes: int, out_planes: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_planes),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(GroupedBlock):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection; residual when shapes allow.

    The projection is linear (no ReLU), so `final_act` is the identity.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_planes * expansion
        self.use_residual = stride == 1 and in_planes == out_planes
        self.conv = nn.Sequential(
            nn.Conv2d(in_planes, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_planes, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_planes),
        )
        self.final_act = nn.Identity()

    def forward_pre(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


# (output channels c at width 1, blocks n, stride s of the first block); the expansion is
# 1 in stage 0 and T in the others.
_STAGES = [(16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)]


class MobileNetV2(GroupedModel):
    """MobileNetV2 with expansion T = `expansion` and width multiplier `width_mult`."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        expansion: int = 6,
        width_mult: float = 0.5,
    ) -> None:
        super().__init__()
        in_planes = int(32 * width_mult)
        stem = _conv_bn_relu(in_channels, in_planes, 3, 2)
        stages: list[list[InvertedResidual]] = []
        for k, (c, n, s) in enumerate(_STAGES):
            out_planes = int(c * width_mult)
            t = 1 if k == 0 else expansion
            stage = []
            for i in range(n):
                stage.append(InvertedResidual(in_planes, out_planes, s if i == 0 else 1, t))
                in_planes = out_planes
            stages.append(stage)
        # Stages per group, and the stages that run before a group's candidates (see module doc).
        self.stem = nn.Sequential(stem, *stages[0])
        before = [[], [], stages[3], stages[5]]
        self.transitions = nn.ModuleList(nn.Sequential(*b) if b else nn.Identity() for b in before)
        for stage in (stages[1], stages[2], stages[4], stages[6]):
            self.groups.append(nn.ModuleList(stage))
        self.last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv_last = _conv_bn_relu(in_planes, self.last_channels, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.last_channels, num_classes)
        self._declare_groups(
            channels=[int(_STAGES[i][0] * width_mult) for i in (1, 2, 4, 6)],
            strides=(2, 4, 8, 16),
        )
        self.min_size = 1  # only padded convs: even a 1x1 input keeps its size
        init_crd(self, linear="normal")

    def forward_head(self, h: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        h = torch.flatten(self.pool(self.conv_last(h)), 1)
        return h if pre_logits else self.classifier(h)


@MODELS.register("MobileNetV2")
def mobilenetv2(num_classes: int = 100, in_channels: int = 3) -> MobileNetV2:
    """CRD's `MobileNetV2` (its `mobile_half`): T = 6, width 0.5."""
    return MobileNetV2(num_classes, in_channels, expansion=6, width_mult=0.5)
