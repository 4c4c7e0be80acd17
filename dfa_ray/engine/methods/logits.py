"""Methods on the logits only: the student alone, Hinton's KD, Decoupled KD."""

from __future__ import annotations

import torch

from dfa_ray.engine.methods.base import CEOptions, Distiller, LogitOptions, option, register_method
from dfa_ray.losses import dkd_terms
from dfa_ray.losses_part2 import linear_warmup


@register_method
class Vanilla(Distiller):
    """The student alone: cross-entropy on the labels."""

    name = "vanilla"
    paper = "(the baseline: no teacher)"
    Options = CEOptions


class KDOptions(LogitOptions):
    w_ce: float = option(0.1, "weight of the cross-entropy on the labels", ge=0)
    w_kl: float = option(0.9, "weight of the KD term (KL of the T-softened outputs, times T^2)", ge=0)


@register_method
class KD(Distiller):
    """Hinton et al. 2015 with the CRD-protocol weights: 0.1 CE + 0.9 KL, T = 4."""

    name = "kd"
    paper = "Hinton, Vinyals & Dean, Distilling the Knowledge in a Neural Network, 2015"
    Options = KDOptions


class DKDOptions(CEOptions):
    alpha: float = option(1.0, "weight of TCKD (target-class KD)", ge=0)
    beta: float = option(8.0, "weight of NCKD (non-target-class KD)", ge=0)
    temperature: float = option(4.0, "softening temperature T", gt=0)
    warmup: float = option(20.0, "epochs of linear warm-up of the KD terms at 240 epochs (scaled with the "
                           "run's epoch count; 0: none)", ge=0)


@register_method
class DKD(Distiller):
    """Decoupled KD (Zhao et al., CVPR 2022): CE + alpha TCKD + beta NCKD, with mdistiller's CIFAR
    defaults (CE 1, alpha 1, beta 8, T 4); both KD terms ramp up linearly over the first
    `warmup` epochs (20 of 240, scaled to the run's epoch count). Reports `loss_tckd` and
    `loss_nckd`; `loss_kd` (Hinton's term) is 0."""

    name = "dkd"
    paper = "Zhao, Cui, Song, Qiu & Liang, Decoupled Knowledge Distillation, CVPR 2022"
    Options = DKDOptions
    uses = frozenset({"teacher_logits"})

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        self.warm = 1.0  # 1 until the trainer says which epoch runs (unit use: no warm-up)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        # mdistiller: min(epoch / warmup, 1) with its 1-based epoch, i.e. 1/warmup in the first
        self.warm = linear_warmup(epoch + 1, self.options.warmup * epochs / 240.0)

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        tckd, nckd = dkd_terms(s.logits, t.logits, y, self.options.temperature)
        return {"loss_tckd": self.warm * self.options.alpha * tckd, "loss_nckd": self.warm * self.options.beta * nckd}
