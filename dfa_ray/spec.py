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

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Annotated, Literal, Mapping, Sequence

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
from dfa_ray.spec_checks import (  # noqa: F401  (first_rung, allowed_methods: re-exported)
    allowed_methods,
    check_callbacks,
    check_loggers,
    check_method_options,
    check_recipe,
    check_scalar_map,
    check_search_options,
    check_sweep,
    dataset_names,
    first_rung,
    model_names,
    recipe_names,
)
from dfa_ray.spec_errors import Problems, problem_lines, short, spec_error, suggest, unknown
from dfa_ray.spec_space import (  # noqa: F401  (re-exported)
    DISTRIBUTIONS,
    MAX_ABS_NUMBER,
    MAX_CHOICES,
    Distribution,
    tune_space,
)
from dfa_ray.spec_yaml import (  # noqa: F401  (re-exported)
    MAX_DEPTH,
    MAX_NODES,
    MAX_SPEC_BYTES,
    apply_overrides,
    check_size,
    read_yaml,
    yaml_value,
)

if TYPE_CHECKING:
    from dfa_ray.dfa.options import SearchOptions

# --- limits: anything beyond them is a typo or a hostile file, not a study ----------------
MAX_EPOCHS = 100_000
MAX_SAMPLES = 100_000
MAX_SEED = 2**32 - 1  # numpy's seed range

NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
NAME_RULE = (
    "1-64 characters from A-Z a-z 0-9 _ . -, not starting with '.' "
    "(it names the folder <storage>/<name>, so no '/' and no '..')"
)
METRIC_MODES = {"val_acc": "max"}


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
        valid = dataset_names()
        if v not in valid:
            raise ValueError(f"unknown dataset {v!r}{suggest(v, valid)}; valid datasets: {', '.join(valid)}")
        return v

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, v: str | None) -> str | None:
        # Ray trials run in their own working directory: a relative root must be fixed now.
        return None if v is None else os.path.abspath(os.path.expanduser(v))

    @field_validator("options")
    @classmethod
    def _scalar_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_scalar_map(v)


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
            valid = model_names()
            unknown = [k for k in v if k not in valid]
            if unknown:
                raise ValueError(unknown("model", unknown[0], valid, "models", quote=True))
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
        valid = model_names()
        if v not in valid:
            raise ValueError(f"unknown model {v!r}{suggest(v, valid)}; valid models: {', '.join(valid)}")
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
    def trial_count(self) -> int:
        """Trials of one pair's search: num_samples times the size of the grid dimensions."""
        grid = 1
        for dist in self.space.values():
            if dist.kind == "grid":
                grid *= len(dist.values)
        return grid * self.num_samples

    @property
    def mode(self) -> str:
        return METRIC_MODES[self.metric]

    @model_validator(mode="after")
    def _check_options(self) -> "SearchSpec":
        problems = Problems()
        check_search_options(problems, self)
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

    def search_options(self, sampled: Mapping[str, Any] | None = None) -> "SearchOptions":
        """The `SearchOptions` of one trial: the fixed options plus its sampled values."""
        from dfa_ray.dfa.options import SearchOptions

        return SearchOptions.model_validate({**self.options, **(sampled or {})})


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


