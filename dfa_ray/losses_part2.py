"""Pure loss functions of the baselines with memory banks, learned modules and init stages:
CRD, VID, OFD (Overhaul), AB, FT, FSP and ReviewKD.

Like `dfa_ray.losses`, every function takes plain tensors and returns a scalar (or, for the
OFD margin, a per-channel tensor); the modules that produce their inputs (CRD's embeddings and
memory banks, VID's regressors, the connectors, FT's paraphraser and translator, ReviewKD's
fusion) live in `dfa_ray.method_modules`, and the distillers that choose which features each
loss sees in the engine. Each function is named after its paper; the docstring cites it and
says where the code departs from the paper. Where the CRD benchmark's code (RepDistiller) or
mdistiller normalise differently from the paper, the code's normalisation is kept, because the
protocol's loss weights are calibrated to it (this is said in each docstring).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm

from dfa_ray.losses import resize_to


# -- CRD ------------------------------------------------------------------------------------
def crd_scores(embedding: torch.Tensor, bank_rows: torch.Tensor, temperature: float) -> torch.Tensor:
    """exp(<m_k, e> / T) for every drawn memory row m_k of every sample: the un-normalised
    critic of Contrastive Representation Distillation (Tian et al., ICLR 2020, eq. 10).

    embedding [B, D] (L2-normalised), bank_rows [B, K+1, D] (row 0 the positive); returns
    [B, K+1]. The normalising constant Z is applied by the caller (`CRDMemory` fixes it from the
    first batch, as the authors' code does).
    """
    return torch.exp(torch.bmm(bank_rows, embedding.unsqueeze(2)).squeeze(2) / temperature)


def crd_nce_loss(scores: torch.Tensor, n_data: int, eps: float = 1e-7) -> torch.Tensor:
    """The NCE objective of CRD (Tian et al., ICLR 2020, eq. 18-19) on normalised scores.

    scores [B, K+1]: column 0 is the positive pair, columns 1..K the negatives, each an estimate
    of p(data) = exp(<.,.>/T) / Z. With the noise distribution uniform over the n_data samples
    (P_n = 1 / n_data) and K noise samples per positive, the posterior that a pair came from the
    data is h = p / (p + K P_n); the loss is -(sum log h(pos) + sum log(1 - h(neg))) / B.
    `eps` keeps the logs finite, as in the authors' code. Departure from the paper: none in the
    formula; the paper draws negatives uniformly, the CRD code (and `CRDMemory`) from the samples
    of other classes, which changes which columns are passed in, not this function.
    """
    batch, k_plus_1 = scores.shape
    k = k_plus_1 - 1
    noise = k / float(n_data)  # K * P_n
    pos = scores[:, 0]
    neg = scores[:, 1:]
    log_h_pos = torch.log(pos / (pos + noise + eps))
    log_one_minus_h_neg = torch.log(noise / (neg + noise + eps))
    return -(log_h_pos.sum() + log_one_minus_h_neg.sum()) / batch


# -- VID ------------------------------------------------------------------------------------
def vid_loss(mean: torch.Tensor, target: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Variational Information Distillation (Ahn et al., CVPR 2019, eq. 4-6): the negative
    log-likelihood of the teacher's feature `target` under a Gaussian with the student's
    predicted `mean` and a learned per-channel `variance` (broadcastable, e.g. [1, C, 1, 1]).

    0.5 * ((t - mu)^2 / var + log var), averaged over every element. Departures, as in the CRD
    code to which the protocol's weight 1 is calibrated: the mean over elements instead of the
    paper's sum over channels and positions, and the constant 0.5 log(2 pi) left out.
    """
    return (0.5 * ((mean - target).pow(2) / variance + torch.log(variance))).mean()


# -- OFD (Overhaul) -------------------------------------------------------------------------
def ofd_margin(bn_weight: torch.Tensor, bn_bias: torch.Tensor) -> torch.Tensor:
    """The per-channel margin m of "A Comprehensive Overhaul of Feature Distillation" (Heo et
    al., ICCV 2019, eq. 4): E[x | x < 0] of the teacher's pre-ReLU response, modelled as the
    Gaussian N(beta, gamma^2) that the BN before the ReLU was trained to output (gamma its
    weight, beta its bias).

    m = beta - |gamma| phi(beta/|gamma|) / Phi(-beta/|gamma|). Where a channel is almost never
    negative (Phi(-beta/|gamma|) <= 1e-3) the ratio is numerically meaningless; the authors' code
    then uses -3 |gamma|, and so does this function. Computed in float64 with scipy.stats.
    """
    # a channel with gamma = 0 is constant at beta: a tiny std gives its limit without a 0/0
    s = np.maximum(bn_weight.detach().abs().double().cpu().numpy(), 1e-12)
    m = bn_bias.detach().double().cpu().numpy()
    z = m / s
    p_neg = norm.cdf(-z)
    safe = p_neg > 1e-3
    margin = -3.0 * s
    margin[safe] = m[safe] - s[safe] * norm.pdf(z[safe]) / p_neg[safe]
    return torch.as_tensor(margin, dtype=bn_weight.dtype, device=bn_weight.device)


def ofd_partial_l2(f_s: torch.Tensor, f_t: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """The partial L2 distance of Overhaul (Heo et al., ICCV 2019, eq. 6) for one stage.

    The teacher's pre-ReLU target is raised to the margin, t' = max(t, m) (negative responses
    only say "off", and by how much does not matter beyond m); a position contributes
    (s - t')^2 unless the teacher is off (t' <= 0) and the student is already below it
    (s <= t'). Returns the sum over channels and positions, averaged over the batch (the code's
    normalisation, to which mdistiller's weight 0.001 is calibrated). `margin` is [C].
    """
    target = torch.maximum(f_t, margin.view(1, -1, 1, 1).to(f_t.dtype))
    mask = (f_s > target) | (target > 0)
    return ((f_s - target).pow(2) * mask).sum() / f_s.shape[0]


def ofd_loss(
    s_feats: Sequence[torch.Tensor], t_feats: Sequence[torch.Tensor], margins: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Overhaul's distillation loss over n stages (Heo et al., ICCV 2019): sum_i
    partial_L2_i / 2^(n-i-1), i = 0..n-1, so the deepest stage weighs 1 and each shallower one
    half the next (the stage weights of the authors' code; the paper states no weighting).
    The student features are already mapped by the connectors onto the teacher's channels."""
    n = len(s_feats)
    if not n == len(t_feats) == len(margins):
        raise ValueError(f"ofd_loss: {n} student, {len(t_feats)} teacher maps, {len(margins)} margins")
    total = s_feats[0].new_zeros(())
    for i, (fs, ft, m) in enumerate(zip(s_feats, t_feats, margins)):
        total = total + ofd_partial_l2(fs, ft, m) / 2.0 ** (n - i - 1)
    return total


# -- AB -------------------------------------------------------------------------------------
def ab_loss(
    s_feats: Sequence[torch.Tensor], t_feats: Sequence[torch.Tensor], margin: float = 1.0
) -> torch.Tensor:
    """Activation-boundary transfer (Heo et al., "Knowledge Transfer via Distillation of
    Activation Boundaries Formed by Hidden Neurons", AAAI 2019, eq. 6), over n stages.

    Per stage, with the teacher's neuron on (t > 0) or off, the student's pre-ReLU response s
    (through its connector) is pushed beyond the boundary by `margin` mu:
    (s - mu)^2 where t > 0 and s <= mu, (s + mu)^2 where t <= 0 and s > -mu (the squared
    hinge of the paper's alternative loss). Departures, as in the CRD code to which its weight
    is calibrated: each stage's sum over elements is divided by the batch size, weighted
    2^(i-n+1) (the deepest stage 1) and multiplied by 3/1000.
    """
    n = len(s_feats)
    if n != len(t_feats):
        raise ValueError(f"ab_loss: {n} student vs {len(t_feats)} teacher maps")
    total = s_feats[0].new_zeros(())
    for i, (s, t) in enumerate(zip(s_feats, t_feats)):
        on = t > 0
        per = (s - margin).pow(2) * (on & (s <= margin)) + (s + margin).pow(2) * (~on & (s > -margin))
        total = total + 2.0 ** (i - n + 1) * per.sum() / s.shape[0] * 3.0 / 1000.0
    return total


# -- FT -------------------------------------------------------------------------------------
def ft_factor(factor: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """The normalised factor of the CRD code's Factor Transfer: the channel mean of |F|^p,
    flattened and L2-normalised per sample ([B, H*W])."""
    return F.normalize(factor.pow(p).mean(1).flatten(1), dim=1)


def ft_loss(factor_s: torch.Tensor, factor_t: torch.Tensor, p1: float = 2.0, p2: int = 1) -> torch.Tensor:
    """Factor Transfer (Kim et al., "Paraphrasing Complex Network", NeurIPS 2018, eq. 3): the
    distance between the student's translated factor and the teacher's paraphrased factor,
    each normalised, with the L1 norm (p2 = 1) as the paper recommends.

    Departure, as in the CRD code to which its weight 200 is calibrated: the factors are
    compared through `ft_factor` (channel mean of F^2, L2-normalised; the paper normalises the
    whole vectorised factor) and the p2-distance is averaged over elements. When the spatial
    sizes differ the larger factor is average-pooled to the smaller size first.
    """
    hs, ht = factor_s.shape[-1], factor_t.shape[-1]
    if hs > ht:
        factor_s = resize_to(factor_s, tuple(factor_t.shape[-2:]))
    elif ht > hs:
        factor_t = resize_to(factor_t, tuple(factor_s.shape[-2:]))
    diff = ft_factor(factor_s, p1) - ft_factor(factor_t, p1)
    return diff.abs().mean() if p2 == 1 else diff.pow(p2).mean()


# -- FSP ------------------------------------------------------------------------------------
def fsp_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The "flow of solution procedure" matrix of Yim et al. (CVPR 2017, eq. 1) between two
    maps of one network: G_ij = sum_{x,y} F1_i(x,y) F2_j(x,y) / (h w), [B, C1, C2].

    When the two maps differ in spatial size the larger one is average-pooled to the smaller
    (the paper pairs maps of one size; the CRD code pools the same way).
    """
    if first.shape[-2:] != second.shape[-2:]:
        h = min(first.shape[-2], second.shape[-2])
        w = min(first.shape[-1], second.shape[-1])
        first, second = resize_to(first, (h, w)), resize_to(second, (h, w))
    a, b = first.flatten(2), second.flatten(2)
    return torch.bmm(a, b.transpose(1, 2)) / a.shape[-1]


def fsp_loss(s_maps: Sequence[torch.Tensor], t_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """FSP distillation (Yim et al., CVPR 2017, eq. 2) over consecutive maps: for each pair
    (maps[i], maps[i+1]) the squared difference of the student's and the teacher's FSP matrices,
    averaged over its entries (and the batch), summed over the pairs. Departure, as in the CRD
    code: the paper's sum over entries with lambda_i = 1 / N is a mean here. The student's and
    the teacher's matrices must have the same shape (equal channels map by map)."""
    if len(s_maps) != len(t_maps) or len(s_maps) < 2:
        raise ValueError(f"fsp_loss: needs >= 2 maps on each side, got {len(s_maps)} and {len(t_maps)}")
    total = s_maps[0].new_zeros(())
    for i in range(len(s_maps) - 1):
        gs = fsp_matrix(s_maps[i], s_maps[i + 1])
        gt = fsp_matrix(t_maps[i], t_maps[i + 1])
        if gs.shape != gt.shape:
            raise ValueError(f"fsp_loss: FSP matrices {i} differ: {tuple(gs.shape)} vs {tuple(gt.shape)}")
        total = total + (gs - gt).pow(2).mean()
    return total


# -- ReviewKD -------------------------------------------------------------------------------
def hcl_loss(
    s_feats: Sequence[torch.Tensor], t_feats: Sequence[torch.Tensor], levels: Sequence[int] = (4, 2, 1)
) -> torch.Tensor:
    """The hierarchical context loss of ReviewKD (Chen et al., "Distilling Knowledge via
    Knowledge Review", CVPR 2021, sec. 3.3), summed over the fused levels.

    Per level: the MSE of the two maps, plus the MSE of their average-pooled versions at each
    side length in `levels` smaller than the map (4, 2, 1 as in the authors' code), the k-th
    pooled term weighted 2^-k; the sum divided by the total weight. Departure from the paper,
    which does not fix the pyramid: its levels and weights are the authors' code's.
    """
    if len(s_feats) != len(t_feats):
        raise ValueError(f"hcl_loss: {len(s_feats)} student vs {len(t_feats)} teacher maps")
    total = s_feats[0].new_zeros(())
    for fs, ft in zip(s_feats, t_feats):
        h = fs.shape[-2]
        loss = F.mse_loss(fs, ft)
        weight, weight_sum = 1.0, 1.0
        for side in levels:
            if side >= h:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, side), F.adaptive_avg_pool2d(ft, side))
            weight_sum += weight
        total = total + loss / weight_sum
    return total


def linear_warmup(epoch: int, warmup_epochs: float) -> float:
    """min(epoch / warmup, 1) with `epoch` 1-based (the first epoch already trains at
    1 / warmup), as mdistiller's warm-up of ReviewKD's and DKD's terms."""
    if warmup_epochs <= 0:
        return 1.0
    return min(epoch / warmup_epochs, 1.0)


def scaled_epochs(epochs_at_240: float, epochs: int) -> int:
    """A number of epochs given at the CRD protocol's 240, scaled to a run of `epochs` (at
    least 1): init stages and warm-ups keep their share of the schedule."""
    return max(1, int(round(epochs_at_240 * epochs / 240.0)))


__all__ = [
    "crd_scores", "crd_nce_loss", "vid_loss", "ofd_margin", "ofd_partial_l2", "ofd_loss", "ab_loss",
    "ft_factor", "ft_loss", "fsp_matrix", "fsp_loss", "hcl_loss", "linear_warmup", "scaled_epochs",
]
