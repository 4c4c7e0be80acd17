"""The learned modules and the state of the baselines CRD, VID, OFD, AB, FT and ReviewKD.

Each module here only maps features (or keeps CRD's memory); the losses they feed are pure
functions in `dfa_ray.losses_part2`, and the distillers in the engine decide which features go
in. Everything a method learns or remembers is a parameter or a buffer of one of these modules,
so it is in the distiller's `state_dict` and hence in every checkpoint of the trial (CRD's
memory banks included: a resumed trial continues bit-for-bit).

Written from the papers; layer shapes and initialisations follow the CRD benchmark's code and
mdistiller where the papers leave them open (said in each docstring).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dfa_ray.errors import ConfigError
from dfa_ray.losses import resize_to
from dfa_ray.losses_part2 import crd_scores, ofd_margin


# -- CRD ------------------------------------------------------------------------------------
class CRDEmbed(nn.Module):
    """CRD's projection head (Tian et al., ICLR 2020, sec. 3.4): one Linear from the network's
    pooled pre-logits vector to `dim` (128) dimensions, then L2 normalisation."""

    def __init__(self, dim_in: int, dim: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


class CRDMemory(nn.Module):
    """CRD's two momentum memory banks over the training split, and the negatives' sampler.

    `bank_s` / `bank_t` hold one L2-normalised embedding per training sample (the student's and
    the teacher's), initialised uniformly in [-a, a] with a = 1 / sqrt(dim / 3) (the authors'
    choice, so that a row has about unit norm). They are buffers, not parameters: they change
    only by the momentum rule m <- normalise(momentum * m + (1 - momentum) * e) for the batch's
    own samples, after the batch's scores are computed, never by gradients.

    Negatives: for a sample of class c, `nce_k` indices drawn uniformly, with replacement, from
    the training samples of the other classes (the CRD code's "exact" sampling; the paper draws
    from all samples). Drawn with the global torch RNG on the banks' device, whose state every
    checkpoint carries. The normalising constants Z_s, Z_t (buffers, -1 until set) are fixed
    from the first batch: Z = mean(exp(<m, e>/T)) * n_data, as the authors' code estimates the
    paper's Z by Monte Carlo once.
    """

    def __init__(
        self, labels: torch.Tensor, dim: int = 128, nce_k: int = 16384, temperature: float = 0.07,
        momentum: float = 0.5,
    ) -> None:
        super().__init__()
        labels = torch.as_tensor(labels, dtype=torch.long).flatten().cpu()
        self.n_data = int(labels.numel())
        if self.n_data < 2:
            raise ConfigError(f"crd needs a training split of at least 2 samples, got {self.n_data}")
        counts = torch.bincount(labels)
        if int((counts > 0).sum()) < 2:
            raise ConfigError("crd draws its negatives from other classes: the training split has only one class")
        self.nce_k, self.temperature, self.momentum = int(nce_k), float(temperature), float(momentum)
        bound = 1.0 / math.sqrt(dim / 3.0)
        self.register_buffer("bank_s", torch.rand(self.n_data, dim).mul_(2 * bound).sub_(bound))
        self.register_buffer("bank_t", torch.rand(self.n_data, dim).mul_(2 * bound).sub_(bound))
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))
        # The sampler's tables (derived from the labels, so not checkpointed): the training
        # indices sorted by class, and per class the start of its run in that order and its size.
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        self.register_buffer("labels", labels, persistent=False)
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("class_start", starts, persistent=False)
        self.register_buffer("class_count", counts, persistent=False)
        self._z_set = False

    def draw(self, index: torch.Tensor) -> torch.Tensor:
        """[B, K+1] indices into the banks: column 0 the samples themselves, then K negatives of
        other classes each. A uniform draw u in [0, n - n_c) over the sorted order with class
        c's run cut out is u itself before the run and u + n_c after it."""
        y = self.labels[index]
        start, count = self.class_start[y].unsqueeze(1), self.class_count[y].unsqueeze(1)
        u = torch.rand(index.shape[0], self.nce_k, device=index.device)
        pos = (u * (self.n_data - count)).long().clamp_max(self.n_data - count - 1)
        pos = torch.where(pos >= start, pos + count, pos)
        return torch.cat([index.unsqueeze(1), self.order[pos]], dim=1)

    def forward(
        self, e_s: torch.Tensor, e_t: torch.Tensor, index: torch.Tensor, contrast: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised scores (student vs the teacher's bank, teacher vs the student's bank),
        each [B, K+1]; then the banks' momentum update for `index`."""
        if contrast is None:
            contrast = self.draw(index)
        rows_t = self.bank_t[contrast].to(e_s.dtype)  # the teacher's memory, scored against the student
        rows_s = self.bank_s[contrast].to(e_t.dtype)
        out_s = crd_scores(e_s, rows_t, self.temperature)
        out_t = crd_scores(e_t, rows_s, self.temperature)
        with torch.no_grad():
            if not self._z_set:
                # one host sync per run (and after a load), not per step
                if self.z_s < 0:
                    self.z_s.fill_(out_s.mean().item() * self.n_data)
                if self.z_t < 0:
                    self.z_t.fill_(out_t.mean().item() * self.n_data)
                self._z_set = True
            self.update(e_s, e_t, index)
        return out_s / self.z_s, out_t / self.z_t

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._z_set = False  # the loaded constants may be set or not: look again

    @torch.no_grad()
    def update(self, e_s: torch.Tensor, e_t: torch.Tensor, index: torch.Tensor) -> None:
        """The momentum rule for the batch's own rows (no gradient reaches the banks)."""
        for bank, e in ((self.bank_s, e_s), (self.bank_t, e_t)):
            row = bank[index] * self.momentum + e.detach().to(bank.dtype) * (1.0 - self.momentum)
            bank.index_copy_(0, index, F.normalize(row, dim=1))


# -- VID ------------------------------------------------------------------------------------
class VIDRegressor(nn.Module):
    """VID's heteroscedastic regressor (Ahn et al., CVPR 2019, sec. 4): the mean of the
    teacher's feature given the student's, three 1x1 convs with ReLUs between them (width
    `mid`, the teacher's channels in the CRD code), and one learned variance per teacher
    channel, softplus(alpha_c) + eps, initialised to `init_var` (5, as the CRD code)."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, init_var: float = 5.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.mean = nn.Sequential(
            nn.Conv2d(in_ch, mid_ch, 1, bias=False), nn.ReLU(),
            nn.Conv2d(mid_ch, mid_ch, 1, bias=False), nn.ReLU(),
            nn.Conv2d(mid_ch, out_ch, 1, bias=False),
        )
        self.eps = float(eps)
        # softplus^-1(init_var - eps), so that variance() starts at init_var exactly
        self.alpha = nn.Parameter(torch.full((out_ch,), math.log(math.expm1(init_var - eps))))

    def variance(self) -> torch.Tensor:
        return (F.softplus(self.alpha) + self.eps).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean(x)


# -- OFD (Overhaul): the BN before each stage end's ReLU ----------------------------------
def _wrn_stage_end_bn(model: nn.Module, g: int, block: nn.Module) -> nn.BatchNorm2d:
    # a pre-activation block ends in the raw sum: the BN before its ReLU is the next block's
    # first BN, after the last group the network's final BN (the CRD and Overhaul code's choice)
    return model.groups[g + 1][0].bn1 if g + 1 < len(model.groups) else model.bn


def _stage_end_table() -> dict[type, Callable[[nn.Module, int, nn.Module], nn.BatchNorm2d]]:
    from dfa_ray.models.mobilenetv2 import InvertedResidual
    from dfa_ray.models.resnet import BasicBlock
    from dfa_ray.models.resnet50 import Bottleneck
    from dfa_ray.models.shufflenetv1 import ShuffleV1Unit
    from dfa_ray.models.vgg import ConvBNReLU
    from dfa_ray.models.wrn import WideBasicBlock

    return {
        # residual blocks: the BN of the residual branch, before the sum and its ReLU (the
        # shortcut's share of the sum is not modelled, as in the Overhaul code)
        BasicBlock: lambda m, g, b: b.bn2,
        Bottleneck: lambda m, g, b: b.bn3,
        # a stride-1 ShuffleNetV1 unit (every group ends in one) is bn3 + identity, then ReLU
        ShuffleV1Unit: lambda m, g, b: b.bn3 if b.stride == 1 else None,
        ConvBNReLU: lambda m, g, b: b.bn,
        # the linear bottleneck ends in a BN with no ReLU after it: its output is the feature
        InvertedResidual: lambda m, g, b: b.conv[-1],
        WideBasicBlock: _wrn_stage_end_bn,
    }


def stage_end_bn(model: nn.Module, g: int, family: str) -> nn.BatchNorm2d:
    """The BatchNorm whose output is the pre-ReLU response at the end of layer group `g`: OFD's
    margin is computed from it. A family without one (ShuffleNetV2 ends its units in a
    concatenation and a channel shuffle) is refused by name rather than given a made-up margin."""
    block = model.groups[g][-1]
    rule = _stage_end_table().get(type(block))
    bn = rule(model, g, block) if rule is not None else None
    if not isinstance(bn, nn.BatchNorm2d):
        raise ConfigError(
            f"method ofd needs a BatchNorm before the ReLU at the end of every teacher stage; the "
            f"teacher {family} ({type(block).__name__} blocks) has none at stage {g}, so Overhaul's "
            "margin is undefined for it; use another teacher or another method"
        )
    return bn


def teacher_margins(model: nn.Module, groups: Sequence[int], family: str) -> list[torch.Tensor]:
    """OFD's per-channel margins for the teacher's stages `groups` (see `losses_part2.ofd_margin`)."""
    margins = []
    for g in groups:
        bn = stage_end_bn(model, g, family)
        if not bn.affine:
            raise ConfigError(f"method ofd needs affine BNs: the teacher {family}'s BN at stage {g} has none")
        margins.append(ofd_margin(bn.weight, bn.bias))
    return margins


# -- AB -------------------------------------------------------------------------------------
class ABConnector(nn.Module):
    """AB's connector (Heo et al., AAAI 2019, sec. 3.3): the student's pre-ReLU map onto the
    teacher's channels, 1x1 conv + BN; the identity where the shapes already agree (as the CRD
    code). A student map of another spatial size is resized to the teacher's first."""

    def __init__(self, in_ch: int, out_ch: int, same_size: bool) -> None:
        super().__init__()
        self.identity = in_ch == out_ch and same_size
        if not self.identity:
            self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
            nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
            self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = resize_to(x, size)
        return x if self.identity else self.bn(self.conv(x))


