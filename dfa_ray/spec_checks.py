"""The spec checks that reach beyond one field's type: names against the project's registries
(models, datasets, recipes, methods), option values against their typed models (search
options, recipes, method options), loggers and callbacks against what is installed, and the
relations between sections (warm-up, early rungs, `first_rung`, genotype sources).

Why its own module: these checks import the registries (which import torch) and, for
callbacks only, Ray, all lazily; the section models in `dfa_ray.spec` call them. Every problem
is added to a `Problems` with its path below the section that checks it, with the models' own
field locations (no parsing of other modules' messages).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from pydantic import ValidationError

from dfa_ray.spec_errors import Problems, one_problem, suggest, unknown
from dfa_ray.spec_space import is_number

if TYPE_CHECKING:
    from dfa_ray.spec import SearchSpec, SweepSpec

# logger -> the package it needs (csv and json are Ray's own); each is an extra of dfa-ray
LOGGER_PACKAGES = {"tensorboard": "tensorboardX", "mlflow": "mlflow", "wandb": "wandb"}


# --- registry look-ups (the registries import torch) ----------------------------------------
def model_names() -> list[str]:
    from dfa_ray.models import MODELS

    return MODELS.names()


def dataset_names() -> list[str]:
    from dfa_ray.data import DATASETS

    return DATASETS.names()


def recipe_names() -> list[str]:
    from dfa_ray.engine.recipes import RECIPES

    return RECIPES.names()


def method_names() -> list[str]:
    from dfa_ray.engine.methods import METHODS

    return METHODS.names()


def reference_kinds() -> tuple[str, ...]:
    from dfa_ray.dfa.genotype import REFERENCE_KINDS

    return tuple(REFERENCE_KINDS)


def allowed_methods() -> list[str]:
    """Registered distillation methods plus the reference genotypes `dfa:<last|average|random>`."""
    names = method_names()
    refs = [f"dfa:{g}" for g in reference_kinds()] if "dfa" in names else []
    return names + refs


def check_scalar_map(value: dict[str, Any]) -> dict[str, Any]:
    """Option maps hold YAML scalars or flat lists of them (e.g. a normalisation name)."""
    for key, v in value.items():
        items = v if isinstance(v, list) else [v]
        for item in items:
            if item is not None and not isinstance(item, (bool, int, float, str)):
                raise ValueError(
                    f"option {key!r} must be a number, string, boolean, null or a flat list of them"
                )
    return value


# --- option values, validated by their own models ---------------------------------------------
def _field_errors(model: Any, data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The model's errors for `data`, with their field locations ([] when valid)."""
    from dfa_ray.option_models import FIELD_ERRORS

    try:
        model.model_validate(dict(data), context=FIELD_ERRORS)
    except ValidationError as exc:
        return exc.errors(include_url=False)
    return []


def check_search_options(problems: Problems, search: "SearchSpec") -> None:
    """`search.options` and `search.space` against SearchOptions: each bad value at its path
    (`search.options.gamma_ts`, `search.space.lam.choice[2]`)."""
    from dfa_ray.dfa.options import SearchOptions

    valid = list(SearchOptions.model_fields)
    errors = _field_errors(SearchOptions, search.options)
    for err in errors:
        key = err["loc"][0] if err["loc"] else None
        if err["type"] == "extra_forbidden":
            problems.add(("options", key), unknown("search option", key, valid, "options"))
        else:
            problems.add(("options", key) if key is not None else ("options",), err["msg"], err.get("input"))
    for key, dist in search.space.items():
        if key not in valid:
            problems.add(("space", key), unknown("search option", key, valid, "options"))
            continue
        if key in search.options:
            problems.add(("space", key), "is also fixed in search.options; keep it in one of the two")
            continue
        if errors:
            continue  # the fixed options are wrong: every sample would be
        for i, value in enumerate(dist.endpoints()):
            bad = _field_errors(SearchOptions, {**search.options, key: value})
            if bad:
                where = bad[0]["loc"][0] if bad[0]["loc"] else None
                message = bad[0]["msg"] if where == key else \
                    f"makes search option {where} invalid: it {bad[0]['msg']} (it is {bad[0].get('input')!r})"
                problems.add(("space", key, dist.kind, i), message, value)
                break  # one bad value per option is enough to fix the range


