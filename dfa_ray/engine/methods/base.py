"""The distiller contract: what every distillation method is, gets and returns.

A method is one `Distiller` subclass registered under a name (`@register_method`). It holds
the student, the frozen teacher (eval mode whatever `train()` is called with, no gradient)
and its own modules (regressors, connectors, embeddings, memory buffers): every submodule and
buffer is in the distiller's `state_dict`, so checkpoints carry it (`training.trainable_state`
leaves out only `teacher.*`).

What a method declares (class attributes):
- `name`, `paper` (one line), `Options`: a `MethodOptions` pydantic model; each field is one
  option with its type, default, allowed range (pydantic constraints) and one-line meaning
  (`description`). Validation, the CLI's `--opt`, the spec's `distill.options.<method>`,
  `dfa-ray methods` and the results' recorded options are all read from it.
- `uses`: which views of the two networks it needs beyond the logits: `"features"` (every
  block output per layer group, `forward_groups`), `"embedding"` (the pooled pre-logits
  vector, `forward_groups_embedding`), `"teacher_logits"`. The base runs each network once
  per batch with what is needed (the teacher under `no_grad`).
- `takes_genotype`: whether it is built from a DFA genotype (only `dfa`).

What it is given when built (`MethodContext`): the group pairing by spatial size, the image
size, the training split (`TrainSplit`: size, class count, labels by index; None outside a
run), the genotype, the epoch count.

What the trainer calls: `forward_train(x, y, index)` -> `(student_logits, {name: weighted
scalar})`; the trainer sums every term and reports each by name. `loss_ce`, `loss_kd` and
`loss_feat` are always present (an exact 0 when unused) so every row has those columns; a
method's own terms (`loss_rkd_angle`, `loss_nckd`, ...) go into the row's extra metrics.
`index` [B] is each sample's position in the training split. `on_epoch_start(epoch, epochs)`
(0-based epoch about to run) is called before every epoch, also after a resume.
`trainable_parameters()` is what the optimiser updates (never the teacher's).

The teacher's part is split off so that one teacher forward can serve several methods (a
shared-teacher group, `engine.group`, docs/shared_teacher.md): `teacher_request()` says what
the method needs of the teacher (`engine.views.TeacherRequest`, None for nothing),
`teacher_views(outputs)` picks its `Views` out of a forward that answered (at least) that
request, and `forward_train_with(outputs, x, y, index)` is `forward_train` given them;
`forward_train` runs the teacher with the method's own request and calls it. A subclass that
overrides `_views_of` or `forward_train` without `teacher_views` keeps its own teacher pass
(`shared_teacher` False), and a group runs its `forward_train` as it is.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

import annotated_types
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from dfa_ray.dfa.genotype import Genotype
from dfa_ray.dfa.pairing import GroupPair, GroupPairing, spatial_size
from dfa_ray.engine.views import TeacherOutputs, TeacherRequest, teacher_outputs
from dfa_ray.errors import ConfigError
from dfa_ray.losses import kd_loss
from dfa_ray.registry import Registry

LossDict = dict[str, torch.Tensor]
STANDARD_TERMS = ("loss_ce", "loss_kd", "loss_feat")
VIEWS = frozenset({"features", "embedding", "teacher_logits"})

METHODS: Registry[type["Distiller"]] = Registry("distillation method")


# -- options ------------------------------------------------------------------------------
def option(default: Any, description: str, allowed: str | None = None, **constraints: Any) -> Any:
    """One option: its default, one-line meaning and pydantic constraints (ge, gt, le, ...).
    `allowed` overrides the range text derived from the type and constraints."""
    extra = {"allowed": allowed} if allowed else None
    if "allow_inf_nan" not in constraints and isinstance(default, float):
        constraints["allow_inf_nan"] = False
    return Field(default, description=description, json_schema_extra=extra, **constraints)


class MethodOptions(BaseModel):
    """Base of every method's options: strict types (no bool for a number, no string for a
    number), unknown keys refused, frozen once resolved."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """One entry per option: name, type, default, allowed values, meaning."""
        return [{"name": name, "type": _type_name(f.annotation), "default": f.default,
                 "allowed": allowed_text(f), "help": f.description or ""}
                for name, f in cls.model_fields.items()]


def _type_name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return "choice"
    if args:  # X | None
        return " | ".join(_type_name(a) for a in args)
    return {float: "number", int: "integer", bool: "boolean", str: "text", type(None): "null"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def allowed_text(field: Any) -> str:
    """What a user may write for this option, e.g. `a number >= 0`, `index | size`."""
    extra = field.json_schema_extra or {}
    if isinstance(extra, dict) and extra.get("allowed"):
        return str(extra["allowed"])
    ann = field.annotation
    if typing.get_origin(ann) is Literal:
        return " | ".join(str(a) for a in typing.get_args(ann))
    if ann is bool:
        return "true | false"
    noun = {float: "a number", int: "an integer"}.get(ann, _type_name(ann))
    bounds = []
    for m in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                bounds.append(f"{sym} {getattr(m, attr):g}")
    return f"{noun} {' and '.join(bounds)}".strip() if bounds else (f"a finite number" if ann is float else noun)


class CEOptions(MethodOptions):
    w_ce: float = option(1.0, "weight of the cross-entropy on the labels", ge=0)


class LogitOptions(CEOptions):
    w_kl: float = option(0.0, "weight of Hinton's KD term (KL of the T-softened outputs, times T^2)", ge=0)
    temperature: float = option(4.0, "softening temperature T of the KD term", gt=0)


class WeightedOptions(LogitOptions):
    """A method with a distillation term of weight `w_feat` (0 switches the method off)."""

    w_feat: float = option(1.0, "weight of the method's distillation term", ge=0)


class FeatureOptions(WeightedOptions):
    """A method on block outputs: its weight and the feature kind."""

    preact: bool = option(False, "distil pre-activation block outputs (true) or post-ReLU ones, as CRD (false)")


# -- what a method is given -----------------------------------------------------------------
@dataclass(frozen=True)
class TrainSplit:
    """The training split a run trains on (after the held-out validation part is removed)."""

    num_samples: int
    num_classes: int
    labels: torch.Tensor | None = None  # int64 [num_samples]: labels[index] is the batch's y

    @classmethod
    def of(cls, images: Any, num_classes: int) -> "TrainSplit":
        return cls(num_samples=len(images), num_classes=int(num_classes), labels=images.labels.clone())


@dataclass(frozen=True)
class MethodContext:
    """Everything a method may size its modules from, known before the first batch."""

    pairing: GroupPairing  # each student group with the teacher group of nearest spatial size
    image_size: int
    split: TrainSplit | None = None  # None when built outside a training run (unit use)
    genotype: Genotype | None = None
    epochs: int | None = None  # the run's epoch count, when known


@dataclass
class Views:
    """One network's outputs for a batch: logits, and what the method asked for."""

    logits: torch.Tensor
    features: list[list[torch.Tensor]] | None = None
    embedding: torch.Tensor | None = None


