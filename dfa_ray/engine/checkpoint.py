"""Atomic, safe checkpoint files and the RNG state that bit-for-bit resume needs.

Checkpoints are written to a temporary file in the same folder and renamed over the target
(`dfa_ray.atomic`), so a crash mid-write leaves the previous checkpoint whole.
They are read with `torch.load(weights_only=True)`: a checkpoint holds only tensors and plain
Python values, so loading one cannot execute code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The one atomic-write helper of the package; re-exported here, where callers have always found it.
from dfa_ray.atomic import atomic_write, atomic_write_bytes, atomic_write_json  # noqa: F401
from dfa_ray.errors import CheckpointError


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write `state` (tensors and plain values only) atomically."""
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint safely; a missing, truncated or foreign file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {first_line(exc)}); "
            "it is truncated, corrupt or not a dfa-ray checkpoint: delete it to start over"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a dfa-ray state dictionary")
    return state


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's text ("" for an exception without text, e.g. EOFError())."""
    return str(exc).partition("\n")[0][:limit]


def capture_rng_state() -> dict:
    """RNG states of python, numpy and torch as tensors/plain values (weights_only-safe)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        ("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    """torch.save keeps tuples, but be lenient with lists from other writers."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value
