"""One cell of a grid (a dataset, method, candidate and seed: one `python main.py` run in its own folder): its name,
its run folders and its state, read from its records."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bench.records import read_rows
from model import is_closed_form
from util.results import STOP_KEYS, read_status, rule_length, writer_alive


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
        if run is None or is_closed_form(self.keys.get("model.name", "LightGCN")):
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
