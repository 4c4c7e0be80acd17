"""Sweep-spec problems as one-line messages: pydantic errors (and the problems the checks
collect) turned into `field.path: what is wrong (got value)`, with the allowed keys of a
section and a `did you mean` for a near-miss name.

Why its own module: every spec module reports through it (the section models, the cross-field
checks, the search space), so the message style is decided in one place. No torch, no Ray.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any, Annotated, Iterable

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from dfa_ray.errors import ConfigError

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_:+-]+$")


class Problems:
    """Collects (sub-path, message, value) and raises them as one pydantic error, which
    `problem_lines` unfolds into one line per problem, each at its own path."""

    _NO_VALUE = object()

    def __init__(self) -> None:
        self.items: list[tuple[tuple[str | int, ...], str, str | None]] = []

    def add(self, path: Iterable[str | int], message: str, value: Any = _NO_VALUE) -> None:
        got = None if value is self._NO_VALUE else short(value)
        self.items.append((tuple(path), message, got))

    def raise_if_any(self) -> None:
        if self.items:
            raise PydanticCustomError(
                "spec_problems", "{count} problem(s)", {"count": len(self.items), "problems": self.items}
            )


def one_problem(path: Iterable[str | int], message: str, value: Any = Problems._NO_VALUE) -> PydanticCustomError:
    """A single problem at `path` (relative to the validator's own location), to raise."""
    problems = Problems()
    problems.add(path, message, value)
    return PydanticCustomError("spec_problems", "1 problem(s)", {"count": 1, "problems": problems.items})


def short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def suggest(value: Any, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(valid), n=1) if isinstance(value, str) else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(what: str, value: Any, valid: list[str], plural: str, quote: bool = False) -> str:
    """`unknown method (did you mean 'kd'?); valid methods: a, b, c`."""
    named = f" {value!r}" if quote else ""
    return f"unknown {what}{named}{suggest(value, valid)}; valid {plural}: {', '.join(valid)}"


def path_text(loc: Iterable[str | int]) -> str:
    """`pairs[1].student`, `search.space.lam.choice[2]`, `(top level)`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":  # pydantic's marker: the error is about the key itself
            out += " (key)"
        elif _PLAIN_KEY.match(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{short(part, 40)}]"
    return out or "(top level)"


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional from a type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def model_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The section (model class) at an error location under `root`, to list its allowed keys."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                field = next((f for f in tp.model_fields.values() if f.alias == part), None)
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) in (tuple, list, dict):
            tp = typing.get_args(tp)[-1] if typing.get_origin(tp) is dict else typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def allowed_keys(model: type[BaseModel] | None) -> str:
    if model is None:
        return "; allowed keys: see the documentation"
    if not model.model_fields:
        return "; this section takes no keys"
    return "; allowed keys: " + ", ".join(f.alias or n for n, f in model.model_fields.items())


_FRIENDLY = {  # pydantic's words for YAML's types
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
}


def problem_lines(exc: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per problem of `exc`, raised while validating `root`."""
    lines = []
    errors = exc.errors(include_url=False)
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "too_short" and any(
            len(other["loc"]) > len(loc) and tuple(other["loc"][: len(loc)]) == loc for other in errors
        ):
            continue  # "too few items" only because some items were invalid: those are reported
        ctx = err.get("ctx") or {}
        kind = err["type"]
        if kind == "spec_problems":
            for sub, message, got in ctx["problems"]:
                lines.append(f"{path_text(loc + tuple(sub))}: {message}" + (f" (got {got})" if got is not None else ""))
        elif kind == "extra_forbidden":
            lines.append(f"{path_text(loc)}: unknown key {short(loc[-1], 40)}{allowed_keys(model_at(root, loc[:-1]))}")
        elif kind in ("too_short", "too_long"):
            bound = "at least" if kind == "too_short" else "at most"
            limit = ctx.get("min_length" if kind == "too_short" else "max_length")
            lines.append(f"{path_text(loc)}: must have {bound} {limit} item(s) (got {short(err.get('input'))})")
        elif kind == "missing":
            lines.append(f"{path_text(loc)}: required field is missing")
        else:
            msg = _FRIENDLY.get(kind) or err["msg"].removeprefix("Value error, ")
            lines.append(f"{path_text(loc)}: {msg} (got {short(err.get('input'))})")
    return lines


def spec_error(source: str, lines: list[str]) -> ConfigError:
    return ConfigError(f"invalid sweep spec {source}:\n  " + "\n  ".join(lines))
