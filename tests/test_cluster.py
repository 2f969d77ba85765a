"""Grids on a Dask cluster (bench/cluster.py, --backend dask): the same records and tables as the local run, run
folders that travel back from workers in another checkout, a killed worker, and an interrupt and resume.

These start real Dask clusters on this machine (the optional extra, bench/requirements-cluster.txt); without it they skip."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import grid as G
from bench import table as T
from tests.conftest import REPO, SHARED, write

pytest.importorskip("distributed", reason="the cluster extra is not installed: pip install -r bench/requirements-cluster.txt")

TINY = ("name: tiny\ndatasets: [coat]\nprotocols: [valid, ood_valid]\nseeds: [2025]\n"
        "keys: {max.epoch: 2, early_stop.patience: 3, fhn.probe: 256}\n"
        "methods:\n  rns: {keys: {negative.sampler: rns}}\n  dns: {keys: {negative.sampler: dns}}\n")
TIMING = ("_s", "time")  # columns that differ from one run to the next


def _records(out: Path) -> dict[str, object]:
    """Every run of a grid folder keyed by its cell: epochs.csv without timings, and metrics.json's selection."""
    found = {}
    for config in sorted((out / "runs").rglob("config.json")):
        run = config.parent
        cell = str(run.parent.relative_to(out / "runs"))
        rows = list(csv.DictReader((run / "epochs.csv").open()))
        rows = [{k: v for k, v in r.items() if not k.endswith(TIMING)} for r in rows]
        found[cell] = (rows, json.loads((run / "metrics.json").read_text())["selection"])
    return found


def _table(out: Path) -> list[dict[str, str]]:
    assert T.main([str(out)]) == 0
    return [{k: v for k, v in r.items() if "cpu" not in k and "sec" not in k and not k.endswith(TIMING)}
            for r in csv.DictReader((out / "table.csv").open())]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The tiny grid run locally, two jobs at one thread: the reference of the cluster runs."""
    if not SHARED.is_dir():
        pytest.skip("../shared/datasets is not present beside the repository")
    shared = SHARED
    folder = tmp_path_factory.mktemp("local")
    path = write(folder / "tiny.yaml", TINY)
    out = folder / "out"
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out), "--jobs", "2"]) == 0
    return path, _records(out), _table(out)


def test_a_grid_on_a_local_dask_cluster_gives_the_local_records_and_tables(shared, tmp_path, local_run):
    path, records, table = local_run
    out = tmp_path / "dask"
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out), "--backend", "dask",
                   "--jobs", "2"]) == 0
    assert len(records) == 2 and _records(out) == records
    assert _table(out) == table
    manifest = json.loads((out / "grid.json").read_text())
    assert {c["state"] for c in manifest["cells"]} == {"finished"}
    assert not list(out.glob(".driver-*"))  # the probe file goes with the driver
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out), "--backend", "dask",
                   "--jobs", "2"]) == 0  # finished: nothing runs again
    assert _records(out) == records


def _start(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(cwd), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.fixture
def worker_checkout(tmp_path):
    """A second checkout of this working tree (its tracked and new files) with the datasets beside it, as a worker
    machine without the driver's filesystem would have it."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    # the grid names the datasets by their real path relative to the repository (e.g. ../shared/datasets, or
    # ../../elsewhere/datasets where ../shared is a link): the worker's checkout sits as deep below a folder that
    # holds that path
    relative = Path(os.path.relpath(SHARED.resolve(), REPO))
    ups = next((n for n, p in enumerate(relative.parts) if p != ".."), 0)
    if ups == 0 or ups == len(relative.parts):
        pytest.skip(f"the datasets ({SHARED.resolve()}) lie inside the repository or above it: no second checkout "
                    f"can reach them by the same relative path")
    base = tmp_path / "worker"
    checkout = base.joinpath(*[f"up{n}" for n in range(ups - 1)], "main")
    for name in filter(None, files):
        if (REPO / name).is_file() and not name.startswith(("results/", "log/")):
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    link = base.joinpath(*relative.parts[ups:])
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(SHARED.resolve())
    assert (checkout / relative / "coat").is_dir()
    return checkout


