"""The sweep spec: a plain-YAML file turned into validated, frozen objects before anything runs.

Why a separate validation step: a sweep spends hours of cluster time, so a typo in a model
name or an inverted range must fail at once, with one message that names every wrong field
(`pairs[1].student`), the value found and what is allowed. The YAML is read with a safe
loader (no tags that import or call code, no duplicate keys) and every name that becomes a
path is checked or sanitised so that no spec can write outside its storage folder.

Structure and ranges are checked by pydantic; names (models, datasets, recipes, methods) and
search options are checked against the project's own registries, imported lazily so that
this module stays cheap to import (it imports neither torch nor Ray; the registry look-ups do
import torch, which the CLI process has anyway).

Semantics worth knowing:
- `recipe` overrides the protocol's recipe for every stage; `teachers.recipe` is applied on top
  of it for teachers only; `distill.epochs` (when set) replaces the epochs for distillation;
  `search.epochs` is the search length.
- `randint: [lo, hi]` includes `hi` (Tune's own `randint` excludes it; `tune_space` adds 1).
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Annotated, Callable, Iterable, Literal, Mapping

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dfa_ray.errors import ConfigError
from dfa_ray.names import safe_name  # noqa: F401  (re-exported: callers import it from here)

# --- limits: anything beyond them is a typo or a hostile file, not a study ----------------
MAX_EPOCHS = 100_000
MAX_SAMPLES = 100_000
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_ABS_NUMBER = 1e12  # bound on search-range endpoints
MAX_CHOICES = 1_000
MAX_SPEC_BYTES = 1 << 20  # 1 MiB of YAML
MAX_NODES = 100_000  # containers + items after alias expansion ("billion laughs")
MAX_DEPTH = 32

NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
NAME_RULE = (
    "1-64 characters from A-Z a-z 0-9 _ . -, not starting with '.' "
    "(it names the folder <storage>/<name>, so no '/' and no '..')"
)
DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")
METRIC_MODES = {"val_acc": "max"}
_OPTION_FIELD = re.compile(r"search option (\w+)=")
_METHOD_OPTION = re.compile(r"option (\w+)=|unknown option\(s\) (\w+)")
_RECIPE_FIELD = re.compile(r"recipe field '([^']+)'|recipe '[^']*': (\w+) = ")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_:+-]+$")


# --- lazy registry look-ups (the registries import torch) ---------------------------------
def _model_names() -> list[str]:
    from dfa_ray.models import MODELS

    return MODELS.names()


def _dataset_names() -> list[str]:
    from dfa_ray.data import DATASETS

    return DATASETS.names()


def _recipe_names() -> list[str]:
    from dfa_ray.engine.recipes import RECIPES

    return RECIPES.names()


def _build_recipe(protocol: str, overrides: Mapping[str, Any]) -> Any:
    from dfa_ray.engine.recipes import get_recipe

    return get_recipe(protocol, dict(overrides))


def _method_names() -> list[str]:
    from dfa_ray.engine.methods import METHODS

    return METHODS.names()


def _search_options_cls() -> Any:
    from dfa_ray.dfa.options import SearchOptions

    return SearchOptions


def _reference_kinds() -> tuple[str, ...]:
    from dfa_ray.dfa.genotype import REFERENCE_KINDS

    return tuple(REFERENCE_KINDS)


def _method_options_error(method: str, options: Mapping[str, Any]) -> str | None:
    """The methods module's own check of a method's options (defaults, types, ranges)."""
    from dfa_ray.engine.methods import resolve_options

    try:
        resolve_options(method.split(":", 1)[0], dict(options))
    except (ConfigError, TypeError, ValueError) as exc:
        return str(exc)
    return None


def allowed_methods() -> list[str]:
    """Registered distillation methods plus the reference genotypes `dfa:<last|average|random>`."""
    names = _method_names()
    refs = [f"dfa:{g}" for g in _reference_kinds()] if "dfa" in names else []
    return names + refs


# --- problems found by cross-field checks, reported with their own sub-paths ---------------
class _Problems:
    """Collects (sub-path, message, value) and raises them as one pydantic error."""

    _NO_VALUE = object()

    def __init__(self) -> None:
        self.items: list[tuple[tuple[str | int, ...], str, str | None]] = []

    def add(self, path: Iterable[str | int], message: str, value: Any = _NO_VALUE) -> None:
        got = None if value is self._NO_VALUE else _short(value)
        self.items.append((tuple(path), message, got))

    def raise_if_any(self) -> None:
        if self.items:
            raise PydanticCustomError(
                "spec_problems", "{count} problem(s)", {"count": len(self.items), "problems": self.items}
            )


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _suggest(value: Any, valid: list[str]) -> str:
    close = difflib.get_close_matches(str(value), valid, n=1) if isinstance(value, str) else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(what: str, value: Any, valid: list[str], plural: str, quote: bool = False) -> str:
    """`unknown method (did you mean 'kd'?); valid methods: a, b, c`."""
    named = f" {value!r}" if quote else ""
    return f"unknown {what}{named}{_suggest(value, valid)}; valid {plural}: {', '.join(valid)}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_scalar_map(value: dict[str, Any]) -> dict[str, Any]:
    """Option maps hold YAML scalars or flat lists of them (e.g. a normalisation name)."""
    for key, v in value.items():
        items = v if isinstance(v, list) else [v]
        for item in items:
            if item is not None and not isinstance(item, (bool, int, float, str)):
                raise ValueError(
                    f"option {key!r} must be a number, string, boolean, null or a flat list of them"
                )
    return value


# --- field types ----------------------------------------------------------------------------
Epochs = Annotated[int, Field(strict=True, ge=1, le=MAX_EPOCHS)]
Seed = Annotated[int, Field(strict=True, ge=0, le=MAX_SEED)]
Str = Annotated[str, Field(strict=True, min_length=1, max_length=256)]
Bool = Annotated[bool, Field(strict=True)]
Options = Annotated[dict[Str, Any], Field(strict=True, max_length=256)]


class _Spec(BaseModel):
    """Base of every spec section: frozen, no unknown keys (refused with the allowed list)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        # Unknown keys are left to extra="forbid" (so they are reported beside every other
        # problem); the formatter adds the allowed keys.
        if data is None:
            return {}  # `search:` with every line commented out: the defaults
        if not isinstance(data, (dict, BaseModel)):
            raise PydanticCustomError(
                "mapping_type",
                "expected a mapping with keys {allowed}",
                {"allowed": ", ".join(cls.model_fields)},
            )
        return data


