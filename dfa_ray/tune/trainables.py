"""The three Ray Tune Trainables: shells around the engine's steppable runs.

One `step()` is one epoch of the engine (`TrainingRun` or `SearchRun`) and returns its
metrics; `save_checkpoint`/`load_checkpoint` hold the run's full state (weights, connectors,
betas, optimisers, schedulers, RNG, epoch), so a trial restarted after a crash continues
bit-for-bit; `reset_config` rebuilds the run so actors can be reused. The dataset arrives
through `tune.with_parameters` (one copy in the object store per node); the teacher is read
from the teacher store, which must be on storage every node sees.

A trial's config is one of the typed models of dfa_ray.tune.configs (TeacherTrial,
SearchTrial, DistillTrial, GroupTrial), built by the sweep and parsed once in `setup` /
`reset_config`. A GroupTrial runs in `GroupDistillTrainable`: one shared-teacher group
(dfa_ray.engine.group), all its members' epochs in one step result.
"""

from __future__ import annotations

import platform
import warnings
from pathlib import Path
from typing import Any

import torch
from ray import tune

from dfa_ray.data import Dataset, load_dataset
from dfa_ray.dfa.genotype import Genotype
from dfa_ray.engine.checkpoint import first_line, load_checkpoint, save_checkpoint
from dfa_ray.engine.distill import build_distill_run
from dfa_ray.engine.group import GroupMember, GroupRun, build_group_run
from dfa_ray.engine.runtime import FastPath
from dfa_ray.engine.search import SearchRun
from dfa_ray.engine.teacher import build_teacher_run
from dfa_ray.engine.training import NonFiniteLossError
from dfa_ray.errors import CheckpointError
from dfa_ray.plugins import import_plugins
from dfa_ray.teacher_store import TeacherStore
from dfa_ray.tune.configs import DistillJob, DistillTrial, GroupTrial, SearchTrial, TeacherTrial, flat_config, parse_trial
from dfa_ray.tune.device import trial_device

STATE_FILE = "state.pt"


# A trial's config with its grid entry (`job`: one pair, method, seed...) merged in.
effective_config = flat_config


def _node_id() -> str | None:
    """Ray's id of the node this trial runs on (host names can repeat across nodes)."""
    import ray

    if not ray.is_initialized():  # get_runtime_context() would start a local Ray of its own
        return None
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # outside a Ray worker (e.g. validate_save_restore in local mode)
        return None


class _EngineTrainable(tune.Trainable):
    """Common shell: data, device and threads in `setup`, one epoch per `step`."""

    stage = "?"

    def setup(self, config: dict[str, Any], data: Dataset | None = None) -> None:
        trial = parse_trial(config)
        # A worker is a fresh process: the spec's plug-ins (models, datasets, methods) must be
        # registered here too, before anything is built (dfa_ray.plugins).
        import_plugins(trial.plugins)
        if data is None:  # not handed over by the driver: read it where this worker is
            ref = trial.data_spec
            data = load_dataset(ref.name, root=ref.root, **ref.options)
        self.data = data
        self._configure(trial)

    def _configure(self, config: Any) -> None:
        """Everything a trial's config decides, from scratch: a reused actor keeps nothing of
        the trial before it except the dataset (one experiment has one dataset)."""
        # A trial's torch threads follow its CPU share: more threads than cores makes every
        # parallel op wait for a descheduled thread when trials share a node.
        torch.set_num_threads(max(1, int(config.cpu)))
        self.device = trial_device(float(config.gpu))
        self.fast = FastPath(**config.fast)
        self.settings = config
        self.run = None  # free the previous trial's run before building the next one
        self.run = self.build(config)

    def build(self, config: Any):  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self) -> dict[str, Any]:
        try:
            metrics = self.run.step()
        except NonFiniteLossError as exc:
            # Retrying from a checkpoint would meet the same NaN: end the trial with the reason.
            return {"nonfinite": str(exc), "epoch": exc.epoch, "done": True}
        result = {**metrics, "device": str(self.device), "node": platform.node(), "node_id": _node_id()}
        result.update(self.extra_result())
        result["done"] = self.run.done
        return result

    def extra_result(self) -> dict[str, Any]:
        return {}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        save_checkpoint(Path(checkpoint_dir) / STATE_FILE, self.run.state_dict())

    def load_checkpoint(self, checkpoint: Any) -> None:
        path = Path(checkpoint) / STATE_FILE
        try:
            self._restore_from(path)
            return
        except CheckpointError as exc:
            problem = str(exc)
        # A truncated, corrupt or foreign newest checkpoint: fall back to an older one of this
        # trial, or start over; never fail the restore (that would be retried into a crash loop).
        for older in sorted(Path(checkpoint).parent.glob("checkpoint_*"), reverse=True):
            if older == Path(checkpoint) or not (older / STATE_FILE).exists():
                continue
            try:
                self._restore_from(older / STATE_FILE)
                warnings.warn(f"{problem}; continuing from the older checkpoint {older}")
                return
            except CheckpointError:
                continue
        warnings.warn(f"{problem}; no usable older checkpoint, the trial starts over")
        self.run = self.build(self.settings)

    def _restore_from(self, path: Path) -> None:
        """Load one state file into a fresh run; CheckpointError when it is unreadable or does
        not hold this run's state (a half-applied state is discarded with the run)."""
        state = load_checkpoint(path)
        try:
            self.run.load_state_dict(state)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
            self.run = self.build(self.settings)
            raise CheckpointError(f"checkpoint {path} does not hold this trial's state "
                                  f"({type(exc).__name__}: {first_line(exc)})") from None

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Tune's actor reuse (the sweep sets `reuse_actors=True`): the next trial in this
        process, which skips a fresh worker's start-up (importing torch and Ray Tune, ~3-4 s
        per trial on a 2-core machine). Tune restores the trial's checkpoint afterwards when
        it has one."""
        self._configure(parse_trial(new_config))
        self.config = new_config
        return True


class TeacherTrainable(_EngineTrainable):
    """Trains one teacher; when finished, writes it into the teacher store."""

    stage = "teacher"

    def build(self, config: TeacherTrial):
        self.recipe = config.recipe
        return build_teacher_run(config.model, self.data, self.recipe, config.seed, device=self.device,
                                 fast=self.fast)

    def extra_result(self) -> dict[str, Any]:
        if self.run.done:
            t = self.settings
            TeacherStore.write(t.store_dir, self.run, t.model, self.data, self.recipe, t.seed)
            return {"checkpoint": str(t.store_dir)}
        return {}


class SearchTrainable(_EngineTrainable):
    """Searches one pair's aggregation with one setting of the search options."""

    stage = "search"

    def build(self, config: SearchTrial) -> SearchRun:
        teacher, meta = TeacherStore.read(config.teacher_path, self.data, expect_model=config.teacher)
        return SearchRun(teacher, meta["model"], config.student, self.data, config.options, config.epochs,
                         config.seed, device=self.device, fast=self.fast, trial_id=self.trial_id,
                         split_seed=config.split_seed)

    def extra_result(self) -> dict[str, Any]:
        # The genotype as it would be derived now: an ASHA-stopped trial still has one.
        return {"genotype_json": self.run.genotype().to_json(), "epochs_planned": self.run.epochs}