@pytest.fixture
def cluster(tmp_path, worker_checkout):
    """A scheduler and two one-thread workers (no nanny: a killed worker stays dead), run in the worker checkout."""
    sched = tmp_path / "scheduler.json"
    procs = [_start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--scheduler-file", str(sched),
                     "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"], worker_checkout,
                    tmp_path / "scheduler.log")]
    deadline = time.monotonic() + 60
    while not sched.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    for n in range(2):
        procs.append(_start([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sched),
                             "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"w{n}",
                             "--local-directory", str(tmp_path / f"w{n}")], worker_checkout,
                            tmp_path / f"worker{n}.log"))
    from distributed import Client
    with Client(scheduler_file=str(sched), timeout=60) as client:
        client.wait_for_workers(2, timeout=90)
    yield sched, procs
    for proc in procs:
        proc.kill()
        proc.wait()
    for pid in _cells_under(worker_checkout):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def inside():
    """A folder for grids inside the repository (workers outside the driver's filesystem need that), removed after."""
    folder = REPO / "results" / "grids" / f"test-cluster-{os.getpid()}-{time.monotonic_ns()}"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _cells_under(checkout: Path) -> list[int]:
    """The main.py processes running in a checkout."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            if str(checkout / "main.py").encode() in cmd:
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the cells' processes in /proc (Linux)")
def test_workers_in_their_own_checkout_send_the_run_folders_back_and_a_killed_worker_fails_its_cell(
        shared, tmp_path, local_run, cluster, worker_checkout, inside):
    path, records, table = local_run
    sched, procs = cluster
    # outside the repository, a worker without the driver's filesystem has nowhere to put the cells: a clear refusal
    outside = tmp_path / "outside"
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(outside), "--backend", "dask", "--address",
                   str(sched)]) == 1
    cells = json.loads((outside / "grid.json").read_text())["cells"]
    assert {c["state"] for c in cells} == {"failed"}
    assert all("must lie inside the repository" in c["error"] for c in cells), cells
    out = inside / "tiny"
    args = [str(path), "--dataset-root", str(shared), "--out", str(out), "--backend", "dask", "--address", str(sched)]
    assert G.main(args) == 0
    assert _records(out) == records and _table(out) == table  # the folders came back, equal where it counts
    worker_out = worker_checkout / out.relative_to(REPO)
    assert (worker_out / "data").is_dir()  # the split files went to the workers ...
    assert not list(worker_out.rglob("epochs.csv"))  # ... and the cells' folders came back and left

    # a long cell and a short one; the worker running the long cell dies (with its machine: the cell goes too)
    slow = write(tmp_path / "slow.yaml", TINY.replace("name: tiny", "name: slow").replace(
        "  rns: {keys: {negative.sampler: rns}}", "  rns: {keys: {negative.sampler: rns, max.epoch: 400, "
                                                   "early_stop.patience: 400}}"))
    out2 = inside / "slow"
    driver = subprocess.Popen([sys.executable, "-m", "bench.grid", str(slow), "--dataset-root", str(shared), "--out",
                               str(out2), "--backend", "dask", "--address", str(sched)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        time.sleep(0.5)
        victim = next((pid for pid in _cells_under(worker_checkout)
                       if b"negative.sampler=rns" in Path(f"/proc/{pid}/cmdline").read_bytes()), None)
    assert victim is not None, "the long cell never started"
    time.sleep(3)  # past its start
    os.kill(_parent(victim), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{victim}").exists() and time.monotonic() < deadline:  # the cell goes with its worker
        time.sleep(0.1)
    assert not Path(f"/proc/{victim}").exists() or "Z" in Path(f"/proc/{victim}/stat").read_text().split()[2]
    log, _ = driver.communicate(timeout=180)
    assert driver.returncode == 1, log  # a failed cell: exit 1, after the others ran
    manifest = {c["id"]: c for c in json.loads((out2 / "grid.json").read_text())["cells"]}
    assert manifest["coat/dns/default/s2025"]["state"] == "finished"
    lost = manifest["coat/rns/default/s2025"]
    assert lost["state"] == "failed" and "was lost while it ran this cell" in lost["error"], lost

    # a worker whose checkout is at another commit runs nothing: its records would be another code's
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=worker_checkout, check=True)
    subprocess.run([*git, "add", "main.py"], cwd=worker_checkout, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "other"], cwd=worker_checkout, check=True)
    out3 = inside / "other"
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out3), "--backend", "dask", "--address",
                   str(sched)]) == 1
    cells = json.loads((out3 / "grid.json").read_text())["cells"]
    assert {c["state"] for c in cells} == {"failed"} and all("check out the driver's commit" in c["error"]
                                                               for c in cells), cells
    assert not list((out3 / "runs").rglob("config.json"))


def _cell_process(out: Path) -> int:
    """The pid of the main.py that runs a cell of the grid written to out (Linux /proc): its `output=` folder,
    relative to its working directory as the grid writes it, lies inside out."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().decode().split("\0")
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        if any(a.endswith("main.py") for a in args) and any(
                a.startswith("output=") and (cwd / a[len("output="):]).resolve().is_relative_to(out.resolve())
                for a in args):
            return int(proc.name)
    raise AssertionError(f"no main.py running for {out}")