class DataSpec(_Spec):
    name: Str = "digits"
    root: Str | None = None  # None: the dataset's default root; relative: from the current dir
    options: Options = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        valid = _dataset_names()
        if v not in valid:
            raise ValueError(f"unknown dataset {v!r}{_suggest(v, valid)}; valid datasets: {', '.join(valid)}")
        return v

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, v: str | None) -> str | None:
        # Ray trials run in their own working directory: a relative root must be fixed now.
        return None if v is None else os.path.abspath(os.path.expanduser(v))

    @field_validator("options")
    @classmethod
    def _scalar_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_scalar_map(v)


class TeachersSpec(_Spec):
    """`from`: `train` (default: train each teacher, or take it from the store when trained
    before), `imported` (the teacher of each model imported into the store by `dfa-ray
    import-teacher`), or `{model: folder}` for the models listed (a folder of the store or an
    absolute path; the others are trained)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    seed: Seed = 0
    recipe: Options = Field(default_factory=dict)  # teacher-only recipe overrides
    from_: Str | Annotated[dict[Str, Str], Field(strict=True, max_length=1000)] = Field(default="train", alias="from")

    @field_validator("from_", mode="before")
    @classmethod
    def _teacher_source(cls, v: Any) -> Any:
        # one message for every wrong form (pydantic would give one per member of the union)
        form = "train, imported, or a mapping {model: teacher folder (in the store, or absolute)}"
        if isinstance(v, str) and v not in ("train", "imported"):
            raise ValueError(f"must be {form}")
        if isinstance(v, dict):
            bad = [k for k, f in v.items() if not isinstance(k, str) or not isinstance(f, str) or not f]
            if bad:
                raise ValueError(f"{bad[0]!r}: the teacher folder must be a string; the field is {form}")
            valid = _model_names()
            unknown = [k for k in v if k not in valid]
            if unknown:
                raise ValueError(_unknown("model", unknown[0], valid, "models", quote=True))
        elif not isinstance(v, str):
            raise ValueError(f"must be {form}")
        return v

    @model_serializer(mode="wrap")
    def _from_by_its_yaml_name(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        out["from"] = out.pop("from_")
        return out


class PairSpec(_Spec):
    teacher: Str
    student: Str

    @field_validator("teacher", "student")
    @classmethod
    def _known_model(cls, v: str) -> str:
        valid = _model_names()
        if v not in valid:
            raise ValueError(f"unknown model {v!r}{_suggest(v, valid)}; valid models: {', '.join(valid)}")
        return v

    @model_validator(mode="after")
    def _two_models(self) -> "PairSpec":
        if self.teacher == self.student:
            raise ValueError(
                f"teacher and student are the same model {self.teacher!r}; "
                "a pair needs two different models"
            )
        return self

    @property
    def name(self) -> str:
        """`teacher->student`, as stored in the results' `pair` column."""
        return f"{self.teacher}->{self.student}"

    @property
    def dir_name(self) -> str:
        return safe_name(self.name)