# -- FT -------------------------------------------------------------------------------------
def _conv_stack(channels: Sequence[int], transposed: bool, bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout in zip(channels[:-1], channels[1:]):
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        layers.append(conv(cin, cout, 3, 1, 1))
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """FT's paraphraser (Kim et al., NeurIPS 2018, sec. 3.1): a convolutional auto-encoder of
    the teacher's last-group map, trained alone first to reconstruct it; its code, the
    "factor", has `rate` (0.5) times the teacher's channels. Encoder: three 3x3 convs with
    LeakyReLU(0.1); decoder: three 3x3 transposed convs; no BN (the CRD code's layers)."""

    def __init__(self, channels: int, rate: float = 0.5) -> None:
        super().__init__()
        factor = max(1, int(channels * rate))
        self.encoder = _conv_stack((channels, channels, factor, factor), transposed=False, bn=False)
        self.decoder = _conv_stack((factor, factor, channels, channels), transposed=True, bn=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(factor, reconstruction)."""
        factor = self.encoder(x)
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """FT's translator (Kim et al., NeurIPS 2018, sec. 3.2): the student's last-group map to a
    factor of the paraphraser's width, three 3x3 convs with BN and LeakyReLU(0.1)."""

    def __init__(self, in_ch: int, teacher_ch: int, rate: float = 0.5) -> None:
        super().__init__()
        factor = max(1, int(teacher_ch * rate))
        self.encoder = _conv_stack((in_ch, in_ch, factor, factor), transposed=False, bn=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


# -- FSP ------------------------------------------------------------------------------------
def forward_with_stem(
    model: nn.Module, x: torch.Tensor, preact: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, list[list[torch.Tensor]]]:
    """(logits, the stem's output or None, per-group block outputs) in one forward pass.

    FSP relates each stage's input to its output, and the first stage's input is the stem's
    output, which `forward_groups` does not report: a forward hook on the stem reads it. A
    model whose stem is the identity (VGG) has no stem feature: None.
    """
    if isinstance(model.stem, nn.Identity):
        logits, feats = model.forward_groups(x, preact=preact)
        return logits, None, feats
    seen: list[torch.Tensor] = []
    handle = model.stem.register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        logits, feats = model.forward_groups(x, preact=preact)
    finally:
        handle.remove()
    return logits, seen[0], feats


@torch.no_grad()
def stem_channels(model: nn.Module, in_channels: int, image_size: int) -> int | None:
    """The stem's output channels (None for an identity stem), from one tiny forward of the stem
    alone in eval mode (the layer-group metadata does not describe the stem)."""
    if isinstance(model.stem, nn.Identity):
        return None
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        out = model.stem(torch.zeros(1, in_channels, image_size, image_size, dtype=p.dtype, device=p.device))
    finally:
        model.train(was_training)
    return int(out.shape[1])


# -- ReviewKD -------------------------------------------------------------------------------
class ABF(nn.Module):
    """ReviewKD's attention-based fusion (Chen et al., CVPR 2021, sec. 3.2, fig. 3b).

    The student's map at this level is projected to `mid` channels (1x1 conv + BN); if `fuse`,
    the fused map of the deeper level (resized to this one, nearest) is mixed in with two
    per-position attention weights (1x1 conv on the concatenation, sigmoid). The result is
    resized to the teacher's map size and mapped to the teacher's channels (3x3 conv + BN).
    Returns (output for the loss, the fused map passed to the next, shallower level).
    """

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, fuse: bool) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(in_ch, mid_ch, 1, bias=False), nn.BatchNorm2d(mid_ch))
        self.out = nn.Sequential(nn.Conv2d(mid_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch))
        self.attention = nn.Sequential(nn.Conv2d(2 * mid_ch, 2, 1), nn.Sigmoid()) if fuse else None
        # He-uniform with a = 1 (the authors' initialisation of the two convs)
        nn.init.kaiming_uniform_(self.project[0].weight, a=1)
        nn.init.kaiming_uniform_(self.out[0].weight, a=1)

    def forward(
        self, x: torch.Tensor, deeper: torch.Tensor | None, out_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.project(x)
        if self.attention is not None:
            if deeper is None:
                raise ValueError("a fusing ABF needs the deeper level's map")
            deeper = F.interpolate(deeper, size=tuple(x.shape[-2:]), mode="nearest")
            w = self.attention(torch.cat([x, deeper], dim=1))
            x = x * w[:, :1] + deeper * w[:, 1:]
        fused = x
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.out(x), fused


class ReviewFusion(nn.Module):
    """ReviewKD's review path: one ABF per level, run from the deepest level (the pooled vector
    as a 1x1 map) to the shallowest, each fusing the deeper level's result. `student_ch[i]`,
    `teacher_ch[i]` per level, shallow to deep; mid width min(512, the deepest student width)."""

    def __init__(self, student_ch: Sequence[int], teacher_ch: Sequence[int], max_mid: int = 512) -> None:
        super().__init__()
        if len(student_ch) != len(teacher_ch):
            raise ValueError(f"ReviewFusion: {len(student_ch)} student vs {len(teacher_ch)} teacher levels")
        mid = min(max_mid, student_ch[-1])
        n = len(student_ch)
        self.abfs = nn.ModuleList(ABF(s, mid, t, fuse=i < n - 1) for i, (s, t) in enumerate(zip(student_ch, teacher_ch)))

    def forward(self, s_maps: Sequence[torch.Tensor], out_sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """The fused student maps, shallow to deep, each at the teacher's size of its level."""
        outs: list[torch.Tensor] = [None] * len(s_maps)  # type: ignore[list-item]
        deeper = None
        for i in reversed(range(len(s_maps))):
            outs[i], deeper = self.abfs[i](s_maps[i], deeper, out_sizes[i])
        return outs