def pair_by_index(teacher: nn.Module, student: nn.Module, image_size: int) -> GroupPairing:
    """CRD's layer choice: student group g with teacher group g, for g below both group
    counts (its feature lists are zipped), whatever the spatial sizes."""
    pairs = []
    for g in range(min(len(teacher.group_info), len(student.group_info))):
        s, t = student.group_info[g], teacher.group_info[g]
        pairs.append(GroupPair(student_group=g, teacher_group=g, student_channels=s.channels,
                               teacher_channels=t.channels, student_size=spatial_size(image_size, s.stride),
                               teacher_size=spatial_size(image_size, t.stride), candidates=tuple(t.block_names)))
    return GroupPairing(pairs=tuple(pairs), image_size=image_size)


# -- the base class ---------------------------------------------------------------------------
class Distiller(nn.Module):
    """Base class: CE (+ Hinton's KD when `w_kl` != 0) (+ the method's `distill_terms`)."""

    name: ClassVar[str] = "base"
    paper: ClassVar[str] = ""
    Options: ClassVar[type[MethodOptions]] = LogitOptions
    uses: ClassVar[frozenset[str]] = frozenset()
    takes_genotype: ClassVar[bool] = False
    # whether the teacher's views come from `teacher_request` / `teacher_views` (so a group can
    # compute them once for several methods); see __init_subclass__
    shared_teacher: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        # a class that changes how views are made (or the whole forward) but not how the
        # teacher's are read from a shared forward keeps its own teacher pass: exactly what it
        # computed before groups existed
        if "shared_teacher" not in own and "teacher_views" not in own and (
                "_views_of" in own or "forward_train" in own):
            cls.shared_teacher = False

    def __init__(self, student: nn.Module, teacher: nn.Module, options: MethodOptions,
                 context: MethodContext) -> None:
        super().__init__()
        if not isinstance(options, self.Options):
            raise TypeError(f"{self.name} expects {self.Options.__name__}, got {type(options).__name__}")
        self.student = student
        self.teacher = teacher
        teacher.requires_grad_(False)
        teacher.eval()
        self.options = options
        self.context = context
        self.pairing = context.pairing
        self.w_ce = float(getattr(options, "w_ce", 0.0))
        self.w_kl = float(getattr(options, "w_kl", 0.0))
        self.temperature = float(getattr(options, "temperature", 4.0))
        self.preact = bool(getattr(options, "preact", False))
        # a method whose weight is 0 is switched off: no feature pass is paid for it
        active = float(getattr(options, "w_feat", 1.0)) != 0
        self.views = frozenset(self.uses) if active else frozenset()

    @property
    def config(self) -> dict[str, Any]:
        """The options the method runs with, resolved: what every result row records."""
        return self.options.model_dump()

    # -- declared by methods ----------------------------------------------------------------
    @classmethod
    def default_overrides(cls, genotype: Genotype | None) -> dict[str, Any]:
        """Defaults that depend on what the method is built from (DFA: the search's lambda);
        user options still override them."""
        return {}

    def distill_terms(self, s: Views, t: Views, y: torch.Tensor, index: torch.Tensor | None) -> LossDict:
        """The method's own weighted terms; called only when the method is active."""
        return {}

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called by the trainer before epoch `epoch` (0-based) of `epochs`."""

    # -- the contract the trainer uses ------------------------------------------------------
    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teacher.eval()  # its BN statistics and dropout must stay fixed
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The student's and the method's own parameters (never the teacher's)."""
        return [p for n, p in self.named_parameters() if not n.startswith("teacher.")]

    def _views_of(self, model: nn.Module, x: torch.Tensor) -> Views:
        if "embedding" in self.views:
            logits, feats, emb = model.forward_groups_embedding(x, preact=self.preact)
            return Views(logits, feats, emb)
        if "features" in self.views:
            logits, feats = model.forward_groups(x, preact=self.preact)
            return Views(logits, feats)
        return Views(model(x))

    def teacher_request(self) -> TeacherRequest | None:
        """What this method needs of the teacher per batch (None: nothing, e.g. vanilla or a
        method switched off by `w_feat` 0 without KD): what `_views_of(teacher, x)` computes."""
        if not (self.views or self.w_kl != 0):
            return None
        if "embedding" in self.views:
            return TeacherRequest(features=frozenset({self.preact}), embedding=True)
        if "features" in self.views:
            return TeacherRequest(features=frozenset({self.preact}))
        return TeacherRequest()

    def teacher_views(self, outputs: TeacherOutputs) -> Views:
        """This method's teacher `Views` out of a forward that answered its request."""
        if "embedding" in self.views:
            return Views(outputs.logits, outputs.features[self.preact], outputs.embedding)
        if "features" in self.views:
            return Views(outputs.logits, outputs.features[self.preact])
        return Views(outputs.logits)

    def run_teacher(self, x: torch.Tensor) -> TeacherOutputs | None:
        """The teacher's forward with this method's own request (None when it needs none)."""
        request = self.teacher_request()
        if request is None:
            return None
        self.teacher.eval()
        return teacher_outputs(self.teacher, x, request)

    def forward_train(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, LossDict]:
        if not self.shared_teacher:  # a subclass with its own views: its own teacher pass
            s = self._views_of(self.student, x)
            t = None
            if self.views or self.w_kl != 0:
                self.teacher.eval()
                with torch.no_grad():
                    t = self._views_of(self.teacher, x)
            return s.logits, self._losses(s, t, y, index)
        return self.forward_train_with(self.run_teacher(x), x, y, index)

    def forward_train_with(self, outputs: TeacherOutputs | None, x: torch.Tensor, y: torch.Tensor,
                           index: torch.Tensor | None = None) -> tuple[torch.Tensor, LossDict]:
        """`forward_train` given the teacher's forward (`outputs` answers at least
        `teacher_request()`; None when that is None)."""
        s = self._views_of(self.student, x)
        t = self.teacher_views(outputs) if outputs is not None else None
        return s.logits, self._losses(s, t, y, index)

    def _losses(self, s: Views, t: Views | None, y: torch.Tensor, index: torch.Tensor | None) -> LossDict:
        zero = s.logits.new_zeros(())
        losses: LossDict = dict.fromkeys(STANDARD_TERMS, zero)
        if self.w_ce != 0:
            losses["loss_ce"] = self.w_ce * F.cross_entropy(s.logits, y)
        if self.w_kl != 0:
            losses["loss_kd"] = self.w_kl * kd_loss(s.logits, t.logits, self.temperature)
        if self.views:
            losses.update(self.distill_terms(s, t, y, index))
        return losses