class Distribution(BaseModel):
    """One searched option, written in YAML as `{kind: [args]}`, e.g. `{loguniform: [0.1, 10]}`.

    choice / grid: a list of values; uniform / loguniform: [lo, hi] (floats, lo < hi, loguniform
    lo > 0); randint: [lo, hi] integers, **hi included**.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["choice", "grid", "uniform", "loguniform", "randint"]
    values: tuple[Any, ...]

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, data: Any) -> Any:
        if isinstance(data, Distribution):
            return data
        form = "one of {choice: [...]}, {grid: [...]}, {uniform: [lo, hi]}, {loguniform: [lo, hi]}, {randint: [lo, hi]}"
        if isinstance(data, dict) and set(data) == {"kind", "values"}:
            kind, values = data["kind"], data["values"]
        elif isinstance(data, dict) and len(data) == 1:
            ((kind, values),) = data.items()
        else:
            raise ValueError(f"a searched option is {form}")
        if kind not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {kind!r}; allowed: {', '.join(DISTRIBUTIONS)}")
        if not isinstance(values, (list, tuple)):
            example = "[a, b, c]" if kind in ("choice", "grid") else "[lo, hi]"
            raise ValueError(f"{kind} takes a list, e.g. {{{kind}: {example}}}")
        values = tuple(values)
        if kind in ("choice", "grid"):
            if not 1 <= len(values) <= MAX_CHOICES:
                raise ValueError(f"{kind} needs 1 to {MAX_CHOICES} values")
            for v in values:
                items = v if isinstance(v, list) else [v]
                if not all(i is None or isinstance(i, (bool, str)) or _is_number(i) for i in items):
                    raise ValueError(
                        f"{kind} values must be numbers, strings, booleans or flat lists of them, got {v!r}"
                    )
            return {"kind": kind, "values": values}
        if len(values) != 2:
            raise ValueError(f"{kind} takes exactly two numbers [lo, hi]")
        lo, hi = values
        if kind == "randint":
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ValueError("randint bounds must be integers [lo, hi] (hi included)")
        elif not all(_is_number(v) for v in values):
            raise ValueError(f"{kind} bounds must be finite numbers [lo, hi]")
        if any(abs(v) > MAX_ABS_NUMBER for v in values):
            raise ValueError(f"{kind} bounds must be within +-{MAX_ABS_NUMBER:g}")
        if not lo < hi:
            raise ValueError(f"{kind} needs lo < hi")
        if kind == "loguniform" and lo <= 0:
            raise ValueError("loguniform needs 0 < lo < hi")
        if kind != "randint":
            values = (float(lo), float(hi))
        return {"kind": kind, "values": values}

    @model_serializer
    def _to_yaml(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}

    def endpoints(self) -> tuple[Any, ...]:
        """Values a sample can take at the extremes (choices: all of them), for validation."""
        return self.values


class SchedulerSpec(_Spec):
    # sha: synchronous successive halving (decisions depend only on the metrics: the same spec
    # gives the same winners twice); asha: asynchronous (keeps a big cluster busy, but which
    # trials survive depends on which reported first); fifo: no pruning
    type: Literal["sha", "asha", "fifo"] = "sha"
    # epochs before the first rung (the first pruning decision); None: the first group's share
    # of a groupwise search, ceil(search.epochs / groups) (1 for a joint search)
    grace_period: Epochs | None = None
    reduction_factor: Annotated[float, Field(strict=True, gt=1, le=100, allow_inf_nan=False)] = 2.0
    # A groupwise search spends its first epochs on the first group alone; a rung before those
    # epochs are over compares trials on lambda only. Refused unless this says it is wanted.
    early_rungs: Bool = False


class SearchSpec(_Spec):
    enabled: Bool = True
    epochs: Epochs = 6
    options: Options = Field(default_factory=dict)  # fixed SearchOptions fields
    space: Annotated[dict[Str, Distribution], Field(strict=True, max_length=256)] = Field(default_factory=dict)
    num_samples: Annotated[int, Field(strict=True, ge=1, le=MAX_SAMPLES)] = 1
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    searcher: Literal["random", "optuna"] = "random"
    metric: Literal["val_acc"] = "val_acc"
    seed: Seed = 0

    @property
    def mode(self) -> str:
        return METRIC_MODES[self.metric]

    @model_validator(mode="after")
    def _check_options(self) -> "SearchSpec":
        problems = _Problems()
        cls = _search_options_cls()
        valid = cls.field_names()
        fixed_ok = True
        for key in self.options:
            if key not in valid:
                problems.add(("options", key), _unknown("search option", key, valid, "options"))
                fixed_ok = False
        if fixed_ok:
            err = _search_options_error(cls, self.options)
            if err:
                m = _OPTION_FIELD.search(err)
                if m and m.group(1) in self.options:
                    problems.add(("options", m.group(1)), err, self.options[m.group(1)])
                else:
                    problems.add(("options",), err)
                fixed_ok = False
        for key, dist in self.space.items():
            if key not in valid:
                problems.add(("space", key), _unknown("search option", key, valid, "options"))
                continue
            if key in self.options:
                problems.add(("space", key), "is also fixed in search.options; keep it in one of the two")
                continue
            if not fixed_ok:
                continue
            for value in dist.endpoints():
                err = _search_options_error(cls, {**self.options, key: value})
                if err:
                    problems.add(("space", key), f"value {value!r} of the {dist.kind} is invalid: {err}")
                    break
        if self.searcher == "optuna":
            if not self.space:
                problems.add(("space",), "searcher optuna needs at least one searched option (or use searcher: random)")
            for key, dist in self.space.items():
                if dist.kind == "grid":
                    problems.add(
                        ("space", key), "grid is not supported by searcher optuna; use choice, or searcher: random"
                    )
        grid = 1
        for dist in self.space.values():
            if dist.kind == "grid":
                grid *= len(dist.values)
        if grid * self.num_samples > MAX_SAMPLES:
            problems.add(
                ("num_samples",), f"grid size {grid} x num_samples must be at most {MAX_SAMPLES} trials", self.num_samples
            )
        grace = self.scheduler.grace_period
        if self.scheduler.type in ("asha", "sha") and grace is not None and grace > self.epochs:
            problems.add(
                ("scheduler", "grace_period"),
                f"must be at most search.epochs ({self.epochs})",
                self.scheduler.grace_period,
            )
        problems.raise_if_any()
        return self

    def search_options(self, sampled: Mapping[str, Any] | None = None) -> Any:
        """The `SearchOptions` of one trial: the fixed options plus its sampled values."""
        return _search_options_cls().from_dict({**self.options, **(sampled or {})})


def _search_options_error(cls: Any, options: Mapping[str, Any]) -> str | None:
    try:
        cls.from_dict(dict(options))
    except (ConfigError, TypeError, ValueError) as exc:
        return str(exc)
    return None


class GenotypeSourceSpec(_Spec):
    """Where `dfa` takes its genotype instead of this sweep's own search (genotype transfer,
    the paper's DFA-T: search on one dataset, distil on another). One of:
    `file`: a genotype JSON file (single-pair sweeps); `sweep`: another sweep's folder, or its
    name under this spec's storage, whose genotypes/<pair>.json is used for each pair (`pair`
    picks one pair's genotype for all, e.g. when the source sweep named it differently).
    The files are checked when the sweep starts, before any compute (the source sweep may
    not have run yet when a spec is validated)."""

    file: Str | None = None
    sweep: Str | None = None
    pair: Str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "GenotypeSourceSpec":
        if (self.file is None) == (self.sweep is None):
            raise ValueError("give exactly one of file (a genotype JSON) or sweep (another sweep's folder)")
        if self.file is not None and self.pair is not None:
            raise ValueError("pair goes with sweep, not with file")
        return self

    def path_for(self, pair_dir_name: str, storage: Path) -> Path:
        """The genotype file used for the pair whose folder name is `pair_dir_name`."""
        if self.file is not None:
            return Path(os.path.abspath(os.path.expanduser(self.file)))
        name = safe_name(self.pair) if self.pair is not None else pair_dir_name
        sweep = Path(os.path.expanduser(self.sweep))
        return (sweep if sweep.is_absolute() else storage / sweep) / "genotypes" / f"{name}.json"


class DistillSpec(_Spec):
    enabled: Bool = True
    methods: Annotated[tuple[Str, ...], Field(min_length=1, max_length=64)] = ("vanilla", "kd", "fitnet", "at", "dfa")
    seeds: Annotated[tuple[Seed, ...], Field(min_length=1, max_length=1000)] = (0,)
    epochs: Epochs | None = None  # None: the recipe's epochs
    options: Annotated[dict[Str, Options], Field(strict=True, max_length=64)] = Field(default_factory=dict)
    genotype_from: GenotypeSourceSpec | None = None  # None: this sweep's own search

    @model_validator(mode="after")
    def _check_names(self) -> "DistillSpec":
        problems = _Problems()
        valid = allowed_methods()
        seen: dict[str, int] = {}
        for i, method in enumerate(self.methods):
            if method not in valid:
                problems.add(("methods", i), _unknown("method", method, valid, "methods"), method)
            elif method in seen:
                problems.add(("methods", i), f"duplicate of methods[{seen[method]}]", method)
            seen.setdefault(method, i)
        seen_seeds: dict[int, int] = {}
        for i, seed in enumerate(self.seeds):
            if seed in seen_seeds:
                problems.add(("seeds", i), f"duplicate of seeds[{seen_seeds[seed]}]", seed)
            seen_seeds.setdefault(seed, i)
        for method, opts in self.options.items():
            if method not in valid:
                problems.add(("options", method), "options for an " + _unknown("method", method, valid, "methods"))
                continue
            try:
                _check_scalar_map(opts)
            except ValueError as exc:
                problems.add(("options", method), str(exc))
                continue
            err = _method_options_error(method, opts)
            if err:
                m = _METHOD_OPTION.search(err)
                key = m and (m.group(1) or m.group(2))
                if key in opts:
                    problems.add(("options", method, key), err, opts[key])
                else:
                    problems.add(("options", method), err)
        problems.raise_if_any()
        return self


class ResourcesSpec(_Spec):
    cpu: Annotated[float, Field(strict=True, gt=0, le=1024, allow_inf_nan=False)] = 1.0
    gpu: Annotated[float, Field(strict=True, ge=0, le=64, allow_inf_nan=False)] = 0.0
    max_concurrent: Annotated[int, Field(strict=True, ge=1, le=MAX_SAMPLES)] | None = None  # None: as resources allow
    max_failures: Annotated[int, Field(strict=True, ge=0, le=1000)] = 2

    @field_validator("gpu")
    @classmethod
    def _gpu_fraction_or_whole(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError("gpu per trial is a fraction in [0, 1] or a whole number of GPUs >= 1")
        return v


class FastSpec(_Spec):
    """The fast-path switches of every trial (`dfa_ray.engine.runtime.FastPath`).

    Each is true, false or null; null means auto, on where the hardware supports it:
    channels_last on CUDA and the CPU, bf16 and cudnn_benchmark on CUDA (bf16 where the GPU
    has it). `compile` (torch.compile) is off unless asked for: it costs minutes of
    compilation per trial, worth it only for long trials. The search always runs in fp32
    (see `engine.search`), whatever `bf16` says.
    """

    channels_last: Bool | None = None
    bf16: Bool | None = None
    compile: Bool | None = False
    cudnn_benchmark: Bool | None = None

    @field_validator("channels_last", "bf16", "compile", "cudnn_benchmark", mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, bool):
            raise ValueError("expected true, false or null (null: auto, on where the hardware supports it)")
        return v


class SweepSpec(_Spec):
    """A validated sweep. Build it with `load_spec` or `parse_spec`; every field is read-only."""

    name: Str
    storage: Path = Field(default="./runs", validate_default=True)  # absolute after validation
    data: DataSpec = Field(default_factory=DataSpec)
    protocol: Str = "quick"
    recipe: Options = Field(default_factory=dict)
    teachers: TeachersSpec = Field(default_factory=TeachersSpec)
    pairs: Annotated[tuple[PairSpec, ...], Field(min_length=1, max_length=1000)]
    search: SearchSpec = Field(default_factory=SearchSpec)
    distill: DistillSpec = Field(default_factory=DistillSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    fast: FastSpec = Field(default_factory=FastSpec)
    # Plug-in modules (dfa_ray.plugins): imported by the driver before validation and by every
    # trial process before it builds anything.
    plugins: Annotated[tuple[Annotated[str, Field(strict=True, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
                                                  max_length=256)], ...], Field(max_length=64)] = ()

    @field_validator("name")
    @classmethod
    def _safe_sweep_name(cls, v: str) -> str:
        if not NAME_RE.match(v) or v in (".", ".."):
            raise ValueError(f"the sweep name must be {NAME_RULE}")
        return v

    @field_validator("storage", mode="before")
    @classmethod
    def _absolute_storage(cls, v: Any) -> Any:
        if isinstance(v, Path):
            v = str(v)
        if not isinstance(v, str) or not v.strip():
            raise ValueError("storage must be a non-empty folder path")
        if "\x00" in v:
            raise ValueError("storage must not contain a NUL character")
        if "://" in v:
            raise ValueError(
                "storage must be a local or shared-filesystem folder (results are written "
                "with plain file operations); URIs such as s3://... are not supported"
            )
        return Path(os.path.abspath(os.path.expanduser(v)))

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, v: str) -> str:
        valid = _recipe_names()
        if v not in valid:
            raise ValueError(_unknown("protocol (recipe)", v, valid, "protocols", quote=True))
        return v

    @field_validator("recipe")
    @classmethod
    def _valid_recipe(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "protocol" in info.data:
            problems = _Problems()
            _check_recipe(problems, info.data["protocol"], (), {}, v)
            problems.raise_if_any()
        return v

    @field_validator("teachers")
    @classmethod
    def _valid_teacher_recipe(cls, v: TeachersSpec, info: ValidationInfo) -> TeachersSpec:
        if "protocol" in info.data and "recipe" in info.data:
            problems = _Problems()
            _check_recipe(problems, info.data["protocol"], ("recipe",), info.data["recipe"], v.recipe)
            problems.raise_if_any()
        return v

    @field_validator("pairs")
    @classmethod
    def _distinct_pairs(cls, v: tuple[PairSpec, ...]) -> tuple[PairSpec, ...]:
        problems = _Problems()
        seen: dict[str, int] = {}
        for i, pair in enumerate(v):
            if pair.name in seen:
                problems.add((i,), f"duplicate of pairs[{seen[pair.name]}]", pair.name)
            seen.setdefault(pair.name, i)
        problems.raise_if_any()
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "SweepSpec":
        warmup = _largest_warmup(self.search)
        if self.search.enabled and warmup >= self.search.epochs:
            where = ("search", "space", "warmup_epochs") if "warmup_epochs" in self.search.space else \
                ("search", "options", "warmup_epochs")
            raise PydanticCustomError(
                "spec_problems", "warm-up", {"problems": [(where, f"a warm-up of {warmup} epoch(s) leaves none of "
                                                                  f"the {self.search.epochs} search epochs to search "
                                                                  "beta; make it smaller than search.epochs", warmup)]},
            )
        early = _early_rung_problem(self)
        if early is not None:
            raise PydanticCustomError(
                "spec_problems", "early rung", {"problems": [(("search", "scheduler", "grace_period"), early,
                                                              self.search.scheduler.grace_period)]},
            )
        transfer = self.distill.genotype_from
        if transfer is not None and transfer.file is not None and len(self.pairs) > 1:
            problems = _Problems()
            problems.add(("distill", "genotype_from", "file"),
                         "one genotype file serves one pair; with several pairs use sweep: <folder>", transfer.file)
            problems.raise_if_any()
        if (self.distill.enabled and "dfa" in self.distill.methods and not self.search.enabled
                and self.distill.genotype_from is None):
            raise PydanticCustomError(
                "spec_problems",
                "dfa needs the search",
                {"problems": [(
                    ("distill", "methods"),
                    "method 'dfa' distils with the searched genotype, but search.enabled is false; "
                    "enable the search or use dfa:last, dfa:average, dfa:random",
                    None,
                )]},
            )
        return self

    # --- derived values -------------------------------------------------------------------
    @property
    def sweep_dir(self) -> Path:
        """`<storage>/<name>`: the sweep's Tune experiments and its results."""
        return self.storage / self.name

    @property
    def teacher_store(self) -> Path:
        """`<storage>/teachers`: trained teachers, shared by every sweep of this storage."""
        return self.storage / "teachers"

    @property
    def teacher_names(self) -> list[str]:
        """The distinct teachers of all pairs, in order of first appearance."""
        return list(dict.fromkeys(p.teacher for p in self.pairs))

    def teacher_recipe_overrides(self) -> dict[str, Any]:
        return {**self.recipe, **self.teachers.recipe}

    def distill_recipe_overrides(self) -> dict[str, Any]:
        out = dict(self.recipe)
        if self.distill.epochs is not None:
            out["epochs"] = self.distill.epochs
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML data; `parse_spec(spec.to_dict())` gives back an equal spec."""
        return self.model_dump(mode="json")


def _student_groups(name: str) -> int:
    """The student's number of layer groups (= its paired groups), without allocating weights."""
    import torch

    from dfa_ray.models import create_model

    with torch.device("meta"):
        return create_model(name, num_classes=10).num_groups


