"""Checks of the `dfa-ray` command line that run before any work: one line and exit code 2.

Why a module of its own: the sub-commands differ, but a user's mistakes on the command line
are the same few kinds (an output that cannot be written, a device that does not exist, a
number out of range, a value too long to be meant), and each must fail *before* a dataset is
loaded or an epoch is trained: an `--out` found unwritable after a whole search loses the
search. `check_args` is called by `cli.main` before the handler runs; `OneLineParser` makes
argparse's own errors (a missing or unknown flag) one line too, instead of a usage block.
The bounds are the sweep spec's (`dfa_ray.spec.MAX_EPOCHS`, `MAX_SEED`), so a number refused
in a spec is refused on the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from dfa_ray.errors import ConfigError
from dfa_ray.spec import MAX_EPOCHS, MAX_SEED

MAX_ASSIGNMENT_CHARS = 1_000  # a KEY=VALUE longer than this is a paste accident, not an option
DEVICES = "auto, cpu, cuda or cuda:N"

# sub-command -> the flag whose value is an output folder / an output file
OUT_FOLDER = {"teacher": "out", "distill": "out", "report": "out", "import-teacher": "out"}
OUT_FILE = {"search": "out"}
ASSIGNMENT_FLAGS = {"data_opt": "--data-opt", "recipe_set": "--set", "opt": "--opt", "set": "--set"}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a parse error is one line on stderr (`dfa-ray teacher: error: ...; see
    dfa-ray teacher --help`) and exit code 2, like every other user mistake."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        print(f"{self.prog}: error: {text}; see `{self.prog} --help`", file=sys.stderr)
        sys.exit(2)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(text)} characters)"


def _bounded_int(text: str, lo: int, hi: int, what: str) -> int:
    try:
        value = int(text, 10) if len(text) <= 40 else None
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"{_short(text)!r} is not {what}: give an integer from {lo} to {hi}")
    return value


def epochs_arg(text: str) -> int:
    """argparse type of `--epochs`: 1 .. MAX_EPOCHS, as in a spec."""
    return _bounded_int(text, 1, MAX_EPOCHS, "an epoch count")


def seed_arg(text: str) -> int:
    """argparse type of `--seed`: 0 .. 2**32 - 1, as in a spec."""
    return _bounded_int(text, 0, MAX_SEED, "a seed")


# -- outputs ---------------------------------------------------------------------------------
def check_out_folder(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """`path` is (or can be made) a folder this process can write; ConfigError otherwise.
    The folder is created (the command writes there next); nothing else is left in it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a folder; give a folder (it is created if missing)")
    blocker = _file_on_the_way(path)
    if blocker is not None:
        raise ConfigError(f"{flag} {path}: {blocker} is a file, so no folder can be made there; choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path} cannot be created ({exc.strerror or exc}); choose a folder you can write") from None
    _probe(path, flag, path)
    return path


def check_out_file(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """`path` names a file that can be written (its folder is created if missing)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'genotype.json'}")
    parent = path.parent
    blocker = _file_on_the_way(parent)
    if blocker is not None or (parent.exists() and not parent.is_dir()):
        raise ConfigError(f"{flag} {path}: {blocker or parent} is a file, not a folder; choose another {flag}")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: its folder cannot be created ({exc.strerror or exc}); "
                          "choose a place you can write") from None
    _probe(parent, flag, path)
    return path


def _file_on_the_way(path: Path) -> Path | None:
    """The first existing ancestor of `path` that is not a folder (a file where a folder must be)."""
    for ancestor in reversed(path.absolute().parents):
        if ancestor.exists() and not ancestor.is_dir():
            return ancestor
    return None


def _probe(folder: Path, flag: str, shown: Path) -> None:
    """Write and delete a file: permission bits lie on read-only mounts and for root."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".dfa-ray-write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {shown} is not writable ({exc.strerror or exc}); choose a place you can write") from None


# -- other values ----------------------------------------------------------------------------
def check_device(device: str) -> None:
    """`--device` names a device torch knows and this machine has."""
    if device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {_short(device)!r} is not a device; use {DEVICES}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: dfa-ray runs on the CPU or CUDA GPUs; use {DEVICES}")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {device!r}: no CUDA GPU is visible here; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"--device {device!r}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")


def check_assignments(args: argparse.Namespace) -> None:
    for attr, flag in ASSIGNMENT_FLAGS.items():
        for item in getattr(args, attr, None) or []:
            if len(item) > MAX_ASSIGNMENT_CHARS:
                key = item.partition("=")[0]
                raise ConfigError(f"{flag} {_short(key, 40)}=...: the value is {len(item)} characters long; "
                                  f"an option value is at most {MAX_ASSIGNMENT_CHARS}")


def check_inputs(args: argparse.Namespace) -> None:
    """Files the command reads exist (so a typo fails before the dataset is loaded)."""
    teacher = getattr(args, "teacher", None)
    if args.command in ("search", "distill") and teacher is not None and not Path(teacher).exists():
        raise ConfigError(f"--teacher {teacher} does not exist; give the folder written by `dfa-ray teacher` "
                          "(or `dfa-ray import-teacher`), or the checkpoint.pt in it")
    genotype = getattr(args, "genotype", None)
    if args.command == "distill" and genotype is not None:
        from dfa_ray.dfa.genotype import REFERENCE_KINDS

        if genotype not in REFERENCE_KINDS and not Path(genotype).is_file():
            raise ConfigError(f"--genotype {genotype} is not a file; give the genotype file written by "
                              f"`dfa-ray search`, or one of {', '.join(REFERENCE_KINDS)}")


def check_names(args: argparse.Namespace) -> None:
    """Model, dataset and recipe names, against the registries (whose errors list the valid
    names), before a progress line says a run is starting."""
    if args.command not in ("teacher", "search", "distill"):
        return
    from dfa_ray.data import DATASETS
    from dfa_ray.models import MODELS

    for attr in ("model", "student"):
        if getattr(args, attr, None) is not None:
            MODELS.get(getattr(args, attr))
    if getattr(args, "data", None) is not None:
        DATASETS.get(args.data)
    if getattr(args, "recipe", None) is not None:
        from dfa_ray.engine.recipes import RECIPES

        RECIPES.get(args.recipe)


def check_args(args: argparse.Namespace) -> None:
    """Every check that needs no data and no training, in the order a user would fix them:
    plug-ins first (they may define the names checked later), then the outputs, then the rest."""
    plugins = getattr(args, "plugin", None)
    if plugins:
        from dfa_ray.plugins import import_plugins

        import_plugins(plugins, where="--plugin")
    check_assignments(args)
    out_attr = OUT_FOLDER.get(args.command)
    if out_attr and getattr(args, out_attr, None) is not None:
        check_out_folder(getattr(args, out_attr), f"--{out_attr}")
    out_attr = OUT_FILE.get(args.command)
    if out_attr and getattr(args, out_attr, None) is not None:
        check_out_file(getattr(args, out_attr), f"--{out_attr}")
    if args.command == "import-teacher" and getattr(args, "storage", None) is not None:
        check_out_folder(args.storage, "--storage")
    device = getattr(args, "device", None)
    if isinstance(device, str):
        check_device(device)
    check_names(args)
    check_inputs(args)


__all__ = ["OneLineParser", "check_args", "check_device", "check_out_file", "check_out_folder", "epochs_arg",
           "seed_arg"]
