"""Small Markdown formatting helpers shared by the report's sections."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Callable

import pandas as pd

Formatter = Callable[[object], str]


def slug(text: str) -> str:
    """A file-name-safe form of a study label (`cifar100 / crd` -> `cifar100_crd`)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "study"


def fmt(value, digits: int = 2, signed: bool = False) -> str:
    """A number with `digits` decimals (a sign with `signed`); None/NaN as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return str(value)


def md_table(frame: pd.DataFrame, columns: dict[str, str], formats: dict[str, Formatter] | None = None) -> str:
    """Markdown table of `frame`: `columns` maps column -> header; `formats` column -> formatter."""
    formats = formats or {}
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for _, row in frame.iterrows():
        cells = [formats.get(c, fmt)(row[c]) if c in formats else fmt(row[c]) for c in columns]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plain(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def pct(v) -> str:
    return fmt(100 * v, 0) + "%" if isinstance(v, float) and not math.isnan(v) else "–"


def count(n, word: str) -> str:
    """`1 win`, `2 wins`, `3 losses`."""
    n = int(n)
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def rel(path: Path, base: Path) -> str:
    return os.path.relpath(path, base).replace(os.sep, "/")


__all__ = ["count", "fmt", "md_table", "pct", "plain", "rel", "slug"]