def _largest_warmup(search: "SearchSpec") -> int:
    """The longest warm-up (epochs before beta moves) a trial of this search can have."""
    if "warmup_epochs" in search.space:
        return max(search.space["warmup_epochs"].endpoints())
    return search.options.get("warmup_epochs", 0)


def _schedules(search: "SearchSpec") -> set[str]:
    """The search schedules (groupwise, joint) the trials of this search can have."""
    if "schedule" in search.space:
        return set(search.space["schedule"].endpoints())
    return {search.options.get("schedule", "groupwise")}


def _first_group_done(spec: "SweepSpec") -> float | None:
    """Epochs after which every pair's groupwise search has finished its first group; for a
    joint search, the first epoch that moves beta after a warm-up (None without a warm-up)."""
    s = spec.search
    schedules = _schedules(s)
    # a warm-up (the largest the space allows) comes before any group is searched
    warmup = _largest_warmup(s)
    if "groupwise" not in schedules:
        # joint: every group moves from the first epoch after the warm-up
        return float(warmup + 1) if warmup > 0 else None
    # the pair with the fewest groups gives each group the most epochs: its first group ends last
    return warmup + (s.epochs - warmup) / min(_student_groups(p.student) for p in spec.pairs)


def first_rung(spec: "SweepSpec") -> int:
    """The grace period the search's scheduler uses: the spec's, else the first group's share."""
    grace = spec.search.scheduler.grace_period
    if grace is not None:
        return grace
    done = _first_group_done(spec)
    return max(1, min(spec.search.epochs, math.ceil(done))) if done is not None else 1


