"""One generic name -> factory registry, used for models, datasets, recipes and methods.

Why one class: every registry gives the same error for an unknown name (listing the valid
ones), so the user sees one kind of message whatever the lookup was.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from dfa_ray.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually factories); `kind` names what is registered."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: register the object under `name` (default: its `__name__`)."""

        def add(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
