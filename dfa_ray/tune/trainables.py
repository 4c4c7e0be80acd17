"""The three Ray Tune Trainables: shells around the engine's steppable runs.

One `step()` is one epoch of the engine (`TrainingRun` or `SearchRun`) and returns its
metrics; `save_checkpoint`/`load_checkpoint` hold the run's full state (weights, connectors,
betas, optimisers, schedulers, RNG, epoch), so a trial restarted after a crash continues
bit-for-bit; `reset_config` rebuilds the run so actors can be reused. The dataset arrives
through `tune.with_parameters` (one copy in the object store per node); the teacher is read
from the teacher store, which must be on storage every node sees.

Trial config keys (built by `dfa_ray.sweep`): sweep, stage, dataset, data_spec, seed, cpu,
gpu, fast; teacher stage: model, recipe, store_dir; search: teacher, teacher_path, student,
epochs, options, split_seed; distill: teacher, teacher_path, student, method, method_options,
genotype, recipe.
"""

from __future__ import annotations

import json
import platform
import warnings
from pathlib import Path
from typing import Any

import torch
from ray import tune

from dfa_ray.data import Dataset, load_dataset
from dfa_ray.dfa.genotype import Genotype
from dfa_ray.dfa.options import SearchOptions
from dfa_ray.engine.checkpoint import first_line, load_checkpoint, save_checkpoint
from dfa_ray.engine.distill import build_distill_run
from dfa_ray.engine.recipes import Recipe
from dfa_ray.engine.runtime import FastPath
from dfa_ray.engine.search import SearchRun
from dfa_ray.engine.teacher import build_teacher_run, load_teacher, save_teacher_state, teacher_meta
from dfa_ray.engine.training import NonFiniteLossError
from dfa_ray.errors import CheckpointError
from dfa_ray.plugins import import_plugins
from dfa_ray.tune.device import trial_device

STATE_FILE = "state.pt"


def effective_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's config with its grid entry (`job`: one pair, method, seed...) merged in."""
    job = config.get("job")
    if not isinstance(job, dict):
        return dict(config)
    return {**{k: v for k, v in config.items() if k != "job"}, **job}


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    recipe = Recipe(**{**d, "milestones": tuple(d.get("milestones", ()))})
    recipe.validate()
    return recipe


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
        config = effective_config(config)
        # A worker is a fresh process: the spec's plug-ins (models, datasets, methods) must be
        # registered here too, before anything is built (dfa_ray.plugins).
        import_plugins(config.get("plugins") or ())
        if data is None:  # not handed over by the driver: read it where this worker is
            spec = config["data_spec"]
            data = load_dataset(spec["name"], root=spec.get("root"), **spec.get("options", {}))
        self.data = data
        self._configure(config)

    def _configure(self, config: dict[str, Any]) -> None:
        """Everything a trial's config decides, from scratch: a reused actor keeps nothing of
        the trial before it except the dataset (one experiment has one dataset)."""
        # A trial's torch threads follow its CPU share: more threads than cores makes every
        # parallel op wait for a descheduled thread when trials share a node.
        torch.set_num_threads(max(1, int(config.get("cpu", 1))))
        self.device = trial_device(float(config.get("gpu", 0.0)))
        self.fast = FastPath(**config.get("fast", {}))
        self.settings = config
        self.run = None  # free the previous trial's run before building the next one
        self.run = self.build(config)

    def build(self, config: dict[str, Any]):  # pragma: no cover - abstract
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
        self._configure(effective_config(new_config))
        self.config = new_config
        return True


class TeacherTrainable(_EngineTrainable):
    """Trains one teacher; when finished, writes it into the teacher store."""

    stage = "teacher"

    def build(self, config: dict[str, Any]):
        self.recipe = recipe_from_dict(config["recipe"])
        return build_teacher_run(config["model"], self.data, self.recipe, int(config["seed"]), device=self.device,
                                 fast=self.fast)

    def extra_result(self) -> dict[str, Any]:
        if self.run.done:
            meta = teacher_meta(self.settings["model"], self.data, self.recipe, int(self.settings["seed"]))
            save_teacher_state(self.settings["store_dir"], self.run, meta)
            return {"checkpoint": str(self.settings["store_dir"])}
        return {}


class SearchTrainable(_EngineTrainable):
    """Searches one pair's aggregation with one setting of the search options."""

    stage = "search"

    def build(self, config: dict[str, Any]) -> SearchRun:
        teacher, meta = load_teacher(config["teacher_path"], self.data, expect_model=config["teacher"])
        options = SearchOptions.from_dict(config.get("options", {}))
        return SearchRun(teacher, meta["model"], config["student"], self.data, options, int(config["epochs"]),
                         int(config["seed"]), device=self.device, fast=self.fast, trial_id=self.trial_id,
                         split_seed=int(config.get("split_seed", 0)))

    def extra_result(self) -> dict[str, Any]:
        # The genotype as it would be derived now: an ASHA-stopped trial still has one.
        return {"genotype_json": self.run.genotype().to_json(), "epochs_planned": self.run.epochs}


class DistillTrainable(_EngineTrainable):
    """Distils one student with one method and seed."""

    stage = "distill"

    def build(self, config: dict[str, Any]):
        teacher, meta = load_teacher(config["teacher_path"], self.data, expect_model=config["teacher"])
        genotype = config.get("genotype")
        if isinstance(genotype, dict):
            genotype = Genotype.from_dict(genotype, source=f"search of {config['teacher']}->{config['student']}")
        elif isinstance(genotype, str) and genotype.lstrip().startswith("{"):
            genotype = Genotype.from_dict(json.loads(genotype))
        return build_distill_run(teacher, meta["model"], config["student"], self.data,
                                 recipe_from_dict(config["recipe"]), config["method"], int(config["seed"]),
                                 options=config.get("method_options") or None, genotype=genotype,
                                 device=self.device, fast=self.fast, transfer=config.get("transfer") is not None)

    def extra_result(self) -> dict[str, Any]:
        # The options the method runs with, resolved (defaults, the spec's overrides, dfa's
        # lambda from the genotype): the callbacks record them in the row's config.
        return {"method_options": dict(self.run.task.config)}
