"""Searched options: the `{kind: [args]}` distributions of `search.space` and their mapping
to Ray Tune's sample objects.

Why its own module: a distribution is checked on its own (bounds, kinds, sizes) and is the
only spec object Tune sees; which option it may search is checked against the search options
in `dfa_ray.spec_checks`. Imports Ray only inside `tune_space`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer, model_validator

from dfa_ray.spec_errors import problem_lines, spec_error

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")
MAX_ABS_NUMBER = 1e12  # bound on search-range endpoints
MAX_CHOICES = 1_000


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Distribution(BaseModel):
    """One searched option, written in YAML as `{kind: [args]}`, e.g. `{loguniform: [0.1, 10]}`.

    choice / grid: a list of values; uniform / loguniform: [lo, hi] (floats, lo < hi, loguniform
    lo > 0); randint: [lo, hi] integers, **hi included**.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["choice", "grid", "uniform", "loguniform", "randint"]
    values: tuple[Any, ...]

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, data: Any) -> Any:
        if isinstance(data, Distribution):
            return data
        form = "one of {choice: [...]}, {grid: [...]}, {uniform: [lo, hi]}, {loguniform: [lo, hi]}, {randint: [lo, hi]}"
        if isinstance(data, dict) and set(data) == {"kind", "values"}:
            kind, values = data["kind"], data["values"]
        elif isinstance(data, dict) and len(data) == 1:
            ((kind, values),) = data.items()
        else:
            raise ValueError(f"a searched option is {form}")
        if kind not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {kind!r}; allowed: {', '.join(DISTRIBUTIONS)}")
        if not isinstance(values, (list, tuple)):
            example = "[a, b, c]" if kind in ("choice", "grid") else "[lo, hi]"
            raise ValueError(f"{kind} takes a list, e.g. {{{kind}: {example}}}")
        values = tuple(values)
        if kind in ("choice", "grid"):
            if not 1 <= len(values) <= MAX_CHOICES:
                raise ValueError(f"{kind} needs 1 to {MAX_CHOICES} values")
            for v in values:
                items = v if isinstance(v, list) else [v]
                if not all(i is None or isinstance(i, (bool, str)) or is_number(i) for i in items):
                    raise ValueError(
                        f"{kind} values must be numbers, strings, booleans or flat lists of them, got {v!r}"
                    )
            return {"kind": kind, "values": values}
        if len(values) != 2:
            raise ValueError(f"{kind} takes exactly two numbers [lo, hi]")
        lo, hi = values
        if kind == "randint":
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ValueError("randint bounds must be integers [lo, hi] (hi included)")
        elif not all(is_number(v) for v in values):
            raise ValueError(f"{kind} bounds must be finite numbers [lo, hi]")
        if any(abs(v) > MAX_ABS_NUMBER for v in values):
            raise ValueError(f"{kind} bounds must be within +-{MAX_ABS_NUMBER:g}")
        if not lo < hi:
            raise ValueError(f"{kind} needs lo < hi")
        if kind == "loguniform" and lo <= 0:
            raise ValueError("loguniform needs 0 < lo < hi")
        if kind != "randint":
            values = (float(lo), float(hi))
        return {"kind": kind, "values": values}

    @model_serializer
    def _to_yaml(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}

    def endpoints(self) -> tuple[Any, ...]:
        """Values a sample can take at the extremes (choices: all of them), for validation."""
        return self.values


def tune_space(space: Mapping[str, Distribution | Mapping[str, Any]]) -> dict[str, Any]:
    """Map a spec's search space to Ray Tune sample objects (imports ray here, nowhere else).

    choice -> tune.choice, grid -> tune.grid_search, uniform -> tune.uniform, loguniform ->
    tune.loguniform, randint [lo, hi] -> tune.randint(lo, hi + 1) (the spec's hi is included,
    Tune's upper bound is not).
    """
    from ray import tune

    makers: dict[str, Callable[[tuple[Any, ...]], Any]] = {
        "choice": lambda v: tune.choice(list(v)),
        "grid": lambda v: tune.grid_search(list(v)),
        "uniform": lambda v: tune.uniform(v[0], v[1]),
        "loguniform": lambda v: tune.loguniform(v[0], v[1]),
        "randint": lambda v: tune.randint(v[0], v[1] + 1),
    }
    out: dict[str, Any] = {}
    for key, entry in space.items():
        if not isinstance(entry, Distribution):
            try:
                entry = Distribution.model_validate(entry)
            except ValidationError as exc:
                raise spec_error("search space", [f"{key}: {line}" for line in problem_lines(exc, Distribution)]) from None
        out[key] = makers[entry.kind](entry.values)
    return out
