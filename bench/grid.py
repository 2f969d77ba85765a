"""Experiment grids: python -m bench.grid conf/grids/NAME.yaml [--jobs N] [--dry-run] [--datasets A B ...]

A grid names datasets, methods (config keys), seeds, protocols and hyperparameter candidates. Every
cell is a normal `python main.py` run in its own folder under OUT/runs/. Hyperparameters are chosen
per protocol on the protocol's validation data only, with the first seed; the other seeds then run
with the choice (queued as soon as their own pair's first-seed candidates are done). Finished cells are
skipped, interrupted ones resumed from their checkpoint, failed ones recorded with their error (and
retried only with --retry-failed), so running the same command again continues where it stopped and a
finished grid runs nothing.

Before anything runs, every cell that already has a run folder is compared with the configuration the grid gives
it today (record_differences); a grid whose records were made under another configuration is refused, not mixed.
A run holds OUT/.grid.lock (one grid run per folder) and waits for cells another process is still training.

Protocols:
  valid      report the epoch with the best validation Recall@20 (the dataset's IID validation file)
  ood_valid  a seeded per-user split of test_ood into an OOD validation part (ood_valid_fraction of each
             user's rows) and the OOD test part; report the epoch with the best ood_valid Recall@20.
             valid and ood_valid share their runs (early stopping waits for both files) and both report
             on the same OOD test part; each protocol cuts the shared curve where a run stopping on its own
             file alone would have stopped, and breaks ties by NDCG@20, then the earlier epoch; candidates by
             Recall@20, NDCG@20, Recall@10, NDCG@10, then the sorted tag (bench/protocol.py).
  released   the released code's protocol: test_all4 selection on the full test_ood, training items
             masked, no validation file (selects on the test set; one candidate only).
  reference  the baselines' reference code (DENS, MixGCF, AHNS): the epoch with the best Recall@20 on the
             dataset's test file (ties go to the later epoch), early stopping after early_stop.patience
             evaluations without one; set eval.every (5 there) in the grid's keys. For fidelity checks on
             the references' own splits (train and test only); selects on the test set; one candidate only.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from base.closed_form_recommender import ClosedFormRecommender
from bench.protocol import candidate_score, choose as choose_candidate, protocol_index, stop_index
from conf.config import REPO, load_config, read_yaml, repo_relative
from data.loader import read_interactions
from data.presets import get_preset
from model import MODELS
from util.io import atomic_write_json, atomic_write_text
from util.results import (RECORD_ONLY, STOP_KEYS, FolderLock, read_status, recorded_threads, rule_length,
                          writer_alive)
from util.typing_coerce import ConfigError

log = logging.getLogger("bench.grid")
PROTOCOLS = ("valid", "ood_valid", "released", "reference")
TEST_SELECTED = ("released", "reference")  # protocols that select on a test file: one candidate per method
# how a cell stopped by the grid's SIGINT/SIGTERM ends: main.py's exit codes, or killed by the signal itself
# when it arrived before main.py installed its handler
INTERRUPTED_EXITS = (130, 143, -signal.SIGINT, -signal.SIGTERM)
POLL_S = 1.0  # how often a grid looks at a cell that another process is training


@dataclass
class Grid:
    """A parsed grid file."""

    name: str
    datasets: list[str]
    protocols: list[str]
    seeds: list[int]
    methods: dict[str, dict[str, Any]]  # name -> {"keys", "search", "seeds", "datasets", "dataset_keys"}
    keys: dict[str, Any] = field(default_factory=dict)
    search: dict[str, list] = field(default_factory=dict)
    extra_seeds: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # dataset -> method -> seeds
    ood_valid_fraction: float = 0.3
    file: Optional[Path] = None  # the grid file it was read from (grid.json and the tables name it)
    power: Optional[Power] = None  # more seeds where the answer is decided
    halving: Optional[Halving] = None  # a cheaper first-seed search on some datasets


    def candidates(self, method: str) -> list[dict[str, Any]]:
        """Every combination of the method's search values (the grid's, updated by the method's own)."""
        space = {**self.search, **self.methods[method].get("search", {})}
        names = sorted(k for k, v in space.items() if v is not None)  # a method's `KEY: null` drops a grid search
        return [dict(zip(names, values)) for values in itertools.product(*(space[n] for n in names))]

    def runs_on(self, dataset: str, method: str) -> bool:
        """Whether a method runs on a dataset (a method's own `datasets` list restricts the grid's)."""
        own = self.methods[method].get("datasets")
        return own is None or dataset in own

    def keys_of(self, dataset: str, method: str) -> dict[str, Any]:
        """A method's config keys on a dataset: its `keys`, updated by its `dataset_keys` for that dataset."""
        spec = self.methods[method]
        return {**spec.get("keys", {}), **(spec.get("dataset_keys") or {}).get(dataset, {})}

    def seeds_of(self, dataset: str, method: str) -> list[int]:
        """The seeds a method runs with on a dataset (the first one chooses the hyperparameters)."""
        extra = self.extra_seeds.get(dataset, {}).get(method, [])
        return list(self.methods[method].get("seeds", self.seeds)) + list(extra)

    def seeds_for(self, dataset: str, method: str, powered: bool) -> list[int]:
        """The seeds a chosen candidate runs with: seeds_of, joined by every `power` seed where the method is a
        powered one in that protocol (a power method, or the best other method there), else by the first
        `power.at_least` seeds of its own."""
        seeds = self.seeds_of(dataset, method)
        if self.power is None:
            return seeds
        more = self.power.seeds if powered else self.power.seeds[: self.power.at_least.get(method, 0)]
        return seeds + [s for s in more if s not in seeds]


@dataclass
class Halving:
    """A grid's `halving` section: successive halving of the first-seed candidates of every trained method on
    these datasets. Every candidate trains `rung` epochs (early_stop.halt_after: the same epochs as a full run's
    first ones); the `keep` best per protocol on the cut curve (bench/protocol.py's order) go on to the full rule,
    continuing from their checkpoint; the choice is made among those."""

    datasets: list[str]
    rung: int
    keep: int


