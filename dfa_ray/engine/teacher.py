"""Train a teacher (or any classifier) alone, and save / load it as a teacher folder.

A teacher folder holds `checkpoint.pt` (the full training state while it trains; at the end
also the final weights and what they are: model, classes, channels, dataset, recipe, seed)
and `metrics.json` (history and final numbers, versions, machine). `load_teacher` accepts the
folder or the checkpoint file in it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfa_ray.data import Dataset
from dfa_ray.engine.checkpoint import atomic_write_json, first_line, load_checkpoint, save_checkpoint
from dfa_ray.engine.recipes import Recipe
from dfa_ray.engine.runtime import FastPath, seed_everything
from dfa_ray.engine.training import Logger, PlainClassifier, TrainingRun
from dfa_ray.errors import CheckpointError, ConfigError
from dfa_ray.models import GroupedModel, create_model, MODELS

CHECKPOINT_KIND = "dfa-ray/teacher"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"


def teacher_meta(model_name: str, data: Dataset, recipe: Recipe, seed: int) -> dict[str, Any]:
    return {
        "model": model_name,
        "num_classes": data.info.num_classes,
        "in_channels": data.info.in_channels,
        "image_size": data.info.image_size,
        "dataset": data.info.name,
        "recipe": recipe.model_dump(mode="json"),
        "seed": seed,
    }


def fingerprint(meta: dict[str, Any]) -> str:
    """Identity of a teacher: architecture, dataset, recipe and seed (what the store keys on)."""
    key = {k: meta.get(k) for k in ("model", "dataset", "num_classes", "in_channels", "recipe", "seed", "teacher",
                                    "method", "options", "genotype")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def build_teacher_run(
    model_name: str,
    data: Dataset,
    recipe: Recipe,
    seed: int,
    device: str | torch.device = "auto",
    fast: FastPath = FastPath(),
    log: Logger | None = None,
) -> TrainingRun:
    """Seed, build the network, wrap it as a plain classification task."""
    seed_everything(seed)
    model = create_model(model_name, num_classes=data.info.num_classes, in_channels=data.info.in_channels)
    _check_size(model, model_name, data.info.image_size)
    return TrainingRun(PlainClassifier(model), data, recipe, seed, lr=recipe.lr_for(model_name),
                       device=device, fast=fast, log=log, label=f"teacher {model_name}")


def _check_size(model: GroupedModel, name: str, image_size: int) -> None:
    if image_size < model.min_size:
        raise ConfigError(f"model {name!r} needs inputs of at least {model.min_size} px; the dataset's images are "
                          f"{image_size} px: choose another model or dataset")


def save_run_state(out_dir: str | Path, run: TrainingRun, meta: dict[str, Any], kind: str = CHECKPOINT_KIND) -> Path:
    """Write the training state (every epoch) and, once done, the final weights and metrics."""
    out_dir = Path(out_dir)
    state = {"kind": kind, "version": CHECKPOINT_VERSION, "meta": meta, "run": run.state_dict()}
    if run.done:
        state["model"] = {k: v.detach().cpu() for k, v in run.student.state_dict().items()}
    path = out_dir / CHECKPOINT_NAME
    save_checkpoint(path, state)
    atomic_write_json(out_dir / METRICS_NAME, {
        **meta, "fingerprint": fingerprint(meta), "history": run.history, "final": run.final,
        "machine": run.machine(), "finished": run.done,
    })
    return path


def save_teacher_state(out_dir: str | Path, run: TrainingRun, meta: dict[str, Any]) -> Path:
    return save_run_state(out_dir, run, meta, CHECKPOINT_KIND)


def resolve_checkpoint_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no teacher checkpoint at {path}: pass the folder written by `dfa-ray teacher` "
                              f"or the {CHECKPOINT_NAME} file in it")
    return path


def read_teacher_checkpoint(path: str | Path) -> tuple[Path, dict]:
    path = resolve_checkpoint_path(path)
    state = load_checkpoint(path)
    # isinstance first: a tensor compared with == would give a tensor, not a bool
    if not isinstance(state.get("kind"), str) or state["kind"] != CHECKPOINT_KIND or not isinstance(
            state.get("meta"), dict):
        raise CheckpointError(f"{path} is not a dfa-ray teacher checkpoint")
    if type(state.get("version")) is not int or state["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')!r}; this dfa-ray reads "
                              f"version {CHECKPOINT_VERSION}")
    problems = _structure_problems(state)
    if problems:
        raise CheckpointError(f"{path} is a damaged dfa-ray teacher checkpoint (missing or ill-typed: "
                              f"{', '.join(problems)}); delete the folder and train the teacher again")
    return path, state


_META_TYPES = {"model": str, "dataset": str, "num_classes": int, "in_channels": int, "image_size": int,
               "recipe": dict, "seed": int}


def _structure_problems(state: dict) -> list[str]:
    """The fields of a teacher checkpoint that are missing or of the wrong type."""
    meta = state["meta"]
    problems = [f"meta.{key}" for key, kind in _META_TYPES.items()
                if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool)]
    recipe = meta.get("recipe")
    if isinstance(recipe, dict) and (not isinstance(recipe.get("epochs"), int) or isinstance(recipe.get("epochs"), bool)):
        problems.append("meta.recipe.epochs")
    run = state.get("run")
    if not isinstance(run, dict) or not isinstance(run.get("epoch"), int) or isinstance(run.get("epoch"), bool):
        problems.append("run.epoch")
    weights = state.get("model")
    if "model" in state and not (isinstance(weights, dict) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items())):
        problems.append("model (a dict of tensors)")
    return problems


def load_teacher(
    path: str | Path,
    data: Dataset | None = None,
    expect_model: str | None = None,
) -> tuple[GroupedModel, dict[str, Any]]:
    """The finished teacher's network (eval mode, frozen) and its meta data.

    Checks that it finished, that its architecture is the one expected, and that its class
    count and input channels match the dataset it will teach on.
    """
    path, state = read_teacher_checkpoint(path)
    meta = state["meta"]
    if "model" not in state:
        raise CheckpointError(f"teacher {path} has not finished training (epoch {state['run']['epoch']} of "
                              f"{meta['recipe']['epochs']}); run the same `dfa-ray teacher` command again to finish it")
    if meta["model"] not in MODELS:
        raise CheckpointError(f"teacher {path} is a {meta['model']!r}, which this dfa-ray does not know")
    if expect_model is not None and meta["model"] != expect_model:
        raise CheckpointError(f"teacher {path} is a {meta['model']!r}, not the expected {expect_model!r}")
    if data is not None:
        if meta["num_classes"] != data.info.num_classes:
            raise CheckpointError(f"teacher {path} was trained for {meta['num_classes']} classes ({meta['dataset']}); "
                                  f"dataset {data.info.name!r} has {data.info.num_classes}")
        if meta["in_channels"] != data.info.in_channels:
            raise CheckpointError(f"teacher {path} takes {meta['in_channels']} input channels; dataset "
                                  f"{data.info.name!r} has {data.info.in_channels}")
    model = create_model(meta["model"], num_classes=meta["num_classes"], in_channels=meta["in_channels"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"teacher {path}: weights do not fit a {meta['model']!r} "
                              f"({first_line(exc)})") from None
    freeze(model)
    return model, meta


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def train_teacher(
    model_name: str,
    data: Dataset,
    recipe: Recipe,
    seed: int,
    out_dir: str | Path,
    device: str | torch.device = "auto",
    fast: FastPath = FastPath(),
    log: Logger | None = None,
) -> dict:
    """Train (or continue training) a teacher into `out_dir`; returns the final metrics.

    Running the same command again continues from the checkpoint of the last finished
    epoch; a folder holding a different teacher is refused rather than overwritten.
    """
    meta = teacher_meta(model_name, data, recipe, seed)
    run = build_teacher_run(model_name, data, recipe, seed, device=device, fast=fast, log=log)
    return train_in_folder(run, meta, out_dir, CHECKPOINT_KIND, log)


def train_in_folder(run: TrainingRun, meta: dict[str, Any], out_dir: str | Path, kind: str,
                    log: Logger | None = None) -> dict:
    """Run to the end, checkpointing into `out_dir` after every epoch; continue a folder that
    holds the same run (same fingerprint), refuse one that holds another."""
    path = Path(out_dir) / CHECKPOINT_NAME
    if path.exists():
        state = load_checkpoint(path)
        if state.get("kind") != kind or not isinstance(state.get("meta"), dict):
            raise CheckpointError(f"{path} is not a {kind} checkpoint; choose another --out")
        if fingerprint(state["meta"]) != fingerprint(meta):
            old = state["meta"]
            raise CheckpointError(f"{out_dir} already holds a different run ({old.get('model')} on "
                                  f"{old.get('dataset')}, seed {old.get('seed')}); choose another --out")
        run.load_state_dict(state["run"])
        if log:
            log(f"[{run.label}] resuming from {path} after epoch {run.epoch}")
    while not run.done:
        run.step()
        save_run_state(out_dir, run, meta, kind)
    assert run.final is not None
    return run.final