def check_method_options(problems: Problems, method: str, options: Mapping[str, Any]) -> None:
    """`distill.options.<method>` against the method's own options model."""
    from dfa_ray.engine.methods import METHODS
    from dfa_ray.engine.methods.base import allowed_text

    name = method.split(":", 1)[0]
    cls = METHODS.get(name)
    fields = cls.Options.model_fields
    for err in _field_errors(cls.Options, {**cls.default_overrides(None), **options}):
        key = err["loc"][0] if err["loc"] else None
        if err["type"] == "extra_forbidden":
            problems.add(("options", method, key), f"unknown option {key!r} of method {name}{suggest(key, fields)}; "
                                                   f"valid options: {', '.join(fields)}")
        elif key in fields:
            problems.add(("options", method, key), f"must be {allowed_text(fields[key])}", err.get("input"))
        else:
            problems.add(("options", method), err["msg"])


def check_recipe(
    problems: Problems,
    protocol: str,
    path: tuple[str, ...],
    base: Mapping[str, Any],
    overrides: Mapping[str, Any],
    max_epochs: int,
) -> None:
    """Recipe overrides on top of the protocol's recipe and `base`, each bad one at `path.<field>`."""
    from dfa_ray.engine.recipes import RECIPES, Recipe

    for key, value in overrides.items():
        if key == "epochs" and is_number(value) and value > max_epochs:
            problems.add((*path, key), f"must be at most {max_epochs}", value)
            return
    if "name" in overrides:
        problems.add((*path, "name"), "the recipe's name is its protocol; set `protocol` instead", overrides["name"])
        return
    valid = [k for k in Recipe.model_fields if k != "name"]
    for err in _field_errors(Recipe, {**RECIPES.get(protocol).model_dump(), **base, **overrides}):
        key = str(err["loc"][0]) if err["loc"] else ""
        if err["type"] == "extra_forbidden":
            message = f"recipe field {key!r} does not exist{suggest(key, valid)}; valid fields: {', '.join(valid)}"
        else:
            message = err["msg"]
        if key in overrides:
            problems.add((*path, key), message, overrides[key])
        else:
            problems.add(path, f"{key}: {message}")


# --- loggers and callbacks ----------------------------------------------------------------------
def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def check_loggers(problems: Problems, loggers: Iterable[str], with_options: Iterable[str]) -> None:
    loggers = list(loggers)
    for i, logger in enumerate(loggers):
        package = LOGGER_PACKAGES.get(logger)
        if package is not None and not installed(package):
            problems.add(("loggers", i), f"logger {logger!r} needs the {package} package, which is not installed: "
                                         f"pip install 'dfa-ray[{logger}]'", logger)
        if logger in loggers[:i]:
            problems.add(("loggers", i), f"duplicate of loggers[{loggers.index(logger)}]", logger)
    for logger in with_options:
        if logger not in loggers:
            problems.add(("logger_options", logger), f"options for logger {logger!r}, which is not in run.loggers; "
                                                     "add it there or remove these options")