@dataclass
class Power:
    """A grid's `power` section: where the answer is decided, more seeds (bench/verdict.py reads them)."""

    seeds: list[int]  # every seed a powered candidate runs with (with the method's own seeds)
    methods: list[str]  # the methods under test: powered in every dataset and protocol
    best_other: bool = True  # also the best other method of each dataset x protocol, by first-seed validation
    at_least: dict[str, int] = field(default_factory=dict)  # method -> the first N power seeds, wherever it runs


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# the field types of a grid file: kind -> (what the error says it must be, the check)
GRID_TYPES = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "number": ("a number", lambda v: _is_int(v) or isinstance(v, float)),
    "mapping": ("a mapping", lambda v: isinstance(v, dict)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "strings": ("a list of names", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "ints": ("a list of integers", lambda v: isinstance(v, list) and all(_is_int(x) for x in v)),
}


def _expect(path: Path, where: str, value: Any, kind: str) -> Any:
    """value if it has the grid file's type `kind` (a key of GRID_TYPES), else a ConfigError naming the file,
    the field and what was found."""
    wanted, ok = GRID_TYPES[kind]
    if not ok(value):
        raise ConfigError(f"{path}: `{where}` must be {wanted}, got {value!r}")
    return value


def _known_dataset(name: str, where: str) -> None:
    """A ConfigError naming `where` when `name` is not a dataset preset (with data.presets' suggestion): a
    misspelled name must not pass for a dataset that is merely not downloaded."""
    try:
        get_preset(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _single_seeds(path: Path, where: str, seeds: list[int]) -> None:
    """A ConfigError naming a seed that `where` lists twice: one seed is one cell, so a repeat is listed twice
    but tabled once."""
    repeated = [s for i, s in enumerate(seeds) if s in seeds[:i]]
    if repeated:
        raise ConfigError(f"{path}: `{where}` lists seed {repeated[0]} twice ({seeds}); each seed is one cell")


def load_grid(path: Path) -> Grid:
    """Read and check a grid file (every field's type too); a bad one is a ConfigError naming the problem."""
    tree = read_yaml(path)
    known = {"name", "datasets", "protocols", "seeds", "methods", "keys", "search", "extra_seeds",
             "ood_valid_fraction", "power", "halving"}
    unknown = set(tree) - known
    if unknown:
        raise ConfigError(f"{path}: unknown grid key(s) {sorted(unknown)} (known: {sorted(known)})")
    for required in ("datasets", "protocols", "seeds", "methods"):
        if not tree.get(required):
            raise ConfigError(f"{path}: `{required}` is missing or empty")
    for field_name, kind in (("name", "str"), ("datasets", "strings"), ("protocols", "strings"), ("seeds", "ints"),
                             ("methods", "mapping"), ("keys", "mapping"), ("search", "mapping"),
                             ("extra_seeds", "mapping"), ("ood_valid_fraction", "number"), ("power", "mapping"),
                             ("halving", "mapping")):
        if tree.get(field_name) is not None:
            _expect(path, field_name, tree[field_name], kind)
    for key, values in (tree.get("search") or {}).items():
        _expect(path, f"search.{key}", values, "list")
    for dataset in tree["datasets"]:
        _known_dataset(dataset, f"{path}: `datasets`")
    _single_seeds(path, "seeds", tree["seeds"])
    for dataset, per_method in (tree.get("extra_seeds") or {}).items():
        _known_dataset(str(dataset), f"{path}: `extra_seeds`")
        for method, seeds in _expect(path, f"extra_seeds.{dataset}", per_method, "mapping").items():
            _expect(path, f"extra_seeds.{dataset}.{method}", seeds, "ints")
            _single_seeds(path, f"extra_seeds.{dataset}.{method}", seeds)
    fraction = tree.get("ood_valid_fraction", 0.3)
    if not 0 < fraction < 1:
        raise ConfigError(f"{path}: `ood_valid_fraction` must be between 0 and 1, got {fraction!r}")
    protocols = list(tree["protocols"])
    if any(p not in PROTOCOLS for p in protocols):
        raise ConfigError(f"{path}: protocols must be among {PROTOCOLS}, got {protocols}")
    for own in TEST_SELECTED:
        if own in protocols and len(protocols) > 1:
            raise ConfigError(f"{path}: `{own}` runs differ from the others; put it in a grid of its own")
    methods = {}
    for name, spec in tree["methods"].items():
        spec = dict(_expect(path, f"methods.{name}", spec, "mapping") if spec is not None else {})
        for entry, kind in (("keys", "mapping"), ("search", "mapping"), ("seeds", "ints"), ("datasets", "strings"),
                            ("dataset_keys", "mapping")):
            if spec.get(entry) is not None:
                _expect(path, f"methods.{name}.{entry}", spec[entry], kind)
        for key, values in (spec.get("search") or {}).items():
            if values is not None:
                _expect(path, f"methods.{name}.search.{key}", values, "list")
        for dataset, keys in (spec.get("dataset_keys") or {}).items():
            _expect(path, f"methods.{name}.dataset_keys.{dataset}", keys, "mapping")
        if spec.get("seeds") is not None:
            _single_seeds(path, f"methods.{name}.seeds", spec["seeds"])
        bad = set(spec) - {"keys", "search", "seeds", "datasets", "dataset_keys"}
        if bad:
            raise ConfigError(f"{path}: method {name!r}: unknown entries {sorted(bad)} "
                              f"(keys, search, seeds, datasets, dataset_keys)")
        outside = set(spec.get("datasets") or []) - set(tree["datasets"])
        if outside:
            raise ConfigError(f"{path}: method {name!r}: datasets not in the grid's `datasets`: {sorted(outside)}")
        stray = set(spec.get("dataset_keys") or {}) - set(spec.get("datasets") or tree["datasets"])
        if stray:
            raise ConfigError(f"{path}: method {name!r}: dataset_keys for datasets it does not run on: {sorted(stray)}")
        methods[str(name)] = spec
    for dataset, per_method in (tree.get("extra_seeds") or {}).items():
        for method, seeds in per_method.items():
            if method not in methods:
                raise ConfigError(f"{path}: `extra_seeds.{dataset}` names method {method!r}, which is not in `methods`")
            own = methods[method].get("seeds") or tree["seeds"]
            again = [s for s in seeds if s in own]
            if again:
                raise ConfigError(f"{path}: `extra_seeds.{dataset}.{method}` lists seed {again[0]}, which is already "
                                  f"among its seeds {own}; each seed is one cell")
    grid = Grid(name=str(tree.get("name") or Path(path).stem), datasets=[str(d) for d in tree["datasets"]],
                protocols=protocols, seeds=[int(s) for s in tree["seeds"]], methods=methods,
                keys=dict(tree.get("keys") or {}), search={k: list(v) for k, v in (tree.get("search") or {}).items()},
                extra_seeds=tree.get("extra_seeds") or {},
                ood_valid_fraction=float(tree.get("ood_valid_fraction", 0.3)), file=Path(path),
                power=_power(path, tree.get("power"), methods, protocols),
                halving=_halving(path, tree.get("halving"), tree["datasets"], protocols))
    if protocols[0] in TEST_SELECTED and any(len(grid.candidates(m)) > 1 for m in methods):
        raise ConfigError(f"{path}: the {protocols[0]} protocol selects on the test set: give one candidate per method")
    return grid


def _halving(path: Path, tree: Optional[dict[str, Any]], datasets: list[str], protocols: list[str]) -> Optional[Halving]:
    """The `halving` section of a grid file, checked: datasets of the grid, a rung of at least one epoch, at least
    one candidate kept; only under the validation protocols."""
    if tree is None:
        return None
    unknown = set(tree) - {"datasets", "rung", "keep"}
    if unknown:
        raise ConfigError(f"{path}: `halving`: unknown entries {sorted(unknown)} (datasets, rung, keep)")
    if any(p in TEST_SELECTED for p in protocols):
        raise ConfigError(f"{path}: `halving` needs the valid or ood_valid protocol (it ranks on validation data)")
    named = _expect(path, "halving.datasets", tree.get("datasets"), "strings")
    outside = sorted(set(named) - set(datasets))
    if outside:
        raise ConfigError(f"{path}: `halving.datasets` names datasets not in `datasets`: {outside}")
    for entry in ("rung", "keep"):
        if not _is_int(tree.get(entry)) or tree[entry] < 1:
            raise ConfigError(f"{path}: `halving.{entry}` must be a whole number of at least 1, got {tree.get(entry)!r}")
    return Halving(datasets=list(named), rung=int(tree["rung"]), keep=int(tree["keep"]))


def _power(path: Path, tree: Optional[dict[str, Any]], methods: dict[str, Any], protocols: list[str]) -> Optional[Power]:
    """The `power` section of a grid file, checked: seeds (at least two, each once), methods and at_least naming
    the grid's methods, at_least within the seeds; only under the validation protocols."""
    if tree is None:
        return None
    unknown = set(tree) - {"seeds", "methods", "best_other", "at_least"}
    if unknown:
        raise ConfigError(f"{path}: `power`: unknown entries {sorted(unknown)} (seeds, methods, best_other, at_least)")
    if any(p in TEST_SELECTED for p in protocols):
        raise ConfigError(f"{path}: `power` needs the valid or ood_valid protocol (the best other method is chosen "
                          f"on validation data)")
    seeds = _expect(path, "power.seeds", tree.get("seeds"), "ints")
    if len(seeds) < 2:
        raise ConfigError(f"{path}: `power.seeds` must list at least two seeds, got {seeds}")
    _single_seeds(path, "power.seeds", seeds)
    named = _expect(path, "power.methods", tree.get("methods") or [], "strings")
    at_least = _expect(path, "power.at_least", tree.get("at_least") or {}, "mapping")
    for method in list(named) + list(at_least):
        if method not in methods:
            raise ConfigError(f"{path}: `power` names method {method!r}, which is not in `methods`")
    for method, count in at_least.items():
        if not _is_int(count) or not 1 <= count <= len(seeds):
            raise ConfigError(f"{path}: `power.at_least.{method}` must be a number of seeds from 1 to "
                              f"{len(seeds)} (len(power.seeds)), got {count!r}")
    best_other = tree.get("best_other", True)
    if not isinstance(best_other, bool):
        raise ConfigError(f"{path}: `power.best_other` must be true or false, got {best_other!r}")
    return Power(seeds=[int(s) for s in seeds], methods=[str(m) for m in named], best_other=best_other,
                 at_least={str(k): int(v) for k, v in at_least.items()})


# ---- protocols on a run's epochs.csv ---------------------------------------------------
def read_rows(run: Path) -> list[dict[str, float]]:
    """epochs.csv of a run as floats (empty cells dropped). A damaged file is a ConfigError naming it and the line,
    not a row skipped: the file is rewritten whole and atomically after every epoch, so a row cut short (or a file
    without its last line end) was damaged after it was written, and a value cut mid-number would still parse."""
    path = Path(run) / "epochs.csv"
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = list(csv.reader(text.splitlines()))
    rows = []
    for number, values in enumerate(lines[1:], start=2):
        problem = "" if len(values) == len(lines[0]) else f"{len(values)} values for {len(lines[0])} columns"
        if number == len(lines) and not text.endswith("\n"):
            problem = "the last line has no line end: the file is cut off"
        try:
            rows.append({k: float(v) for k, v in zip(lines[0], values) if v != ""})
        except ValueError as exc:
            problem = problem or f"a value that is not a number ({exc})"
        if problem:
            raise ConfigError(f"{path}: line {number}: {problem}; the record is damaged: restore it (a committed one "
                              f"with git) or move its run folder away and run the cell again")
    return rows


def read_json(path: Path) -> dict[str, Any]:
    """A JSON record of a run or grid (metrics.json, config.json, grid.json); a missing, truncated or unreadable one
    is a ConfigError naming the file."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON, truncated or damaged ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: not a JSON object")
    return value


def read_manifest(results: Path) -> dict[str, Any]:
    """grid.json of a grid folder, for the tables and figures; a ConfigError naming the file when it is absent or
    damaged (the grid's dry run writes it again from the run records)."""
    path = Path(results) / "grid.json"
    again = "python -m bench.grid GRID_FILE --out FOLDER --dry-run writes it from the run records, running nothing"
    if not path.is_file():
        raise ConfigError(f"{results} has no grid.json ({again})")
    manifest = read_json(path)
    if not isinstance(manifest.get("cells"), list):
        raise ConfigError(f"{path}: not a grid.json of bench.grid (no list of `cells`); {again}")
    return manifest


def selected_index(rows: list[dict[str, float]], protocol: str, run: Optional[Path] = None) -> Optional[int]:
    """Row index of the epoch a protocol reports: for valid and ood_valid, the curve cut where a run stopping on
    the protocol's own validation file alone would have stopped (the run's config.json gives its patience and
    minimum epochs), then the best (Recall@20, NDCG@20) there, the earlier epoch on a tie (bench/protocol.py);
    for released and reference, the run's own choice."""
    if not rows:
        return None
    if protocol in TEST_SELECTED:
        return read_json(run / "metrics.json")["selection"]["epoch"] - 1
    keys = read_json(run / "config.json") if run is not None else {}
    return protocol_index(rows, protocol, keys)


def validation_scores(rows: list[dict[str, float]], protocol: str, run: Path) -> tuple[float, ...]:
    """What a candidate is chosen by: its reported epoch's validation Recall@20, NDCG@20, Recall@10, NDCG@10."""
    index = selected_index(rows, protocol, run)
    return candidate_score(rows[index] if index is not None else None, protocol)


# ---- cells -------------------------------------------------------------------------------
def to_run(state: str, retry_failed: bool) -> bool:
    """Whether a cell in this state still runs: anything but finished, and failed only with --retry-failed."""
    return state != "finished" and (state != "failed" or retry_failed)


def tag(candidate: dict[str, Any]) -> str:
    """A folder-safe name of a hyperparameter candidate."""
    if not candidate:
        return "default"
    return "_".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(candidate.items())).replace("/", "-")


@dataclass
class Cell:
    """One run of the grid."""

    dataset: str
    method: str
    candidate: dict[str, Any]
    seed: int
    folder: Path
    keys: dict[str, Any]
    halted_at: Optional[int] = None  # a halving rung's epochs, for a candidate that stops there

    @property
    def id(self) -> str:
        """dataset/method/candidate/sSEED: the cell's name in logs, grid.json and tables."""
        return f"{self.dataset}/{self.method}/{tag(self.candidate)}/s{self.seed}"

    def run_dir(self) -> Optional[Path]:
        """The newest run folder of this cell, if any."""
        runs = self.runs()
        return runs[-1] if runs else None

    def runs(self) -> list[Path]:
        """The cell's run folders, oldest first."""
        return sorted(p for p in self.folder.glob("*/") if (p / "config.json").is_file())

    def rung_rows(self, rung: int) -> Optional[list[dict[str, float]]]:
        """The first `rung` epochs of the oldest run folder of this cell that has them (None when none has)."""
        for run in self.runs():
            rows = read_rows(run)
            if len(rows) >= rung:
                return rows[:rung]
        return None

    def state(self) -> str:
        """finished | failed | interrupted | running | stale (a running status whose process is gone) | todo |
        short (stopped early under a shorter stopping rule than the grid's: it continues from its checkpoint
        under the grid's, or runs again where the checkpoint is not here, e.g. in a clone of committed records)."""
        run = self.run_dir()
        if run is None:
            return "failed" if (self.folder / "error.txt").is_file() else "todo"
        status = read_status(run)
        state = status.get("state", "todo")
        # a running status written on another machine or boot (a record committed mid-run) is stale here
        if state == "running" and not writer_alive(status):
            return "stale"
        if state == "finished" and self.longer_rule():
            return "short"
        return state

    def longer_rule(self) -> dict[str, Any]:
        """The stopping-rule keys (STOP_KEYS) the grid sets longer than the newest run had them, where that could
        have changed the run: it stopped early, and (for early_stop.min_epochs) before that many epochs. None for
        a model fitted in closed form (no epochs)."""
        run = self.run_dir()
        if run is None or issubclass(MODELS.get(str(self.keys.get("model.name", "LightGCN")), object),
                                     ClosedFormRecommender):
            return {}
        try:
            record = json.loads((run / "config.json").read_text())
            selection = json.loads((run / "metrics.json").read_text())["selection"]
        except (OSError, ValueError, KeyError):
            return {}
        if not selection.get("stopped_early"):
            return {}
        return {k: self.keys[k] for k in STOP_KEYS
                if k in self.keys and rule_length(k, self.keys[k]) > rule_length(k, record.get(k, 0))
                and not (k == "early_stop.min_epochs" and selection["epochs_run"] >= int(self.keys[k]))}

    def error(self) -> str:
        """The recorded error message of a failed cell."""
        run = self.run_dir()
        if run is not None and read_status(run).get("message"):
            return read_status(run)["message"]
        path = self.folder / "error.txt"
        return path.read_text().strip() if path.is_file() else ""


# ---- a record against the grid's configuration ------------------------------------------
# config.json keys that do not say what a run computed: the record-only keys, the input the configuration was
# resolved from, where it was written, the stopping rule (a longer one continues the run: `short`) and where the data
# lies (the data files themselves are compared by DATA_PATHS)
UNCOMPARED = (*RECORD_ONLY, *STOP_KEYS, "input", "output", "log.dir", "dataset.root")
# data files, compared by their folder and file name (coat/train.txt, coat-ood0.3/ood_valid.txt): the same run
# whatever --dataset-root is on this machine or wherever the grid folder lies
DATA_PATHS = ("training.set", "valid.set", "test.set")
# Keys added after some runs were recorded: what the code did before the key existed (the commit that added it).
# A record without the key counts as made with that value: the same run as today's only where the grid gives it
# that value. DENS's per_layer, DNS(M,N)'s reduce and MixGCF's query and reg came with defaults that changed what
# those samplers do (2c532b7, the fidelity check), so their records from before differ from today's defaults.
ADDED_KEYS: dict[str, Any] = {
    "ItemKNN.k": 100, "ItemKNN.shrink": 10.0, "EASE.lambda": 500.0,  # 13ea5bf: only the models added with them use them
    "eval.every": 1, "learning.rate.step": 0, "learning.rate.decay": 1.0,  # 2c532b7: every epoch, a constant rate
    "params.dens.per_layer": False, "params.dns_mn.reduce": "mean",  # 2c532b7
    "params.mixgcf.query": "layer", "params.mixgcf.reg": "winner",  # 2c532b7
    "loss.name": "bpr", "embedding.init": "xavier", "eval.users": "test",  # the loss family: BPR as before
}
ABSENT = object()  # a key one side of a comparison does not hold


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The keys of a config.json (or RunConfig.to_dict()) that say what a run computes, as JSON holds them: the
    active sampler's and the active loss's params flat (params.OWNER.FIELD; the sections of other samplers are
    recorded, never used), data files reduced to their folder and file name."""
    out: dict[str, Any] = {}
    sampler = config.get("negative.sampler")
    loss = config.get("loss.name", "bpr")
    for key, value in json.loads(json.dumps(config, default=str)).items():
        if key in UNCOMPARED:
            continue
        if key == "params":
            for owner in dict.fromkeys((sampler, loss)):
                out.update({f"params.{owner}.{name}": v for name, v in ((value or {}).get(owner) or {}).items()})
        elif key in DATA_PATHS:
            out[key] = _data_file(value)
        elif key == "device" and value == "auto":  # the device `auto` resolved to (records from before the grids
            out[key] = config.get("device.resolved", value)  # fixed it): the same run as one that named it
        else:
            out[key] = value
    return out


def _data_file(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _data_file(path) for name, path in value.items()}
    return "/".join(Path(value).parts[-2:]) if isinstance(value, str) else value


def cap_unused(record: dict[str, Any], selection: dict[str, Any], cap: Any) -> bool:
    """Whether a run would have been the same under max.epoch `cap`: it stopped early (patience) before reaching its
    own cap and `cap`, and nothing in it depends on the cap itself (CNSDiff's Beta curriculum moves with epoch /
    max.epoch); a model fitted in closed form has no epochs."""
    if issubclass(MODELS.get(str(record.get("model.name")), object), ClosedFormRecommender):
        return True
    curriculum = ((record.get("params") or {}).get("cnsdiff") or {}).get("curriculum")
    if record.get("negative.sampler") == "cnsdiff" and curriculum == "beta":
        return False
    caps = (record.get("max.epoch"), cap)
    return (bool(selection.get("stopped_early")) and all(_is_int(c) for c in caps)
            and int(selection.get("epochs_run", 0)) < min(caps))


def _shown(value: Any) -> str:
    if value is ABSENT:
        return "absent"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def record_differences(record: dict[str, Any], wanted: dict[str, Any], selection: dict[str, Any]) -> list[str]:
    """What makes a run's config.json (`record`, its metrics.json `selection`) another run than the configuration the
    grid gives its cell today (`wanted`, RunConfig.to_dict()), one `KEY: recorded A, grid B` per key; [] when it is
    the same run. A key only one side holds is a difference, except a key the record predates (ADDED_KEYS) where the
    grid gives it the value the code had then; a different max.epoch only where the cap could have mattered."""
    have, want = comparable(record), comparable(wanted)
    out = []
    for key in sorted(set(have) | set(want)):
        then, now = have.get(key, ABSENT), want.get(key, ABSENT)
        if then == now or (then is ABSENT and key in ADDED_KEYS and ADDED_KEYS[key] == now):
            continue
        if key == "max.epoch" and cap_unused(record, selection, now):
            continue
        before = f" (before the key: {_shown(ADDED_KEYS[key])})" if then is ABSENT and key in ADDED_KEYS else ""
        out.append(f"{key}: recorded {_shown(then)}{before}, grid {_shown(now)}")
    return out


def shorter_rule(record: dict[str, Any], wanted: dict[str, Any], run: Path) -> list[str]:
    """A stopping rule (STOP_KEYS) the grid gives shorter than the run had, where it would have stopped the run
    earlier (replayed on its epochs.csv, watching the same files): `KEY: recorded A, grid B (...)`; [] otherwise
    (a longer rule continues the run: `short`)."""
    if record.get("selection.resolved") != "valid":
        return []
    shorter = [k for k in STOP_KEYS if k in wanted and rule_length(k, wanted[k]) < rule_length(k, record.get(k, 0))]
    if not shorter:
        return []
    rows = read_rows(run)
    files = ["valid", *(record.get("early_stop.files") or [])]
    last = stop_index(rows, files, int(wanted.get("early_stop.patience", 0) or 0),
                      int(wanted.get("early_stop.min_epochs", 0) or 0), str(record.get("selection.metric", "Recall@20")))
    halt = int(wanted.get("early_stop.halt_after", 0) or 0)
    last = min(last, halt - 1) if halt > 0 else last
    if last + 1 >= len(rows):
        return []
    return [f"{k}: recorded {record.get(k)}, grid {wanted[k]} (the grid's rule stops this run after epoch {last + 1} "
            f"of its {len(rows)})" for k in shorter]


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

    def __init__(self, grid: Grid, out: Path, dataset_root: Path, jobs: int = 1, retry_failed: bool = False,
                 threads: Optional[int] = None, device: str = "cpu"):
        self.grid, self.out, self.root = grid, Path(out), Path(dataset_root)
        self.device = device  # every cell's device key (a grid file's keys.device wins): never `auto`
        self.jobs, self.retry_failed = jobs, retry_failed
        # torch threads per cell: one when cells run side by side, else every core, unless told
        self.threads = threads or (1 if jobs > 1 else os.cpu_count() or 1)
        self.datasets: list[str] = []  # the datasets being run and those skipped (for grid.json)
        self.skipped: dict[str, str] = {}
        self._lock = threading.RLock()
        self.children: set[subprocess.Popen] = set()  # the main.py processes running now
        self.stopping = 0  # the signal number once SIGINT or SIGTERM arrived
        self.draining = 0  # the signal number once SIGUSR1 arrived: running cells finish, no new one starts
        self.fallbacks: set[str] = set()  # dataset/method/protocol choices a tie of all four validation metrics made
        self.best_other: dict[str, str] = {}  # dataset/protocol -> the best method outside power.methods (plan)

    @property
    def halted(self) -> bool:
        """Whether a signal (SIGINT, SIGTERM or SIGUSR1) said to start no new cell."""
        return bool(self.stopping or self.draining)

    def drain(self, signum: int) -> None:
        """Start nothing new; the running cells go on to their end (a session's time is nearly up)."""
        self.draining = signum
        with self._lock:
            log.warning("draining: %d running cell(s) finish, no new cell starts", len(self.children))

    def stop(self, signum: int) -> None:
        """Start nothing new and pass the signal on to every running cell (each checkpoints and exits)."""
        self.stopping = signum
        with self._lock:
            for proc in list(self.children):
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass

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
        """Files of the seeded per-user split of test_ood: ood_valid (a fraction of each user's rows) and the rest."""
        preset = get_preset(dataset)
        root = self.root_of(dataset)
        if preset.name == "synthetic":
            from data import synthetic
            synthetic.ensure(root / "synthetic")
        source = root / preset.name / preset.tests["test_ood"]
        folder = self.out / "data" / f"{preset.name}-ood{self.grid.ood_valid_fraction:g}"
        files = {"ood_valid": folder / "ood_valid.txt", "test_ood": folder / "test_ood_rest.txt"}
        if all(p.is_file() for p in files.values()):
            return files
        raw = read_interactions(source, preset.format)
        users, items = np.array(raw.users), np.array(raw.items)
        rng = np.random.default_rng(20250101)
        order = np.lexsort((rng.random(len(users)), users))
        users, items = users[order], items[order]
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        counts = np.diff(np.r_[starts, len(users)])
        rank = np.arange(len(users)) - np.repeat(starts, counts)
        n_valid = np.floor(np.repeat(counts, counts) * self.grid.ood_valid_fraction).astype(int)
        is_valid = rank < n_valid
        for name, mask in (("ood_valid", is_valid), ("test_ood", ~is_valid)):
            atomic_write_text(files[name], _format_rows(users[mask], items[mask], preset.format))
        log.info("%s: split test_ood into %d ood_valid and %d test rows (%s)", dataset, int(is_valid.sum()),
                 int((~is_valid).sum()), folder)
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
                chosen, scores = self.choose([c for c in cells if c.halted_at is None])
                chosen_by[method] = (chosen, scores)
                if all(c.state() in ("finished", "failed") for c in cells):
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
                and not issubclass(MODELS.get(str(cells[0].keys.get("model.name", "LightGCN")), object),
                                   ClosedFormRecommender))

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
        """Per protocol, the method outside `power.methods` whose chosen candidate has the best first-seed validation
        scores (bench/protocol.py's order of the four metrics; a tie of all four goes to the method name that sorts
        first); {} without `power.best_other`, and until every such method's first-seed cells have ended."""
        power = self.grid.power
        if power is None or not power.best_other:
            return {}
        others = {m: v for m, v in chosen_by.items() if m not in power.methods}
        if not others or any(m not in ended for m in others):
            return {}
        best = {}
        for p in self.grid.protocols:
            name, _ = choose_candidate([(m, scores[p]) for m, (chosen, scores) in others.items()
                                        if chosen.get(p) is not None])
            if name is not None:
                best[p] = name
        return best

    def choose(self, cells: list[Cell]) -> tuple[dict[str, Optional[Cell]], dict[str, tuple[float, ...]]]:
        """(per protocol, the finished first-seed cell with the best validation scores (None until all ended), the
        chosen cells' scores); a choice only the fallback made (a tie of all four validation metrics) is noted in
        self.fallbacks."""
        none: dict[str, Optional[Cell]] = {p: None for p in self.grid.protocols}
        if any(c.state() != "finished" and c.state() != "failed" for c in cells):
            return none, {}
        done = [c for c in cells if c.state() == "finished"]
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
        return load_config(REPO / "conf" / "LightGCN.yaml",
                           [f"{k}={_value(v)}" for k, v in self.command_keys(cell).items()]).to_dict()

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
        """Run (or resume) one cell; returns its final state."""
        state = cell.state()
        if state == "running":  # its writer is alive: another process trains it
            state = self.wait_for_writer(cell)
            self.write_manifest()
        if not to_run(state, self.retry_failed) or self.halted:  # after a signal: no folder, no log line
            return state
        cell.folder.mkdir(parents=True, exist_ok=True)
        threads = str(self.threads)
        if state in ("interrupted", "stale", "short") and (cell.run_dir() / "checkpoint.pt").is_file():
            # a run that recorded its thread count resumes with it (an identical continuation); older ones get the grid's
            own = [] if recorded_threads(cell.run_dir()) else ["--threads", threads]
            cmd = [sys.executable, str(REPO / "main.py"), *own, "--resume", str(cell.run_dir())]
            for key, value in cell.longer_rule().items():  # a lengthened stopping rule (main.py checks it)
                cmd += ["--set", f"{key}={_value(value)}"]
            log.info("%s %s%s", "lengthen" if state == "short" else "resume", cell.id,
                     " (its writer is gone: killed, or another machine's record)" if state == "stale" else "")
        else:
            keys = self.command_keys(cell)
            cmd = [sys.executable, str(REPO / "main.py"), "--threads", threads]
            for key, value in keys.items():
                cmd += ["--set", f"{key}={_value(value)}"]
            log.info("run %s%s", cell.id, " again (stopped under a shorter stopping rule; no checkpoint here to "
                     "continue from)" if state == "short" else "")
        (cell.folder / "error.txt").unlink(missing_ok=True)
        with self._lock:
            if self.halted:  # a signal arrived meanwhile: start nothing new
                return state
            # a session of its own: a terminal's Ctrl-C reaches the grid only, which forwards it once
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
            self.children.add(proc)
        try:
            _, stderr = proc.communicate()
        finally:
            with self._lock:
                self.children.discard(proc)
        atomic_write_text(cell.folder / "last_command.txt", " ".join(cmd) + "\n")
        if self.stopping and proc.returncode in INTERRUPTED_EXITS:
            # a cell that had not yet set up its handler is killed by the signal itself (a negative returncode):
            # nothing of it is lost, it has no finished epoch, and it starts again next time (not 'failed')
            log.warning("cell %s interrupted (%s)", cell.id, "its last finished epoch is checkpointed"
                        if proc.returncode > 0 else "before its first epoch: it starts again next time")
        elif proc.returncode != 0:
            lines = [line for line in stderr.splitlines() if line.strip()]
            message = re.sub(r"^\d\d:\d\d:\d\d (ERROR|WARNING|CRITICAL) ", "", lines[-1]) if lines else \
                f"exit status {proc.returncode}"
            if cell.run_dir() is None or read_status(cell.run_dir()).get("state") != "failed":
                atomic_write_text(cell.folder / "error.txt", message + "\n")
            log.warning("cell %s failed: %s", cell.id, message)
        self.write_manifest()
        return cell.state()

    def run_all(self, datasets: list[str]) -> None:
        """Run every cell, `jobs` at a time, dataset by dataset in the grid's order (a dataset's first seeds, then its
        later seeds, before the next dataset's): a cell is handed to a job only when one is free, so a cell that
        becomes known later (a pair's later seeds, as soon as its own first-seed candidates are done) takes its
        place in that order; a failing cell does not stop the others, an error of the runner itself stops the grid
        (the running cells finish, nothing else starts)."""
        queued: set[tuple[str, Any]] = set()  # a cell at a halving's rung and under the full rule are two
        running: set[Any] = set()
        order = {d: i for i, d in enumerate(datasets)}
        pool = ThreadPoolExecutor(max_workers=self.jobs)
        try:
            while True:
                if len(running) < self.jobs and not self.halted:
                    with self._lock:  # one plan at a time: a worker writing grid.json plans too
                        first, later, _ = self.plan(datasets)
                    for c in sorted(first + later, key=lambda c: order[c.dataset]):  # stable: first seeds first
                        key = (c.id, c.halted_at)
                        if len(running) >= self.jobs or key in queued or not to_run(c.state(), self.retry_failed):
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
                  "state": c.state(), "error": c.error(), "run": str(c.run_dir().relative_to(self.out))
                  if c.run_dir() else None, **({"halted_at": c.halted_at} if c.halted_at else {})}
                 for c in first + later]
        return {"grid": self.grid.name, "grid_file": self.file_shown(), "protocols": self.grid.protocols,
                "datasets": datasets, "skipped_datasets": skipped, "methods": self.grid.methods,
                "seeds": self.grid.seeds, "choices": choices, "tie_fallback": sorted(self.fallbacks),
                "power": self.power_manifest(),
                "halving": vars(self.grid.halving) if self.grid.halving is not None else None, "cells": cells}

    def power_manifest(self) -> Optional[dict[str, Any]]:
        """grid.json's `power`: the grid file's section and the best other method of each dataset x protocol."""
        power = self.grid.power
        if power is None:
            return None
        return {"seeds": power.seeds, "methods": power.methods, "at_least": power.at_least,
                "best_other": dict(sorted(self.best_other.items()))}