def split_evenly(items: Sequence[str], most: int | None) -> list[tuple[str, ...]]:
    """`items` in order, as the fewest runs of at most `most` (None: all in one), of near-equal
    length, the first ones one longer: 10 by at most 4 is 4, 3, 3 (not 4, 4, 2, whose last group
    would share its teacher forward among only two)."""
    items = tuple(items)
    if not items:
        return []
    count = 1 if most is None else -(-len(items) // most)
    size, extra = divmod(len(items), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


class DistillSpec(_Spec):
    enabled: Bool = True
    methods: Annotated[tuple[Str, ...], Field(min_length=1, max_length=64)] = ("vanilla", "kd", "fitnet", "at", "dfa")
    seeds: Annotated[tuple[Seed, ...], Field(min_length=1, max_length=1000)] = (0,)
    epochs: Epochs | None = None  # None: the recipe's epochs
    options: Annotated[dict[Str, Options], Field(strict=True, max_length=64)] = Field(default_factory=dict)
    genotype_from: GenotypeSourceSpec | None = None  # None: this sweep's own search
    share_teacher: Bool = Field(
        default=True,
        description="true: distil every method of a (pair, seed) in one group trial that shares one teacher "
                    "forward per batch; false: one trial per (method, seed)",
    )
    group_size: Annotated[int, Field(strict=True, ge=1, le=64)] | None = Field(
        default=None,
        description="with share_teacher: at most this many methods per group trial (a (pair, seed)'s methods "
                    "are split into groups of near-equal size, in the order of methods); null: one group per "
                    "(pair, seed). Smaller groups share less but shorten the longest trial: `dfa-ray plan "
                    "--gpus N` suggests a size for N GPUs",
    )

    def groups_of(self, methods: Sequence[str]) -> list[tuple[str, ...]]:
        """`methods` (of one (pair, seed) and node) as the group trials run them: with
        share_teacher, the fewest groups of at most `group_size` methods, of near-equal size
        (the first ones one longer), in the given order; without it, one method per trial."""
        methods = tuple(methods)
        if not self.share_teacher:
            return [(m,) for m in methods]
        return split_evenly(methods, self.group_size)

    @model_validator(mode="after")
    def _check_names(self) -> "DistillSpec":
        problems = Problems()
        valid = allowed_methods()
        seen: dict[str, int] = {}
        for i, method in enumerate(self.methods):
            if method not in valid:
                problems.add(("methods", i), unknown("method", method, valid, "methods"), method)
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
                problems.add(("options", method), "options for an " + unknown("method", method, valid, "methods"))
                continue
            try:
                check_scalar_map(opts)
            except ValueError as exc:
                problems.add(("options", method), str(exc))
                continue
            check_method_options(problems, method, opts)
        problems.raise_if_any()
        return self


class ResourcesSpec(_Spec):
    cpu: Annotated[float, Field(strict=True, gt=0, le=1024, allow_inf_nan=False)] = 1.0
    gpu: Annotated[float, Field(strict=True, ge=0, le=64, allow_inf_nan=False)] = 0.0
    max_concurrent: Annotated[int, Field(strict=True, ge=1, le=MAX_SAMPLES)] | None = Field(
        default=None,
        description="at most this many trials of the whole sweep run at once; null: as many as the cluster's "
                    "CPUs and GPUs hold now (re-read while the sweep runs). On an autoscaling cluster set it "
                    "higher: only pending trials make the autoscaler add nodes",
    )
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


LOGGERS = ("csv", "json", "tensorboard", "mlflow", "wandb")
Logger = Literal["csv", "json", "tensorboard", "mlflow", "wandb"]
_OptStr = Str | None


class NoLoggerOptions(_Spec):
    """`csv`, `json`, `tensorboard`: Ray's loggers of these kinds take no options."""


class MlflowOptions(_Spec):
    """`run.logger_options.mlflow`: the arguments of Ray's MLflowLoggerCallback. No tracking
    token here: the spec is copied beside the results (spec.json); set MLFLOW_TRACKING_TOKEN."""

    tracking_uri: _OptStr = Field(None, description="where runs are recorded (a server URL or a folder); "
                                                    "null: MLflow's default")
    registry_uri: _OptStr = Field(None, description="MLflow model registry URI; null: MLflow's default")
    experiment_name: _OptStr = Field(None, description="MLflow experiment (created when missing); null: the default")
    tags: Annotated[dict[Str, Str], Field(strict=True, max_length=64)] = Field(
        default_factory=dict, description="tags set on every run")
    save_artifact: Bool = Field(False, description="upload each trial's folder as an artifact")
    log_params_on_trial_end: Bool = Field(False, description="log the config when a trial ends, not when it starts")


class WandbOptions(_Spec):
    """`run.logger_options.wandb`: the arguments of Ray's WandbLoggerCallback (and of
    `wandb.init`: entity, mode, tags, notes, job_type). No API key here: the spec is copied
    beside the results; set WANDB_API_KEY or give `api_key_file`."""

    project: _OptStr = Field(None, description="W&B project; null: WANDB_PROJECT")
    group: _OptStr = Field(None, description="W&B group; null: the Tune experiment's name")
    entity: _OptStr = Field(None, description="W&B team or user; null: the account's default")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="online | offline (written locally, `wandb sync` later) | disabled; null: WANDB_MODE")
    tags: Annotated[tuple[Str, ...], Field(max_length=64)] = Field((), description="tags of every run")
    notes: _OptStr = Field(None, description="a note attached to every run")
    job_type: _OptStr = Field(None, description="W&B job type")
    api_key_file: _OptStr = Field(None, description="file holding the API key, on the driver's machine")
    excludes: Annotated[tuple[Str, ...], Field(max_length=256)] = Field(
        (), description="result and config keys not to log")
    log_config: Bool = Field(False, description="log the config with every result (changes only under PBT)")
    upload_checkpoints: Bool = Field(False, description="upload trial checkpoints as W&B artifacts")
    upload_timeout: Annotated[int, Field(strict=True, ge=1, le=86_400)] | None = Field(
        None, description="seconds to wait for uploads at the end; null: Ray's default")


class LoggerOptionsSpec(_Spec):
    """`run.logger_options`: per logger of `run.loggers`, its options (validated keys)."""

    # `json` would shadow BaseModel.json: the field is json_, written `json` in the file
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    csv: NoLoggerOptions | None = None
    json_: NoLoggerOptions | None = Field(None, alias="json")
    tensorboard: NoLoggerOptions | None = None
    mlflow: MlflowOptions | None = None
    wandb: WandbOptions | None = None


_LOGGER_OPTIONS = {"csv": NoLoggerOptions, "json": NoLoggerOptions, "tensorboard": NoLoggerOptions,
                   "mlflow": MlflowOptions, "wandb": WandbOptions}
_CALLBACK = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class RunSpec(_Spec):
    """How the sweep's Tune runs report beyond the results (which are always written as Parquet):
    extra loggers and their options, and extra Tune callbacks. A logger whose package is not
    installed, or a callback that does not import or is not a `ray.tune.Callback` subclass, is
    refused at validation (callbacks are imported then, with Ray, only when there are any)."""

    loggers: Annotated[tuple[Logger, ...], Field(max_length=len(LOGGERS))] = Field(
        (), description="extra Tune loggers: csv | json | tensorboard (pip install 'dfa-ray[tensorboard]') | "
                        "mlflow ('dfa-ray[mlflow]') | wandb ('dfa-ray[wandb]'); empty: only our Parquet results")
    logger_options: LoggerOptionsSpec = Field(
        default_factory=LoggerOptionsSpec, description="{logger: {option: value}} for the loggers listed")
    callbacks: Annotated[tuple[Annotated[str, Field(strict=True, max_length=256)], ...],
                         Field(max_length=64)] = Field(
        (), description="`package.module:ClassName` of extra ray.tune.Callback classes (built without arguments)")

    @field_validator("callbacks")
    @classmethod
    def _import_paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        problems = Problems()
        for i, target in enumerate(v):
            if not re.match(_CALLBACK, target):
                problems.add((i,), "must be an import path package.module:ClassName", target)
        problems.raise_if_any()
        return v

    @model_validator(mode="after")
    def _available(self) -> "RunSpec":
        problems = Problems()
        given = [f.alias or name for name, f in LoggerOptionsSpec.model_fields.items()
                 if getattr(self.logger_options, name) is not None]
        check_loggers(problems, self.loggers, given)
        check_callbacks(problems, self.callbacks)
        problems.raise_if_any()
        return self

    def options_for(self, logger: str) -> BaseModel:
        """The typed options of one logger (its defaults when the spec gives none)."""
        if logger not in _LOGGER_OPTIONS:
            raise ConfigError(f"unknown logger {logger!r}; valid loggers: {', '.join(LOGGERS)}")
        given = getattr(self.logger_options, "json_" if logger == "json" else logger)
        return given or _LOGGER_OPTIONS[logger]()

    def logger_kwargs(self, logger: str) -> dict[str, Any]:
        """Keyword arguments for the logger's Tune callback: the options set, nulls left out
        (the callback's own defaults apply)."""
        return self.options_for(logger).model_dump(mode="json", exclude_none=True)


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
    run: RunSpec = Field(default_factory=RunSpec)
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
        valid = recipe_names()
        if v not in valid:
            raise ValueError(unknown("protocol (recipe)", v, valid, "protocols", quote=True))
        return v

    @field_validator("recipe")
    @classmethod
    def _valid_recipe(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "protocol" in info.data:
            problems = Problems()
            check_recipe(problems, info.data["protocol"], (), {}, v, MAX_EPOCHS)
            problems.raise_if_any()
        return v

    @field_validator("teachers")
    @classmethod
    def _valid_teacher_recipe(cls, v: TeachersSpec, info: ValidationInfo) -> TeachersSpec:
        if "protocol" in info.data and "recipe" in info.data:
            problems = Problems()
            check_recipe(problems, info.data["protocol"], ("recipe",), info.data["recipe"], v.recipe, MAX_EPOCHS)
            problems.raise_if_any()
        return v

    @field_validator("pairs")
    @classmethod
    def _distinct_pairs(cls, v: tuple[PairSpec, ...]) -> tuple[PairSpec, ...]:
        problems = Problems()
        seen: dict[str, int] = {}
        for i, pair in enumerate(v):
            if pair.name in seen:
                problems.add((i,), f"duplicate of pairs[{seen[pair.name]}]", pair.name)
            seen.setdefault(pair.name, i)
        problems.raise_if_any()
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "SweepSpec":
        check_sweep(self)
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


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    """Validate plain data (a dict from YAML or JSON) into a SweepSpec; ConfigError otherwise."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid sweep spec {source}: expected a mapping with keys "
            f"{', '.join(SweepSpec.model_fields)} (got {short(data)})"
        )
    too_big = check_size(data)
    if too_big:
        raise ConfigError(f"invalid sweep spec {source}: {too_big}")
    _import_plugins(data.get("plugins"), source)
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error(source, problem_lines(exc, SweepSpec)) from None


def _import_plugins(plugins: Any, source: str) -> None:
    """Import the spec's plug-ins before validation, so that `pairs` may name their models.
    A `plugins` that is not a list of names is left to the validator to report."""
    if isinstance(plugins, (list, tuple)) and all(isinstance(p, str) for p in plugins):
        from dfa_ray.plugins import import_plugins

        try:
            import_plugins(plugins, where="plugins")
        except ConfigError as exc:
            raise spec_error(source, [str(exc)]) from None


def load_spec(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    storage: str | None = None,
) -> SweepSpec:
    """Read a YAML spec, apply dotted `overrides` (`--set`) and `storage` (`--storage`), validate."""
    path = Path(path)
    data = read_yaml(path)
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


__all__ = [
    "DataSpec",
    "DistillSpec",
    "Distribution",
    "FastSpec",
    "LoggerOptionsSpec",
    "MlflowOptions",
    "PairSpec",
    "ResourcesSpec",
    "RunSpec",
    "SchedulerSpec",
    "SearchSpec",
    "SweepSpec",
    "TeachersSpec",
    "WandbOptions",
    "allowed_methods",
    "apply_overrides",
    "first_rung",
    "load_spec",
    "parse_spec",
    "safe_name",
    "tune_space",
    "yaml_value",
]
