"""dfa-ray: DFA search for knowledge distillation as Ray Tune sweeps.

The public Python API (the same entry points the `dfa-ray` command uses):

    import dfa_ray
    spec = dfa_ray.load_spec("experiments/quickstart.yaml", overrides={"search.epochs": 2})
    outcome = dfa_ray.run_sweep(spec)                 # or run_sweep("spec.yaml")
    epochs, trials = dfa_ray.load_results(outcome.sweep_dir)
    net = dfa_ray.create_model("resnet20", num_classes=10)

    @dfa_ray.register_model("tiny_net")               # plug-ins: docs/plugins.md
    def tiny_net(num_classes=100, in_channels=3): ...

Every name is imported on first use (module `__getattr__`), so `import dfa_ray` itself loads
neither torch nor Ray: a notebook or a plug-in module that only registers things stays cheap.
User mistakes raise `dfa_ray.DfaRayError` (a `ConfigError`, `DataError` or `CheckpointError`)
whose message names the field or file and what to do.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

__version__ = "0.1.0"

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these come from __getattr__
    import pandas as pd

    from dfa_ray.spec import SweepSpec
    from dfa_ray.sweep import SweepOutcome

# name -> (module, attribute): re-exported as they are, with their own docstrings.
_LAZY = {
    "parse_spec": ("dfa_ray.spec", "parse_spec"),
    "SweepSpec": ("dfa_ray.spec", "SweepSpec"),
    "SweepOutcome": ("dfa_ray.sweep", "SweepOutcome"),
    "create_model": ("dfa_ray.models", "create_model"),
    "check_model": ("dfa_ray.plugins", "check_model"),
    "register_model": ("dfa_ray.plugins", "register_model"),
    "register_dataset": ("dfa_ray.plugins", "register_dataset"),
    "register_method": ("dfa_ray.plugins", "register_method"),
    "import_plugins": ("dfa_ray.plugins", "import_plugins"),
    "load_dataset": ("dfa_ray.data", "load_dataset"),
    "load_teacher": ("dfa_ray.engine.teacher", "load_teacher"),
    "import_teacher": ("dfa_ray.importer", "import_teacher"),
    "DfaRayError": ("dfa_ray.errors", "DfaRayError"),
    "ConfigError": ("dfa_ray.errors", "ConfigError"),
    "DataError": ("dfa_ray.errors", "DataError"),
    "CheckpointError": ("dfa_ray.errors", "CheckpointError"),
}


def load_spec(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None,
              storage: str | os.PathLike[str] | None = None) -> "SweepSpec":
    """Read and validate a sweep spec (YAML) into a frozen `SweepSpec`.

    `overrides` sets fields by dotted path, as `dfa-ray sweep --set` does (`{"search.epochs": 2,
    "pairs.0.student": "resnet8"}`); `storage` replaces the spec's storage folder. The spec's
    `plugins` are imported first, so it may name plug-in models. Every problem is reported at
    once in one `ConfigError`, each with its field path.
    """
    from dfa_ray.spec import load_spec as _load

    return _load(path, overrides=overrides, storage=None if storage is None else str(storage))


def run_sweep(spec: "SweepSpec | Mapping[str, Any] | str | os.PathLike[str]", *,
              overrides: Mapping[str, Any] | None = None, storage: str | os.PathLike[str] | None = None,
              address: str | None = None, log: Callable[[str], None] = print,
              ray_init: Mapping[str, Any] | None = None) -> "SweepOutcome":
    """Run (or resume) a whole study on Ray Tune: teachers -> search -> distillation.

    `spec` is a `SweepSpec`, a plain mapping (validated like a YAML spec) or the path of a YAML
    spec; `overrides` and `storage` apply to the last two as in `load_spec`. `address`: a Ray
    cluster to attach to (`"auto"`), default a local Ray started here (`ray_init`: extra
    `ray.init` arguments for it, e.g. `{"num_cpus": 4, "runtime_env": {...}}`). `log` gets one
    line per event and epoch. Returns a `SweepOutcome` (sweep folder, teacher folders, the
    genotype of every pair); the results are in `outcome.results_dir` (`load_results`).
    Running it again with the same spec continues a stopped sweep.
    """
    from dfa_ray.spec import SweepSpec, apply_overrides, parse_spec
    from dfa_ray.sweep import run_sweep as _run

    if isinstance(spec, SweepSpec):
        if overrides or storage is not None:
            data = apply_overrides(spec.to_dict(), overrides)
            if storage is not None:
                data["storage"] = str(storage)
            spec = parse_spec(data)
    elif isinstance(spec, Mapping):
        data = apply_overrides(dict(spec), overrides)
        if storage is not None:
            data["storage"] = str(storage)
        spec = parse_spec(data)
    else:
        spec = load_spec(spec, overrides=overrides, storage=storage)
    return _run(spec, address=address, log=log, ray_init=dict(ray_init) if ray_init else None)


def load_results(path: str | os.PathLike[str]) -> "tuple[pd.DataFrame, pd.DataFrame]":
    """The results of a sweep as two DataFrames `(epochs, trials)`: one row per trial and
    epoch, one row per trial (schema in docs/results.md). `path` is the sweep folder
    `<storage>/<name>` or its `results/` folder; a damaged file is skipped with a warning."""
    from dfa_ray.results import load

    return load(Path(path))


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'dfa_ray' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", "load_results", "load_spec", "run_sweep", *_LAZY]