def register_method(cls: type[Distiller]) -> type[Distiller]:
    """Class decorator: register a Distiller under its `name` (checked for a complete
    declaration, so a mistake shows at import, not in the middle of a sweep)."""
    if not cls.name or cls.name == "base":
        raise TypeError(f"{cls.__name__} needs a `name`")
    if not (isinstance(cls.Options, type) and issubclass(cls.Options, MethodOptions)):
        raise TypeError(f"{cls.__name__}.Options must be a MethodOptions subclass")
    if not cls.uses <= VIEWS:
        raise TypeError(f"{cls.__name__}.uses has unknown views {sorted(cls.uses - VIEWS)}; known: {sorted(VIEWS)}")
    METHODS.register(cls.name)(cls)
    return cls


# -- resolving and building -------------------------------------------------------------------
def resolve_method_options(method: str, options: Mapping[str, Any] | None,
                           genotype: Genotype | None = None) -> MethodOptions:
    """The method's typed options: defaults, then genotype-given defaults, then `options`.
    Raises ConfigError naming the option, the value and what is allowed."""
    cls = METHODS.get(method)
    options = dict(options or {})
    fields = cls.Options.model_fields
    unknown = sorted(k for k in options if k not in fields)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for method {method}; "
                          f"valid options: {', '.join(fields)}")
    values = {**cls.default_overrides(genotype), **options}
    try:
        return cls.Options(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        allowed = allowed_text(fields[key]) if key in fields else err["msg"]
        raise ConfigError(f"{method} option {key}={values.get(key)!r} is invalid; allowed: {allowed}") from None


def resolve_options(method: str, options: Mapping[str, Any] | None,
                    genotype: Genotype | None = None) -> dict[str, Any]:
    """`resolve_method_options` as a plain dict (what rows and metadata record)."""
    return resolve_method_options(method, options, genotype).model_dump()


def method_catalog() -> list[dict[str, Any]]:
    """Every registered method with its paper, views and options (for `dfa-ray methods`)."""
    return [{"name": name, "paper": cls.paper, "summary": " ".join((cls.__doc__ or "").split("\n\n")[0].split()),
             "uses": sorted(cls.uses), "genotype": cls.takes_genotype, "options": cls.Options.describe()}
            for name, cls in ((n, METHODS.get(n)) for n in METHODS.names())]


def build_distiller(
    method: str,
    teacher: nn.Module,
    student: nn.Module,
    options: Mapping[str, Any] | None = None,
    genotype: Genotype | None = None,
    image_size: int = 32,
    split: TrainSplit | None = None,
    epochs: int | None = None,
) -> Distiller:
    """Build method `method` for the pair (the pairing is computed at `image_size`)."""
    from dfa_ray.dfa.genotype import REFERENCE_KINDS
    from dfa_ray.dfa.pairing import pair_groups

    cls = METHODS.get(method)
    if cls.takes_genotype and genotype is None:
        raise ConfigError(f"method {method} needs a genotype: run the search for this pair, or use a reference "
                          f"genotype ({', '.join(REFERENCE_KINDS)})")
    if not cls.takes_genotype and genotype is not None:
        raise ConfigError(f"method {method} takes no genotype; only dfa does")
    resolved = resolve_method_options(method, options, genotype)
    context = MethodContext(pairing=pair_groups(teacher, student, image_size), image_size=image_size, split=split,
                            genotype=genotype, epochs=epochs)
    return cls(student, teacher, resolved, context)
