"""The runner of a grid: its cells (data keys, the OOD split, power seeds and halving), the choices on validation
data, the jobs that run the cells (resumed, waited for, drained by SIGUSR1, stopped by SIGINT/SIGTERM) and the
manifest, OUT/grid.json. python -m bench.grid is its command line."""
from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from bench.cells import Cell, tag, to_run
from bench.cluster import Backend, LocalBackend, write_files
from bench.gridfile import TEST_SELECTED, Grid
from bench.protocol import candidate_score, choose as choose_candidate, protocol_index
from bench.records import override, read_json, read_rows, record_differences, shorter_rule, validation_scores
from conf.config import REPO, load_config, repo_relative
from data.presets import get_preset
from data.split import OOD_VALID_FILES, write_ood_valid_split
from model import get_model_class, is_closed_form
from util.io import atomic_write_json, atomic_write_text
from util.results import FolderLock, read_status, recorded_threads
from util.typing_coerce import ConfigError

log = logging.getLogger(__name__)
# how a cell stopped by the grid's SIGINT/SIGTERM ends: main.py's exit codes, or killed by the signal itself
# when it arrived before main.py installed its handler
INTERRUPTED_EXITS = (130, 143, -signal.SIGINT, -signal.SIGTERM)
POLL_S = 1.0  # how often a grid looks at a cell that another process is training
MAX_JOBS = 4096  # the most cells a grid runs at once