# ---- cost estimate of the remaining cells (dry run) --------------------------------------
def _kind(keys: dict[str, Any]) -> tuple[str, str, str]:
    """What a run's cost depends on most: dataset, model, sampler (with CNSDiff's preset)."""
    sampler = str(keys.get("negative.sampler", "cnsdiff"))
    preset = keys.get("params.cnsdiff.preset") or keys.get("params.preset")
    if sampler == "cnsdiff":
        sampler += f".{preset or 'official'}"
    model = str(keys.get("model.name", "LightGCN"))
    if issubclass(MODELS.get(model, object), ClosedFormRecommender):  # fitted once: no sampler, no epochs
        sampler = "-"
    return str(keys.get("dataset", "")), model, sampler


def run_records(root: Path) -> list[dict[str, Any]]:
    """Every finished run under root/*/runs/: its grid folder, kind and CPU seconds (the median epoch's sampling
    and training times the epochs run, plus the median evaluation times the evaluations)."""
    records = []
    for metrics_path in sorted(Path(root).glob("*/runs/**/metrics.json")):
        try:
            metrics = json.loads(metrics_path.read_text())
            config = json.loads((metrics_path.parent / "config.json").read_text())
        except (OSError, ValueError):
            continue
        keys = {**config, **(config.get("input") or {})}
        t, epochs = metrics.get("median_epoch_seconds") or {}, metrics["selection"]["epochs_run"]
        every = int(config.get("eval.every", 1) or 1)
        evaluations = -(-epochs // every)
        training = (t.get("sample_s", 0.0) + t.get("train_s", 0.0)) * epochs
        seconds = training + t.get("eval_s", 0.0) * evaluations
        data = metrics.get("data") or {}
        size = (data["users"], data["items"], data["train"]) if all(k in data for k in ("users", "items", "train")) else None
        records.append({"grid": metrics_path.relative_to(root).parts[0], "kind": _kind(keys), "seconds": seconds,
                        "epochs": epochs, "best": metrics["selection"]["epoch"], "epoch_s": seconds / max(1, epochs),
                        "train_epoch_s": training / max(1, epochs), "eval_epoch_s": (seconds - training) / max(1, epochs),
                        "lr": float(keys.get("learning.rate", 0.01)), "size": size})
    return records


def scaled_epoch_seconds(similar: list[dict[str, Any]], size: tuple[int, int, int]) -> tuple[Optional[float], str]:
    """(seconds per epoch on a dataset of `size` (users, items, training rows), the dataset it was scaled from),
    from the records of the same model and sampler on the recorded dataset with the most training rows: training
    time times the ratio of rows x (users + items) (every batch propagates the whole graph), evaluation time
    times the ratio of users x items (every user scores every item). (None, "") without sized records."""
    sized = [r for r in similar if r.get("size")]
    if not sized:
        return None, ""
    biggest = max(sized, key=lambda r: r["size"][2])
    ref = [r for r in sized if r["kind"][0] == biggest["kind"][0]]
    users, items, rows = biggest["size"]
    train = float(np.median([r["train_epoch_s"] for r in ref])) * (size[2] * (size[0] + size[1])) / (rows * (users + items))
    evaluation = float(np.median([r["eval_epoch_s"] for r in ref])) * (size[0] * size[1]) / (users * items)
    return train + evaluation, biggest["kind"][0]


def estimate_seconds(cell: Cell, records: list[dict[str, Any]],
                     sizes: Optional[dict[str, tuple[int, int, int]]] = None) -> Optional[float]:
    """CPU seconds a cell is expected to take: the median seconds per epoch of the finished runs of its kind
    (dataset, model, sampler; those at its learning rate where there are any) times the epochs it should run:
    their median selected epoch plus its own patience (times eval.every), at least its early_stop.min_epochs, at
    most its max.epoch (all of them without early stopping); a `short` cell only the epochs after its last
    (from its own selected epoch; without its checkpoint it runs again, whole). On a dataset without a run of its
    kind but with its size in `sizes`, the seconds per epoch are scaled from another dataset's runs of the same
    model and sampler (scaled_epoch_seconds). None when neither is possible."""
    kind = _kind(cell.keys)
    lr = float(cell.keys.get("learning.rate", 0.01))
    similar = [r for r in records if r["kind"] == kind]
    if similar:
        similar = [r for r in similar if r["lr"] == lr] or similar
        per_epoch: Optional[float] = float(np.median([r["epoch_s"] for r in similar]))
    else:
        similar = [r for r in records if r["kind"][1:] == kind[1:]]
        similar = [r for r in similar if r["lr"] == lr] or similar
        per_epoch = scaled_epoch_seconds(similar, sizes[kind[0]])[0] if sizes and kind[0] in sizes else None
    if per_epoch is None:
        return None
    if kind[2] == "-":
        return per_epoch
    limit = int(cell.keys.get("max.epoch", 120))
    patience = int(cell.keys.get("early_stop.patience", 10)) * int(cell.keys.get("eval.every", 1))
    best, done, run = float(np.median([r["best"] for r in similar])), 0, cell.run_dir()
    if cell.state() == "short" and (run / "checkpoint.pt").is_file():  # continues from its last epoch
        selection = json.loads((run / "metrics.json").read_text())["selection"]
        best, done = float(selection["epoch"]), int(selection["epochs_run"])
    epochs = min(limit, max(float(cell.keys.get("early_stop.min_epochs", 0)), best + patience)) if patience > 0 else limit
    halt = int(cell.keys.get("early_stop.halt_after", 0) or 0)
    epochs = min(epochs, halt) if halt > 0 else epochs
    return per_epoch * max(0.0, epochs - done)


def dataset_size(runner: "GridRunner", dataset: str) -> tuple[int, int, int]:
    """(users, items, rows) of a dataset's training file, as the cost estimate scales by them."""
    preset = get_preset(dataset)
    raw = read_interactions(runner.root_of(dataset) / preset.name / preset.train, preset.format)
    return len(set(raw.users)), len(set(raw.items)), len(raw.users)


def cost_lines(runner: "GridRunner", datasets: list[str], retry_failed: bool, jobs: int,
               records_root: Path = REPO / "results" / "grids") -> list[str]:
    """The dry run's estimate of the CPU time the remaining cells need, from the committed run records (scaled by
    size from another dataset's where a dataset has none), and the CPU time the grid's own finished records took."""
    records = run_records(records_root)
    first, later, choices = runner.plan(datasets)
    recorded = {r["kind"][0] for r in records}
    sizes = {d: dataset_size(runner, d) for d in datasets if d not in recorded}
    known, unknown = 0.0, []
    for c in first + later:
        if not to_run(c.state(), retry_failed):
            continue
        seconds = estimate_seconds(c, records, sizes)
        if seconds is None:
            unknown.append(c.id)
        else:
            known += seconds
    lines = [f"estimated CPU time of the listed cells to run: {known / 3600:.1f} h (about {known / 3600 / jobs:.1f} h "
             f"at --jobs {jobs}), from {len(records)} finished run records under results/grids"]
    for dataset, size in sizes.items():
        lines.append(f"  {dataset} has no run record: its cells' epochs are scaled by size (users {size[0]}, items "
                     f"{size[1]}, training rows {size[2]}) from the largest recorded dataset's runs of the same method")
    if unknown:
        lines.append(f"  {len(unknown)} cell(s) of a kind with no record are not counted, e.g. {unknown[0]}")
    waiting = [k for k, v in choices.items() if all(x is None for x in v.values())]
    power = runner.grid.power
    if waiting:
        extra_min = extra_max = 0.0
        for key in waiting:
            dataset, method = key.split("/", 1)
            cells = [c for c in first if c.dataset == dataset and c.method == method]
            powered = power is not None and method in power.methods
            seeds = len(runner.grid.seeds_for(dataset, method, powered)) - 1
            full = [replace(c, keys={**c.keys, "early_stop.halt_after": 0}, halted_at=None) for c in cells]
            per = [estimate_seconds(c, records, sizes) or 0.0 for c in full]
            mean = float(np.mean(per)) if per else 0.0
            extra_min += seeds * mean
            extra_max += seeds * mean * min(len(cells), len(runner.grid.protocols))
            if any(c.halted_at for c in cells):  # the kept candidates go on from the rung to the full rule
                more = mean - float(np.mean([estimate_seconds(c, records, sizes) or 0.0 for c in cells]))
                keep = runner.grid.halving.keep
                extra_min += keep * more
                extra_max += min(len(cells), keep * len(runner.grid.protocols)) * more
        lines.append(f"  the later seeds of {len(waiting)} pair(s) (and the kept candidates of a halving) are not listed "
                     f"yet: +{extra_min / 3600:.1f} h "
                     f"(one choice for every protocol) to +{extra_max / 3600:.1f} h (a different one per protocol)")
        if power is not None and power.best_other:
            undecided = sorted({k.split("/", 1)[0] for k in waiting} - {k.split("/", 1)[0] for k in runner.best_other})
            if undecided:
                lines.append(f"  not counted: the power seeds of the best other method of {', '.join(undecided)} "
                             f"(chosen once every first seed there has ended)")
    out = runner.out.resolve()
    own = records if out.parent == Path(records_root).resolve() else run_records(out.parent)
    spent = [r["seconds"] for r in own if r["grid"] == out.name]
    lines.append(f"CPU time of this grid's {len(spent)} finished run records: {sum(spent) / 3600:.1f} h")
    return lines


def _format_rows(users: np.ndarray, items: np.ndarray, fmt: str) -> str:
    """Rows (sorted by user) in a dataset format: `u i 1` lines, or one `u i1 i2 ...` line per user."""
    if fmt != "adjacency":
        return "".join(f"{u} {i} 1\n" for u, i in zip(users, items))
    lines, start = [], 0
    for end in range(1, len(users) + 1):
        if end == len(users) or users[end] != users[start]:
            lines.append(f"{users[start]} {' '.join(items[start:end])}\n")
            start = end
    return "".join(lines)


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", type=Path)
    parser.add_argument("--jobs", type=int, default=1, help="cells run at once (each with one torch thread when > 1)")
    parser.add_argument("--threads", type=int,
                        help="torch threads per cell (default: 1 with --jobs > 1, else every core; give 1 when "
                             "another grid shares the machine)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the cells and how many remain, write grid.json; run nothing")
    parser.add_argument("--datasets", nargs="+", help="run the grid on these datasets instead of its own")
    parser.add_argument("--dataset-root", type=Path, default=Path("dataset"))
    parser.add_argument("--out", type=Path, help="default: results/grids/<grid name>")
    parser.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    parser.add_argument("--device", default="cpu",
                        help="every cell's device (cpu, cuda, cuda:N; default cpu, so that a GPU machine does not "
                             "change a grid's device silently); a grid file's keys.device wins")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    lock: Optional[GridLock] = None
    try:
        grid = load_grid(args.grid)
        if args.jobs < 1:
            raise ConfigError(f"--jobs: {args.jobs} must be >= 1")
        if args.threads is not None and args.threads < 1:
            raise ConfigError(f"--threads: {args.threads} must be >= 1")
        for name in args.datasets or []:
            _known_dataset(name, "--datasets")
        root = args.dataset_root if args.dataset_root.is_absolute() else Path.cwd() / args.dataset_root
        out = args.out or REPO / "results" / "grids" / grid.name
        if str(args.device).strip().lower() == "auto":
            raise ConfigError("--device: give the device (cpu, cuda, cuda:N), not auto: a grid's records name theirs")
        runner = GridRunner(grid, out, root, args.jobs, args.retry_failed, args.threads, args.device)
        runner.check_owner()
        if not args.dry_run:  # a dry run starts nothing: it may list the cells of a folder a grid is running
            lock = GridLock(out)
            lock.acquire()
        return run(runner, args, " ".join(["python -m bench.grid", *(argv if argv is not None else sys.argv[1:])]))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    finally:
        if lock is not None:
            lock.release()


def run(runner: GridRunner, args: argparse.Namespace, command: str) -> int:
    """Everything after the grid file is read and its folder is this grid's: check the records, then list (dry run)
    or run the cells; the exit status."""
    datasets, skipped = [], {}
    for name in args.datasets or runner.grid.datasets:
        why = runner.available(name)
        if why:
            skipped[name] = why
            log.warning("dataset %s skipped: %s", name, why)
        else:
            datasets.append(name)
    runner.datasets, runner.skipped = datasets, skipped
    differing = runner.differing_cells(datasets)
    for cell_id, found in differing:  # the dry run's listing on stdout; a run's refusal in the log
        line = f"{'differs':<11} {cell_id}: {'; '.join(found)}"
        print(line) if args.dry_run else log.warning("%s", line)
    if differing:
        raise ConfigError(f"{len(differing)} cell(s) under {runner.out} were run under another configuration than "
                          f"{runner.file_shown() or 'the grid'} gives them today (listed above as `differs`); nothing "
                          f"was run and grid.json is unchanged: rerun into a new --out folder, or move the old runs "
                          f"away")
    if args.dry_run:  # runs nothing; grid.json is written, so that a table can be made from the records
        invalid = runner.invalid_cells(datasets)
        for cell_id, message in invalid:
            print(f"invalid     {cell_id}: {message}")
        manifest = runner.write_manifest()
        remaining = 0
        for c in manifest["cells"]:
            remaining += to_run(c["state"], args.retry_failed)
            print(f"{c['state']:<11} {c['id']}")
        waiting = [k for k, v in manifest["choices"].items() if all(x is None for x in v.values())]
        print(f"{len(manifest['cells'])} cells listed, {remaining} to run; the later seeds of {len(waiting)} "
              f"dataset/method pair(s) are listed once their first-seed candidates have finished")
        for line in cost_lines(runner, datasets, args.retry_failed, args.jobs):
            print(line)
        if invalid:
            log.error("%d cell(s) have an invalid configuration (listed above as `invalid`); fix the grid file",
                      len(invalid))
            return 2
        return 0
    runner.write_manifest()
    previous = {sig: signal.signal(sig, lambda signum, _frame: runner.stop(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    if hasattr(signal, "SIGUSR1"):  # POSIX: `kill -USR1 PID` lets the running cells finish, starts no new one
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, lambda signum, _frame: runner.drain(signum))
    try:
        runner.run_all(datasets)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    manifest = runner.write_manifest()
    failed = [c for c in manifest["cells"] if c["state"] == "failed"]
    log.info("grid %s: %d cells, %d finished, %d failed; manifest %s", runner.grid.name, len(manifest["cells"]),
             sum(c["state"] == "finished" for c in manifest["cells"]), len(failed), runner.out / "grid.json")
    for c in failed:
        log.warning("failed: %s: %s", c["id"], c["error"])
    if runner.stopping:
        interrupted = sum(c["state"] == "interrupted" for c in manifest["cells"])
        log.error("grid stopped by %s: %d cell(s) interrupted with their checkpoints; continue with: %s",
                  signal.Signals(runner.stopping).name, interrupted, command)
        return 128 + runner.stopping
    if runner.draining:
        left = sum(to_run(c["state"], args.retry_failed) for c in manifest["cells"])
        log.warning("grid drained by %s: its running cells finished, %d cell(s) not started; continue with: %s",
                    signal.Signals(runner.draining).name, left, command)
        return 128 + runner.draining
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
