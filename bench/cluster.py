"""Where a grid's cells run: as processes on this machine (the default) or as tasks of a Dask cluster (--backend dask).

Either way a cell is the same `python main.py ARGS` command, run in a checkout of the repository, and its outcome
(exit status, the end of its stderr) comes back to bench/runner.py, which treats both alike. On a cluster:

- Each cell is one task; a task holds one worker thread while its main.py runs (start workers with one thread
  per cell they should run at once: `dask worker ADDRESS --nthreads N`). Without --jobs the grid runs as many cells
  at once as the cluster has worker threads, counted again as workers join or leave.
- The workers need a checkout of the same commit and the datasets at the same path relative to it. Where a
  worker's checkout is the driver's own (a shared filesystem, the common case on HPC: it sees the file this run of
  the grid wrote), the cell writes its run folder in place. Otherwise the task asks for the files the cell needs
  (the run folder a resume continues, the grid's split files) and the worker runs the cell in its own checkout, in
  a cell folder it creates (the grid's folder must lie inside the repository for that), sends the folder back,
  which the driver writes where a local cell would have written it, and deletes it.
- The driver and its tasks share one entry of the scheduler's metadata, `bench.grid/<run>`: a heartbeat, the signal
  that stopped the driver and whether it drains. A task passes SIGINT/SIGTERM on to its main.py (which checkpoints
  and ends `interrupted`, as a local cell does), starts nothing once the driver stops or drains, and stops its cell
  with SIGTERM when the driver's heartbeat has not changed for HEARTBEAT_LOST_S (the driver was killed).
- A worker that dies while running a cell takes the cell's process with it (Linux: the parent-death signal), as a
  machine that fails would; the scheduler hands the task to another worker, which finds the first attempt's mark and
  returns at once; the cell ends `failed`, naming the worker, and the grid goes on.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from conf.config import REPO
from util.io import atomic_write
from util.typing_coerce import ConfigError

log = logging.getLogger(__name__)
BACKENDS = ("local", "dask")
INSTALL = "pip install -r bench/requirements-cluster.txt"  # the optional extra of --backend dask
HEARTBEAT_S = 2.0  # how often the driver shows it is alive
HEARTBEAT_LOST_S = 60.0  # a task stops its cell when the driver's heartbeat has not changed for this long
POLL_S = 1.0  # how often a task looks at the driver's heartbeat and stop signal
CONNECT_S = 30.0  # how long the driver waits for a scheduler at --address
STDERR_LINES = 40  # the end of a cell's stderr that comes back with its outcome
SLOTS_S = 5.0  # how often the driver counts the cluster's worker threads again


@dataclass
class Outcome:
    """How a cell's command ended: its exit status, the end of its stderr, the command as it ran, and where the
    cluster lost the worker that ran it, why (then returncode is None)."""

    returncode: Optional[int]
    stderr: str
    command: list[str]
    lost: str = ""
    files: dict[str, bytes] = field(default_factory=dict)  # the cell's folder, where it did not run in place
    refused: str = ""  # the worker ran nothing, and why (its record is left as it was)
    dropped: str = ""  # the cluster dropped the task without an outcome (e.g. the scheduler's connection was lost)


class LocalBackend:
    """Cells as child processes of the grid, each in a session of its own (a terminal's Ctrl-C reaches the grid
    only, which passes it on once)."""

    name = "local"

    def __init__(self) -> None:
        self.children: set[subprocess.Popen] = set()
        self._lock = threading.RLock()  # stop() runs in a signal handler: a second signal may arrive inside it

    def slots(self, jobs: Optional[int]) -> int:
        """Cells run at once: --jobs (default 1)."""
        return jobs or 1

    def run(self, argv: list[str], folder: Path, ship: list[Path], halted: Callable[[], bool]) -> Optional[Outcome]:
        """Run main.py with argv here; None when a signal arrived before it started."""
        cmd = [sys.executable, str(REPO / "main.py"), *argv]
        with self._lock:
            if halted():
                return None
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
            self.children.add(proc)
        try:
            _, stderr = proc.communicate()
        finally:
            with self._lock:
                self.children.discard(proc)
        return Outcome(proc.returncode, stderr, cmd)

    def stop(self, signum: int) -> None:
        """Pass the signal on to every running cell (each checkpoints and exits)."""
        with self._lock:
            for proc in list(self.children):
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    def drain(self) -> None:
        """Nothing to tell: the runner starts no new cell."""

    def close(self) -> None:
        """Nothing to release."""


def _distributed() -> Any:
    """The distributed package, or a ConfigError naming the extra to install."""
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"--backend dask needs the optional extra Dask distributed, which is not installed: "
                          f"{INSTALL}") from None
    return distributed


class DaskBackend:
    """Cells as tasks of a Dask cluster: one at `address` (tcp://HOST:PORT, or a scheduler file written by
    `dask scheduler --scheduler-file FILE`), or else a cluster of `jobs` one-thread workers started for this grid in
    its own process (each cell is a process of its own anyway: worker processes would only add their start-up)."""

    name = "dask"

    def __init__(self, address: Optional[str], jobs: Optional[int], out: Path):
        distributed = _distributed()
        logging.getLogger("distributed").setLevel(logging.WARNING)  # the grid's log names its cells, not the cluster's
        self.cluster = None
        try:
            if address is None:
                self.cluster = distributed.LocalCluster(n_workers=jobs or os.cpu_count() or 1, threads_per_worker=1,
                                                        processes=False, dashboard_address=":0",
                                                        silence_logs=logging.WARNING)
                self.client = distributed.Client(self.cluster)
            elif "://" in address:
                self.client = distributed.Client(address, timeout=CONNECT_S)
            else:  # a scheduler file, perhaps not yet written by a scheduler starting beside the grid
                deadline = time.monotonic() + CONNECT_S
                while not Path(address).is_file() and time.monotonic() < deadline:
                    time.sleep(0.2)
                if not Path(address).is_file():  # (distributed would wait for it without end)
                    raise TimeoutError("no scheduler file there")
                self.client = distributed.Client(scheduler_file=address, timeout=CONNECT_S)
            self.client.wait_for_workers(1, timeout=CONNECT_S)
        except Exception as exc:  # a bad address, no scheduler, a file that is not a scheduler's, no worker
            raise ConfigError(f"--address: no Dask cluster with a worker answered at {address} within "
                              f"{CONNECT_S:g} s ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                              ) from None
        self.run_id = uuid.uuid4().hex[:12]
        self.commit = head_commit(REPO)  # the workers' checkouts must be at it
        out.mkdir(parents=True, exist_ok=True)
        self.probe = out.resolve() / f".driver-{self.run_id}"  # a worker seeing this file shares the filesystem
        self.probe.write_text(f"{os.getpid()}\n")
        self.control = ["bench.grid", self.run_id]  # the scheduler's metadata the driver and its tasks share
        self.state = {"stop": 0, "drain": 0, "beat": 0}
        self.client.set_metadata(self.control, dict(self.state))
        self._count = 0
        self._slots = (0.0, 1)  # (when counted, worker threads)
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="bench.grid heartbeat", daemon=True)
        self._beat.start()
        workers = self.client.nthreads()
        log.info("dask cluster %s: %d worker(s), %d thread(s)", self.client.scheduler.address, len(workers),
                 sum(workers.values()))

    def slots(self, jobs: Optional[int]) -> int:
        """Cells run at once: --jobs, or else every worker thread of the cluster now (counted every SLOTS_S)."""
        if jobs:
            return jobs
        when, count = self._slots
        if time.monotonic() - when > SLOTS_S:
            try:
                count = max(1, sum(self.client.nthreads().values()))
            except Exception:  # the scheduler did not answer: keep the last count
                pass
            self._slots = (time.monotonic(), count)
        return count

    def _heartbeat(self) -> None:
        """The driver's heartbeat, and its stop or drain within a tenth of a second of a signal setting one (the
        handler only assigns: it must take no lock, since a second signal may arrive inside it)."""
        sent, last = (0, 0), time.monotonic()
        while not self._closed.wait(0.1):
            now = (self.state["stop"], self.state["drain"])
            if now == sent and time.monotonic() - last < HEARTBEAT_S:
                continue
            self.state["beat"] += 1
            try:
                self.client.set_metadata(self.control, dict(self.state))
                sent, last = now, time.monotonic()
            except Exception as exc:  # a scheduler gone for a moment: the next beat tries again
                log.debug("heartbeat not sent: %s", exc)

    def run(self, argv: list[str], folder: Path, ship: list[Path], halted: Callable[[], bool]) -> Optional[Outcome]:
        """Run main.py with argv as one task; None when a signal arrived before it was handed over. The files to
        ship go only to a worker that asks for them (one outside the driver's filesystem)."""
        result = self._submit(argv, folder, None, halted)
        if result is not None and result.get("needs_files"):
            files = {os.path.relpath(p.resolve(), REPO): p.read_bytes() for p in _files(ship)}
            result = self._submit(argv, folder, files, halted)
        if result is None:
            return None
        command = ["python", "main.py", *argv]
        if result.get("dropped"):
            return Outcome(None, "", command, dropped=result["dropped"])
        if result.get("refused"):
            return Outcome(None, "", command, refused=result["refused"])
        if result.get("error"):
            return Outcome(None, "", command, lost=result["error"])
        if result.get("lost"):
            return Outcome(None, "", command, lost=f"worker {result['lost']} was lost while it ran this cell (its "
                                                   f"process died or lost the scheduler)")
        if result.get("skipped"):
            return None
        return Outcome(result["returncode"], result["stderr"], result["command"], files=result.get("files", {}))

    def _submit(self, argv: list[str], folder: Path, files: Optional[dict[str, bytes]],
                halted: Callable[[], bool]) -> Optional[dict[str, Any]]:
        """One task of run_task and its result (None when a signal arrived before it was handed over)."""
        distributed = _distributed()
        with self._lock:
            if halted():
                return None
            self._count += 1
            key = f"bench.grid-{self.run_id}-{self._count}"
        future = self.client.submit(run_task, argv, str(REPO), str(self.probe),
                                    os.path.relpath(folder.resolve(), REPO), files, self.control, key, self.commit,
                                    key=key, pure=False)
        try:
            return future.result()
        except distributed.client.FutureCancelledError as exc:  # e.g. the scheduler's connection was lost a moment
            return {"dropped": f"the cluster dropped its task ({exc})"}
        except Exception as exc:  # KilledWorker and the like: the scheduler gave the task up
            return {"error": f"the cluster gave its task up: {type(exc).__name__}: {exc}"}

    def stop(self, signum: int) -> None:
        """Tell every running task to pass the signal on to its cell (sent by the heartbeat thread: this runs in a
        signal handler, which must not wait on the scheduler)."""
        self.state["stop"] = int(signum)

    def drain(self) -> None:
        """Tell the tasks not yet started to start nothing."""
        self.state["drain"] = 1

    def close(self) -> None:
        """Stop the heartbeat, remove the probe file, and close the client (and the cluster this grid started)."""
        self._closed.set()
        self._beat.join(timeout=5)
        self.probe.unlink(missing_ok=True)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


Backend = LocalBackend | DaskBackend  # where a grid's cells run


def make_backend(name: str, address: Optional[str], jobs: Optional[int], out: Path) -> Backend:
    """The backend of --backend NAME."""
    if name == "local":
        if address is not None:
            raise ConfigError("--address is for a cluster backend (--backend dask), not the local one")
        return LocalBackend()
    if name == "dask":
        return DaskBackend(address, jobs, out)
    raise ConfigError(f"--backend: {name} is not one of {', '.join(BACKENDS)}")


def head_commit(repo: Path) -> str:
    """The commit checked out at repo ('' where it is not a git checkout or git is absent)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _files(paths: list[Path]) -> list[Path]:
    """Every file under the given files and folders."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.name != ".lock")
    return found


def folder_files(folder: Path) -> dict[str, bytes]:
    """The files of a folder keyed by their path inside it."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in _files([folder])}


def write_files(folder: Path, files: dict[str, bytes]) -> int:
    """Write files (paths inside folder) into it, each atomically; refuses a path that leaves the folder."""
    folder = folder.resolve()
    for name, data in files.items():
        target = (folder / name).resolve()
        if not target.is_relative_to(folder):
            raise ValueError(f"a returned file lies outside its cell's folder: {name}")
        atomic_write(target, lambda handle, data=data: handle.write(data))
    return len(files)


def run_task(argv: list[str], driver_repo: str, probe: str, folder: str, files: Optional[dict[str, bytes]],
             control: list[str], key: str, driver_commit: str = "") -> dict[str, Any]:
    """On a worker: run one cell's main.py in this worker's checkout; its exit status, the end of its stderr and,
    where the worker does not share the driver's checkout, the cell's folder ({"needs_files": True} when such a
    worker got no files yet)."""
    import distributed
    client = distributed.get_client()
    worker = distributed.get_worker()
    command = ["python", "main.py", *argv]

    def refused(message: str) -> dict[str, Any]:
        return {"refused": message}

    started = ["bench.grid-started", *control[1:], key]  # apart from control: the tasks read control every second
    earlier = client.get_metadata(started, default=None)
    if earlier:  # an earlier attempt of this task ran on a worker that is gone: its cell is not run twice
        return {"lost": earlier}
    own = head_commit(REPO)
    if driver_commit and own and own != driver_commit:  # another version of the code would make other records
        return refused(f"worker {worker.address} has commit {own[:12]} checked out at {REPO}, the driver "
                       f"{driver_commit[:12]}: check out the driver's commit on every worker")
    state = client.get_metadata(control, default={})
    if state.get("stop") or state.get("drain"):
        return {"skipped": True}
    shared = Path(driver_repo).resolve() == REPO.resolve() and Path(probe).is_file()
    cell = REPO / folder
    if not shared:
        if files is None:
            return {"needs_files": True}
        outside = [n for n in [folder, *files] if Path(n).is_absolute() or ".." in Path(n).parts]
        if outside:
            return refused(f"worker {worker.address} does not share the driver's filesystem, so the grid's folder "
                           f"must lie inside the repository (the default results/grids/NAME does); {outside[0]} "
                           f"does not")
        if cell.exists():  # not this task's to overwrite or delete
            return refused(f"worker {worker.address} already has {folder} in its checkout {REPO} (its own run, or "
                           f"one a task left behind): move it away")
        for name, data in files.items():
            target = REPO / name
            if not (target.is_file() and target.read_bytes() == data):  # e.g. a split file another cell reads
                atomic_write(target, lambda handle, data=data: handle.write(data))
    client.set_metadata(started, worker.address)
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_die_with_worker)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    _watch(proc, lambda: client.get_metadata(control, default=None))
    reader.join()
    result: dict[str, Any] = {"returncode": proc.returncode, "stderr": "".join(lines[-STDERR_LINES:]),
                              "command": command, "worker": worker.address}
    if not shared:  # the folder this task created goes back to the driver, and from here
        result["files"] = folder_files(cell) if cell.is_dir() else {}
        shutil.rmtree(cell, ignore_errors=True)
    return result


def _prctl() -> Optional[Callable[..., int]]:
    """libc's prctl where there is one (Linux), looked up once: the forked child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_worker() -> None:
    """In a cell's process before it starts: SIGKILL when the worker thread that started it dies (Linux), so that a
    worker that dies takes its cell with it, as a failing machine would."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _watch(proc: subprocess.Popen, control: Callable[[], Optional[dict[str, int]]]) -> None:
    """Wait for the cell's process, passing on the driver's stop signal, and stopping it when the driver is gone."""
    beat, seen, sent = None, time.monotonic(), False
    while True:
        try:
            proc.wait(timeout=POLL_S)
            return
        except subprocess.TimeoutExpired:
            pass
        try:
            state = control() or {}
        except Exception:  # the scheduler did not answer: count it as a missed heartbeat
            state = {"stop": 0, "beat": beat}
        if state.get("beat") != beat:
            beat, seen = state.get("beat"), time.monotonic()
        signum = state.get("stop") or (signal.SIGTERM if time.monotonic() - seen > HEARTBEAT_LOST_S else 0)
        if signum and not sent:
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass
            sent = True
