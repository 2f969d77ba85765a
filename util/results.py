"""The run folder results/<run>/: config.json, status.json, epochs.csv, metrics.json and top-K files,
written atomically."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from util.io import atomic_write, atomic_write_json, atomic_write_text
from util.typing_coerce import ConfigError

STATES = ("running", "finished", "failed", "interrupted")


def make_run_dir(root: Path, stem: str) -> Path:
    """Create a fresh folder root/<stem>-<timestamp>[-n] and return it. A name or path longer than the file system
    takes (with room for '-n', the log copy's '.log' and the files inside), or a folder the disk refuses, is a
    ConfigError naming the path and the limit or cause."""
    from util.io import describe_os_error, name_max, path_max
    root = Path(root)
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output: cannot create the folder {root}: {describe_os_error(exc, root)}") from None
    spare_name = len("-999") + len(".log")  # a second run in the same second; log.dir/<run>.log
    spare_path = len("/.checkpoint.pt.12345678.tmp")  # the longest fixed name inside (a checkpoint's temporary file)
    size, limit = len(os.fsencode(base)), name_max(root) - spare_name
    if size > limit:
        raise ConfigError(f"output: the run folder name would be {size} bytes, more than the {limit} allowed in "
                          f"{root} (the file system's {limit + spare_name} less {spare_name} for '-N' and '.log'): "
                          f"{root / base}; use a dataset folder (or preset) with a shorter name")
    whole, longest = len(os.fsencode(str(root / base))) + spare_name + spare_path, path_max(root)
    if whole > longest:
        raise ConfigError(f"output: the run folder's paths would reach {whole} bytes, more than the {longest} a path "
                          f"may have: {root / base}; use a shorter output folder")
    for n in range(1, 1000):
        path = root / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError(f"output: cannot create the run folder {path}: {describe_os_error(exc, path)}") from None
    raise RuntimeError(f"could not create a run folder under {root}")


def read_status(run_dir: Path) -> dict[str, Any]:
    """status.json of a run folder ({} if there is none or it is unreadable)."""
    try:
        return json.loads((Path(run_dir) / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def machine_id() -> str:
    """This machine and boot: the host name plus the kernel's boot id where there is one. Host names alone
    repeat across machines (e.g. every VM called 'vm'), and a pid only means something within one boot."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}" if boot else socket.gethostname()


def process_alive(pid: Any) -> bool:
    """Whether a process with this pid exists on this machine (False for a missing or malformed pid)."""
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def writer_alive(status: dict[str, Any]) -> bool:
    """Whether the process a `running` status.json names is still alive (on this machine and boot)."""
    return (status.get("state") == "running" and status.get("host") == machine_id()
            and process_alive(status.get("pid")))


class FolderLock:
    """An exclusive lock on FOLDER/NAME (flock) held while a process works in a folder: one such process per
    folder. The holder writes its pid and machine into the file; acquire() raises ConfigError with busy()'s
    message when another process holds it. The lock goes with its process, also when that is killed."""

    name = ".lock"

    def __init__(self, folder: Path):
        self.path = Path(folder) / self.name
        self.handle: Any = None

    def acquire(self) -> None:
        """Take the lock or raise ConfigError."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (status.json's pid check still applies to runs)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise ConfigError(self.busy(holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} on {machine_id()}\n")
        handle.flush()
        self.handle = handle

    def busy(self, holder: str) -> str:
        """The error when another process (`holder`: its pid and machine) holds the lock."""
        return f"{self.path.parent} is in use by process {holder} (holding {self.path.name})"

    def release(self) -> None:
        """Let go of the lock."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class RunLock(FolderLock):
    """The lock of a run folder (RUN/.lock) while a process trains it: one trainer per run folder."""

    def busy(self, holder: str) -> str:
        """Names the trainer from its status.json."""
        status = read_status(self.path.parent)
        return (f"{self.path.parent} is being trained by process {status.get('pid', '?')} on "
                f"{status.get('host', 'this machine')} (status.json updated {status.get('updated', '?')}, "
                f"epoch {status.get('epoch', '?')}): one trainer per run folder; wait for it to end "
                f"or stop it first")


def read_checkpoint(path: Path, map_location: Any) -> dict[str, Any]:
    """torch.load of a checkpoint; an unreadable (truncated, corrupt) file is a ConfigError saying what to do."""
    import torch
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises RuntimeError, EOFError, pickle errors... for a damaged file
        kept = sorted(p.name for p in Path(path).parent.glob("epoch-*.pt")) + (
            ["best.pt"] if (Path(path).parent / "best.pt").is_file() else [])
        way = (f"copy one of the checkpoints checkpoint.keep kept ({', '.join(kept[-3:])}) over checkpoint.pt to "
               f"resume from its epoch, or start the run again" if kept else "start the run again")
        raise ConfigError(f"--resume: {path} is unreadable (truncated or corrupt: {type(exc).__name__}); {way}") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise ConfigError(f"--resume: {path} is not a checkpoint of this program; start the run again")
    return state


# config.json keys written beside the resolved config: the run's record (RECORD_CHECKED: written once at the start,
# kept in every checkpoint too and compared on --resume) and the notes a run appends (lengthened)
RECORD_CHECKED = ("device.resolved", "commit", "threads", "run_id", "data.files")
RECORD_ONLY = RECORD_CHECKED + ("lengthened",)
# the keys that only decide when training stops: a finished run continues under larger values (--resume --set)
STOP_KEYS = ("early_stop.min_epochs", "early_stop.patience", "early_stop.halt_after")


def rule_length(key: str, value: Any) -> float:
    """How long a STOP_KEYS value lets a run go on, comparably (patience 0 and halt_after 0 never stop: the
    longest)."""
    value = int(value or 0)
    return float("inf") if key in ("early_stop.patience", "early_stop.halt_after") and value == 0 else float(value)


def recorded_threads(run_dir: Path) -> Optional[int]:
    """The CPU thread count config.json says the run started with (None for a run from before it was kept)."""
    try:
        value = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8")).get("threads")
    except (OSError, ValueError, AttributeError):
        return None  # config_of_run has already said what is wrong with an unreadable config.json
    return value if isinstance(value, int) and value >= 1 else None


def file_fingerprint(path: Path) -> dict[str, Any]:
    """{"bytes", "sha256"} of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": Path(path).stat().st_size, "sha256": digest.hexdigest()}


def changed_data(recorded: dict[str, Any], files: dict[str, Path]) -> list[str]:
    """What differs between a run's recorded data.files and the same files now ('NAME (PATH): why'); names
    not in files and missing files aside (the config check and reading the data name those)."""
    out = []
    for name, then in recorded.items():
        path = files.get(name)
        if path is not None and Path(path).is_file():
            now = file_fingerprint(path)
            if now["sha256"] != then.get("sha256"):
                out.append(f"{name} ({then.get('path')}): {then.get('bytes')} bytes, sha256 {str(then.get('sha256'))[:12]} "
                           f"recorded; now {now['bytes']} bytes, sha256 {now['sha256'][:12]}")
    return out


def _normal(value: Any) -> Any:
    """A config value as config.json holds it (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=str))


