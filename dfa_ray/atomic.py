"""Atomic file writes: the one way every part of dfa-ray replaces a file.

A file is written to a hidden temporary name in the target's folder (`.<name>.<random>.tmp`:
the leading dot keeps pyarrow, pandas and our own readers from picking it up), flushed and
fsynced, renamed over the target with `os.replace` (atomic on POSIX within one filesystem),
and then the folder itself is fsynced so that the rename survives a power loss. A reader sees
the old file or the new one, never half of one; a failed write leaves no temporary behind.

Standard library only: the results store, which must not import torch, uses it as much as the
checkpoint code does.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable


def _fsync_folder(folder: Path) -> None:
    # Best effort: some filesystems (and Windows) cannot open a folder for fsync.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Replace `path` atomically with what `write(handle)` writes to a binary handle; returns the path.

    The target's folder is created if missing. If `write` raises, the target is untouched and
    the temporary file is removed; the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Indented JSON with sorted keys (stable diffs); values JSON cannot hold are written as text."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]
