"""The typed config of one trial of each stage: built by the sweep from the validated spec,
travelling through Ray Tune as plain JSON-able data, parsed once by the Trainable.

Why typed: a trial config crosses three layers (the sweep builds it, Tune stores and restores
it, the trainable and the result callbacks read it). As pydantic models with every field
required (no silent `config.get(key, default)`), a config from an older or mismatched sweep
fails at the field that is wrong instead of running with a default nobody chose.

Tune sees `{"stage": ..., "job": <the model's dict>}`: `job` is what a grid search varies (one
pair, method and seed per trial); a search trial's `options` may hold Tune search-space objects
until Tune samples them. `parse_trial` turns a trial's resolved config back into its model.

A shared-teacher group (`distill.share_teacher`, docs/shared_teacher.md) is one trial of stage
"distill" too: a `GroupTrial` carries the pair, seed and recipe once and one `DistillJob` per
member; `parse_trial` tells it from a `DistillTrial` by its `members`. `GroupTrial.member(key)`
is the `DistillTrial` the member would be as a trial of its own: the result callbacks record
each member exactly as that trial (its own trial id `member_trial_id`, config and rows).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, model_validator

from dfa_ray.dfa.options import SearchOptions
from dfa_ray.engine.recipes import Recipe
from dfa_ray.names import safe_name


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataRef(_Config):
    """How a worker finds the dataset when the driver did not hand it over."""

    name: str
    root: str | None
    options: dict[str, Any]


class _Trial(_Config):
    """What every trial carries: its sweep, dataset, resources, fast-path switches, plug-ins."""

    sweep: str
    dataset: str
    data_spec: DataRef
    cpu: float
    gpu: float
    fast: dict[str, Any]  # dfa_ray.engine.runtime.FastPath fields
    plugins: tuple[str, ...]
    seed: int


class TeacherTrial(_Trial):
    stage: Literal["teacher"] = "teacher"
    model: str
    recipe: Recipe
    store_dir: str

    @property
    def pair(self) -> str:
        return self.model

    @property
    def method(self) -> str:
        return "teacher"

    @property
    def epochs(self) -> int:
        return self.recipe.epochs


class SearchTrial(_Trial):
    stage: Literal["search"] = "search"
    teacher: str
    student: str
    teacher_path: str
    epochs: int
    options: SearchOptions  # fixed and sampled
    split_seed: int = 0

    @property
    def pair(self) -> str:
        return f"{self.teacher}->{self.student}"

    @property
    def method(self) -> str:
        return "search"


class Transfer(_Config):
    """Where a genotype searched on another dataset came from (DFA-T)."""

    source_dataset: str
    genotype: str


class DistillJob(_Config):
    """One student distilled with one method: a trial's, or a member's of a shared-teacher group.

    `method` is the spec's name, reference genotypes included (`dfa:last`); `genotype` is the
    searched (or transferred) genotype document of a `dfa` run, None otherwise: the genotype
    travels in this one form, and a reference genotype is named by the method alone.
    """

    method: str
    method_options: dict[str, Any]  # the spec's overrides of the method's options
    genotype: dict[str, Any] | None = None
    transfer: Transfer | None = None

    @property
    def base_method(self) -> str:
        return self.method.partition(":")[0]

    @property
    def reference(self) -> str | None:
        return self.method.partition(":")[2] or None


class DistillTrial(_Trial, DistillJob):
    stage: Literal["distill"] = "distill"
    teacher: str
    student: str
    teacher_path: str
    recipe: Recipe

    @property
    def pair(self) -> str:
        return f"{self.teacher}->{self.student}"

    @property
    def epochs(self) -> int:
        return self.recipe.epochs


class GroupTrial(_Trial):
    """A shared-teacher group: every member distils `student` from one teacher forward per
    batch, with the group's seed and recipe; each member is one method (its key: the method's
    spec name, unique in the group)."""

    stage: Literal["distill"] = "distill"
    teacher: str
    student: str
    teacher_path: str
    recipe: Recipe
    members: tuple[DistillJob, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_members(self) -> "GroupTrial":
        keys = self.keys
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:  # the sweep builds one member per spec method, which the spec keeps unique
            raise ValueError(f"members: method(s) {', '.join(repeated)} appear more than once")
        return self

    @property
    def pair(self) -> str:
        return f"{self.teacher}->{self.student}"

    @property
    def method(self) -> str:
        return "group"

    @property
    def epochs(self) -> int:
        return self.recipe.epochs

    @property
    def keys(self) -> list[str]:
        return [job.method for job in self.members]

    def member(self, key: str) -> DistillTrial:
        """The member `key` as the trial of its own it would be without the group."""
        jobs = {job.method: job for job in self.members}
        if key not in jobs:
            raise KeyError(f"the group of {self.pair} seed {self.seed} has no member {key!r}")
        return DistillTrial(**{name: getattr(self, name) for name in DistillTrial.model_fields
                               if name not in DistillJob.model_fields and name != "stage"},
                            **{name: getattr(jobs[key], name) for name in DistillJob.model_fields})


def member_trial_id(trial_id: str, key: str) -> str:
    """A member's trial id in the results: the group trial's Tune id and the member's key."""
    return f"{trial_id}-{safe_name(key)}"


