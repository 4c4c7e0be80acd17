"""Every option of the DFA search (docs/method.md), with its default, in one frozen
object.

Why frozen and validated at construction: a sweep records these options beside every result,
so an invalid value must fail before any compute is spent, with a message that names the
field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from dfa_ray.errors import ConfigError

REGS = ("none", "entropy", "-entropy")
SCHEDULES = ("groupwise", "joint")
OBJECTIVES = ("bridge", "student")
ORDERS = (1, 2)
HVPS = ("exact", "finite_difference")
CANDIDATE_SCALES = ("none", "unit")
_TOPK = re.compile(r"^topk:(\d+)$")

# lambda of L_train (and the default w_feat of the `dfa` distiller). Why 10: the feature
# term is a per-element mean squared error between a BN-normalised connector output and a
# teacher pre-activation map, so each group's term starts around 1 and the sum over 3 groups
# around 3 against a CE of ~4.6 (100 classes). Overhaul distillation (the protocol DFA's
# WRN-28-4 results are measured against) weighs its summed L2 by 1/(batch * 1000), i.e. about
# C*H*W/1000 = 16..65 per element for WRN-16-4 groups before its stage halving; FitNet's
# CRD weight is 100 on a single, post-ReLU group. 10 puts the feature term in charge early
# (it is what stage 2 transfers) without burying CE, and leaves room either way for the sweep.
DEFAULT_LAMBDA = 10.0


@dataclass(frozen=True)
class SearchOptions:
    """Options of stage 1 (search). Names follow docs/method.md; units in comments."""

    # --- upper level: L_bridge = gamma_ts * L_TS + gamma_st * L_ST + rho * R(beta)
    gamma_ts: float = 1.0  # weight of the teacher-to-student path (may be 0 or negative)
    gamma_st: float = 1.0  # weight of the student-to-teacher path (may be 0 or negative)
    reg: str = "none"  # R(beta): none | entropy | -entropy (entropy of alpha, nats)
    rho: float = 0.0  # weight of R(beta)
    objective: str = "bridge"  # bridge | student (ablation: L_train as the upper objective)
    order: int = 1  # 1 = first-order; 2 = DARTS unrolled (virtual weight step)
    # order 2 only: the implicit term's Hessian-vector product, exact (double backward through
    # the virtual step) | finite_difference (DARTS' central differences; can be far off)
    hvp: str = "exact"
    virtual_clip: bool = False  # order 2: clip the virtual step's gradient to grad_clip, as the real step
    # --- architecture parameters and their optimiser (Adam)
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    beta_init_std: float = 1e-3  # beta = beta_init_std * randn (seeded)
    # --- lower level: L_train = CE + lam * sum_g ||F_s(S_g) - A_g||^2
    lam: float = DEFAULT_LAMBDA
    lr: float = 0.025  # SGD lr at the start of the search ...
    lr_min: float = 0.001  # ... cosine-annealed to this at the end
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # max global L2 norm of the weight gradient
    batch_size: int = 64
    # --- schedule, features, data split, derivation
    schedule: str = "groupwise"  # groupwise (one group at a time, g = 1..G) | joint
    # epochs at the start that train the weights and connectors only (beta frozen at its
    # init): an untrained student's L_TS is at chance and carries no signal (docs/method.md)
    warmup_epochs: int = 0
    preact: bool = True  # pre-activation features where the model has them
    # none | unit: every candidate divided by its RMS over the batch before mixing, so that
    # L_ST cannot prefer a candidate for its small scale (docs/method.md)
    candidate_scale: str = "none"
    arch_fraction: float = 0.5  # share of the training set used as the architecture split
    derive: str = "softmax"  # softmax | argmax | topk:K

    def __post_init__(self) -> None:
        # YAML/JSON give lists; store the betas as a tuple so the object stays hashable.
        if isinstance(self.arch_betas, list):
            object.__setattr__(self, "arch_betas", tuple(self.arch_betas))
        self.validate()

    # ---------------------------------------------------------------------------------
    def validate(self) -> "SearchOptions":
        """Raise ConfigError naming the first invalid field, its value and what is allowed."""

        def bad(name: str, allowed: str) -> ConfigError:
            return ConfigError(
                f"search option {name}={getattr(self, name)!r} is invalid; allowed: {allowed}"
            )

        def number(name: str) -> float:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(name, "a finite number")
            return float(v)

        number("gamma_ts")
        number("gamma_st")
        if self.reg not in REGS:
            raise bad("reg", " | ".join(REGS))
        number("rho")
        if self.objective not in OBJECTIVES:
            raise bad("objective", " | ".join(OBJECTIVES))
        if isinstance(self.order, bool) or self.order not in ORDERS:
            raise bad("order", "1 (first-order) | 2 (second-order, unrolled)")
        if self.hvp not in HVPS:
            raise bad("hvp", " | ".join(HVPS))
        if not isinstance(self.virtual_clip, bool):
            raise bad("virtual_clip", "true | false")
        for name in ("arch_lr", "lr", "grad_clip"):
            if number(name) <= 0:
                raise bad(name, "a number > 0")
        for name in ("arch_weight_decay", "beta_init_std", "lam", "lr_min", "weight_decay"):
            if number(name) < 0:
                raise bad(name, "a number >= 0")
        if self.lr_min > self.lr:
            raise bad("lr_min", f"a number <= lr ({self.lr})")
        if not 0 <= number("momentum") < 1:
            raise bad("momentum", "a number in [0, 1)")
        b = self.arch_betas
        if (
            not isinstance(b, tuple)
            or len(b) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
            or not all(0 <= v < 1 for v in b)
        ):
            raise bad("arch_betas", "two numbers in [0, 1), e.g. [0.5, 0.999]")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise bad("batch_size", "an integer >= 1")
        if isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise bad("warmup_epochs", "an integer >= 0 (less than the search's epochs)")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", " | ".join(SCHEDULES))
        if not isinstance(self.preact, bool):
            raise bad("preact", "true | false")
        if self.candidate_scale not in CANDIDATE_SCALES:
            raise bad("candidate_scale", " | ".join(CANDIDATE_SCALES))
        if not 0 < number("arch_fraction") < 1:
            raise bad("arch_fraction", "a number strictly between 0 and 1")
        parse_derive(self.derive)
        return self

    # ---------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "SearchOptions":
        """Build from a plain mapping (spec, JSON); unknown keys are refused by name."""
        d = dict(d or {})
        valid = cls.field_names()
        unknown = sorted(k for k in d if k not in valid)
        if unknown:
            raise ConfigError(
                f"unknown search option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}"
            )
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every option (arch_betas as a list)."""
        out = {name: getattr(self, name) for name in self.field_names()}
        out["arch_betas"] = list(self.arch_betas)
        return out


def parse_derive(mode: str) -> tuple[str, int | None]:
    """`softmax` | `argmax` | `topk:K` (K >= 1) -> (kind, K); ConfigError otherwise."""
    if mode in ("softmax", "argmax"):
        return mode, None
    m = _TOPK.match(mode) if isinstance(mode, str) else None
    if m is None or int(m.group(1)) < 1:
        raise ConfigError(
            f"search option derive={mode!r} is invalid; allowed: softmax | argmax | topk:K (K >= 1)"
        )
    return "topk", int(m.group(1))
