"""Distillation losses as pure functions, plus the small modules that map features.

Each function is named after its paper; the docstring cites it and says where the code
departs from the paper. The modules (`Connector`, `HintRegressor`) only map one feature map
onto another's channels: the losses stay pure so they can be checked against hand-computed
values (tests/test_losses.py) and reused by the search (dfa/) and the distillers (engine/).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (N, C, H, W) map to `size`: adaptive average pooling down, bilinear up.

    Pooling is the natural way down (it averages the positions that a coarser map covers).
    Going up, bilinear interpolation (align_corners=False) is used: it is linear, smooth and
    adds nothing the coarse map does not say; nearest-neighbour would create blocky
    targets that a stride-1 student cannot match. Mixed cases (one side up, the other down)
    pool the side that shrinks after interpolating the other.
    """
    h, w = x.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return x
    if th <= h and tw <= w:
        return F.adaptive_avg_pool2d(x, (th, tw))
    if th >= h and tw >= w:
        return F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
    up = F.interpolate(x, size=(max(h, th), max(w, tw)), mode="bilinear", align_corners=False)
    return F.adaptive_avg_pool2d(up, (th, tw))


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
    Network", 2015): KL(softmax(t/T) || softmax(s/T)), averaged over the batch, times T^2.

    The T^2 factor keeps the gradient scale independent of T, as the paper recommends. The
    teacher logits are used as given (callers pass them without grad).
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


def attention_map(f: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention map of Zagoruyko & Komodakis ("Paying More Attention to Attention",
    ICLR 2017): the mean over channels of |f|^p, flattened and L2-normalised per sample.

    Departure: the paper sums over channels; the authors' code (and torchdistill/mdistiller
    after it) takes the mean. After the L2 normalisation the two are identical.
    Returns (N, H*W).
    """
    am = f.abs().pow(p).mean(dim=1)
    return F.normalize(am.flatten(1), dim=1)


def at_loss(
    student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor], p: float = 2.0
) -> torch.Tensor:
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017), summed over paired groups.

    Per group: mean over (batch, positions) of the squared difference of the normalised
    attention maps. Departures, as in the authors' code: the paper's loss is the p-norm of the
    difference (not squared) times beta/2; here it is the squared difference averaged over
    elements, which is what the published code (and the CRD benchmark weight of 1000)
    assumes. When the spatial sizes differ (cross-family pairs) the teacher's channel-mean map
    is resized to the student's size (see `resize_to`) before normalisation.
    """
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"at_loss: {len(student_feats)} student vs {len(teacher_feats)} teacher maps")
    total = student_feats[0].new_zeros(())
    for fs, ft in zip(student_feats, teacher_feats):
        ms = fs.abs().pow(p).mean(dim=1, keepdim=True)
        mt = ft.abs().pow(p).mean(dim=1, keepdim=True)
        mt = resize_to(mt, tuple(ms.shape[-2:]))
        qs = F.normalize(ms.flatten(1), dim=1)
        qt = F.normalize(mt.flatten(1), dim=1)
        total = total + (qs - qt).pow(2).mean()
    return total


def feature_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements: the feature loss ||a - b||^2 of FitNets (Romero
    et al., ICLR 2015) and of DFA's L_ST (Guan et al., ECCV 2020), normalised by the number of
    elements so that the weight does not depend on the feature map size."""
    return (a - b).pow(2).mean()


def entropy(alpha: torch.Tensor) -> torch.Tensor:
    """Shannon entropy -sum alpha log alpha (natural log) of a probability vector."""
    return -(alpha * torch.log(alpha.clamp_min(1e-30))).sum()


class Connector(nn.Sequential):
    """1x1 conv + BN mapping `in_ch` channels to `out_ch` (He init, BN weight 1, bias 0).

    Used by DFA both ways: ST (student -> teacher channels) and TS (teacher -> student).
    No activation: the targets are pre-activation features by default, which can be negative.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        conv = nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        bn = nn.BatchNorm2d(out_ch)
        nn.init.ones_(bn.weight)
        nn.init.zeros_(bn.bias)
        super().__init__(conv, bn)
        self.in_ch, self.out_ch = in_ch, out_ch


class HintRegressor(nn.Module):
    """FitNets' regressor (Romero et al., ICLR 2015): maps the student's guided layer onto the
    teacher's hint layer. As in the CRD/mdistiller code: 3x3 conv + BN + ReLU (the hint
    is a post-ReLU feature there). Departure from the paper's fully convolutional regressor
    sized to match shapes: when the spatial sizes differ, the student map is first resized to
    the teacher's size (`resize_to`) so one regressor shape serves every pair.
    """

    def __init__(self, in_ch: int, out_ch: int, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        self.bn = nn.BatchNorm2d(out_ch)
        self.act: nn.Module = nn.ReLU(inplace=False) if relu else nn.Identity()

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is not None:
            x = resize_to(x, size)
        return self.act(self.bn(self.conv(x)))


def stage_weights(num_groups: int, mode: str) -> list[float]:
    """Per-group weights c_g of the feature loss: `uniform` (all 1) or `halving`
    (2^-(G-g) with g = 1..G: the last group 1, each earlier one half the next)."""
    if mode == "uniform":
        return [1.0] * num_groups
    if mode == "halving":
        return [math.ldexp(1.0, -(num_groups - 1 - g)) for g in range(num_groups)]
    raise ValueError(f"stage weights {mode!r}: expected 'uniform' or 'halving'")
