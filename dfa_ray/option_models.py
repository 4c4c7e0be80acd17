"""The base of the typed option models (`SearchOptions`, `Recipe`): each field declares its
default, a one-line meaning and the values it allows, and a bad value fails as
`must be <allowed>` at the field's own path.

Why one base: the same model serves two kinds of caller. The sweep spec validates with
`Model.model_validate(data, context=FIELD_ERRORS)` and gets pydantic's ValidationError, whose
locations become field paths (`search.options.gamma_ts`, `recipe.lr`); everybody else (the CLI,
a trial rebuilding its options from JSON, a notebook) gets one ConfigError that names the
field, the value and what is allowed. Both read the `allowed` text declared beside the field.
This module imports neither torch nor Ray (the spec imports it).
"""

from __future__ import annotations

import types
import typing
from typing import Any, Annotated, ClassVar, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from dfa_ray.errors import ConfigError

# Validation context that asks for pydantic's ValidationError (with locations) instead of a
# ConfigError: what the spec passes, so that it can report every problem at its path.
FIELD_ERRORS: Mapping[str, bool] = types.MappingProxyType({"field_errors": True})
INVALID = "invalid_option"  # the error type of every field failure


def option(default: Any, description: str, allowed: str, **constraints: Any) -> Any:
    """One field: its default, meaning, what a user may write, and pydantic constraints."""
    if isinstance(default, float) and "allow_inf_nan" not in constraints:
        constraints["allow_inf_nan"] = False
    return Field(default, description=description, json_schema_extra={"allowed": allowed}, **constraints)


def allowed_of(field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return str(extra.get("allowed") or "a valid value")


def _takes_bool(annotation: Any) -> bool:
    """Whether a field may hold a bool (a bool is an int to Python and to lax pydantic: it
    must not pass for `epochs: true`)."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if annotation is bool or annotation is Any:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_takes_bool(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is Literal:
        return any(isinstance(a, bool) for a in typing.get_args(annotation))
    return False


def type_word(annotation: Any) -> str:
    """`int`, `float`, `bool`, `str`; `number` for an optional number, as a user reads it."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return "number" if args[0] in (int, float) else type_word(args[0])
    return getattr(annotation, "__name__", "value")


class OptionModel(BaseModel):
    """Frozen, no unknown keys; every field failure is `must be <allowed>` (error type
    `invalid_option`, context `allowed` and `cause`: the first underlying pydantic error type)."""

    # validate_default: a rule between fields (lr_min <= lr) must also hold for a default
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @field_validator("*", mode="wrap")
    @classmethod
    def _say_what_is_allowed(cls, value: Any, handler: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields[info.field_name]
        allowed = allowed_of(field)
        if isinstance(value, bool) and not _takes_bool(field.annotation):
            raise PydanticCustomError(INVALID, "must be {allowed}", {"allowed": allowed, "cause": "bool_type"})
        try:
            out = handler(value)
        except ValidationError as exc:
            cause = exc.errors(include_url=False)[0]["type"]
            raise PydanticCustomError(INVALID, "must be {allowed}", {"allowed": allowed, "cause": cause}) from None
        rule = cls._rule(info.field_name, out, info.data)
        if rule is not None:
            raise PydanticCustomError(INVALID, "must be {allowed}", {"allowed": rule, "cause": "rule"})
        return out

    @classmethod
    def _rule(cls, name: str, value: Any, earlier: Mapping[str, Any]) -> str | None:
        """A rule beyond type and bounds (a format, a relation to an earlier field): None when
        `value` keeps it, else the allowed text to report."""
        return None

    @model_validator(mode="wrap")
    @classmethod
    def _config_error_unless_asked(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            if info.context and info.context.get("field_errors"):
                raise
            raise cls._config_error(exc, data) from None

    # --- the ConfigError of a caller outside the spec -------------------------------------
    what: ClassVar[str] = "option"

    @classmethod
    def _config_error(cls, exc: ValidationError, data: Any) -> ConfigError:
        errors = exc.errors(include_url=False)
        unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and e["loc"])
        if unknown:
            return cls._unknown_error(unknown)
        err = errors[0]
        if not err["loc"]:
            return ConfigError(f"{cls.what}s must be a mapping of name: value, got {type(data).__name__}")
        name = str(err["loc"][0])
        if err["type"] == "missing":
            return ConfigError(f"{cls.what} {name} is required")
        value = data.get(name, err.get("input")) if isinstance(data, Mapping) else err.get("input")
        ctx = err.get("ctx") or {}
        return cls._invalid_error(name, value, str(ctx.get("allowed", err["msg"])), str(ctx.get("cause", err["type"])),
                                  data)

    @classmethod
    def _unknown_error(cls, unknown: list[str]) -> ConfigError:
        return ConfigError(f"unknown {cls.what}(s) {', '.join(unknown)}; valid options: {', '.join(cls.model_fields)}")

    @classmethod
    def _invalid_error(cls, name: str, value: Any, allowed: str, cause: str, data: Any) -> ConfigError:
        return ConfigError(f"{cls.what} {name}={value!r} is invalid; allowed: {allowed}")