def shown_path(path: Path) -> str:
    """A path as grid.json and the tables name it: relative to the repository where it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


class GridLock(FolderLock):
    """The lock of a grid folder (OUT/.grid.lock) while a grid runs there: one grid run per folder."""

    name = ".grid.lock"

    def busy(self, holder: str) -> str:
        """Names the other bench.grid."""
        return (f"{self.path.parent} is being run by another bench.grid (process {holder}, holding {self.path.name}): "
                f"one grid run per folder; wait for it to end or stop it first (--dry-run shows its progress)")


class GridRunner:
    """Builds the cells of a grid and runs those that are not finished."""

    def __init__(self, grid: Grid, out: Path, dataset_root: Path, jobs: Optional[int] = 1, retry_failed: bool = False,
                 threads: Optional[int] = None, device: str = "cpu", backend: Optional[Backend] = None):
        self.grid, self.out, self.root = grid, Path(out), Path(dataset_root)
        self.device = device  # every cell's device key (a grid file's keys.device wins): never `auto`
        self.retry_failed = retry_failed
        self.use(backend or LocalBackend(), jobs, threads)
        self.datasets: list[str] = []  # the datasets being run and those skipped (for grid.json)
        self.skipped: dict[str, str] = {}
        self._lock = threading.RLock()
        self.running: set[str] = set()  # the ids of the cells this grid runs now
        self.not_run: dict[str, str] = {}  # cells a cluster refused or dropped this time, and why
        self.stopping = 0  # the signal number once SIGINT or SIGTERM arrived
        self.draining = 0  # the signal number once SIGUSR1 arrived: running cells finish, no new one starts
        self.fallbacks: set[str] = set()  # dataset/method/protocol choices a tie of all four validation metrics made
        self.best_other: dict[str, str] = {}  # dataset/protocol -> the best method outside power.methods (plan)

    def use(self, backend: Backend, jobs: Optional[int], threads: Optional[int]) -> None:
        """Run the cells on this backend, `jobs` at a time (default: the backend's), with `threads` torch threads each
        (default: one when cells run side by side or on a cluster, else every core)."""
        self.backend, self.requested_jobs = backend, jobs
        self.threads = threads or (1 if self.jobs > 1 or backend.name != "local" else os.cpu_count() or 1)

    @property
    def jobs(self) -> int:
        """Cells run at once: --jobs, or the backend's default (1 here; a cluster's worker threads, as they are now)."""
        return self.backend.slots(self.requested_jobs)

    @property
    def halted(self) -> bool:
        """Whether a signal (SIGINT, SIGTERM or SIGUSR1) said to start no new cell."""
        return bool(self.stopping or self.draining)

    def drain(self, signum: int) -> None:
        """Start nothing new; the running cells go on to their end (a session's time is nearly up)."""
        self.draining = signum
        self.backend.drain()
        with self._lock:
            log.warning("draining: %d running cell(s) finish, no new cell starts", len(self.running))

    def stop(self, signum: int) -> None:
        """Start nothing new and pass the signal on to every running cell (each checkpoints and exits)."""
        self.stopping = signum
        self.backend.stop(signum)

    # data: presets present, and the OOD split of the ood_valid protocol
    def root_of(self, dataset: str) -> Path:
        """The dataset root of a preset: the generated synthetic dataset always lives in the repository."""
        return REPO / "dataset" if get_preset(dataset).name == "synthetic" else self.root.resolve()

    def available(self, dataset: str) -> Optional[str]:
        """None if the dataset can run, else why not (a preset name that does not exist is a ConfigError)."""
        preset = get_preset(dataset)
        if preset.name == "synthetic":
            return None
        missing = [f for f in preset.files() if not (self.root / preset.name / f).is_file()]
        if missing:
            return f"files absent under --dataset-root/{preset.name}: {', '.join(missing)} ({preset.how_to_get})"
        if self.grid.protocols == ["reference"]:
            return None
        if "test_ood" not in preset.tests:
            return "no test_ood file"
        if any(p in ("valid", "ood_valid") for p in self.grid.protocols) and not preset.valid:
            return "no validation file (the valid and ood_valid protocols need one)"
        return None

    def ood_split(self, dataset: str) -> dict[str, Path]:
        """Files of the seeded per-user split of test_ood: ood_valid (a fraction of each user's rows) and the rest
        (data/split.py's write_ood_valid_split; written once per grid folder)."""
        preset = get_preset(dataset)
        root = self.root_of(dataset)
        if preset.name == "synthetic":
            from data import synthetic
            synthetic.ensure(root / "synthetic")
        source = root / preset.name / preset.tests["test_ood"]
        folder = self.out / "data" / f"{preset.name}-ood{self.grid.ood_valid_fraction:g}"
        files = {name: folder / file for name, file in OOD_VALID_FILES.items()}
        if all(p.is_file() for p in files.values()):
            return files
        rows = write_ood_valid_split(source, preset.format, self.grid.ood_valid_fraction, folder)
        log.info("%s: split test_ood into %d ood_valid and %d test rows (%s)", dataset, rows["ood_valid"],
                 rows["test_ood"], folder)
        return files

    def data_keys(self, dataset: str) -> dict[str, Any]:
        """Config keys of a dataset under the grid's protocols."""
        preset = get_preset(dataset)
        root = self.root_of(dataset)
        keys: dict[str, Any] = {"dataset": preset.name, "dataset.root": repo_relative(root)}
        protocol = self.grid.protocols
        if "reference" in protocol:
            keys.update({"selection": "reference", "selection.test": next(iter(preset.tests)), "eval.mask": "train"})
            return keys
        if "released" in protocol:
            keys.update({"selection": "test_all4", "selection.test": "test_ood", "eval.mask": "train",
                         "valid.set": "none"})
            return keys
        keys["selection"] = "valid"
        if "ood_valid" in protocol:
            split = self.ood_split(dataset)
            tests = {name: root / preset.name / file for name, file in preset.tests.items() if name != "test_ood"}
            tests.update({name: path.resolve() for name, path in split.items()})
            keys.update({f"test.set.{name}": repo_relative(path) for name, path in tests.items()})
            keys["early_stop.files"] = ["ood_valid"]
        return keys

    def cell(self, dataset: str, method: str, candidate: dict[str, Any], seed: int, data: dict[str, Any]) -> Cell:
        """One cell with its full set of config keys."""
        keys = {"device": self.device, **self.grid.keys, **data, **self.grid.keys_of(dataset, method), **candidate,
                "seed": seed}
        folder = self.out / "runs" / dataset / method / tag(candidate) / f"s{seed}"
        return Cell(dataset, method, candidate, seed, folder, keys)

    def plan(self, datasets: list[str]) -> tuple[list[Cell], list[Cell], dict[str, Any]]:
        """(first-seed cells, later-seed cells known so far, choices), a dataset's cells before the next one's:
        later seeds need the first seed's choice, the power seeds of the best other method every first seed of the
        dataset. Sets self.best_other (dataset/protocol -> method)."""
        first, later, choices = [], [], {}
        best_other: dict[str, str] = {}
        for dataset in datasets:
            data = self.data_keys(dataset)
            chosen_by: dict[str, tuple[dict[str, Optional[Cell]], dict[str, tuple[float, ...]]]] = {}
            ended: set[str] = set()
            for method in self.grid.methods:
                if not self.grid.runs_on(dataset, method):
                    continue
                seeds = self.grid.seeds_of(dataset, method)
                cells = [self.cell(dataset, method, c, seeds[0], data) for c in self.grid.candidates(method)]
                if self.halves(dataset, cells):
                    cells = self.halve(cells)
                first += cells
                states = [c.state() for c in cells]  # once: a job may end a cell meanwhile
                full = [(c, s) for c, s in zip(cells, states) if c.halted_at is None]
                chosen, scores = self.choose([c for c, _ in full], [s for _, s in full])
                chosen_by[method] = (chosen, scores)
                if all(s in ("finished", "failed") for s in states):
                    ended.add(method)
                choices[f"{dataset}/{method}"] = {p: (c.candidate if c else None) for p, c in chosen.items()}
            best = self.best_other_methods(chosen_by, ended)
            best_other.update({f"{dataset}/{p}": m for p, m in best.items()})
            for method, (chosen, _) in chosen_by.items():
                seeds_by_tag: dict[str, tuple[Cell, list[int]]] = {}
                for p, c in chosen.items():
                    if c is None:
                        continue
                    power = self.grid.power
                    powered = power is not None and (method in power.methods or best.get(p) == method)
                    have = seeds_by_tag.setdefault(tag(c.candidate), (c, []))[1]
                    have += [s for s in self.grid.seeds_for(dataset, method, powered)[1:] if s not in have]
                for c, seeds in seeds_by_tag.values():
                    later += [self.cell(dataset, method, c.candidate, s, data) for s in seeds]
        self.best_other = best_other
        return first, later, choices

    def halves(self, dataset: str, cells: list[Cell]) -> bool:
        """Whether a pair's first-seed candidates are halved: its dataset is in `halving` and it trains in epochs."""
        return (self.grid.halving is not None and dataset in self.grid.halving.datasets and len(cells) > 1
                and not is_closed_form(cells[0].keys.get("model.name", "LightGCN")))

    def halve(self, cells: list[Cell]) -> list[Cell]:
        """A halved pair's first-seed cells as they stand: every candidate at the rung (early_stop.halt_after) until
        all have ended; then the `keep` best of each protocol on the curve cut at the rung (bench/protocol.py's order,
        ties to the tag that sorts first) under the full rule (halt_after 0: they continue), the rest at the rung.
        The ranking reads each candidate's first `rung` epochs from its oldest run folder that has them (the rung's
        own record, committed with the others), so it stays the same once candidates have gone on, been trained
        again from the start elsewhere, or failed after the rung."""
        rung, keep = self.grid.halving.rung, self.grid.halving.keep
        at_rung = [replace(c, keys={**c.keys, "early_stop.halt_after": rung}, halted_at=rung) for c in cells]
        curves = {}
        for c in at_rung:
            rows = c.rung_rows(rung)
            if rows is None and c.state() not in ("finished", "failed"):
                return at_rung  # not every candidate has reached the rung yet
            if rows is not None or c.state() == "finished":  # one that stopped before the rung: its whole curve
                curves[tag(c.candidate)] = (rows if rows is not None else read_rows(c.run_dir()), c.keys)
        kept: set[str] = set()
        for p in self.grid.protocols:
            scored = [(candidate_score(rows[protocol_index(rows, p, keys)] if rows else None, p), t)
                      for t, (rows, keys) in curves.items()]
            ranked = sorted(sorted(scored, key=lambda st: st[1]), key=lambda st: st[0], reverse=True)
            kept.update(t for _, t in ranked[:keep])
        return [replace(c, keys={**c.keys, "early_stop.halt_after": 0}) if tag(c.candidate) in kept else h
                for c, h in zip(cells, at_rung)]

    def best_other_methods(self, chosen_by: dict[str, tuple[dict[str, Optional[Cell]], dict[str, tuple[float, ...]]]],
                           ended: set[str]) -> dict[str, str]:
        """Per protocol, the method outside `power.methods` and `deferred` whose chosen candidate has the best
        first-seed validation scores (bench/protocol.py's order of the four metrics; a tie of all four goes to the
        method name that sorts first); {} without `power.best_other`, and until every such method's first-seed cells
        have ended. A deferred method runs after the power seeds that this name decides, so it is never named."""
        power = self.grid.power
        if power is None or not power.best_other:
            return {}
        others = {m: v for m, v in chosen_by.items() if m not in power.methods and m not in self.grid.deferred}
        if not others or any(m not in ended for m in others):
            return {}
        best = {}
        for p in self.grid.protocols:
            name, _ = choose_candidate([(m, scores[p]) for m, (chosen, scores) in others.items()
                                        if chosen.get(p) is not None])
            if name is not None:
                best[p] = name
        return best

    def choose(self, cells: list[Cell], states: Optional[list[str]] = None
               ) -> tuple[dict[str, Optional[Cell]], dict[str, tuple[float, ...]]]:
        """(per protocol, the finished first-seed cell with the best validation scores (None until all ended), the
        chosen cells' scores), from the cells' `states` where the caller has read them; a choice only the fallback
        made (a tie of all four validation metrics) is noted in self.fallbacks."""
        none: dict[str, Optional[Cell]] = {p: None for p in self.grid.protocols}
        states = [c.state() for c in cells] if states is None else states
        if any(s not in ("finished", "failed") for s in states):
            return none, {}
        done = [c for c, s in zip(cells, states) if s == "finished"]
        if not done:
            return none, {}
        if self.grid.protocols[0] in TEST_SELECTED:
            return {self.grid.protocols[0]: done[0]}, {}
        chosen: dict[str, Optional[Cell]] = {}
        scores: dict[str, tuple[float, ...]] = {}
        curves = [(tag(c.candidate), read_rows(c.run_dir()), c.run_dir()) for c in done]  # once for all protocols
        for p in self.grid.protocols:
            scored = [(t, validation_scores(rows, p, run)) for t, rows, run in curves]
            best, fallback = choose_candidate(scored)
            chosen[p] = next(c for c in done if tag(c.candidate) == best)
            scores[p] = dict(scored)[best]
            if fallback:
                self.fallbacks.add(f"{done[0].dataset}/{done[0].method}/{p}")
        return chosen, scores

    def command_keys(self, cell: Cell) -> dict[str, Any]:
        """The config keys a new run of the cell gets on its command line."""
        return {**cell.keys, "output": repo_relative(cell.folder.resolve()),
                "log.dir": repo_relative((cell.folder / "log").resolve())}

    def resolved(self, cell: Cell) -> dict[str, Any]:
        """The configuration a new run of the cell gets, resolved as main.py resolves it, keyed as config.json holds
        it; a ConfigError if it does not resolve."""
        cfg = load_config(REPO / "conf" / "LightGCN.yaml", [f"{k}={override(v)}" for k, v in self.command_keys(cell).items()])
        get_model_class(cfg.model_name).check_config(cfg)  # what main.py refuses before reading the data
        return cfg.to_dict()

    def invalid_cells(self, datasets: list[str]) -> list[tuple[str, str]]:
        """(cell id, error) of every listed cell whose configuration does not resolve as main.py would resolve it."""
        first, later, _ = self.plan(datasets)
        out = []
        for c in first + later:
            try:
                self.resolved(c)
            except ConfigError as exc:
                out.append((c.id, str(exc)))
        return out

    def recorded_cells(self, datasets: list[str]) -> list[Cell]:
        """Every cell the grid can list (each candidate with each seed of its method and every power seed, chosen or
        not yet) that has a run folder: those whose records a run or a table would take as the grid's."""
        cells = []
        for dataset in datasets:
            data = self.data_keys(dataset)
            for method in self.grid.methods:
                if self.grid.runs_on(dataset, method):
                    cells += [self.cell(dataset, method, candidate, seed, data)
                              for candidate in self.grid.candidates(method)
                              for seed in self.grid.seeds_for(dataset, method, powered=True)]
        return [c for c in cells if c.run_dir() is not None]

    def differing_cells(self, datasets: list[str]) -> list[tuple[str, list[str]]]:
        """(cell id, differences) of every recorded cell whose newest run was made under another configuration than
        the grid gives the cell today (record_differences), or whose configuration does not resolve today."""
        out = []
        for cell in self.recorded_cells(datasets):
            try:
                wanted = self.resolved(cell)
            except ConfigError as exc:
                out.append((cell.id, [f"the grid's configuration of it does not resolve ({exc})"]))
                continue
            run = cell.run_dir()
            try:
                record = read_json(run / "config.json")
            except ConfigError as exc:
                out.append((cell.id, [str(exc)]))
                continue
            try:  # how it stopped (max.epoch): only a finished run has it
                selection = read_json(run / "metrics.json").get("selection") or {}
            except ConfigError:
                selection = {}
            found = record_differences(record, wanted, selection) + shorter_rule(record, wanted, run)
            if found:
                out.append((cell.id, found))
        return out

    def check_owner(self) -> None:
        """A ConfigError when OUT/grid.json was written by another grid: its runs are not this grid's cells, and its
        grid.json is not this grid's to overwrite."""
        path = self.out / "grid.json"
        if not path.is_file():
            return
        try:
            owner = read_json(path)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; which grid's runs {self.out} holds cannot be told: if they are this grid's "
                              f"({self.grid.name!r}), delete it (a run or dry run writes it again from the run "
                              f"records)") from None
        mine = self.file_shown()
        if owner.get("grid") == self.grid.name and owner.get("grid_file") and mine and owner["grid_file"] != mine:
            raise ConfigError(f"--out {self.out} holds the runs of grid {self.grid.name!r} from {owner['grid_file']}, "
                              f"not from {mine}: give this grid file its own --out folder (if it replaces that file, "
                              f"delete {path}: a run or dry run writes it again)")
        if owner.get("grid") != self.grid.name:
            raise ConfigError(f"--out {self.out} holds the runs of grid {owner.get('grid')!r} "
                              f"({owner.get('grid_file') or 'file not recorded'}), not of grid {self.grid.name!r} "
                              f"({self.file_shown()}): give this grid its own --out folder")

    def file_shown(self) -> Optional[str]:
        """The grid file as grid.json names it (None for a grid not read from a file)."""
        return shown_path(self.grid.file) if self.grid.file is not None else None

    def wait_for_writer(self, cell: Cell) -> str:
        """Wait while another process trains the cell (e.g. one a grid killed by SIGKILL left running): it is neither
        started a second time nor passed over; returns its state once it stops running. SIGINT and SIGTERM end the
        wait, not that process (it is not this grid's child)."""
        log.info("waiting for cell %s: trained by another process (pid %s); its outcome counts here", cell.id,
                 read_status(cell.run_dir()).get("pid", "?"))
        while cell.state() == "running" and not self.stopping:
            time.sleep(POLL_S)
        state = cell.state()
        log.info("cell %s, trained by another process: %s", cell.id, state)
        return state

    def run_cell(self, cell: Cell) -> str:
        """Run (or resume) one cell on the backend; returns its final state."""
        state = cell.state()
        if state == "running" and cell.id not in self.running:  # its writer is alive: another process trains it
            state = self.wait_for_writer(cell)
            self.write_manifest()
        if not to_run(state, self.retry_failed) or self.halted:  # after a signal: no folder, no log line
            return state
        cell.folder.mkdir(parents=True, exist_ok=True)
        threads = str(self.threads)
        ship = self.split_files(cell)  # what a worker outside this filesystem needs from here
        if state in ("interrupted", "stale", "short") and (cell.run_dir() / "checkpoint.pt").is_file():
            ship.append(cell.run_dir())
            # a run that recorded its thread count resumes with it (an identical continuation); older ones get the grid's
            own = [] if recorded_threads(cell.run_dir()) else ["--threads", threads]
            argv = [*own, "--resume", repo_relative(cell.run_dir().resolve())]
            for key, value in cell.longer_rule().items():  # a lengthened stopping rule (main.py checks it)
                argv += ["--set", f"{key}={override(value)}"]
            log.info("%s %s%s", "lengthen" if state == "short" else "resume", cell.id,
                     " (its writer is gone: killed, or another machine's record)" if state == "stale" else "")
        else:
            argv = ["--threads", threads]
            for key, value in self.command_keys(cell).items():
                argv += ["--set", f"{key}={override(value)}"]
            log.info("run %s%s", cell.id, " again (stopped under a shorter stopping rule; no checkpoint here to "
                     "continue from)" if state == "short" else "")
        (cell.folder / "error.txt").unlink(missing_ok=True)
        with self._lock:
            self.running.add(cell.id)
        try:
            outcome = self.backend.run(argv, cell.folder, ship, lambda: self.halted)
        finally:
            with self._lock:
                self.running.discard(cell.id)
        if outcome is None:  # a signal arrived before it started
            return state
        if outcome.refused or outcome.dropped:  # nothing ran, or nothing is known: the record stays as it is
            why = outcome.refused or outcome.dropped
            with self._lock:
                self.not_run[cell.id] = why
            if cell.run_dir() is None and outcome.refused:
                atomic_write_text(cell.folder / "error.txt", why + "\n")
            log.warning("cell %s not run: %s", cell.id, why)
            self.write_manifest()
            return cell.state()
        if outcome.files:  # a cell run in another checkout: its folder came back with it
            write_files(cell.folder, outcome.files)
        atomic_write_text(cell.folder / "last_command.txt", " ".join(outcome.command) + "\n")
        if outcome.lost:
            self.lost(cell, outcome.lost)
        elif self.stopping and outcome.returncode in INTERRUPTED_EXITS:
            # a cell that had not yet set up its handler is killed by the signal itself (a negative returncode):
            # nothing of it is lost, it has no finished epoch, and it starts again next time (not 'failed')
            if cell.state() == "finished":  # the signal came after the run had recorded its end
                log.info("cell %s finished before the signal reached it", cell.id)
            else:
                log.warning("cell %s interrupted (%s)", cell.id, "its last finished epoch is checkpointed"
                            if outcome.returncode > 0 else "before its first epoch: it starts again next time")
        elif outcome.returncode != 0:
            lines = [line for line in outcome.stderr.splitlines() if line.strip()]
            message = re.sub(r"^\d\d:\d\d:\d\d (ERROR|WARNING|CRITICAL) ", "", lines[-1]) if lines else \
                f"exit status {outcome.returncode}"
            if cell.run_dir() is None or read_status(cell.run_dir()).get("state") != "failed":
                atomic_write_text(cell.folder / "error.txt", message + "\n")
            log.warning("cell %s failed: %s", cell.id, message)
        self.write_manifest()
        return cell.state()

    def split_files(self, cell: Cell) -> list[Path]:
        """The files of the grid's own OOD split that the cell reads (a worker outside this filesystem gets them)."""
        split = [Path(str(v)) for k, v in cell.keys.items() if k.startswith("test.set.")]
        split = [p if p.is_absolute() else REPO / p for p in split]
        return [p for p in split if p.resolve().is_relative_to(self.out.resolve())]

    def lost(self, cell: Cell, why: str) -> None:
        """A cell whose worker the cluster lost: failed, with why (its process went with its worker); in the status
        of its newest run folder where it has one, so that the cell reads as failed."""
        run = cell.run_dir()
        status = read_status(run) if run is not None else {}
        if status.get("state") == "finished":  # it ended before its worker did; only the reply was lost
            log.warning("cell %s: its worker was lost after the run had finished (%s)", cell.id, why)
            return
        if run is not None:
            atomic_write_json(run / "status.json", {**status, "state": "failed", "message": why})
        else:
            atomic_write_text(cell.folder / "error.txt", why + "\n")
        log.warning("cell %s failed: %s", cell.id, why)

    def run_all(self, datasets: list[str]) -> None:
        """Run every cell, `jobs` at a time, dataset by dataset in the grid's order (a dataset's first seeds, then its
        later seeds, before the next dataset's): a cell is handed to a job only when one is free, so a cell that
        becomes known later (a pair's later seeds, as soon as its own first-seed candidates are done) takes its
        place in that order; a failing cell does not stop the others, an error of the runner itself stops the grid
        (the running cells finish, nothing else starts). The cells of `deferred` methods start only when every other
        cell of the grid has ended (none to run, none running, none still to be listed; --retry-failed: none failed)."""
        queued: set[tuple[str, Any]] = set()  # a cell at a halving's rung and under the full rule are two
        running: set[Any] = set()
        order = {d: i for i, d in enumerate(datasets)}
        # a thread per running cell, made as cells start: the loop below hands out at most self.jobs at once (a
        # cluster's count of worker threads may grow while the grid runs)
        pool = ThreadPoolExecutor(max_workers=MAX_JOBS)
        try:
            while True:
                if len(running) < self.jobs and not self.halted:
                    with self._lock:  # one plan at a time: a worker writing grid.json plans too
                        first, later, _ = self.plan(datasets)
                    listed = [(c, c.state()) for c in sorted(first + later, key=lambda c: order[c.dataset])]
                    # the plan lists later seeds, power seeds and halving continuations as soon as what they wait for
                    # has ended: once no other listed cell is left to run, none is still to come
                    waiting = any(to_run(s, self.retry_failed) for c, s in listed if c.method not in self.grid.deferred)
                    for c, state in listed:  # stable order: first seeds first
                        key = (c.id, c.halted_at)
                        if (len(running) >= self.jobs or key in queued or not to_run(state, self.retry_failed)
                                or (waiting and c.method in self.grid.deferred)):
                            continue
                        queued.add(key)
                        running.add(pool.submit(self.run_cell, c))
                if not running:
                    return
                done, running = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # an error of the runner itself (not of a cell) stops the grid
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def write_manifest(self) -> dict[str, Any]:
        """Write grid.json now (at the start, after every cell and at the end: an interim table can be made
        at any time) and return it."""
        with self._lock:
            manifest = self.manifest(self.datasets, self.skipped)
            atomic_write_json(self.out / "grid.json", manifest)
        return manifest

    def manifest(self, datasets: list[str], skipped: dict[str, str]) -> dict[str, Any]:
        """grid.json: the grid, its cells with state and error, the choices and skipped datasets."""
        self.fallbacks = set()
        first, later, choices = self.plan(datasets)
        cells = [{"id": c.id, "dataset": c.dataset, "method": c.method, "candidate": c.candidate, "seed": c.seed,
                  "state": "running" if c.id in self.running else c.state(), "error": c.error(),
                  "run": str(c.run_dir().relative_to(self.out)) if c.run_dir() else None,
                  **({"halted_at": c.halted_at} if c.halted_at else {})}
                 for c in first + later]
        return {"grid": self.grid.name, "grid_file": self.file_shown(), "protocols": self.grid.protocols,
                "datasets": datasets, "skipped_datasets": skipped, "methods": self.grid.methods,
                "seeds": self.grid.seeds, "choices": choices, "tie_fallback": sorted(self.fallbacks),
                "power": self.power_manifest(),
                "halving": vars(self.grid.halving) if self.grid.halving is not None else None,
                "deferred": self.grid.deferred, "cells": cells}

    def power_manifest(self) -> Optional[dict[str, Any]]:
        """grid.json's `power`: the grid file's section and the best other method of each dataset x protocol."""
        power = self.grid.power
        if power is None:
            return None
        return {"seeds": power.seeds, "methods": power.methods, "at_least": power.at_least,
                "best_other": dict(sorted(self.best_other.items()))}
