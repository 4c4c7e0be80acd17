"""Every option of the DFA search (docs/method.md), with its default, in one frozen
pydantic model.

Why frozen and validated at construction: a sweep records these options beside every result,
so an invalid value must fail before any compute is spent, with a message that names the
field, the value and what is allowed (`SearchOptions(**d)` and `model_validate(d)` raise a
ConfigError; the spec validates with `context=FIELD_ERRORS` to report each field at its path,
see `dfa_ray.option_models`). JSON gives `arch_betas` as a list: it is stored as a tuple.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Mapping

from pydantic import Field

from dfa_ray.errors import ConfigError
from dfa_ray.option_models import OptionModel, option

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

# strict: YAML/JSON give numbers and booleans their own types, and a bool or a string where a
# number belongs is a mistake, not something to convert (an int is a valid float)
_FINITE = "a finite number"
_POSITIVE = "a number > 0"
_NON_NEGATIVE = "a number >= 0"
_SWITCH = "true | false"
_Beta = Annotated[float, Field(strict=True, ge=0, lt=1, allow_inf_nan=False)]


def _choices(values: tuple[str, ...]) -> str:
    return " | ".join(values)


class SearchOptions(OptionModel):
    """Options of stage 1 (search). Names follow docs/method.md; units in the descriptions."""

    what = "search option"

    # --- upper level: L_bridge = gamma_ts * L_TS + gamma_st * L_ST + rho * R(beta)
    gamma_ts: float = option(1.0, "weight of the teacher-to-student path (may be 0 or negative)", _FINITE, strict=True)
    gamma_st: float = option(1.0, "weight of the student-to-teacher path (may be 0 or negative)", _FINITE, strict=True)
    reg: Literal["none", "entropy", "-entropy"] = option(
        "none", "R(beta): none | entropy | -entropy (entropy of alpha, nats)", _choices(REGS))
    rho: float = option(0.0, "weight of R(beta)", _FINITE, strict=True)
    objective: Literal["bridge", "student"] = option(
        "bridge", "bridge | student (ablation: L_train as the upper objective)", _choices(OBJECTIVES))
    order: int = option(1, "1 = first-order; 2 = DARTS unrolled (virtual weight step)",
                        "1 (first-order) | 2 (second-order, unrolled)", strict=True)
    hvp: Literal["exact", "finite_difference"] = option(
        "exact", "order 2 only: the implicit term's Hessian-vector product, exact (double backward through the "
        "virtual step) | finite_difference (DARTS' central differences; can be far off)", _choices(HVPS))
    virtual_clip: bool = option(False, "order 2: clip the virtual step's gradient to grad_clip, as the real step",
                                _SWITCH, strict=True)
    # --- architecture parameters and their optimiser (Adam)
    arch_lr: float = option(3e-4, "Adam learning rate of beta", _POSITIVE, strict=True, gt=0)
    arch_betas: tuple[_Beta, _Beta] = option((0.5, 0.999), "Adam betas of beta",
                                             "two numbers in [0, 1), e.g. [0.5, 0.999]")
    arch_weight_decay: float = option(1e-3, "Adam weight decay of beta", _NON_NEGATIVE, strict=True, ge=0)
    beta_init_std: float = option(1e-3, "beta = beta_init_std * randn (seeded)", _NON_NEGATIVE, strict=True, ge=0)
    # --- lower level: L_train = CE + lam * sum_g ||F_s(S_g) - A_g||^2
    lam: float = option(DEFAULT_LAMBDA, "lambda: weight of the feature term of L_train", _NON_NEGATIVE, strict=True,
                        ge=0)
    lr: float = option(0.025, "SGD lr at the start of the search ...", _POSITIVE, strict=True, gt=0)
    lr_min: float = option(0.001, "... cosine-annealed to this at the end", _NON_NEGATIVE, strict=True, ge=0)
    momentum: float = option(0.9, "SGD momentum of the weights", "a number in [0, 1)", strict=True, ge=0, lt=1)
    weight_decay: float = option(3e-4, "SGD weight decay of the weights", _NON_NEGATIVE, strict=True, ge=0)
    grad_clip: float = option(5.0, "max global L2 norm of the weight gradient", _POSITIVE, strict=True, gt=0)
    batch_size: int = option(64, "images per batch (of each split)", "an integer >= 1", strict=True, ge=1)
    # --- schedule, features, data split, derivation
    schedule: Literal["groupwise", "joint"] = option(
        "groupwise", "groupwise (one group at a time, g = 1..G) | joint", _choices(SCHEDULES))
    warmup_epochs: int = option(
        0, "epochs at the start that train the weights and connectors only (beta frozen at its init): an "
        "untrained student's L_TS is at chance and carries no signal (docs/method.md)",
        "an integer >= 0 (less than the search's epochs)", strict=True, ge=0)
    preact: bool = option(True, "pre-activation features where the model has them", _SWITCH, strict=True)
    candidate_scale: Literal["none", "unit"] = option(
        "none", "none | unit: every candidate divided by its RMS over the batch before mixing, so that L_ST "
        "cannot prefer a candidate for its small scale (docs/method.md)", _choices(CANDIDATE_SCALES))
    arch_fraction: float = option(0.5, "share of the training set used as the architecture split",
                                  "a number strictly between 0 and 1", strict=True, gt=0, lt=1)
    derive: str = option("softmax", "softmax | argmax | topk:K", "softmax | argmax | topk:K (K >= 1)", strict=True)

    @classmethod
    def _rule(cls, name: str, value: Any, earlier: Mapping[str, Any]) -> str | None:
        if name == "order" and value not in ORDERS:
            return cls.model_fields["order"].json_schema_extra["allowed"]  # type: ignore[index]
        if name == "lr_min" and "lr" in earlier and value > earlier["lr"]:
            return f"a number <= lr ({earlier['lr']})"
        if name == "derive" and not _derive_ok(value):
            return "softmax | argmax | topk:K (K >= 1)"
        return None

    def validate(self) -> "SearchOptions":
        """The options themselves: a SearchOptions is valid once built (kept for callers that
        check an object they were handed, e.g. SearchNet)."""
        return self



def _derive_ok(mode: Any) -> bool:
    m = _TOPK.match(mode) if isinstance(mode, str) else None
    return mode in ("softmax", "argmax") or (m is not None and int(m.group(1)) >= 1)


def parse_derive(mode: str) -> tuple[str, int | None]:
    """`softmax` | `argmax` | `topk:K` (K >= 1) -> (kind, K); ConfigError otherwise."""
    if not _derive_ok(mode):
        raise ConfigError(
            f"search option derive={mode!r} is invalid; allowed: softmax | argmax | topk:K (K >= 1)"
        )
    if mode in ("softmax", "argmax"):
        return mode, None
    return "topk", int(mode.split(":", 1)[1])
