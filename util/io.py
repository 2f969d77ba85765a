"""Atomic file writes: a crash never leaves a half-written result file. Files get the usual mode of
a new file (0644 under the common umask 022), not mkstemp's private 0600. A write the disk refuses (full,
over quota, read-only, a name too long...) is one WriteError naming the file and the cause; the previous
version of the file stays as it was and no temporary file is left behind."""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

from util.signals import held
from util.typing_coerce import ConfigError

log = logging.getLogger(__name__)

# the temporary files of atomic_write: "." + the file's name (cut to fit) + "." + mkstemp's 8 characters + ".tmp"
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_TEMP_EXTRA = len("..") + 8 + len(".tmp")  # what the temporary name adds to the file's own name


class WriteError(ConfigError, OSError):
    """A file could not be written (disk full, quota, read-only, name too long...): a problem the user fixes, so
    a ConfigError (one line, exit 2), and still an OSError for callers that catch those (errno, strerror and
    filename are the refused write's)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of folder accepts (255 where it cannot be asked)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def path_max(folder: Path) -> int:
    """The longest path (bytes) the file system of folder accepts (4096 where it cannot be asked)."""
    try:
        return int(os.pathconf(folder, "PC_PATH_MAX"))
    except (OSError, ValueError, AttributeError):
        return 4096


def describe_os_error(exc: OSError, path: Path) -> str:
    """The cause of an OSError in words; a name or path too long also gets its limit."""
    cause = exc.strerror or str(exc)
    if exc.errno == errno.ENAMETOOLONG:
        folder = _existing_parent(Path(path))
        longest = max(len(os.fsencode(part)) for part in Path(path).parts)
        cause += (f" (a name may have at most {name_max(folder)} bytes, here {longest}; a path at most "
                  f"{path_max(folder)}, here {len(os.fsencode(str(path)))})")
    return cause


def _existing_parent(path: Path) -> Path:
    for folder in [path, *path.parents]:
        if folder.is_dir():
            return folder
    return Path(".")


def write_error(path: Path, exc: OSError) -> WriteError:
    """The WriteError for an OSError met while writing path: `cannot write PATH: CAUSE`."""
    error = WriteError(f"cannot write {path}: {describe_os_error(exc, path)}")
    error.errno, error.strerror, error.filename = exc.errno, exc.strerror, str(path)
    return error


class _Recording:
    """A file handle that remembers the first OSError of a write or flush: torch.save reports a failed write as
    its own RuntimeError ('unexpected pos ...'), which says nothing of the disk."""

    def __init__(self, handle: BinaryIO):
        self._handle = handle
        self.error: Optional[OSError] = None

    def write(self, data: Any) -> int:
        """Write through to the file, remembering an OSError."""
        try:
            return self._handle.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        """Flush through to the file, remembering an OSError."""
        try:
            self._handle.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _temp_prefix(path: Path) -> str:
    """'.NAME.' for the temporary file, NAME cut so that the temporary name fits where the file's own name fits."""
    room = name_max(path.parent) - _TEMP_EXTRA
    name = path.name
    while name and len(os.fsencode(name)) > room:
        name = name[:-1]
    return f".{name or 'file'}."


def _file_mode() -> int:
    """0666 minus the process umask: what open() would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write path via a temporary file in the same folder (write(handle) fills it) and a rename; a signal that
    arrives meanwhile is raised after it (util.signals), never inside the writer. An OSError of the disk (also one
    torch.save turned into its own error) is a WriteError; the old file, if any, is left as it was."""
    path = Path(path)
    with held():
        tmp: Optional[str] = None
        recording: Optional[_Recording] = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                recording = _Recording(handle)
                write(recording)  # type: ignore[arg-type]
            os.chmod(tmp, _file_mode())
            os.replace(tmp, path)
        except BaseException as exc:
            if tmp is not None:
                try:
                    Path(tmp).unlink(missing_ok=True)
                except OSError:
                    pass  # what the disk refused to write, it may refuse to unlink too (read-only): it is stale then
            cause = exc if isinstance(exc, OSError) else (recording.error if recording is not None else None)
            if cause is not None and not isinstance(exc, WriteError) and cause.errno is not None:
                raise write_error(path, cause) from None
            raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write text (UTF-8) to path atomically."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write obj as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files of atomic_write that a killed process left in folder (call it only while no other
    process writes there, e.g. holding the run's lock); logs and returns what was removed."""
    removed = []
    for path in sorted(Path(folder).iterdir()):
        if TEMP_NAME.match(path.name) and path.is_file() and not path.is_symlink():
            size = path.stat().st_size
            try:
                path.unlink()
            except OSError as exc:
                log.warning("could not remove the stale temporary file %s (%s)", path, exc.strerror)
                continue
            removed.append((path, size))
    if removed:
        log.info("removed %d temporary file(s) left by a process killed while writing: %s", len(removed),
                 ", ".join(f"{p.name} ({size} bytes)" for p, size in removed))
    return [p for p, _ in removed]
