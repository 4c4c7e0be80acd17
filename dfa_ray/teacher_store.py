"""The teacher store: where every sweep keeps its trained teachers, and the one place that knows
its layout.

    <storage>/teachers/<model>-<dataset>-<fingerprint>/checkpoint.pt, metrics.json

The fingerprint (16 hex digits of a SHA-256) keys on what makes a teacher what it is: the
architecture, the dataset (name, classes, channels), the recipe and the seed. Two sweeps that
need the same teacher therefore find the same folder, and a teacher is trained once per store.
Imported teachers (`dfa-ray import-teacher`) live in the same store under an `imported` tag
(dfa_ray.importer). A folder counts as a teacher only when its checkpoint holds the final
weights: a half-trained or damaged entry is trained again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfa_ray.names import safe_name


class TeacherStore:
    """The folders of one storage root's teachers: naming, the finished check, write, read."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder_for(self, model: str, data: Any, recipe: Any, seed: int) -> Path:
        """The folder of `model` trained on `data` with `recipe` and `seed` (it may not exist yet)."""
        from dfa_ray.engine.teacher import fingerprint, teacher_meta

        meta = teacher_meta(model, data, recipe, seed)
        return self.root / f"{safe_name(model)}-{safe_name(data.info.name)}-{fingerprint(meta)}"

    @staticmethod
    def finished(folder: str | Path) -> bool:
        """Whether the folder holds a readable teacher checkpoint with its final weights."""
        from dfa_ray.engine.teacher import CHECKPOINT_NAME, read_teacher_checkpoint
        from dfa_ray.errors import CheckpointError

        folder = Path(folder)
        if not (folder / CHECKPOINT_NAME).exists():
            return False
        try:
            _, state = read_teacher_checkpoint(folder)
        except CheckpointError:
            return False  # a damaged store entry is trained again
        return "model" in state

    @staticmethod
    def write(folder: str | Path, run: Any, model: str, data: Any, recipe: Any, seed: int) -> Path:
        """Write a training run's state (and, once it is done, the final weights) atomically."""
        from dfa_ray.engine.teacher import save_teacher_state, teacher_meta

        return save_teacher_state(folder, run, teacher_meta(model, data, recipe, seed))

    @staticmethod
    def read(folder: str | Path, data: Any = None, expect_model: str | None = None) -> tuple[Any, dict[str, Any]]:
        """The frozen teacher network in the folder and its meta data, checked against `data`."""
        from dfa_ray.engine.teacher import load_teacher

        return load_teacher(folder, data, expect_model=expect_model)