def _early_rung_problem(spec: "SweepSpec") -> str | None:
    """A pruning rung (asha/sha) before the first group's share of a groupwise search is over."""
    s = spec.search
    if not s.enabled or s.scheduler.type == "fifo" or s.scheduler.early_rungs or s.scheduler.grace_period is None:
        return None
    first_group_done = _first_group_done(spec)
    if first_group_done is None or s.scheduler.grace_period >= first_group_done:
        return None
    warmup = _largest_warmup(s)
    if "groupwise" not in _schedules(s):
        return (f"the first rung ({s.scheduler.grace_period} epoch(s)) comes before beta has been searched for an "
                f"epoch ({warmup:g} warm-up epoch(s) + 1): pruning would compare trials on lambda alone; set "
                f"grace_period >= {math.ceil(first_group_done)}, or search.scheduler.early_rungs: true if that is "
                f"what you want")
    groups = min(_student_groups(p.student) for p in spec.pairs)
    share = f"{s.epochs} epochs / {groups} groups" if warmup == 0 else \
        f"{warmup:g} warm-up + {s.epochs - warmup:g} epochs / {groups} groups"
    return (f"the first rung ({s.scheduler.grace_period} epoch(s)) comes before the first group's search is over "
            f"({share} = {first_group_done:g}): a groupwise search has then moved "
            f"only the first group's weights, so pruning would compare trials on lambda alone; set grace_period "
            f">= {math.ceil(first_group_done)}, or search.scheduler.early_rungs: true if that is what you want")


