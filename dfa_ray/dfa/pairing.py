"""Pair each student layer group with a teacher layer group by spatial size.

Same-family pairs (equal strides) pair group g with group g. Cross-family pairs take, for
each student group, the teacher group whose spatial size is nearest (in octaves, i.e.
|log2(teacher_size / student_size)|); the teacher's aggregate is then resized to the
student's size by `dfa_ray.losses.resize_to` (adaptive average pooling down, bilinear
interpolation up). Ties prefer the larger teacher map (pooling down keeps more of it than
interpolating up adds), then the deeper group. The pairing is computed from the models'
static `group_info` (no forward pass), printed, and recorded in genotypes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from torch import nn

from dfa_ray.errors import ConfigError


@dataclass(frozen=True)
class GroupPair:
    """One student group paired with one teacher group (indices 0-based)."""

    student_group: int
    teacher_group: int
    student_channels: int
    teacher_channels: int
    student_size: int  # spatial side length of the student group's output at image_size
    teacher_size: int
    candidates: tuple[str, ...]  # teacher block names of the group, in order

    @property
    def num_candidates(self) -> int:
        return len(self.candidates)

    @property
    def resize(self) -> str:
        if self.teacher_size == self.student_size:
            return "none"
        return "pool" if self.teacher_size > self.student_size else "upsample"


@dataclass(frozen=True)
class GroupPairing:
    """The pairing of a teacher-student pair at one image size; one entry per student group."""

    pairs: tuple[GroupPair, ...]
    image_size: int
    teacher: str = "teacher"
    student: str = "student"

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[GroupPair]:
        return iter(self.pairs)

    def __getitem__(self, i: int) -> GroupPair:
        return self.pairs[i]

    def __str__(self) -> str:
        head = ("student", "ch", "size", "teacher", "ch", "size", "cands", "resize")
        rows = [head] + [
            (
                f"S{p.student_group}",
                str(p.student_channels),
                f"{p.student_size}px",
                f"T{p.teacher_group}",
                str(p.teacher_channels),
                f"{p.teacher_size}px",
                str(p.num_candidates),
                p.resize,
            )
            for p in self.pairs
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [f"pairing {self.teacher} -> {self.student} at {self.image_size}px"]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "teacher": self.teacher,
            "student": self.student,
            "pairs": [{**asdict(p), "candidates": list(p.candidates)} for p in self.pairs],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GroupPairing":
        pairs = tuple(
            GroupPair(**{**p, "candidates": tuple(p["candidates"])}) for p in d["pairs"]
        )
        return cls(pairs=pairs, image_size=int(d["image_size"]), teacher=d["teacher"], student=d["student"])


def model_num_classes(model: nn.Module) -> int | None:
    """`model.num_classes` if set, else the out_features of the last Linear layer."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def model_in_channels(model: nn.Module) -> int | None:
    """`model.in_channels` if set, else the in_channels of the first Conv2d."""
    n = getattr(model, "in_channels", None)
    if isinstance(n, int):
        return n
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def spatial_size(image_size: int, stride: int) -> int:
    """Side length of a map at `stride` for a square input (convs with 'same' padding)."""
    return -(-image_size // stride)


def pair_groups(
    teacher: nn.Module,
    student: nn.Module,
    image_size: int = 32,
    teacher_name: str | None = None,
    student_name: str | None = None,
) -> GroupPairing:
    """Pair every student group with the teacher group of nearest spatial size.

    Raises ConfigError when the two models cannot be distilled into one another: different
    numbers of classes or input channels, an image size below either model's `min_size`, or a
    model without layer groups.
    """
    tname = teacher_name or type(teacher).__name__
    sname = student_name or type(student).__name__
    what = f"cannot pair teacher {tname} with student {sname}"
    for name, m in (("teacher", teacher), ("student", student)):
        if not getattr(m, "group_info", None):
            raise ConfigError(f"{what}: the {name} exposes no layer groups (group_info is empty)")
    tc, sc = model_num_classes(teacher), model_num_classes(student)
    if tc is not None and sc is not None and tc != sc:
        raise ConfigError(
            f"{what}: the teacher predicts {tc} classes and the student {sc}; "
            "build both models for the same dataset"
        )
    ti, si = model_in_channels(teacher), model_in_channels(student)
    if ti is not None and si is not None and ti != si:
        raise ConfigError(
            f"{what}: the teacher takes {ti} input channels and the student {si}; "
            "build both models with the dataset's in_channels"
        )
    for name, mname, m in (("teacher", tname, teacher), ("student", sname, student)):
        min_size = int(getattr(m, "min_size", 1))
        if image_size < min_size:
            raise ConfigError(
                f"{what}: image size {image_size}px is below the {name} {mname}'s minimum "
                f"of {min_size}px; use larger images or another {name}"
            )

    t_sizes = [spatial_size(image_size, gi.stride) for gi in teacher.group_info]
    pairs = []
    for g, sgi in enumerate(student.group_info):
        s_size = spatial_size(image_size, sgi.stride)
        # nearest in octaves; ties -> larger teacher map, then deeper group
        best = min(
            range(len(t_sizes)),
            key=lambda h: (abs(math.log2(t_sizes[h] / s_size)), -t_sizes[h], -h),
        )
        tgi = teacher.group_info[best]
        pairs.append(
            GroupPair(
                student_group=g,
                teacher_group=best,
                student_channels=sgi.channels,
                teacher_channels=tgi.channels,
                student_size=s_size,
                teacher_size=t_sizes[best],
                candidates=tuple(tgi.block_names),
            )
        )
    return GroupPairing(pairs=tuple(pairs), image_size=image_size, teacher=tname, student=sname)
