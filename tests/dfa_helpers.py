"""Tiny GroupedModels for the DFA, loss and method tests (no dependency on the real zoo).

`TinyNet`: a stem conv, G groups of residual 3x3 conv blocks (pre-activation output =
BN(conv(h)) + shortcut(h), then ReLU as `final_act`), global average pooling and a Linear.
Residual blocks make the candidates' energy grow with depth, as in real ResNets, which the
search-direction test relies on (and checks).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from dfa_ray.models.base import GroupedBlock, GroupedModel, GroupInfo


class TinyBlock(GroupedBlock):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = (
            nn.Identity() if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        )
        self.final_act = nn.ReLU()

    def forward_pre(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) + self.shortcut(x)


class TinyNet(GroupedModel):
    """`channels[g]`, `blocks[g]` per group; `steps[g]` the stride of group g's first block;
    `stem_stride` the stem's stride. group_info strides are cumulative."""

    def __init__(
        self,
        channels: Sequence[int] = (4, 6, 8),
        blocks: Sequence[int] = (2, 3, 2),
        steps: Sequence[int] = (1, 2, 2),
        stem_stride: int = 1,
        num_classes: int = 5,
        in_channels: int = 3,
        min_size: int = 4,
        stem_channels: int = 4,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(),
        )
        cin, stride, infos = stem_channels, stem_stride, []
        for g, (c, n, s) in enumerate(zip(channels, blocks, steps)):
            group = nn.ModuleList()
            for i in range(n):
                group.append(TinyBlock(cin, c, s if i == 0 else 1))
                cin = c
            self.groups.append(group)
            stride *= s
            infos.append(GroupInfo(channels=c, stride=stride, block_names=tuple(f"groups.{g}.{i}" for i in range(n))))
        self.group_info = tuple(infos)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.min_size = min_size

    def forward_head(self, h: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        h = torch.flatten(self.pool(h), 1)
        return h if pre_logits else self.fc(h)


@torch.no_grad()
def calibrate(model: nn.Module, size: int = 8, batches: int = 4, seed: int = 0) -> nn.Module:
    """Fill BN running statistics from random inputs (cumulative average), then eval mode:
    a stand-in for a trained teacher, whose eval-mode BN normalises its features. Without it
    an untrained teacher's features shrink block after block."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    dtype = next(model.parameters()).dtype
    for _ in range(batches):
        model(torch.randn(16, 3, size, size, generator=gen, dtype=dtype))
    return model.eval()


def tiny_teacher(seed: int = 0, **kw) -> TinyNet:
    torch.manual_seed(seed)
    return calibrate(TinyNet(channels=(4, 6, 8), blocks=(2, 3, 2), **kw))


def tiny_student(seed: int = 1, **kw) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(channels=(4, 4, 6), blocks=(1, 1, 2), **kw)


def cross_teacher(seed: int = 2) -> TinyNet:
    """Strides 2, 4, 8 (stride-2 stem): 8, 4, 2 px at 16 px."""
    torch.manual_seed(seed)
    return calibrate(TinyNet(channels=(4, 6, 8), blocks=(2, 2, 2), steps=(1, 2, 2), stem_stride=2), size=16)


def cross_student(seed: int = 3) -> TinyNet:
    """Strides 1, 4, 16: 16, 4, 1 px at 16 px -> upsample, same size, pool."""
    torch.manual_seed(seed)
    return TinyNet(channels=(4, 5, 6), blocks=(1, 2, 1), steps=(1, 4, 4))


def batch(n: int = 4, size: int = 8, num_classes: int = 5, seed: int = 0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=gen, dtype=dtype)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    return x, y