def _check_recipe(
    problems: _Problems,
    protocol: str,
    path: tuple[str, ...],
    base: Mapping[str, Any],
    overrides: Mapping[str, Any],
) -> None:
    """Validate recipe overrides on top of `base`; the path names the field the error names."""
    for key, value in overrides.items():
        if key == "epochs" and _is_number(value) and value > MAX_EPOCHS:
            problems.add((*path, key), f"must be at most {MAX_EPOCHS}", value)
            return
    try:
        _build_recipe(protocol, {**base, **overrides})
    except (ConfigError, TypeError, ValueError, OverflowError) as exc:
        message = str(exc)
        m = _RECIPE_FIELD.search(message)
        key = m and (m.group(1) or m.group(2))
        if key in overrides:
            problems.add((*path, key), message, overrides[key])
        else:
            problems.add(path, message)


# --- errors -----------------------------------------------------------------------------
def _path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":  # pydantic's marker: the error is about the key itself
            out += " (key)"
        elif _PLAIN_KEY.match(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{_short(part, 40)}]"
    return out or "(top level)"


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional from a type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The spec section (model class) at an error location, to list its allowed keys."""
    tp: Any = SweepSpec
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) in (tuple, list, dict):
            tp = typing.get_args(tp)[-1] if typing.get_origin(tp) is dict else typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


_FRIENDLY = {  # pydantic's words for YAML's types
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
}


def _problem_lines(exc: ValidationError) -> list[str]:
    lines = []
    errors = exc.errors(include_url=False)
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "too_short" and any(
            len(other["loc"]) > len(loc) and tuple(other["loc"][: len(loc)]) == loc for other in errors
        ):
            continue  # "too few items" only because some items were invalid: those are reported
        ctx = err.get("ctx") or {}
        kind = err["type"]
        if kind == "spec_problems":
            for sub, message, got in ctx["problems"]:
                lines.append(f"{_path(loc + tuple(sub))}: {message}" + (f" (got {got})" if got is not None else ""))
        elif kind == "extra_forbidden":
            model = _model_at(loc[:-1])
            allowed = ", ".join(f.alias or n for n, f in model.model_fields.items()) if model else "see the documentation"
            lines.append(f"{_path(loc)}: unknown key {_short(loc[-1], 40)}; allowed keys: {allowed}")
        elif kind in ("too_short", "too_long"):
            bound = "at least" if kind == "too_short" else "at most"
            limit = ctx.get("min_length" if kind == "too_short" else "max_length")
            lines.append(f"{_path(loc)}: must have {bound} {limit} item(s) (got {_short(err.get('input'))})")
        elif kind == "missing":
            lines.append(f"{_path(loc)}: required field is missing")
        else:
            msg = _FRIENDLY.get(kind) or err["msg"].removeprefix("Value error, ")
            lines.append(f"{_path(loc)}: {msg} (got {_short(err.get('input'))})")
    return lines


def _spec_error(source: str, lines: list[str]) -> ConfigError:
    return ConfigError(f"invalid sweep spec {source}:\n  " + "\n  ".join(lines))


# --- YAML ---------------------------------------------------------------------------------
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.2 core-schema numbers. PyYAML resolves YAML 1.1, where `3e-4` and `1e2` (no dot) are
# strings, `012` is octal and `1:30` is the integer 90; every ML researcher writes `5e-4`.
_YAML12_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_YAML12_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _SpecLoader(yaml.SafeLoader):
    """The safe loader with YAML 1.2 numbers, refusing duplicate keys (a second `search:`
    silently replacing the first)."""

    # A copy of SafeLoader's resolvers without its YAML 1.1 int/float rules (booleans, null and
    # the rest stay as they are); the 1.2 rules are added below, int before float so `1` is an int.
    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in rules if tag not in (_INT_TAG, _FLOAT_TAG)]
        for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_yaml12_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        try:
            if text.startswith(("0x", "0o")):
                return int(text[2:], 16 if text[1] == "x" else 8)
            return int(text, 10)  # `012` is twelve in YAML 1.2
        except ValueError:  # more digits than Python converts (4300): no spec value is that long
            raise yaml.constructor.ConstructorError(
                None, None, f"the integer {text[:20]}... has {len(text)} digits", node.start_mark) from None

    def construct_yaml12_float(self, node: yaml.ScalarNode) -> float:
        text = str(self.construct_scalar(node)).lower()
        if text.endswith(".inf"):
            return -math.inf if text.startswith("-") else math.inf
        return math.nan if text == ".nan" else float(text)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_SpecLoader.add_implicit_resolver(_INT_TAG, _YAML12_INT, list("-+0123456789"))
_SpecLoader.add_implicit_resolver(_FLOAT_TAG, _YAML12_FLOAT, list("-+.0123456789"))
_SpecLoader.add_constructor(_INT_TAG, _SpecLoader.construct_yaml12_int)
_SpecLoader.add_constructor(_FLOAT_TAG, _SpecLoader.construct_yaml12_float)


def yaml_value(text: str) -> Any:
    """One value as a spec would read it (YAML 1.2 numbers, safe loader): for `--set k=v`."""
    return yaml.load(text, Loader=_SpecLoader)  # noqa: S506  (_SpecLoader is a SafeLoader)


def _check_size(data: Any) -> str | None:
    """Refuse deeply nested or alias-exploded input before pydantic walks it."""
    stack = [(data, 0)]
    count = 0
    while stack:
        obj, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            return f"the spec has more than {MAX_NODES} values (YAML aliases included)"
        if depth > MAX_DEPTH:
            return f"the spec is nested deeper than {MAX_DEPTH} levels"
        if isinstance(obj, dict):
            stack.extend((v, depth + 1) for v in obj.values())
            stack.extend((k, depth + 1) for k in obj.keys())
        elif isinstance(obj, (list, tuple)):
            stack.extend((v, depth + 1) for v in obj)
    return None


def _read_yaml(path: Path) -> Any:
    if not path.exists():
        raise ConfigError(f"spec file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"spec file {path} is not a file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"spec file {path} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise ConfigError(f"spec file {path} is {len(raw)} bytes; a spec is at most {MAX_SPEC_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"spec file {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_SpecLoader)  # noqa: S506  (_SpecLoader is a SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or str(exc)
        if "could not determine a constructor for the tag" in problem:
            problem = (
                f"{problem.split('tag', 1)[1].strip()} is a YAML tag that builds objects; specs are "
                "plain YAML (read with a safe loader): remove the tag"
            )
        raise ConfigError(f"invalid YAML in spec file {where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in spec file {path}: {exc}") from None


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of `data` with dotted keys set: `search.epochs`, `pairs.0.student` (or `pairs[0]`)."""
    out = copy.deepcopy(dict(data))
    for key, value in (overrides or {}).items():
        parts = str(key).replace("[", ".").replace("]", "").split(".")
        if not all(parts):
            raise ConfigError(f"override {key!r}: expected dotted keys such as search.epochs or pairs.0.student")
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"override {key!r}: {'.'.join(parts[:i]) or 'the spec'} is a list of "
                        f"{len(node)}; use an index 0..{len(node) - 1}"
                    )
                idx: Any = int(part)
            elif isinstance(node, dict):
                idx = part
            else:
                raise ConfigError(f"override {key!r}: {'.'.join(parts[:i])} is not a mapping or list")
            if last:
                node[idx] = copy.deepcopy(value)
            else:
                if isinstance(node, dict) and (idx not in node or node[idx] is None):
                    node[idx] = {}
                node = node[idx]
    return out


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    """Validate plain data (a dict from YAML or JSON) into a SweepSpec; ConfigError otherwise."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid sweep spec {source}: expected a mapping with keys "
            f"{', '.join(SweepSpec.model_fields)} (got {_short(data)})"
        )
    too_big = _check_size(data)
    if too_big:
        raise ConfigError(f"invalid sweep spec {source}: {too_big}")
    _import_plugins(data.get("plugins"), source)
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(source, _problem_lines(exc)) from None


def _import_plugins(plugins: Any, source: str) -> None:
    """Import the spec's plug-ins before validation, so that `pairs` may name their models.
    A `plugins` that is not a list of names is left to the validator to report."""
    if isinstance(plugins, (list, tuple)) and all(isinstance(p, str) for p in plugins):
        from dfa_ray.plugins import import_plugins

        try:
            import_plugins(plugins, where="plugins")
        except ConfigError as exc:
            raise _spec_error(source, [str(exc)]) from None


def load_spec(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    storage: str | None = None,
) -> SweepSpec:
    """Read a YAML spec, apply dotted `overrides` (`--set`) and `storage` (`--storage`), validate."""
    path = Path(path)
    data = _read_yaml(path)
    if data is None:
        raise ConfigError(f"spec file {path} is empty; a spec needs at least `name` and `pairs`")
    if not isinstance(data, dict):
        raise ConfigError(
            f"spec file {path} must hold a YAML mapping (name: ..., pairs: ...), not a {type(data).__name__}"
        )
    if overrides:
        data = apply_overrides(data, overrides)
    if storage is not None:
        data["storage"] = storage
    return parse_spec(data, source=str(path))


# --- Tune -------------------------------------------------------------------------------
def tune_space(space: Mapping[str, Distribution | Mapping[str, Any]]) -> dict[str, Any]:
    """Map a spec's search space to Ray Tune sample objects (imports ray here, nowhere else).

    choice -> tune.choice, grid -> tune.grid_search, uniform -> tune.uniform, loguniform ->
    tune.loguniform, randint [lo, hi] -> tune.randint(lo, hi + 1) (the spec's hi is included,
    Tune's upper bound is not).
    """
    from ray import tune

    makers: dict[str, Callable[[tuple[Any, ...]], Any]] = {
        "choice": lambda v: tune.choice(list(v)),
        "grid": lambda v: tune.grid_search(list(v)),
        "uniform": lambda v: tune.uniform(v[0], v[1]),
        "loguniform": lambda v: tune.loguniform(v[0], v[1]),
        "randint": lambda v: tune.randint(v[0], v[1] + 1),
    }
    out: dict[str, Any] = {}
    for key, entry in space.items():
        if not isinstance(entry, Distribution):
            try:
                entry = Distribution.model_validate(entry)
            except ValidationError as exc:
                raise _spec_error("search space", [f"{key}: {line}" for line in _problem_lines(exc)]) from None
        out[key] = makers[entry.kind](entry.values)
    return out


__all__ = [
    "DataSpec",
    "DistillSpec",
    "Distribution",
    "FastSpec",
    "PairSpec",
    "ResourcesSpec",
    "SchedulerSpec",
    "SearchSpec",
    "SweepSpec",
    "TeachersSpec",
    "allowed_methods",
    "apply_overrides",
    "load_spec",
    "parse_spec",
    "safe_name",
    "tune_space",
]
