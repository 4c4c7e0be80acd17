"""Methods on the feature maps of paired layer groups: FitNet, AT, NST.

`pairing` chooses which teacher group each student group learns from: `index` is the CRD
benchmark's choice (its feature lists are zipped: student group g with teacher group g), `size`
pairs each student group with the teacher group of nearest spatial size (`pair_groups`, what
DFA uses). The two agree for same-family pairs; for cross-family pairs the maps are resized
(`resize_to`) where their sizes differ.
"""

from __future__ import annotations

from typing import Literal

import torch

from dfa_ray.dfa.pairing import GroupPairing
from dfa_ray.engine.methods.base import Distiller, FeatureOptions, option, pair_by_index, register_method
from dfa_ray.errors import ConfigError
from dfa_ray.losses import HintRegressor, at_loss, feature_l2, nst_loss


class PairedOptions(FeatureOptions):
    pairing: Literal["index", "size"] = option(
        "index", "teacher group per student group: by index, as CRD (index), or by nearest spatial size (size)")


def chosen_pairing(distiller: Distiller) -> GroupPairing:
    if distiller.options.pairing == "size":
        return distiller.context.pairing
    return pair_by_index(distiller.teacher, distiller.student, distiller.context.image_size)


class FitNetOptions(PairedOptions):
    w_feat: float = option(100.0, "weight of the hint loss (MSE of regressed student and teacher maps)", ge=0)
    hint_group: int | None = option(None, "student group whose last block is guided (null: the middle one, (G-1)//2)",
                                    allowed="a group index or null (the middle group)", ge=0)


@register_method
class FitNet(Distiller):
    """FitNets (Romero et al., ICLR 2015), single-stage as in the CRD benchmark: the student's
    middle group (index (G-1)//2, option `hint_group`) regresses onto its paired teacher group
    through `HintRegressor` (1x1 conv + BN + ReLU when the sizes match); features post-ReLU by
    default (option `preact`), as CRD."""

    name = "fitnet"
    paper = "Romero et al., FitNets: Hints for Thin Deep Nets, ICLR 2015"
    Options = FitNetOptions
    uses = frozenset({"features"})

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        pairing = chosen_pairing(self)
        g = options.hint_group
        g = (len(pairing) - 1) // 2 if g is None else int(g)
        if not 0 <= g < len(pairing):
            raise ConfigError(f"fitnet option hint_group={g} is invalid; allowed: 0..{len(pairing) - 1} or null (middle)")
        self.options = options.model_copy(update={"hint_group": g})
        self.hint = pairing[g]
        same = self.hint.student_size == self.hint.teacher_size
        self.regressor = HintRegressor(self.hint.student_channels, self.hint.teacher_channels, relu=not self.preact,
                                       kernel_size=1 if same else 3)

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        target = t.features[self.hint.teacher_group][-1]
        guided = self.regressor(s.features[self.hint.student_group][-1], size=tuple(target.shape[-2:]))
        return {"loss_feat": self.options.w_feat * feature_l2(guided, target)}


class ATOptions(PairedOptions):
    w_feat: float = option(1000.0, "weight of the attention loss (summed over the paired groups)", ge=0)
    p: float = option(2.0, "exponent p of the attention map mean_c |f|^p", gt=0)


@register_method
class AT(Distiller):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017) over every paired group's last
    block output (post-ReLU by default, as CRD), p = 2; see `losses.at_loss`."""

    name = "at"
    paper = "Zagoruyko & Komodakis, Paying More Attention to Attention, ICLR 2017"
    Options = ATOptions
    uses = frozenset({"features"})

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        self.pairs = chosen_pairing(self)

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        fs = [s.features[p.student_group][-1] for p in self.pairs]
        ft = [t.features[p.teacher_group][-1] for p in self.pairs]
        return {"loss_feat": self.options.w_feat * at_loss(fs, ft, p=self.options.p)}


class NSTOptions(PairedOptions):
    w_feat: float = option(50.0, "weight of the MMD loss (summed over the paired groups)", ge=0)


@register_method
class NST(Distiller):
    """Neuron Selectivity Transfer (Huang & Wang 2017): polynomial-kernel MMD (d 2, c 0) between
    the L2-normalised channel maps of every paired group's last block (CRD: all groups,
    post-ReLU, weight 50); see `losses.nst_loss`."""

    name = "nst"
    paper = "Huang & Wang, Like What You Like: Knowledge Distill via Neuron Selectivity Transfer, 2017"
    Options = NSTOptions
    uses = frozenset({"features"})

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        self.pairs = chosen_pairing(self)

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        total = sum(nst_loss(s.features[p.student_group][-1], t.features[p.teacher_group][-1]) for p in self.pairs)
        return {"loss_feat": self.options.w_feat * total}
