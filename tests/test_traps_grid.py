"""The grid's traps: records matched by configuration (not by name), a folder of another grid, one grid run per
folder, cells another process still trains, duplicate seeds, misspelled datasets, damaged records in the tables,
and the grid file a table names."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench import dose, fidelity
from bench import grid as G
from bench import table as T
from bench.records import record_differences, shorter_rule
from bench.runner import GridLock
from conf.config import load_config
from data.presets import PRESETS
from tests.conftest import REPO, wait_for, write
from tests.test_grid import _fake_run, _rows
from util.results import machine_id, process_alive, read_status

TINY = "max.epoch: 2, fhn.probe: 0, batch.size: 256"  # a coat cell of a few seconds
LONG = "max.epoch: 400, early_stop.patience: 0, fhn.probe: 0"  # a coat cell that trains for a while


def _grid_file(path: Path, name: str, keys: str, methods: str = "rns: {keys: {negative.sampler: rns}}",
               seeds: str = "[1]") -> Path:
    return write(path, f"name: {name}\ndatasets: [coat]\nprotocols: [valid]\nseeds: {seeds}\nkeys: {{{keys}}}\n"
                       f"methods: {{{methods}}}\n")


def _runs(out: Path) -> list[Path]:
    return sorted(p.parent for p in (out / "runs").rglob("config.json"))


def _training(out: Path, count: int):
    """The run folders of `count` cells once each has finished an epoch (status running, epoch >= 1)."""
    runs = [p.parent for p in out.glob("runs/*/*/*/*/*/checkpoint.pt")]
    live = [r for r in runs if read_status(r).get("state") == "running" and read_status(r).get("epoch")]
    return live if len(live) == count else None


def _grid_process(path: Path, shared: Path, out: Path, *more: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.grid", str(path), "--dataset-root", str(shared), "--out",
                             str(out), *more], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# 1: a cell counts only when its record was made under the configuration the grid gives it today
def test_a_record_made_under_another_configuration_is_listed_and_the_grid_refuses_to_mix(shared, tmp_path, capsys,
                                                                                        caplog):
    path = _grid_file(tmp_path / "g.yaml", "g", f"{TINY}, LightGCN.n_layer: 2")
    out = tmp_path / "out"
    args = [str(path), "--dataset-root", str(shared), "--out", str(out)]
    assert G.main(args) == 0
    runs, manifest = _runs(out), (out / "grid.json").read_bytes()
    _grid_file(path, "g", f"{TINY}, LightGCN.n_layer: 3")
    capsys.readouterr()
    with caplog.at_level("ERROR"):
        assert G.main(args + ["--dry-run"]) == 2
    assert "differs     coat/rns/default/s1: LightGCN.n_layer: recorded 2, grid 3" in capsys.readouterr().out
    assert "1 cell(s) under" in caplog.text
    assert "rerun into a new --out folder, or move the old runs away" in caplog.text
    assert (out / "grid.json").read_bytes() == manifest  # the old records are not listed as this grid's
    assert G.main(args) == 2 and _runs(out) == runs  # nothing ran
    _grid_file(path, "g", f"{TINY}, LightGCN.n_layer: 2")
    assert G.main(args + ["--dry-run"]) == 0
    assert "1 cells listed, 0 to run" in capsys.readouterr().out
    # the same records in another folder, beside data under another root: the same runs (data files are compared by
    # their folder and file name, not by where the dataset root or the grid folder lies)
    moved, root = tmp_path / "moved", tmp_path / "data"
    shutil.copytree(out, moved)
    root.mkdir()
    (root / "coat").symlink_to(shared / "coat")
    assert G.main([str(path), "--dataset-root", str(root), "--out", str(moved), "--dry-run"]) == 0
    assert "1 cells listed, 0 to run" in capsys.readouterr().out


def test_the_rules_of_the_record_comparison():
    wanted = load_config(REPO / "conf" / "LightGCN.yaml", ["dataset=coat", "dataset.root=../shared/datasets",
                                                           "max.epoch=1000", "device=cpu"]).to_dict()  # as grids name it
    assert wanted["negative.sampler"] == "cnsdiff" and wanted["params"]["cnsdiff"]["curriculum"] == "beta"
    record = json.loads(json.dumps(wanted))
    record.update({"commit": "abc1234", "threads": 1, "device.resolved": "cpu", "input": {"anything": 1},
                   "output": "elsewhere", "log.dir": "elsewhere/log", "dataset.root": "dataset",
                   "training.set": "dataset/coat/train.txt", "early_stop.patience": 99})
    assert record_differences(record, wanted, {}) == []  # record-only keys, input, places, stopping rule
    record["test.set"] = {"test_ood": "dataset/coat-ood0.2/test_ood_rest.txt"}
    assert record_differences(record, wanted, {}) == [
        'test.set: recorded {"test_ood": "coat-ood0.2/test_ood_rest.txt"}, grid {"test_ood": "coat/test_ood.txt"}']
    record["test.set"] = wanted["test.set"]
    # a key the record predates counts as the value the code had then
    del record["eval.every"]
    assert record_differences(record, wanted, {}) == []
    assert record_differences(record, {**wanted, "eval.every": 5}, {}) == [
        "eval.every: recorded absent (before the key: 1), grid 5"]
    dens = {**wanted, "negative.sampler": "dens", "params": {"dens": {"per_layer": True}}}
    assert record_differences({**record, "negative.sampler": "dens", "params": {"dens": {}}}, dens, {}) == [
        "params.dens.per_layer: recorded absent (before the key: false), grid true"]
    # another sampler's section is recorded (a key the grid sets for it), never used: it does not count
    assert record_differences({**record, "params": {**record["params"], "dns": {"n_candidates": 8}}}, wanted, {}) == []
    # any other key on one side only is a difference
    assert record_differences({**record, "old.key": 3}, wanted, {}) == ["old.key: recorded 3, grid absent"]
    # max.epoch: the same run where it stopped early below both caps and nothing in it follows the cap
    record["max.epoch"] = 400
    stopped = {"stopped_early": True, "epochs_run": 120}
    assert record_differences(record, wanted, stopped) == ["max.epoch: recorded 400, grid 1000"]  # Beta curriculum
    record["params"]["cnsdiff"]["curriculum"] = wanted["params"]["cnsdiff"]["curriculum"] = "fixed"
    assert record_differences(record, wanted, stopped) == []
    assert record_differences(record, wanted, {"stopped_early": False, "epochs_run": 400}) != []  # ran to its cap
    assert record_differences(record, {**wanted, "max.epoch": 100}, stopped) != []  # the grid's cap ends it sooner


# 2: --out pointed at another grid's folder
def test_a_folder_of_another_grid_is_refused_naming_both_grids(shared, tmp_path, caplog):
    out = tmp_path / "out"
    mine = _grid_file(tmp_path / "a.yaml", "a", TINY)
    assert G.main([str(mine), "--dataset-root", str(shared), "--out", str(out), "--dry-run"]) == 0
    manifest = (out / "grid.json").read_bytes()
    assert json.loads(manifest)["grid_file"] == str(mine.resolve())  # outside the repository: its full path
    other = _grid_file(tmp_path / "b.yaml", "b", TINY)
    for more in (["--dry-run"], []):
        caplog.clear()
        with caplog.at_level("ERROR"):
            assert G.main([str(other), "--dataset-root", str(shared), "--out", str(out), *more]) == 2
        assert (f"--out {out} holds the runs of grid 'a' ({mine.resolve()}), not of grid 'b' ({other.resolve()}): "
                f"give this grid its own --out folder") in caplog.text
    assert (out / "grid.json").read_bytes() == manifest and not (out / "runs").exists()
    twin = _grid_file(tmp_path / "elsewhere" / "a.yaml", "a", TINY)  # another file of the same grid name
    caplog.clear()
    with caplog.at_level("ERROR"):
        assert G.main([str(twin), "--dataset-root", str(shared), "--out", str(out), "--dry-run"]) == 2
    assert f"holds the runs of grid 'a' from {mine.resolve()}, not from {twin.resolve()}" in caplog.text
    (out / "grid.json").write_bytes(manifest[: len(manifest) // 2])  # whose folder it is cannot be read
    caplog.clear()
    with caplog.at_level("ERROR"):
        assert G.main([str(mine), "--dataset-root", str(shared), "--out", str(out), "--dry-run"]) == 2
    assert "grid.json: not valid JSON" in caplog.text and "if they are this grid's ('a'), delete it" in caplog.text


# 3: one grid run per folder
def test_a_second_grid_run_on_a_folder_is_refused_naming_the_holder(shared, tmp_path, caplog, capsys):
    path = _grid_file(tmp_path / "g.yaml", "g", LONG)
    out = tmp_path / "out"
    first = _grid_process(path, shared, out)
    try:
        wait_for(lambda: _training(out, 1))
        with caplog.at_level("ERROR"):
            assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out)]) == 2
        assert f"is being run by another bench.grid (process {first.pid} on" in caplog.text
        assert "one grid run per folder" in caplog.text and len(_runs(out)) == 1  # it started nothing
        capsys.readouterr()
        assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out), "--dry-run"]) == 0  # no lock
        assert "running     coat/rns/default/s1" in capsys.readouterr().out
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143
    lock = GridLock(out)
    lock.acquire()  # the lock went with the process
    lock.release()


# 4: the grid killed with SIGKILL while its cells train on
def test_a_rerun_after_kill_9_of_the_grid_waits_for_its_orphaned_cells_and_trains_each_once(shared, tmp_path, caplog,
                                                                                           capsys):
    path = _grid_file(tmp_path / "g.yaml", "g", LONG, methods="a: {keys: {negative.sampler: rns}}, "
                                                              "b: {keys: {negative.sampler: rns}}")
    out = tmp_path / "out"
    first = _grid_process(path, shared, out, "--jobs", "2")
    pids = []
    try:
        runs = wait_for(lambda: _training(out, 2))
        pids = [read_status(r)["pid"] for r in runs]
        first.kill()  # the grid only: its cells run in sessions of their own and train on
        first.communicate(timeout=60)
        assert all(process_alive(pid) for pid in pids)
        capsys.readouterr()
        assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out), "--dry-run"]) == 0
        listed = capsys.readouterr().out
        assert "running     coat/a/default/s1" in listed and "running     coat/b/default/s1" in listed
        with caplog.at_level("INFO"):
            assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out), "--jobs", "2"]) == 0
    finally:
        for pid in pids:  # the orphans, should the test fail before they end
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for cell in ("a", "b"):
        assert f"waiting for cell coat/{cell}/default/s1: trained by another process" in caplog.text
    assert _runs(out) == sorted(runs)  # no second run folder: each cell trained once, by its first process
    for run in runs:
        status = read_status(run)
        assert status["state"] == "finished" and status["pid"] in pids
        epochs = [line.split(",")[0] for line in (run / "epochs.csv").read_text().splitlines()[1:]]
        assert epochs == [str(e) for e in range(1, 401)]
    assert {c["state"] for c in json.loads((out / "grid.json").read_text())["cells"]} == {"finished"}


# 5: duplicate seeds
@pytest.mark.parametrize("seeds,message", [
    ("seeds: [2025, 2026, 2026]\nmethods: {m: {}}", "`seeds` lists seed 2026 twice ([2025, 2026, 2026])"),
    ("seeds: [1]\nmethods: {m: {seeds: [3, 4, 3]}}", "`methods.m.seeds` lists seed 3 twice"),
    ("seeds: [1]\nmethods: {m: {}}\nextra_seeds: {coat: {m: [5, 5]}}", "`extra_seeds.coat.m` lists seed 5 twice"),
    ("seeds: [1, 2]\nmethods: {m: {}}\nextra_seeds: {coat: {m: [2]}}",
     "`extra_seeds.coat.m` lists seed 2, which is already among its seeds [1, 2]"),
    ("seeds: [1]\nmethods: {m: {}}\nextra_seeds: {coat: {n: [2]}}", "`extra_seeds.coat` names method 'n'"),
])
def test_duplicate_seeds_are_a_grid_file_error(tmp_path, caplog, seeds, message):
    path = write(tmp_path / "g.yaml", f"name: g\ndatasets: [coat]\nprotocols: [valid]\n{seeds}\n")
    with caplog.at_level("ERROR"):
        assert G.main([str(path), "--dataset-root", str(tmp_path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert message in caplog.text and not (tmp_path / "out").exists()


# 6: a misspelled dataset is an error; a preset whose files are absent a skip
def test_a_misspelled_dataset_is_an_error_and_an_undownloaded_one_a_skip(tmp_path, caplog):
    args = ["--dataset-root", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--dry-run"]
    misspelled = write(tmp_path / "f.yaml", "name: f\ndatasets: [fod]\nprotocols: [valid]\nseeds: [1]\n"
                                            "methods: {m: {}}\n")
    with caplog.at_level("ERROR"):
        assert G.main([str(misspelled), *args]) == 2
    assert "f.yaml: `datasets`: dataset: unknown preset 'fod' (did you mean 'food'?)" in caplog.text
    path = _grid_file(tmp_path / "g.yaml", "g", TINY)
    caplog.clear()
    with caplog.at_level("ERROR"):
        assert G.main([str(path), "--datasets", "coat", "fod", *args]) == 2
    assert "--datasets: dataset: unknown preset 'fod' (did you mean 'food'?)" in caplog.text
    assert not (tmp_path / "out").exists()
    absent = next(name for name in PRESETS if name != "synthetic")  # nothing is under tmp_path/empty
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert G.main([str(path), "--datasets", absent, *args]) == 0
    assert f"dataset {absent} skipped: files absent" in caplog.text
    assert absent in json.loads((tmp_path / "out" / "grid.json").read_text())["skipped_datasets"]


# 7: damaged records in the tables; a cell trained now
def _table_folder(folder: Path) -> Path:
    """Two candidates of one method: lr 0.1 finished, lr 0.2 listed as interrupted."""
    cells = []
    for lr, state in ((0.1, "finished"), (0.2, "interrupted")):
        run = _fake_run(folder / "runs" / f"lr{lr}", _rows([0.3, 0.4], [0.1, 0.1], [0.2, 0.3]), state=state)
        cells.append({"id": f"d/m/{lr}/s1", "dataset": "d", "method": "m", "candidate": {"learning.rate": lr},
                      "seed": 1, "state": state, "error": "", "run": str(run.relative_to(folder))})
    (folder / "grid.json").write_text(json.dumps({"grid": "t", "protocols": ["valid"], "cells": cells,
                                                  "choices": {"d/m": {"valid": {"learning.rate": 0.1}}}}))
    return folder


def test_a_damaged_grid_json_or_epochs_csv_is_one_line_naming_the_file(tmp_path, capsys, caplog):
    folder = _table_folder(tmp_path / "grid")
    manifest = folder / "grid.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    assert T.main([str(folder), "--out", str(tmp_path / "tables")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {manifest}: not valid JSON, truncated or damaged (") and len(err.splitlines()) == 1
    for tool in (dose, fidelity):
        with caplog.at_level("ERROR"):
            assert tool.main([str(folder), "--out", str(tmp_path / "tables")]) == 2
    assert caplog.text.count(f"{manifest}: not valid JSON") == 2 and "Traceback" not in caplog.text
    manifest.write_text(text)
    csv_path = folder / "runs" / "lr0.1" / "LightGCN-x-s1-20260101-000000" / "epochs.csv"
    whole = csv_path.read_text()
    csv_path.write_text(whole[:-4])  # the last line cut mid-number: it would still parse
    assert T.main([str(folder), "--out", str(tmp_path / "tables")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {csv_path}: line 3: the last line has no line end: the file is cut off; the record is "
                   f"damaged: restore it (a committed one with git) or move its run folder away and run the cell "
                   f"again\n")
    lines = whole.splitlines(keepends=True)
    csv_path.write_text("".join(lines[:2]) + lines[2].split(",", 2)[0] + ",0.5\n")  # a row cut short, then a line end
    assert T.main([str(folder), "--out", str(tmp_path / "tables")]) == 2
    assert f"{csv_path}: line 3: 2 values for" in capsys.readouterr().err
    csv_path.write_text(whole)
    assert T.main([str(folder), "--out", str(tmp_path / "tables")]) == 0


def test_the_table_shows_a_cell_trained_now_as_running(tmp_path):
    folder = _table_folder(tmp_path / "grid")
    run = folder / json.loads((folder / "grid.json").read_text())["cells"][1]["run"]
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid(), "host": machine_id()}))
    assert T.main([str(folder)]) == 0
    text = (folder / "table.md").read_text()
    assert "| valid | d | m | learning.rate=0.2 | running |" in text
    assert "**Interim**: 1 of the 2 cells listed so far finished, 1 running;" in text
    (run / "status.json").write_text(json.dumps({"state": "interrupted", "pid": os.getpid(), "host": machine_id()}))
    assert T.main([str(folder)]) == 0
    assert "| valid | d | m | learning.rate=0.2 | interrupted |" in (folder / "table.md").read_text()


# 8: the grid file a table names
def test_grid_json_records_the_grid_file_and_the_table_names_it(shared, tmp_path):
    path = _grid_file(tmp_path / "elsewhere" / "g.yaml", "g", TINY)
    out = tmp_path / "out"
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out), "--dry-run"]) == 0
    assert json.loads((out / "grid.json").read_text())["grid_file"] == str(path.resolve())
    assert T.main([str(out)]) == 0
    assert f"runs by `python -m bench.grid {path.resolve()}`" in (out / "table.md").read_text()
    inside = tmp_path / "quick"
    assert G.main([str(REPO / "conf" / "grids" / "quick.yaml"), "--datasets", "coat", "--dataset-root", str(shared),
                   "--out", str(inside), "--dry-run"]) == 0
    assert json.loads((inside / "grid.json").read_text())["grid_file"] == "conf/grids/quick.yaml"


def test_a_shorter_stopping_rule_that_would_have_stopped_the_run_earlier_is_a_difference(tmp_path):
    """A grid whose patience went from 20 to 3 used to accept the longer runs as its own ("0 to run")."""
    run = tmp_path / "run"
    run.mkdir()
    values = [0.1, 0.2, 0.2, 0.2, 0.2, 0.25, 0.2, 0.2]  # stalls three times after epoch 2, improves at 6
    (run / "epochs.csv").write_text("epoch,valid/Recall@20\n" + "".join(f"{i + 1},{v}\n" for i, v in enumerate(values)))
    record = {"selection.resolved": "valid", "early_stop.patience": 20, "early_stop.min_epochs": 0,
              "selection.metric": "Recall@20", "early_stop.files": []}
    assert shorter_rule(record, {"early_stop.patience": 3, "early_stop.min_epochs": 0}, run) == [
        "early_stop.patience: recorded 20, grid 3 (the grid's rule stops this run after epoch 5 of its 8)"]
    assert shorter_rule(record, {"early_stop.patience": 5, "early_stop.min_epochs": 0}, run) == []  # same run
    assert shorter_rule(record, {"early_stop.patience": 30, "early_stop.min_epochs": 0}, run) == []  # longer
    assert shorter_rule(record, {"early_stop.patience": 3, "early_stop.min_epochs": 8}, run) == []  # not before 8
    # an OOD file watched too (early_stop.files) keeps the run going while it improves
    (run / "epochs.csv").write_text("epoch,valid/Recall@20,ood_valid/Recall@20\n"
                                    + "".join(f"{i + 1},{v},{i}\n" for i, v in enumerate(values)))
    assert shorter_rule({**record, "early_stop.files": ["ood_valid"]},
                          {"early_stop.patience": 3, "early_stop.min_epochs": 0}, run) == []
