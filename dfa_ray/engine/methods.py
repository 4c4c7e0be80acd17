"""Distillation methods behind one small contract (after mdistiller's `Distiller`).

A `Distiller` holds the student, the frozen teacher (eval mode whatever `train()` is called
with, no grad) and the method's own modules (connectors, regressors). `forward_train(x, y)`
returns `(student_logits, {"loss_ce", "loss_kd", "loss_feat"})` with every term already
multiplied by its weight: the trainer sums the dict and reports each key. The three keys are
the same for every method (a term a method does not use is an exact 0) so that every result
row has the same columns. `forward(x)` is the student's logits. `trainable_parameters()` is
what the trainer's optimiser updates.

Methods (registry `METHODS`, built by `build_distiller`):
- `vanilla`: CE only.
- `kd`: Hinton et al. 2015; w_ce 0.1, w_kl 0.9, T 4 (the CRD protocol).
- `fitnet`: Romero et al. 2015; hint at the student's middle group through a regressor, w 100.
- `at`: Zagoruyko & Komodakis 2017; attention maps of every paired group, p 2, w 1000.
- `dfa`: Guan et al. 2020, stage 2; feature L2 to a fixed aggregation of teacher candidates
  given by a genotype; w_ce 1, w_kl 0, w_feat = the search's lambda, c_g uniform|halving.
No training loop here: epochs, optimisers and schedules are in the engine's loops.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dfa_ray.dfa.genotype import REFERENCE_KINDS, Genotype
from dfa_ray.dfa.options import DEFAULT_LAMBDA
from dfa_ray.dfa.pairing import GroupPairing, pair_groups, spatial_size
from dfa_ray.errors import ConfigError
from dfa_ray.losses import Connector, HintRegressor, at_loss, feature_l2, kd_loss, resize_to, stage_weights
from dfa_ray.registry import Registry

LossDict = dict[str, torch.Tensor]
METHODS: Registry[type["Distiller"]] = Registry("distillation method")

_COMMON = {"w_ce": 1.0, "w_kl": 0.0, "w_feat": 0.0, "temperature": 4.0}


class Distiller(nn.Module):
    """Base class: CE (+ KD when w_kl != 0) (+ the method's feature term)."""

    name: ClassVar[str] = "base"
    defaults: ClassVar[dict[str, Any]] = dict(_COMMON)
    has_features: ClassVar[bool] = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        config: Mapping[str, Any],
        pairing: GroupPairing,
    ) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        teacher.requires_grad_(False)
        teacher.eval()
        self.config = dict(config)  # the resolved options, for the results row
        self.pairing = pairing
        self.w_ce = float(config["w_ce"])
        self.w_kl = float(config["w_kl"])
        self.w_feat = float(config["w_feat"])
        self.temperature = float(config["temperature"])
        self.preact = bool(config.get("preact", False))

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teacher.eval()  # its BN statistics and dropout must stay fixed
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The student's and the method's own parameters (never the teacher's)."""
        return [p for n, p in self.named_parameters() if not n.startswith("teacher.")]

    def feature_loss(
        self, s_feats: list[list[torch.Tensor]], t_feats: list[list[torch.Tensor]], x: torch.Tensor
    ) -> torch.Tensor:  # pragma: no cover - overridden by feature methods
        raise NotImplementedError

    def forward_train(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, LossDict]:
        use_feat = self.has_features and self.w_feat != 0
        if use_feat:
            logits, s_feats = self.student.forward_groups(x, preact=self.preact)
        else:
            logits, s_feats = self.student(x), None
        zero = logits.new_zeros(())
        t_logits = t_feats = None
        if use_feat or self.w_kl != 0:
            self.teacher.eval()
            with torch.no_grad():
                if use_feat:
                    t_logits, t_feats = self.teacher.forward_groups(x, preact=self.preact)
                else:
                    t_logits = self.teacher(x)
        losses = {
            "loss_ce": self.w_ce * F.cross_entropy(logits, y) if self.w_ce != 0 else zero,
            "loss_kd": self.w_kl * kd_loss(logits, t_logits, self.temperature) if self.w_kl != 0 else zero,
            "loss_feat": self.w_feat * self.feature_loss(s_feats, t_feats, x) if use_feat else zero,
        }
        return logits, losses


@METHODS.register("vanilla")
class Vanilla(Distiller):
    """The student alone: cross-entropy on the labels."""

    name = "vanilla"
    defaults = dict(_COMMON)


@METHODS.register("kd")
class KD(Distiller):
    """Hinton et al. 2015 with the CRD-protocol weights: 0.1 CE + 0.9 KL, T = 4."""

    name = "kd"
    defaults = {**_COMMON, "w_ce": 0.1, "w_kl": 0.9}


@METHODS.register("fitnet")
class FitNet(Distiller):
    """FitNets (Romero et al., ICLR 2015), single-stage as in the CRD benchmark: the student's
    middle group (index (G-1)//2, option `hint_group`) regresses onto its paired teacher group
    through `HintRegressor`; features post-ReLU by default (option `preact`), as CRD."""

    name = "fitnet"
    defaults = {**_COMMON, "w_feat": 100.0, "hint_group": None, "preact": False}
    has_features = True

    def __init__(self, student, teacher, config, pairing) -> None:
        super().__init__(student, teacher, config, pairing)
        g = config["hint_group"]
        g = (len(pairing) - 1) // 2 if g is None else int(g)
        if not 0 <= g < len(pairing):
            raise ConfigError(f"fitnet option hint_group={g} is invalid; allowed: 0..{len(pairing) - 1} or null (middle)")
        self.config["hint_group"] = g
        self.hint = pairing[g]
        self.regressor = HintRegressor(self.hint.student_channels, self.hint.teacher_channels, relu=not self.preact)

    def feature_loss(self, s_feats, t_feats, x):
        target = t_feats[self.hint.teacher_group][-1]
        guided = self.regressor(s_feats[self.hint.student_group][-1], size=tuple(target.shape[-2:]))
        return feature_l2(guided, target)


@METHODS.register("at")
class AT(Distiller):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017) over every paired group's last
    block output (post-ReLU by default, as CRD), p = 2; see `losses.at_loss`."""

    name = "at"
    defaults = {**_COMMON, "w_feat": 1000.0, "p": 2.0, "preact": False}
    has_features = True

    def feature_loss(self, s_feats, t_feats, x):
        s = [s_feats[p.student_group][-1] for p in self.pairing]
        t = [t_feats[p.teacher_group][-1] for p in self.pairing]
        return at_loss(s, t, p=float(self.config["p"]))


@METHODS.register("dfa")
class DFA(Distiller):
    """DFA stage 2 (Guan et al., ECCV 2020): sum_g c_g ||F_s^g(S_g) - A_g||^2 with the
    aggregation weights of a genotype held fixed (constants). Defaults w_ce 1, w_kl 0,
    w_feat = the lambda the genotype's search used (else `DEFAULT_LAMBDA`), `preact` as the
    search did (else true), `stage_weights` uniform | halving."""

    name = "dfa"
    defaults = {**_COMMON, "w_feat": DEFAULT_LAMBDA, "stage_weights": "uniform", "preact": True}
    has_features = True

    def __init__(self, student, teacher, config, pairing, genotype: Genotype) -> None:
        super().__init__(student, teacher, config, pairing)
        genotype.check_pairing(pairing)
        self.genotype = genotype
        self.connectors = nn.ModuleList(Connector(p.student_channels, p.teacher_channels) for p in pairing)
        # Python floats, not tensors: reading them costs no device sync per step
        self.agg_weights = [list(g.weights) for g in genotype.groups]
        self.stage_weights = stage_weights(len(pairing), str(config["stage_weights"]))

    def aggregates(self, t_feats: list[list[torch.Tensor]], x: torch.Tensor) -> list[torch.Tensor]:
        """A_g at the student's size; candidates with weight 0 are skipped."""
        h, w = x.shape[-2:]
        out = []
        for i, p in enumerate(self.pairing):
            weights = self.agg_weights[i]
            cands = t_feats[p.teacher_group]
            a = sum(wj * c for wj, c in zip(weights, cands) if wj != 0)
            stride = self.student.group_info[p.student_group].stride
            out.append(resize_to(a, (spatial_size(h, stride), spatial_size(w, stride))))
        return out

    def feature_loss(self, s_feats, t_feats, x):
        targets = self.aggregates(t_feats, x)
        total = x.new_zeros((), dtype=targets[0].dtype)
        for i, p in enumerate(self.pairing):
            s = self.connectors[i](s_feats[p.student_group][-1])
            total = total + self.stage_weights[i] * feature_l2(s, targets[i])
        return total