def check_callbacks(problems: Problems, callbacks: Iterable[str]) -> None:
    """Each `package.module:ClassName` imports and names a ray.tune.Callback subclass."""
    callbacks = list(callbacks)
    if not callbacks:
        return
    import torch  # noqa: F401  (torch before Ray: docs/design.md, import order)
    from ray.tune import Callback

    for i, target in enumerate(callbacks):
        module_name, _, class_name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001  (whatever the module raises, it is this entry's problem)
            reason = (str(exc).splitlines() or [""])[0]
            problems.add(("callbacks", i), f"cannot import module {module_name!r} ({type(exc).__name__}: {reason}); "
                                           "install it or add its folder to PYTHONPATH", target)
            continue
        obj = getattr(module, class_name, None)
        if obj is None:
            problems.add(("callbacks", i), f"module {module_name!r} has no {class_name!r}", target)
        elif not (isinstance(obj, type) and issubclass(obj, Callback)):
            problems.add(("callbacks", i), f"{target} is not a ray.tune.Callback subclass", target)


# --- relations between sections -----------------------------------------------------------------
def check_sweep(spec: "SweepSpec") -> None:
    """Raise the first problem that spans sections (each needs the others valid)."""
    warmup = largest_warmup(spec.search)
    if spec.search.enabled and warmup >= spec.search.epochs:
        where = ("search", "space", "warmup_epochs") if "warmup_epochs" in spec.search.space else \
            ("search", "options", "warmup_epochs")
        raise one_problem(where, f"a warm-up of {warmup} epoch(s) leaves none of the {spec.search.epochs} search "
                                 "epochs to search beta; make it smaller than search.epochs", warmup)
    early = early_rung_problem(spec)
    if early is not None:
        raise one_problem(("search", "scheduler", "grace_period"), early, spec.search.scheduler.grace_period)
    transfer = spec.distill.genotype_from
    if transfer is not None and transfer.file is not None and len(spec.pairs) > 1:
        raise one_problem(("distill", "genotype_from", "file"),
                          "one genotype file serves one pair; with several pairs use sweep: <folder>", transfer.file)
    if (spec.distill.enabled and "dfa" in spec.distill.methods and not spec.search.enabled
            and spec.distill.genotype_from is None):
        raise one_problem(("distill", "methods"),
                          "method 'dfa' distils with the searched genotype, but search.enabled is false; "
                          "enable the search or use dfa:last, dfa:average, dfa:random")


def student_groups(name: str) -> int:
    """The student's number of layer groups (= its paired groups), without allocating weights."""
    import torch

    from dfa_ray.models import create_model

    with torch.device("meta"):
        return create_model(name, num_classes=10).num_groups


def largest_warmup(search: "SearchSpec") -> int:
    """The longest warm-up (epochs before beta moves) a trial of this search can have."""
    if "warmup_epochs" in search.space:
        return max(search.space["warmup_epochs"].endpoints())
    return search.options.get("warmup_epochs", 0)


def schedules(search: "SearchSpec") -> set[str]:
    """The search schedules (groupwise, joint) the trials of this search can have."""
    if "schedule" in search.space:
        return set(search.space["schedule"].endpoints())
    return {search.options.get("schedule", "groupwise")}


def first_group_done(spec: "SweepSpec") -> float | None:
    """Epochs after which every pair's groupwise search has finished its first group; for a
    joint search, the first epoch that moves beta after a warm-up (None without a warm-up)."""
    s = spec.search
    kinds = schedules(s)
    # a warm-up (the largest the space allows) comes before any group is searched
    warmup = largest_warmup(s)
    if "groupwise" not in kinds:
        # joint: every group moves from the first epoch after the warm-up
        return float(warmup + 1) if warmup > 0 else None
    # the pair with the fewest groups gives each group the most epochs: its first group ends last
    return warmup + (s.epochs - warmup) / min(student_groups(p.student) for p in spec.pairs)


def first_rung(spec: "SweepSpec") -> int:
    """The grace period the search's scheduler uses: the spec's, else the first group's share."""
    grace = spec.search.scheduler.grace_period
    if grace is not None:
        return grace
    done = first_group_done(spec)
    return max(1, min(spec.search.epochs, math.ceil(done))) if done is not None else 1


def early_rung_problem(spec: "SweepSpec") -> str | None:
    """A pruning rung (asha/sha) before the first group's share of a groupwise search is over."""
    s = spec.search
    if not s.enabled or s.scheduler.type == "fifo" or s.scheduler.early_rungs or s.scheduler.grace_period is None:
        return None
    done = first_group_done(spec)
    if done is None or s.scheduler.grace_period >= done:
        return None
    warmup = largest_warmup(s)
    if "groupwise" not in schedules(s):
        return (f"the first rung ({s.scheduler.grace_period} epoch(s)) comes before beta has been searched for an "
                f"epoch ({warmup:g} warm-up epoch(s) + 1): pruning would compare trials on lambda alone; set "
                f"grace_period >= {math.ceil(done)}, or search.scheduler.early_rungs: true if that is "
                f"what you want")
    groups = min(student_groups(p.student) for p in spec.pairs)
    share = f"{s.epochs} epochs / {groups} groups" if warmup == 0 else \
        f"{warmup:g} warm-up + {s.epochs - warmup:g} epochs / {groups} groups"
    return (f"the first rung ({s.scheduler.grace_period} epoch(s)) comes before the first group's search is over "
            f"({share} = {done:g}): a groupwise search has then moved "
            f"only the first group's weights, so pruning would compare trials on lambda alone; set grace_period "
            f">= {math.ceil(done)}, or search.scheduler.early_rungs: true if that is what you want")
