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
    teacher's hint layer: conv + BN (+ ReLU, since the hint is a post-ReLU feature by default).

    `kernel_size` 1 when the two maps have the same spatial size: the CRD code's `ConvReg`
    sizes its kernel as 1 + s_H - t_H, which is a 1x1 conv for equal sizes. When the sizes
    differ, the student map is first resized to the teacher's size (`resize_to`) and a 3x3
    conv is used (departure: CRD uses a strided or transposed conv for the 2x cases; resizing
    first lets one regressor shape serve every size ratio of cross-family pairs).
    """

    def __init__(self, in_ch: int, out_ch: int, relu: bool = True, kernel_size: int = 1) -> None:
        super().__init__()
        if kernel_size not in (1, 3):
            raise ValueError(f"HintRegressor kernel_size must be 1 or 3, got {kernel_size}")
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=kernel_size, padding=kernel_size // 2, bias=False)
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


# -- the relation and logit baselines ---------------------------------------------------------
def sp_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Similarity-Preserving KD (Tung & Mori, "Similarity-Preserving Knowledge Distillation",
    ICCV 2019): G = Q Q^T of the batch's flattened features Q [B, -1], each row of G
    L2-normalised; the loss is the mean over the B x B entries of (G_t - G_s)^2, i.e. the
    paper's ||G_t - G_s||_F^2 / B^2. The two maps may differ in channels and size (only B x B
    matrices are compared)."""
    b = f_s.shape[0]
    if f_t.shape[0] != b:
        raise ValueError(f"sp_loss: batch sizes differ ({b} vs {f_t.shape[0]})")
    g_s = F.normalize(f_s.reshape(b, -1) @ f_s.reshape(b, -1).t(), dim=1)
    g_t = F.normalize(f_t.reshape(b, -1) @ f_t.reshape(b, -1).t(), dim=1)
    return (g_t - g_s).pow(2).mean()


def _cosine_rows(e: torch.Tensor, eps: float) -> torch.Tensor:
    """Pairwise cosine similarities [B, B] of the rows of e; an all-zero row gives zeros."""
    unit = e / (e.norm(dim=1, keepdim=True) + eps)
    return unit @ unit.t()