def _genotype(job: DistillJob, pair: str) -> Genotype | str | None:
    """A dfa job's genotype as the engine takes it: the searched document, or a reference name."""
    if job.genotype is not None:
        return Genotype.from_dict(job.genotype, source=f"search of {pair}")
    return job.reference


class DistillTrainable(_EngineTrainable):
    """Distils one student with one method and seed."""

    stage = "distill"

    def build(self, config: DistillTrial):
        teacher, meta = TeacherStore.read(config.teacher_path, self.data, expect_model=config.teacher)
        return build_distill_run(teacher, meta["model"], config.student, self.data,
                                 config.recipe, config.base_method, config.seed,
                                 options=config.method_options or None, genotype=_genotype(config, config.pair),
                                 device=self.device, fast=self.fast, transfer=config.transfer is not None)

    def extra_result(self) -> dict[str, Any]:
        # The options the method runs with, resolved (defaults, the spec's overrides, dfa's
        # lambda from the genotype): the callbacks record them in the row's config.
        return {"method_options": dict(self.run.task.config)}


class GroupDistillTrainable(_EngineTrainable):
    """Distils one student per member of a shared-teacher group (one pair, seed and recipe),
    one teacher forward per batch for all of them. One step is one tick of the group; its
    result carries each member's metrics as that member's own trial would report them:

        {"members": {key: that member's epoch metrics, with its "done"},
         "method_options": {key: its resolved options}, "ended": {key: {"reason", "epoch"}},
         "epoch": ticks done, "done": every member finished, "device", "node", "node_id"}

    A member whose loss diverges reports {"nonfinite": reason, "epoch": e, "done": True} once
    and is absent afterwards, while the others go on; `ended` lists every diverged member in
    each result, so a driver that resumes the trial still knows them."""

    stage = "distill"

    def build(self, config: GroupTrial) -> GroupRun:
        teacher, meta = TeacherStore.read(config.teacher_path, self.data, expect_model=config.teacher)
        members = [GroupMember(key=job.method, method=job.base_method, options=job.method_options or None,
                               genotype=_genotype(job, config.pair), transfer=job.transfer is not None)
                   for job in config.members]
        return build_group_run(teacher, meta["model"], config.student, self.data, config.recipe, members,
                               config.seed, device=self.device, fast=self.fast)

    def step(self) -> dict[str, Any]:
        group: GroupRun = self.run
        rows = group.step()  # a diverged member is a row of its own: the group never raises for it
        members = {}
        for key, row in rows.items():
            member = group.members[key]
            members[key] = row if "nonfinite" in row else {**row, "done": member.run.done}
        return {"members": members,
                "method_options": {key: dict(m.task.config) for key, m in group.members.items()},
                "ended": {key: {"reason": m.ended, "epoch": m.ended_epoch}
                          for key, m in group.members.items() if m.ended is not None},
                "epoch": group.tick, "done": group.done,
                "device": str(self.device), "node": platform.node(), "node_id": _node_id()}
