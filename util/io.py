"""Atomic file writes: a crash never leaves a half-written result file. Files get the usual mode of
a new file (0644 under the common umask 022), not mkstemp's private 0600."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

from util.signals import held


def _file_mode() -> int:
    """0666 minus the process umask: what open() would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write path via a temporary file in the same folder (write(handle) fills it) and a rename; a signal that
    arrives meanwhile is raised after it (util.signals), never inside the writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with held():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
            os.chmod(tmp, _file_mode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write text (UTF-8) to path atomically."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write obj as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