def _kind(value: Any) -> str | None:
    """Which trial model a config is: its stage, and for "distill" a group when it has members."""
    if isinstance(value, dict):
        stage = value.get("stage")
        return "group" if stage == "distill" and "members" in value else stage
    return "group" if isinstance(value, GroupTrial) else getattr(value, "stage", None)


TrialConfig = Annotated[Union[Annotated[TeacherTrial, Tag("teacher")], Annotated[SearchTrial, Tag("search")],
                              Annotated[DistillTrial, Tag("distill")], Annotated[GroupTrial, Tag("group")]],
                        Discriminator(_kind)]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(TrialConfig)

# The keys of a trial config that stay outside Tune's `job` entry (shared by every trial of an
# experiment); everything else is the grid's.
SHARED_KEYS = ("stage", "sweep", "dataset", "data_spec", "cpu", "gpu", "fast", "plugins")


def to_tune(trial: _Trial) -> dict[str, Any]:
    """The trial's JSON-able dict as Tune stores it (see `param_space`)."""
    return trial.model_dump(mode="json")


def param_space(trials: list[_Trial], grid: Any) -> dict[str, Any]:
    """Tune's param_space for an experiment of `trials`: the shared keys once, the rest as a
    grid over `job` entries (`grid`: `tune.grid_search`)."""
    dumped = [to_tune(t) for t in trials]
    shared = {k: dumped[0][k] for k in SHARED_KEYS}
    jobs = [{k: v for k, v in d.items() if k not in SHARED_KEYS} for d in dumped]
    return {**shared, "job": grid(jobs)}


def resolved_config(trial: _Trial) -> dict[str, Any]:
    """The config Tune hands a trial of `param_space([trial, ...])` once the grid is resolved
    (the shared keys, then the trial's `job` entry): how a group member's config is recorded."""
    dumped = to_tune(trial)
    return {**{k: dumped[k] for k in SHARED_KEYS}, "job": {k: v for k, v in dumped.items() if k not in SHARED_KEYS}}


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's Tune config with its grid entry (`job`) merged in: the model's fields, as a dict."""
    job = config.get("job")
    if not isinstance(job, dict):
        return dict(config)
    return {**{k: v for k, v in config.items() if k != "job"}, **job}


def parse_trial(config: dict[str, Any]) -> TeacherTrial | SearchTrial | DistillTrial | GroupTrial:
    """The typed config of a trial from its resolved Tune config (ValidationError if it is not one)."""
    return _ADAPTER.validate_python(flat_config(config))
