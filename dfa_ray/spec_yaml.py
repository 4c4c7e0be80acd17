"""Reading a sweep spec file: YAML 1.2 numbers with a safe loader that refuses duplicate keys,
the size limits that stop a hostile or runaway file before pydantic walks it, and the dotted
`--set` overrides applied to the plain data.

Why its own module: this is everything that happens to the text before validation; it knows
nothing of the spec's sections (`dfa_ray.spec` validates what this returns).
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from dfa_ray.errors import ConfigError

MAX_SPEC_BYTES = 1 << 20  # 1 MiB of YAML
MAX_NODES = 100_000  # containers + items after alias expansion ("billion laughs")
MAX_DEPTH = 32

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.2 core-schema numbers. PyYAML resolves YAML 1.1, where `3e-4` and `1e2` (no dot) are
# strings, `012` is octal and `1:30` is the integer 90; every ML researcher writes `5e-4`.
_YAML12_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_YAML12_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _SpecLoader(yaml.SafeLoader):
    """The safe loader with YAML 1.2 numbers, refusing duplicate keys (a second `search:`
    silently replacing the first)."""

    # A copy of SafeLoader's resolvers without its YAML 1.1 int/float rules (booleans, null and
    # the rest stay as they are); the 1.2 rules are added below, int before float so `1` is an int.
    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in rules if tag not in (_INT_TAG, _FLOAT_TAG)]
        for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_yaml12_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        try:
            if text.startswith(("0x", "0o")):
                return int(text[2:], 16 if text[1] == "x" else 8)
            return int(text, 10)  # `012` is twelve in YAML 1.2
        except ValueError:  # more digits than Python converts (4300): no spec value is that long
            raise yaml.constructor.ConstructorError(
                None, None, f"the integer {text[:20]}... has {len(text)} digits", node.start_mark) from None

    def construct_yaml12_float(self, node: yaml.ScalarNode) -> float:
        text = str(self.construct_scalar(node)).lower()
        if text.endswith(".inf"):
            return -math.inf if text.startswith("-") else math.inf
        return math.nan if text == ".nan" else float(text)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_SpecLoader.add_implicit_resolver(_INT_TAG, _YAML12_INT, list("-+0123456789"))
_SpecLoader.add_implicit_resolver(_FLOAT_TAG, _YAML12_FLOAT, list("-+.0123456789"))
_SpecLoader.add_constructor(_INT_TAG, _SpecLoader.construct_yaml12_int)
_SpecLoader.add_constructor(_FLOAT_TAG, _SpecLoader.construct_yaml12_float)


def yaml_value(text: str) -> Any:
    """One value as a spec would read it (YAML 1.2 numbers, safe loader): for `--set k=v`."""
    return yaml.load(text, Loader=_SpecLoader)  # noqa: S506  (_SpecLoader is a SafeLoader)


def check_size(data: Any) -> str | None:
    """Refuse deeply nested or alias-exploded input before pydantic walks it."""
    stack = [(data, 0)]
    count = 0
    while stack:
        obj, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            return f"the spec has more than {MAX_NODES} values (YAML aliases included)"
        if depth > MAX_DEPTH:
            return f"the spec is nested deeper than {MAX_DEPTH} levels"
        if isinstance(obj, dict):
            stack.extend((v, depth + 1) for v in obj.values())
            stack.extend((k, depth + 1) for k in obj.keys())
        elif isinstance(obj, (list, tuple)):
            stack.extend((v, depth + 1) for v in obj)
    return None


def read_yaml(path: Path) -> Any:
    if not path.exists():
        raise ConfigError(f"spec file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"spec file {path} is not a file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"spec file {path} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise ConfigError(f"spec file {path} is {len(raw)} bytes; a spec is at most {MAX_SPEC_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"spec file {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_SpecLoader)  # noqa: S506  (_SpecLoader is a SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or str(exc)
        if "could not determine a constructor for the tag" in problem:
            problem = (
                f"{problem.split('tag', 1)[1].strip()} is a YAML tag that builds objects; specs are "
                "plain YAML (read with a safe loader): remove the tag"
            )
        raise ConfigError(f"invalid YAML in spec file {where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in spec file {path}: {exc}") from None


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of `data` with dotted keys set: `search.epochs`, `pairs.0.student` (or `pairs[0]`)."""
    out = copy.deepcopy(dict(data))
    for key, value in (overrides or {}).items():
        parts = str(key).replace("[", ".").replace("]", "").split(".")
        if not all(parts):
            raise ConfigError(f"override {key!r}: expected dotted keys such as search.epochs or pairs.0.student")
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"override {key!r}: {'.'.join(parts[:i]) or 'the spec'} is a list of "
                        f"{len(node)}; use an index 0..{len(node) - 1}"
                    )
                idx: Any = int(part)
            elif isinstance(node, dict):
                idx = part
            else:
                raise ConfigError(f"override {key!r}: {'.'.join(parts[:i])} is not a mapping or list")
            if last:
                node[idx] = copy.deepcopy(value)
            else:
                if isinstance(node, dict) and (idx not in node or node[idx] is None):
                    node[idx] = {}
                node = node[idx]
    return out
