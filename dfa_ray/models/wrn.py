"""Wide ResNets (Zagoruyko & Komodakis 2016) as defined by the CRD benchmark.

WRN-d-k: a 3x3 conv stem (no BN), three groups of (d - 4) / 6 pre-activation BasicBlocks of
widths 16k/32k/64k at strides 1, 2, 4, then BN-ReLU, global average pooling and one Linear.
Dropout is 0 in every CRD and DFA configuration, so it is left out.
Follows HobbitLong/RepDistiller `models/wrn.py` (layers, widths, initialisation); the
fixed 8x8 pool there is adaptive here. wrn_16_4, wrn_28_2 and wrn_28_4 (the DFA paper's
teacher and students) are the same class at other depths and widths.

Features. A pre-activation block ends with the raw residual sum: nothing activates it
inside the block, so `final_act` is the identity, and `forward_groups(x, preact=False)`
reports those raw sums. Their scale grows block by block inside a group (measured on
WRN-28-4 at initialisation: second moments 1.4, 2.5, 3.5, 4.3), so a feature loss against
them favours shallow blocks for a reason that has nothing to do with what they encode.
The pre-activation feature of a WRN block, as the CRD and Overhaul code define it, is that
sum after the BN that the *next* block applies first (`bn1` of the next block; after the last
block of the network, the final BN): the tensor that the next ReLU sees. That is what
`forward_groups(x, preact=True)` reports; each BN is applied once per forward (it is the
network's own BN, run in its own place, so training-mode statistics are updated once).
`forward_from(g, h, preact=True)` takes such a normalised tensor and continues *after* that
BN: the first block of every group after the first down-samples, so its shortcut is a conv on
the normalised input and the raw sum is not needed.
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
        # not in place: bn1's output is kept as the previous block's pre-activation feature
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if in_planes != out_planes or stride != 1:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        self.final_act = nn.Identity()

    def forward_pre(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_normed(x, self.bn1(x))

    def forward_normed(self, x: torch.Tensor | None, normed: torch.Tensor) -> torch.Tensor:
        """The block given its input `x` and `bn1(x)`; `x` may be None when the shortcut is a
        conv (it then sees only the normalised input)."""
        act = self.relu1(normed)
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        if self.shortcut is not None:
            return self.shortcut(act) + out
        if x is None:
            raise ValueError("this block has an identity shortcut: it needs its raw input")
        return x + out


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
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        self._declare_groups(channels=widths, strides=(1, 2, 4))
        self.min_size = 1  # only padded convs: even a 1x1 input keeps its size
        init_crd(self, linear="zero_bias")

    def forward_head(self, h: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self._head_normed(self.bn(h), pre_logits)

    def _head_normed(self, normed: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # not in place: `normed` is the last block's pre-activation feature (or a caller's)
        h = torch.flatten(self.pool(torch.relu(normed)), 1)
        return h if pre_logits else self.fc(h)

    def forward_groups(
        self, x: torch.Tensor, preact: bool = True
    ) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """Logits and every block's output: the raw residual sum, or (`preact`) that sum after
        the next BN (the module docstring says why)."""
        if not preact:
            return super().forward_groups(x, preact=False)
        h = self.stem(x)
        normed_inputs: list[torch.Tensor] = []  # bn1(input) of every block, in order
        for blocks in self.groups:
            for block in blocks:
                normed = block.bn1(h)
                normed_inputs.append(normed)
                h = block.forward_normed(h, normed)
        final = self.bn(h)
        # block k's feature is what block k+1's BN made of its output; the last one's, the final BN's
        shifted = normed_inputs[1:] + [final]
        features, k = [], 0
        for blocks in self.groups:
            features.append(shifted[k : k + len(blocks)])
            k += len(blocks)
        return self._head_normed(final), features

    def forward_groups_both(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, list[list[torch.Tensor]], list[list[torch.Tensor]]]:
        """Both feature kinds in one pass (see GroupedModel.forward_groups_both): the
        `preact=True` pass above, keeping the raw residual sums it computes on the way (what
        `preact=False` reports; the same operations as the plain blocks' forward)."""
        h = self.stem(x)
        normed_inputs: list[torch.Tensor] = []
        raw: list[torch.Tensor] = []
        for blocks in self.groups:
            for block in blocks:
                normed = block.bn1(h)
                normed_inputs.append(normed)
                h = block.forward_normed(h, normed)
                raw.append(h)
        final = self.bn(h)
        shifted = normed_inputs[1:] + [final]
        pre_features, post_features, k = [], [], 0
        for blocks in self.groups:
            pre_features.append(shifted[k : k + len(blocks)])
            post_features.append(raw[k : k + len(blocks)])
            k += len(blocks)
        return self._head_normed(final), pre_features, post_features

    def forward_from(self, g: int, h: torch.Tensor, preact: bool = True) -> torch.Tensor:
        """From group `g`'s output to the logits; with `preact`, `h` is that output after the
        next BN, and the run continues after that BN."""
        if not preact:
            return super().forward_from(g, h, preact=False)
        if not 0 <= g < self.num_groups:
            raise IndexError(f"group {g} out of range 0..{self.num_groups - 1}")
        if g == self.num_groups - 1:
            return self._head_normed(h)
        blocks = self.groups[g + 1]
        h = blocks[0].forward_normed(None, h)  # a down-sampling block: conv shortcut
        for block in blocks[1:]:
            h = block(h)
        return super().forward_from(g + 1, h, preact=False)


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