def _pending(pid: int, signum: int) -> bool:
    """Whether signum is pending (sent, not yet handled) for process pid, from /proc/PID/status."""
    masks = [int(line.split()[1], 16) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
             if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(m >> (signum - 1) & 1 for m in masks)


def test_stopping_the_driver_interrupts_the_clusters_cells_and_a_rerun_resumes_them(shared, tmp_path):
    grid = write(tmp_path / "long.yaml", "name: long\ndatasets: [coat]\nprotocols: [valid]\nseeds: [2025]\n"
                 "keys: {max.epoch: 40, early_stop.patience: 40, fhn.probe: 256, batch.size: 32}\n"
                 "methods:\n  rns: {keys: {negative.sampler: rns}}\n")
    out = tmp_path / "out"
    args = [str(grid), "--dataset-root", str(shared), "--out", str(out), "--backend", "dask", "--jobs", "1"]
    driver = subprocess.Popen([sys.executable, "-m", "bench.grid", *args], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    epochs = []
    while time.monotonic() < deadline and not epochs:
        time.sleep(0.05)
        epochs = [p for p in (out / "runs").rglob("epochs.csv") if len(p.read_text().splitlines()) >= 2]
    assert epochs, "no epoch finished"
    # The cell is held still (SIGSTOP) until the driver's signal has reached it (pending in /proc), so a fast machine
    # cannot finish its 40 epochs while the signal travels through the scheduler (up to about a second).
    cell = _cell_process(out)
    os.kill(cell, signal.SIGSTOP)
    try:
        driver.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _pending(cell, signal.SIGINT):
            time.sleep(0.1)
        assert _pending(cell, signal.SIGINT), "the driver's SIGINT did not reach the cell"
    finally:
        os.kill(cell, signal.SIGCONT)
    log, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, log
    run = epochs[0].parent
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted", log
    assert (run / "checkpoint.pt").is_file()
    done = len(epochs[0].read_text().splitlines()) - 1
    assert done < 40
    assert G.main(args) == 0  # the rerun resumes the cell from its checkpoint
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    rows = list(csv.DictReader((run / "epochs.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 41))
    assert "--resume" in (run.parent / "last_command.txt").read_text()


def test_bad_cluster_arguments_are_one_line_errors(tmp_path, caplog, monkeypatch):
    grid = write(tmp_path / "g.yaml", TINY)
    out = tmp_path / "out"
    assert G.main([str(grid), "--out", str(out), "--address", "tcp://127.0.0.1:9"]) == 2
    assert "--address is for a cluster backend" in caplog.text
    monkeypatch.setattr("bench.cluster.CONNECT_S", 1.0)
    (tmp_path / "not-a-scheduler.json").write_text("{}")
    for address in ["tcp://127.0.0.1:9", "tcp://127.0.0.1:notaport", str(tmp_path / "nothing"),
                    str(tmp_path / "not-a-scheduler.json")]:
        caplog.clear()
        assert G.main([str(grid), "--out", str(out), "--backend", "dask", "--address", address]) == 2
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and f"no Dask cluster with a worker answered at {address}" in errors[0]
        assert "\n" not in errors[0]
    caplog.clear()
    monkeypatch.setitem(sys.modules, "distributed", None)  # the extra not installed
    assert G.main([str(grid), "--out", str(out), "--backend", "dask"]) == 2
    assert "pip install -r bench/requirements-cluster.txt" in caplog.text
    assert not (out / "runs").exists()


def test_a_task_passes_the_drivers_signal_on_and_stops_its_cell_when_the_driver_is_gone(monkeypatch):
    from bench import cluster
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *a: sys.exit(130))\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
            "time.sleep(60)\n")
    monkeypatch.setattr(cluster, "POLL_S", 0.05)
    proc = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.5)
    states = iter([{"stop": 0, "beat": 1}, {"stop": 0, "beat": 2}] + [{"stop": int(signal.SIGINT), "beat": 3}] * 999)
    cluster._watch(proc, lambda: next(states))
    assert proc.returncode == 130  # the driver's Ctrl-C reached the cell
    monkeypatch.setattr(cluster, "HEARTBEAT_LOST_S", 0.3)
    proc = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.5)
    started = time.monotonic()
    cluster._watch(proc, lambda: {"stop": 0, "beat": 7})  # a heartbeat that never changes: the driver is gone
    assert proc.returncode == 143 and time.monotonic() - started < 30


def test_returned_files_stay_inside_their_cells_folder(tmp_path):
    from bench.cluster import folder_files, write_files
    cell = tmp_path / "cell"
    assert write_files(cell, {"run/epochs.csv": b"epoch\n1\n", "log/x.log": b"x"}) == 2
    assert folder_files(cell) == {"log/x.log": b"x", "run/epochs.csv": b"epoch\n1\n"}
    with pytest.raises(ValueError, match="outside its cell's folder"):
        write_files(cell, {"../escaped.txt": b"no"})
    assert not (tmp_path / "escaped.txt").exists()


class _FakeClient:
    """The scheduler's metadata, as run_task sees it."""

    def __init__(self, control):
        self.meta = {tuple(k): v for k, v in control.items()}

    def get_metadata(self, key, default=None):
        return self.meta.get(tuple(key), default)

    def set_metadata(self, key, value):
        self.meta[tuple(key)] = value


def test_a_task_decides_before_it_starts_a_cell(tmp_path, monkeypatch):
    import distributed
    from bench import cluster
    worker = type("W", (), {"address": "tcp://w:1"})()
    control = ["bench.grid", "r1"]
    client = _FakeClient({tuple(control): {"stop": 0, "drain": 0, "beat": 1}})
    monkeypatch.setattr(distributed, "get_client", lambda: client)
    monkeypatch.setattr(distributed, "get_worker", lambda: worker)
    started = []
    monkeypatch.setattr(cluster, "head_commit", lambda repo: "a" * 40)  # this worker's checkout
    monkeypatch.setattr(cluster.subprocess, "Popen", lambda *a, **k: started.append(a) or 1 / 0)
    probe = tmp_path / "probe"  # absent: the worker does not share the driver's filesystem
    folder = "results/grids/t/runs/coat/rns/default/s1"

    def task(key, files=None, folder=folder, commit=""):
        return cluster.run_task(["--threads", "1"], "/elsewhere", str(probe), folder, files, control, key, commit)

    assert task("k1") == {"needs_files": True}  # asks for its files first
    refused = task("k2", {"../x/ood_valid.txt": b"1"}, folder="../outside/runs/c")
    assert "must lie inside the repository" in refused["refused"]
    other = task("k3", commit="0" * 40)
    assert "check out the driver's commit" in other["refused"]
    client.set_metadata(["bench.grid-started", "r1", "k4"], "tcp://gone:2")
    assert task("k4", {}) == {"lost": "tcp://gone:2"}  # its first attempt's worker died: not run twice
    client.set_metadata(control, {"stop": 0, "drain": 1, "beat": 2})
    assert task("k5", {}) == {"skipped": True}  # draining: nothing new starts
    client.set_metadata(control, {"stop": 2, "drain": 0, "beat": 3})
    assert task("k6", {}) == {"skipped": True}
    assert started == []