# -- building -----------------------------------------------------------------------------
def _check_option(method: str, key: str, value: Any) -> Any:
    def bad(allowed: str) -> ConfigError:
        return ConfigError(f"{method} option {key}={value!r} is invalid; allowed: {allowed}")

    if key in ("w_ce", "w_kl", "w_feat", "temperature", "p"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("a finite number")
        if key in ("temperature", "p") and value <= 0:
            raise bad("a number > 0")
        if key.startswith("w_") and value < 0:
            raise bad("a number >= 0")
        return float(value)
    if key == "preact":
        if not isinstance(value, bool):
            raise bad("true | false")
    elif key == "stage_weights":
        if value not in ("uniform", "halving"):
            raise bad("uniform | halving")
    elif key == "hint_group":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise bad("a group index or null (the middle group)")
    return value


def resolve_options(method: str, options: Mapping[str, Any] | None, genotype: Genotype | None = None) -> dict[str, Any]:
    """The method's defaults overridden by `options`; unknown keys refused by name."""
    cls = METHODS.get(method)
    defaults = dict(cls.defaults)
    if cls is DFA and genotype is not None:
        # stage 2 starts from the search's own lambda and feature kind (dfa_method.md)
        if "lam" in genotype.options:
            defaults["w_feat"] = float(genotype.options["lam"])
        if "preact" in genotype.options:
            defaults["preact"] = bool(genotype.options["preact"])
    options = dict(options or {})
    unknown = sorted(k for k in options if k not in defaults)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for method {method}; valid options: {', '.join(defaults)}"
        )
    config = {**defaults, **options}
    for k, v in config.items():
        config[k] = _check_option(method, k, v)
    if not cls.has_features and config["w_feat"] != 0:
        raise ConfigError(f"method {method} has no feature term, so w_feat must be 0; use fitnet, at or dfa")
    return config


def build_distiller(
    method: str,
    teacher: nn.Module,
    student: nn.Module,
    options: Mapping[str, Any] | None = None,
    genotype: Genotype | None = None,
    image_size: int = 32,
) -> Distiller:
    """Build method `method` for the pair (the pairing is computed at `image_size`)."""
    cls = METHODS.get(method)
    config = resolve_options(method, options, genotype)
    pairing = pair_groups(teacher, student, image_size)
    if cls is DFA:
        if genotype is None:
            raise ConfigError(
                "method dfa needs a genotype: run the search for this pair, or use a reference "
                f"genotype ({', '.join(REFERENCE_KINDS)})"
            )
        return DFA(student, teacher, config, pairing, genotype)
    if genotype is not None:
        raise ConfigError(f"method {method} takes no genotype; only dfa does")
    return cls(student, teacher, config, pairing)
