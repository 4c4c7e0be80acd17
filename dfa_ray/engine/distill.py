"""Stage 2: distil a fresh student from a frozen teacher with one method, one epoch per step.

The loop is the teacher engine's (`TrainingRun`: the pair's recipe, held-out validation for
model selection, test accuracy at the last and the best-validation epoch); what changes is the
task, a `Distiller` from `engine.methods`, told the training split (size, labels) and the
epoch count when it is built. For `dfa` the aggregation comes from a genotype
file of the pair's search, or from a reference genotype (`last`, `average`, `random`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dfa_ray.data import Dataset
from dfa_ray.dfa.genotype import REFERENCE_KINDS, Genotype, reference_genotype
from dfa_ray.dfa.pairing import pair_groups
from dfa_ray.engine.methods import TrainSplit, build_distiller
from dfa_ray.engine.recipes import Recipe
from dfa_ray.engine.runtime import FastPath, seed_everything
from dfa_ray.engine.training import Loaders, Logger, TrainingRun, split_train
from dfa_ray.errors import ConfigError
from dfa_ray.models import create_model


def resolve_genotype(
    genotype: Genotype | str | Path | None,
    teacher: nn.Module,
    student: nn.Module,
    teacher_name: str,
    student_name: str,
    dataset: str,
    image_size: int,
    seed: int = 0,
    transfer: bool = False,
) -> Genotype | None:
    """A Genotype object, a reference kind (`last`, `average`, `random`) or a genotype file;
    a file is checked against the pair, the dataset and the models' groups (`transfer`: a
    genotype searched on another dataset is accepted on purpose, DFA-T)."""
    if genotype is None or isinstance(genotype, Genotype):
        if isinstance(genotype, Genotype):
            genotype.validate_for(teacher_name, student_name, dataset, teacher, student, image_size, transfer=transfer)
        return genotype
    if str(genotype) in REFERENCE_KINDS:
        pairing = pair_groups(teacher, student, image_size, teacher_name, student_name)
        return reference_genotype(str(genotype), pairing, teacher_name, student_name, dataset, seed=seed)
    path = Path(genotype)
    if not path.exists():
        raise ConfigError(f"genotype {str(genotype)!r} is neither a file nor a reference genotype "
                          f"({', '.join(REFERENCE_KINDS)})")
    return Genotype.load(path).validate_for(teacher_name, student_name, dataset, teacher, student, image_size,
                                            transfer=transfer)


def build_distill_run(
    teacher: nn.Module,
    teacher_name: str,
    student_name: str,
    data: Dataset,
    recipe: Recipe,
    method: str,
    seed: int,
    options: dict | None = None,
    genotype: Genotype | str | Path | None = None,
    device: str | torch.device = "auto",
    fast: FastPath = FastPath(),
    log: Logger | None = None,
    transfer: bool = False,
    loaders: Loaders | None = None,
) -> TrainingRun:
    """Seed, build the student and the method, wrap them in the epoch loop (`loaders`: ones
    already built for this data, recipe, seed and device, as a shared-teacher group passes)."""
    seed_everything(seed)
    student = create_model(student_name, num_classes=data.info.num_classes, in_channels=data.info.in_channels)
    resolved = resolve_genotype(genotype, teacher, student, teacher_name, student_name, data.info.name,
                                data.info.image_size, seed=seed, transfer=transfer)
    # the method sees the split the run trains on (its size and labels, for per-sample state)
    split = TrainSplit.of(split_train(data, recipe)[0], data.info.num_classes)
    distiller = build_distiller(method, teacher, student, options, genotype=resolved, image_size=data.info.image_size,
                                split=split, epochs=recipe.epochs)
    label = f"{method}{':' + resolved.kind if resolved is not None and resolved.kind != 'search' else ''} " \
            f"{teacher_name}->{student_name}"
    return TrainingRun(distiller, data, recipe, seed, lr=recipe.lr_for(student_name), device=device, fast=fast,
                       log=log, label=label, loaders=loaders)
