"""Distillation methods behind one contract (after mdistiller's `Distiller`); see
docs/methods.md for the contract and how to add a method.

`base.py` holds the contract (`Distiller`, `MethodOptions`, `MethodContext`, `TrainSplit`,
`register_method`, `build_distiller`, `resolve_options`); every other module of this package
holds methods and is imported here, so a new method is one new module (one class, its
options) that registers itself. Families: `logits` (vanilla, kd, dkd), `hints` (fitnet, at,
nst), `relations` (sp, pkt, rkd, cc), `dfa` (DFA stage 2). No training loop here: epochs,
optimisers and schedules are in the engine's loops.
"""

from __future__ import annotations

import importlib
import pkgutil

from dfa_ray.engine.methods.base import (
    METHODS,
    STANDARD_TERMS,
    CEOptions,
    Distiller,
    FeatureOptions,
    LogitOptions,
    LossDict,
    MethodContext,
    MethodOptions,
    TrainSplit,
    Views,
    WeightedOptions,
    build_distiller,
    method_catalog,
    option,
    pair_by_index,
    register_method,
    resolve_method_options,
    resolve_options,
)

# The families first, in the order `METHODS.names()` lists them; then any other module of the
# package (a contributor's new method), alphabetically.
_FAMILIES = ("logits", "hints", "relations", "dfa")


def import_method_modules() -> list[str]:
    """Import every method module of this package (each registers its classes on import):
    why adding a method needs no edit outside its own file. Returns the module names."""
    others = sorted(m.name for m in pkgutil.iter_modules(__path__)
                    if m.name not in _FAMILIES and m.name != "base" and not m.name.startswith("_"))
    names = list(_FAMILIES) + others
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


import_method_modules()

from dfa_ray.engine.methods.dfa import DFA  # noqa: E402  (re-exported for callers that build it directly)

__all__ = [
    "CEOptions", "DFA", "Distiller", "FeatureOptions", "LogitOptions", "LossDict", "METHODS", "MethodContext",
    "MethodOptions", "STANDARD_TERMS", "TrainSplit", "Views", "WeightedOptions", "build_distiller",
    "import_method_modules", "method_catalog",
    "option", "pair_by_index", "register_method", "resolve_method_options", "resolve_options",
]