def check_record(run_dir: Path, state: dict[str, Any]) -> None:
    """--resume: config.json is a record, not a way to change a run. It must equal the copy the checkpoint
    `state` keeps (every resolved key and its `input` section); a ConfigError names what was edited."""
    if "config" not in state:
        return  # a checkpoint from before the copy was kept: nothing to compare
    stored = _normal(json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8")))
    kept = _normal(state["config"])
    record = _normal(state.get("record") or {})  # checkpoints from before the record was kept have none
    if record.get("run_id") and stored.get("run_id") != record["run_id"]:
        raise ConfigError(f"--resume: {Path(run_dir) / 'checkpoint.pt'} belongs to another run (run id "
                          f"{record['run_id']}; this folder's config.json says {stored.get('run_id')!r}): it was "
                          f"copied from another run folder; put this run's own checkpoint back, or start a new run")
    edited_record = [k for k in RECORD_CHECKED if k in record and stored.get(k) != record[k]]
    if edited_record:
        key = edited_record[0]
        raise ConfigError(f"--resume: {Path(run_dir) / 'config.json'} was edited after the run started "
                          f"({', '.join(edited_record)}; {key} was {record[key]!r}): it is the run's record; put it "
                          f"back, or start a new run")
    lengthened = "lengthened" in stored

    def edited(key: str, now: Any, then: Any) -> bool:
        # a lengthened stopping rule rewrites config.json just before the next checkpoint: longer, never shorter
        if key in STOP_KEYS and lengthened:
            return rule_length(key, now) < rule_length(key, then)
        return now != then
    free = RECORD_ONLY + ("input",)
    changed = [k for k in sorted(set(kept) | set(stored)) if k not in free and edited(k, stored.get(k), kept.get(k))]
    given, was = stored.get("input", {}), kept.get("input", {})
    # in `input` a stopping key may be absent (its default): the resolved keys above guard those
    changed += [f"input.{k}" for k in sorted(set(given) | set(was))
                if k not in free and not (k in STOP_KEYS and lengthened) and given.get(k) != was.get(k)]
    if changed:
        key = changed[0]
        old = was.get(key[6:]) if key.startswith("input.") else kept.get(key)
        raise ConfigError(f"--resume: {Path(run_dir) / 'config.json'} was edited after the run started "
                          f"({', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''}; {key} was {old!r}): it is "
                          f"the run's record; put it back, or start a new run with the new settings")


class RunWriter:
    """Writes the files of one run folder; every write replaces the file atomically."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.rows: list[dict[str, Any]] = []

    def write_config(self, config: dict[str, Any]) -> None:
        """config.json: the resolved configuration (and the input it was resolved from)."""
        atomic_write_json(self.dir / "config.json", config)

    def lengthen_config(self, config: dict[str, Any], note: str) -> None:
        """config.json after a lengthened stopping rule: the new resolved keys and input, the run's own record
        keys kept, and the change appended to `lengthened`."""
        path = self.dir / "config.json"
        stored = json.loads(path.read_text(encoding="utf-8"))
        kept = {k: stored[k] for k in RECORD_ONLY if k in stored}
        kept["lengthened"] = list(stored.get("lengthened", [])) + [note]
        atomic_write_json(path, {**config, **kept})

    def write_status(self, state: str, **info: Any) -> None:
        """status.json: running | finished | failed | interrupted, with a message, the pid and the machine."""
        assert state in STATES, state
        atomic_write_json(self.dir / "status.json", {"state": state, **info, "pid": os.getpid(),
                                                     "host": machine_id(),
                                                     "updated": time.strftime("%Y-%m-%d %H:%M:%S")})

    def status_bytes(self) -> Optional[bytes]:
        """status.json as it is now, byte for byte (None if there is none), for restore_status."""
        path = self.dir / "status.json"
        return path.read_bytes() if path.is_file() else None

    def restore_status(self, before: Optional[bytes]) -> None:
        """status.json put back exactly as status_bytes read it (a resume refused before it changed the run)."""
        path = self.dir / "status.json"
        if before is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write(path, lambda handle: handle.write(before))

    def add_epoch(self, row: dict[str, Any]) -> None:
        """Append a row to epochs.csv (rewritten whole, so columns may grow)."""
        self.rows.append(row)
        columns: list[str] = []
        for r in self.rows:
            columns.extend(k for k in r if k not in columns)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: _fmt(v) for k, v in r.items()})
        atomic_write_text(self.dir / "epochs.csv", buf.getvalue())

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """metrics.json: the selected epoch's metrics and how it was selected."""
        atomic_write_json(self.dir / "metrics.json", metrics)

    def write_recommendations(self, file_name: str, lines: Iterable[str]) -> Path:
        """The SELFRec-style top-K recommendation file."""
        path = self.dir / file_name
        header = "userId: recommendations in (itemId, ranking score) pairs, * means the item is hit.\n"
        atomic_write_text(path, header + "".join(lines))
        return path


def _fmt(value: Any) -> Any:
    """A float at full precision (the shortest text that reads back as the same float: selection reads these
    rows, and 6 significant digits made false ties between epochs); anything else as it is."""
    if isinstance(value, float):
        return repr(float(value))  # numpy floats too (their own repr names the type)
    return value