def pkt_loss(e_s: torch.Tensor, e_t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Probabilistic Knowledge Transfer (Passalis & Tefas, "Learning Deep Representations with
    Probabilistic Knowledge Transfer", ECCV 2018) with the cosine kernel: similarities mapped
    to [0, 1] by (c + 1) / 2, each row normalised to a conditional distribution p(j | i), and
    KL(p_t || p_s) as sum t * log((t + eps) / (s + eps)) **averaged** over the B x B entries
    (the paper sums; the mean is the CRD code's normalisation, to which its weight 30000 is
    calibrated). The diagonal is kept, as there."""
    k_s = (_cosine_rows(e_s.flatten(1), eps) + 1.0) / 2.0
    k_t = (_cosine_rows(e_t.flatten(1), eps) + 1.0) / 2.0
    p_s = k_s / k_s.sum(dim=1, keepdim=True)
    p_t = k_t / k_t.sum(dim=1, keepdim=True)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


def _pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances [B, B] with an exact 0 diagonal; clamped before the square root so
    the gradient of coincident points stays finite."""
    sq = e.pow(2).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (e @ e.t())).clamp_min(eps)
    off_diagonal = 1.0 - torch.eye(e.shape[0], dtype=e.dtype, device=e.device)
    return d2.sqrt() * off_diagonal


def rkd_distance_loss(e_s: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
    """RKD's distance term: pairwise distances, each set divided by its mean over the
    non-zero entries, compared with the smooth L1 (Huber, delta 1) loss; teacher side without
    gradient."""
    def normalised(e: torch.Tensor) -> torch.Tensor:
        d = _pairwise_distances(e.flatten(1))
        return d / d[d > 0].mean()

    with torch.no_grad():
        t = normalised(e_t)
    return F.smooth_l1_loss(normalised(e_s), t)


def rkd_angle_loss(e_s: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
    """RKD's angle term: for every triplet (i, j, k) the cosine of the angle at j between
    e_i - e_j and e_k - e_j, compared with the smooth L1 loss; teacher side without gradient."""
    def cosines(e: torch.Tensor) -> torch.Tensor:
        e = e.flatten(1)
        diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # [j, i, D]: e_i - e_j
        return (diff @ diff.transpose(1, 2)).flatten()

    with torch.no_grad():
        t = cosines(e_t)
    return F.smooth_l1_loss(cosines(e_s), t)


def rkd_loss(e_s: torch.Tensor, e_t: torch.Tensor, w_dist: float = 25.0, w_angle: float = 50.0) -> torch.Tensor:
    """Relational KD (Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019):
    w_dist * distance term + w_angle * angle term on the embeddings (see the two terms'
    functions); the teacher's side carries no gradient."""
    return w_dist * rkd_distance_loss(e_s, e_t) + w_angle * rkd_angle_loss(e_s, e_t)


def cc_loss(e_s: torch.Tensor, e_t: torch.Tensor, gamma: float = 0.4, p_order: int = 2) -> torch.Tensor:
    """Correlation Congruence (Peng et al., "Correlation Congruence for Knowledge Distillation",
    ICCV 2019): the batch's correlation matrix under the Gaussian RBF kernel
    exp(-gamma ||a - b||^2), which for L2-normalised rows equals exp(-2 gamma) exp(2 gamma a.b)
    and is approximated by its Taylor series to order `p_order`:
    sum_p exp(-2 gamma) (2 gamma)^p / p! (a.b)^p. The loss is the mean squared difference of the
    student's and the teacher's B x B matrices. The inputs are the (linearly embedded)
    features; the caller owns the embeddings."""
    def correlation(e: torch.Tensor) -> torch.Tensor:
        e = F.normalize(e.flatten(1), p=2, dim=1)
        sim = e @ e.t()
        out = torch.zeros_like(sim)
        for p in range(int(p_order) + 1):
            out = out + math.exp(-2.0 * gamma) * (2.0 * gamma) ** p / math.factorial(p) * sim.pow(p)
        return out

    return (correlation(e_s) - correlation(e_t)).pow(2).mean()


def nst_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Neural Selectivity Transfer (Huang & Wang, "Like What You Like: Knowledge Distill via
    Neuron Selectivity Transfer", 2017): every channel's activation map, flattened and
    L2-normalised, is a sample; the loss is the squared MMD between the student's and the
    teacher's channel samples under the polynomial kernel k(a, b) = (a.b)^2 (d = 2, c = 0):
    mean k(t, t') + mean k(s, s') - 2 mean k(s, t), per image, averaged over the batch. The
    channel counts may differ; a larger map is average-pooled to the smaller size first (as
    the CRD code)."""
    hs, ht = f_s.shape[-2:], f_t.shape[-2:]
    if tuple(hs) != tuple(ht):
        size = (min(hs[0], ht[0]), min(hs[1], ht[1]))
        f_s, f_t = F.adaptive_avg_pool2d(f_s, size), F.adaptive_avg_pool2d(f_t, size)
    s = F.normalize(f_s.flatten(2), dim=2)  # [B, Cs, HW]
    t = F.normalize(f_t.flatten(2), dim=2)

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.transpose(1, 2)).pow(2)  # [B, Ca, Cb]

    return kernel(t, t).mean().detach() + kernel(s, s).mean() - 2.0 * kernel(s, t).mean()


def dkd_terms(
    z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, temperature: float = 4.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """DKD's two parts, unweighted: (TCKD, NCKD), each a batch-mean KL times T^2.

    TCKD: KL between the binary distributions (p_target, 1 - p_target) of teacher and student.
    NCKD: KL between the distributions over the non-target classes, renormalised (softmax of
    the logits with the target class removed)."""
    t = temperature
    target = F.one_hot(y, z_s.shape[1]).bool()

    def log_binary(z: torch.Tensor) -> torch.Tensor:
        # log (p_target, 1 - p_target) in log space: finite for finite logits, where
        # log(1 - softmax) underflows to log 0 once the target takes all the mass
        ls = F.log_softmax(z / t, dim=1)
        return torch.stack([ls.masked_fill(~target, -math.inf).logsumexp(1),
                            ls.masked_fill(target, -math.inf).logsumexp(1)], dim=1)

    lb_s, lb_t = log_binary(z_s), log_binary(z_t)
    tckd = (lb_t.exp() * (lb_t - lb_s)).sum(1).mean() * t * t
    # the target logit pushed to -inf-like: a large finite offset keeps 0 * log 0 out of the sum
    masked_s = z_s / t - 1000.0 * target
    masked_t = z_t / t - 1000.0 * target
    log_q_s, log_q_t = F.log_softmax(masked_s, dim=1), F.log_softmax(masked_t, dim=1)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).sum(1).mean() * t * t
    return tckd, nckd


def dkd_loss(
    z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, alpha: float = 1.0, beta: float = 8.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Decoupled KD (Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR
    2022): alpha * TCKD + beta * NCKD (see `dkd_terms`), with mdistiller's CIFAR defaults
    alpha 1, beta 8, T 4. The warm-up of the weight is the distiller's (it knows the epoch)."""
    tckd, nckd = dkd_terms(z_s, z_t, y, temperature)
    return alpha * tckd + beta * nckd
