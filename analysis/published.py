"""The published CIFAR-100 top-1 numbers (../shared/reference/kd_protocol.md) as data.

Published numbers are put beside ours only where they are comparable: the same teacher, the
same student, dataset `cifar100` and the same training protocol (our recipe name: `crd` for
the CRD benchmark table, `overhaul` for the WRN-28-4 pairs of the Overhaul/DFA papers). A
digits or CINIC-10 run, a `quick` recipe, or a pair the papers did not run gets none.
`protocol_deviations` lists where our recipe departs from the protocol's (e.g. fewer epochs),
so the report can say that a side-by-side is only indicative.

Our method names map to the papers' columns (`METHOD_COLUMNS`); the papers' methods that we do
not run (CRD, Overhaul) are shown as published-only rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

PUBLISHED_DATASET = "cifar100"

# Our method name -> the published column, per protocol.
METHOD_COLUMNS: dict[str, dict[str, str]] = {
    "crd": {"teacher": "T", "vanilla": "S", "kd": "KD", "fitnet": "FitNet", "at": "AT"},
    "overhaul": {"teacher": "T", "vanilla": "Student alone", "dfa": "DFA"},
}
# Published methods we do not run: shown as rows of their own, marked published.
PUBLISHED_ONLY: dict[str, tuple[str, ...]] = {"crd": ("CRD",), "overhaul": ("Overhaul",)}

# The protocols' recipe fields that make numbers comparable (kd_protocol.md).
PROTOCOL_RECIPES: dict[str, dict[str, Any]] = {
    "crd": {"epochs": 240, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4},
    "overhaul": {"epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "nesterov": True},
}
SOURCES = {
    "crd": "CRD benchmark (Tian et al., ICLR 2020), last epoch, via kd_protocol.md",
    "overhaul": "Overhaul (Heo et al., ICCV 2019) and DFA (Guan et al., ECCV 2020), via kd_protocol.md",
}


@dataclass(frozen=True)
class Published:
    """The published top-1 (%) of one pair under one protocol."""

    protocol: str
    teacher: str
    student: str
    values: Mapping[str, float]  # column -> top-1 %
    notes: Mapping[str, str] = field(default_factory=dict)  # column -> caveat
    dataset: str = PUBLISHED_DATASET

    @property
    def source(self) -> str:
        return SOURCES[self.protocol]

    def for_method(self, method: str) -> float | None:
        """The published number of our `method` (None if the paper has no such column)."""
        column = METHOD_COLUMNS.get(self.protocol, {}).get(method)
        return self.values.get(column) if column else None


_CRD_COLUMNS = ("T", "S", "KD", "FitNet", "AT", "CRD")
_CRD_ROWS = [
    ("wrn_40_2", "wrn_16_2", (75.61, 73.26, 74.92, 73.58, 74.08, 75.48)),
    ("wrn_40_2", "wrn_40_1", (75.61, 71.98, 73.54, 72.24, 72.77, 74.14)),
    ("resnet56", "resnet20", (72.34, 69.06, 70.66, 69.21, 70.55, 71.16)),
    ("resnet110", "resnet20", (74.31, 69.06, 70.67, 68.99, 70.22, 71.46)),
    ("resnet110", "resnet32", (74.31, 71.14, 73.08, 71.06, 72.31, 73.48)),
    ("resnet32x4", "resnet8x4", (79.42, 72.50, 73.33, 73.50, 73.44, 75.51)),
    ("vgg13", "vgg8", (74.64, 70.36, 72.98, 71.02, 71.43, 73.94)),
    ("vgg13", "MobileNetV2", (74.64, 64.60, 67.37, 64.14, 59.40, 69.73)),
    ("ResNet50", "MobileNetV2", (79.34, 64.60, 67.35, 63.16, 58.58, 69.11)),
    ("ResNet50", "vgg8", (79.34, 70.36, 73.81, 70.69, 71.84, 74.30)),
    ("resnet32x4", "ShuffleV1", (79.42, 70.50, 74.07, 73.59, 71.73, 75.11)),
    ("resnet32x4", "ShuffleV2", (79.42, 71.82, 74.45, 73.54, 72.73, 75.65)),
    ("wrn_40_2", "ShuffleV1", (75.61, 70.50, 74.83, 73.73, 73.32, 76.05)),
]

_OVERHAUL_TEACHER = ("wrn_28_4", 78.91)
_INFERRED = ("DFA number assigned to this pair by inference, not confirmed (dfa_method.md)")
_OVERHAUL_ROWS: list[tuple[str, dict[str, float], dict[str, str]]] = [
    ("wrn_16_4", {"Student alone": 77.28, "Overhaul": 79.11, "DFA": 79.74},
     {"DFA": "very likely this pair: Overhaul 79.11 + the paper's +0.63 = 79.74 (dfa_method.md)"}),
    ("wrn_28_2", {"Student alone": 75.12, "Overhaul": 78.02, "DFA": 78.18}, {"DFA": _INFERRED}),
    ("wrn_16_2", {"Student alone": 72.68, "Overhaul": 75.92, "DFA": 75.85},
     {"DFA": _INFERRED + "; below Overhaul's 75.92, which makes the assignment doubtful"}),
    ("resnet56", {"Student alone": 72.32, "Overhaul": 75.56}, {}),
]

PUBLISHED: tuple[Published, ...] = tuple(
    [Published("crd", t, s, dict(zip(_CRD_COLUMNS, v))) for t, s, v in _CRD_ROWS]
    + [Published("overhaul", _OVERHAUL_TEACHER[0], s, {"T": _OVERHAUL_TEACHER[1], **v}, notes)
       for s, v, notes in _OVERHAUL_ROWS]
)


def published_for(teacher: str | None, student: str | None, dataset: str | None,
                  protocol: str | None) -> Published | None:
    """The published numbers of this pair if dataset, protocol, teacher and student all match."""
    if dataset != PUBLISHED_DATASET or protocol not in METHOD_COLUMNS:
        return None
    for entry in PUBLISHED:
        if entry.protocol == protocol and entry.teacher == teacher and entry.student == student:
            return entry
    return None


def protocol_deviations(config: Mapping[str, Any], protocol: str | None) -> list[str]:
    """Where a run's recipe (flattened config, `recipe.<field>`) departs from the protocol."""
    expected = PROTOCOL_RECIPES.get(protocol or "")
    if not expected:
        return []
    out = []
    for name, value in expected.items():
        ours = config.get(f"recipe.{name}")
        if ours is not None and ours != value:
            out.append(f"{name} {ours} (protocol: {value})")
    return out


__all__ = [
    "METHOD_COLUMNS",
    "PROTOCOL_RECIPES",
    "PUBLISHED",
    "PUBLISHED_DATASET",
    "PUBLISHED_ONLY",
    "Published",
    "protocol_deviations",
    "published_for",
]
