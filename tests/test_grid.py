"""Grid runner and tables: the quick grid end to end, resume, failures, validation-only choices, arithmetic."""
from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import threading
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bench import grid as G
from bench import table as T
from bench.cells import to_run
from bench.cost import cost_lines, estimate_seconds, loss_seconds_per_negative, run_records
from bench.gridfile import Grid, load_grid
from bench.records import read_rows, selected_index
from bench.runner import GridRunner
from tests.conftest import REPO, write
from util.results import machine_id


def test_quick_grid_end_to_end_then_nothing_left(shared, tmp_path):
    from data.presets import PRESETS
    absent = next(name for name in PRESETS if name != "synthetic" and not (shared / name).exists())  # not downloaded
    out = tmp_path / "quick"
    args = [str(REPO / "conf/grids/quick.yaml"), "--datasets", "coat", absent, "--dataset-root", str(shared),
            "--out", str(out), "--jobs", "2"]
    assert G.main(args) == 0
    manifest = json.loads((out / "grid.json").read_text())
    assert absent in manifest["skipped_datasets"]
    states = {c["id"]: c["state"] for c in manifest["cells"]}
    assert states and set(states.values()) == {"finished"}
    # first seed: both learning rates; later seed: the chosen one(s) only
    assert sum(i.endswith("/s2025") for i in states) == 4 and 2 <= sum(i.endswith("/s2026") for i in states) <= 4
    split = out / "data" / "coat-ood0.3"
    assert (split / "ood_valid.txt").is_file() and (split / "test_ood_rest.txt").is_file()
    runs_before = sorted(p for p in (out / "runs").rglob("config.json"))
    assert G.main(args) == 0  # a second invocation runs nothing
    assert sorted(p for p in (out / "runs").rglob("config.json")) == runs_before
    assert T.main([str(out)]) == 0
    text = (out / "table.md").read_text()
    assert "### coat, protocol `valid`" in text and "### coat, protocol `ood_valid`" in text
    assert "| rns |" in text and "| dns |" in text and "fhn_heldout" in text
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert {r["protocol"] for r in rows} == {"valid", "ood_valid"}
    from bench import plot
    if not plot.available():
        assert plot.main([str(out)]) == 2  # figures are an optional extra: a clear error without matplotlib
        return
    assert plot.main([str(out)]) == 0
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "valid-coat-curves.png" in pngs and "ood_valid-coat-fhn.png" in pngs
    assert all((out / "figures" / name).read_bytes()[:4] == b"\x89PNG" for name in pngs)


def test_the_ood_split_is_per_user_seeded_and_disjoint(shared, tmp_path):
    grid = Grid("t", ["coat"], ["ood_valid"], [1], {"rns": {}})
    runner = GridRunner(grid, tmp_path, shared)
    files = runner.ood_split("coat")
    from data.loader import read_interactions
    a = read_interactions(files["ood_valid"], "adjacency")
    b = read_interactions(files["test_ood"], "adjacency")
    full = read_interactions(shared / "coat" / "test_ood.txt", "adjacency")
    pairs_a, pairs_b = set(zip(a.users, a.items)), set(zip(b.users, b.items))
    assert not pairs_a & pairs_b and pairs_a | pairs_b == set(zip(full.users, full.items))
    per_user = {u: full.users.count(u) for u in set(full.users)}
    for u, n in per_user.items():
        assert a.users.count(u) == int(np.floor(n * 0.3))
    before = files["ood_valid"].read_text()
    files["ood_valid"].unlink()
    files["test_ood"].unlink()
    assert runner.ood_split("coat")["ood_valid"].read_text() == before  # seeded: the same split again


def test_a_failing_cell_is_recorded_and_the_rest_go_on(shared, tmp_path):
    path = write(tmp_path / "g.yaml", "name: g\ndatasets: [coat]\nprotocols: [valid]\nseeds: [1]\n"
                 "keys: {max.epoch: 1, fhn.probe: 0, batch.size: 256}\nmethods:\n"
                 "  ok: {keys: {negative.sampler: rns}}\n"
                 "  broken: {keys: {negative.sampler: rns, learning.rate: 1e30}}\n"
                 "  typo: {keys: {negative.sampler: rns, max.epochs: 2}}\n")
    out = tmp_path / "out"
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out)]) == 1  # some cells failed
    cells = {c["method"]: c for c in json.loads((out / "grid.json").read_text())["cells"]}
    assert cells["ok"]["state"] == "finished"
    record = next((out / "runs").rglob("config.json")).read_text()
    assert str(REPO) not in record and '"commit"' in record  # a record to commit: no machine's path
    assert cells["broken"]["state"] == "failed" and "diverged" in cells["broken"]["error"]
    assert cells["typo"]["state"] == "failed" and "max.epochs" in cells["typo"]["error"]
    assert not cells["typo"]["error"][:1].isdigit()  # the message, without the log line's time and level
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out), "--dry-run"]) == 2  # the typo


def test_grid_json_is_written_after_every_cell(tmp_path, monkeypatch):
    grid = Grid("t", ["coat"], ["valid"], [1], {"a": {}, "b": {}})
    runner = GridRunner(grid, tmp_path, tmp_path)
    runner.datasets = []  # no dataset files needed: the manifest lists the cells of these datasets
    cell = runner.cell("coat", "a", {}, 1, {})
    class Failing:  # a main.py that fails at once
        returncode = 1

        def __init__(self, *args, **kwargs):
            pass

        def communicate(self):
            return "", "boom\n"
    monkeypatch.setattr("bench.cluster.subprocess.Popen", Failing)
    assert runner.run_cell(cell) == "failed"
    assert json.loads((tmp_path / "grid.json").read_text())["grid"] == "t"  # written before the grid ends
    assert (cell.folder / "error.txt").read_text().strip() == "boom"


def test_a_cell_killed_by_the_grids_signal_before_its_handler_is_todo_not_failed(tmp_path, monkeypatch, caplog):
    """A SIGTERM forwarded while main.py is still starting kills it with returncode -15: it was interrupted
    before its first epoch (nothing lost), so it runs again next time; it used to be recorded as failed."""
    grid = Grid("t", ["coat"], ["valid"], [1], {"a": {}})
    runner = GridRunner(grid, tmp_path, tmp_path)
    runner.datasets = []
    cell = runner.cell("coat", "a", {}, 1, {})

    class KilledAtStart:
        returncode = -signal.SIGTERM

        def __init__(self, *args, **kwargs):
            runner.stopping = signal.SIGTERM  # the signal arrived while the cell was starting

        def communicate(self):
            return "", ""
    monkeypatch.setattr("bench.cluster.subprocess.Popen", KilledAtStart)
    with caplog.at_level("WARNING"):
        assert runner.run_cell(cell) == "todo"
    assert not (cell.folder / "error.txt").exists()
    assert "interrupted (before its first epoch: it starts again next time)" in caplog.text
    runner.stopping = 0
    KilledAtStart.returncode = -signal.SIGKILL  # killed by something else: a failure, as before
    monkeypatch.setattr(KilledAtStart, "__init__", lambda self, *a, **k: None)
    assert runner.run_cell(cell) == "failed" and "exit status -9" in (cell.folder / "error.txt").read_text()


def test_every_method_of_a_large_grid_gets_its_own_look_in_the_figures():
    from bench import plot
    looks = [(s["color"], s["marker"], s["ls"]) for s in map(plot._style, range(30))]
    assert len(set(looks)) == 30 and len({(c, m) for c, m, _ in looks}) == 30  # 13 methods used to share 10 colours


def test_later_seeds_start_without_waiting_for_other_pairs(tmp_path, monkeypatch):
    grid = Grid("t", ["coat"], ["released"], [1, 2], {"a": {}, "b": {}})
    runner = GridRunner(grid, tmp_path, tmp_path, jobs=2)
    started, a_later = [], threading.Event()

    def fake_run_cell(cell):
        started.append(cell.id)
        if cell.method == "a" and cell.seed == 2:
            a_later.set()
        if cell.method == "b" and cell.seed == 1:  # a slow first seed: a's second seed must not wait for it
            assert a_later.wait(timeout=20), "a's later seed waited for b's first seed"
        _fake_run(cell.folder, _rows([0.1], [0.1], [0.1]))
        return cell.state()

    monkeypatch.setattr(runner, "run_cell", fake_run_cell)
    runner.run_all(["coat"])
    assert sorted(started) == sorted(c.id for c in sum(runner.plan(["coat"])[:2], []))  # each cell once
    assert len(started) == 4 and started.index("coat/a/default/s2") < started.index("coat/b/default/s2")
    runner.run_all(["coat"])  # everything finished: nothing runs again
    assert len(started) == 4


def test_bad_grid_files_are_clear_errors(tmp_path, capsys, caplog):
    path = write(tmp_path / "g.yaml", "name: g\ndatasets: [coat]\nprotocols: [valid, released]\nseeds: [1]\n"
                 "methods: {a: {keys: {}}}\n")
    with caplog.at_level("ERROR"):
        assert G.main([str(path)]) == 2
    assert "released" in caplog.text
    path = write(tmp_path / "h.yaml", "datasets: [coat]\nprotocols: [valid]\nseeds: [1]\nmethods: {a: {kesy: {}}}\n")
    with caplog.at_level("ERROR"):
        assert G.main([str(path)]) == 2
    assert "unknown entries ['kesy']" in caplog.text


def _fake_run(folder, rows, state="finished", config=None, selection=None):
    """A run folder with these epochs.csv rows, status and config.json (and a metrics.json when `selection` is
    given), as a grid finds it."""
    run = folder / "LightGCN-x-s1-20260101-000000"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config or {}))
    (run / "status.json").write_text(json.dumps({"state": state, "pid": 0}))
    if selection is not None:
        (run / "metrics.json").write_text(json.dumps({"selection": selection}))
    columns = list(rows[0])
    with (run / "epochs.csv").open("w") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return run


def _rows(valid, ood_valid, test):
    return [{"epoch": e + 1, "valid/Recall@20": v, "ood_valid/Recall@20": o,
             **{f"test_ood/{k}": t for k in T.FOUR}, "train_s": 1.0, "sample_s": 0.0}
            for e, (v, o, t) in enumerate(zip(valid, ood_valid, test))]


def test_a_running_record_from_another_machine_is_stale(tmp_path):
    grid = Grid("t", ["coat"], ["valid"], [1], {"m": {}})
    cell = GridRunner(grid, tmp_path, tmp_path).cell("coat", "m", {}, 1, {})
    run = _fake_run(cell.folder, _rows([0.1], [0.1], [0.1]), state="running")
    here = {"state": "running", "pid": os.getpid()}  # this very process: alive
    (run / "status.json").write_text(json.dumps({**here, "host": machine_id()}))
    assert cell.state() == "running"
    (run / "status.json").write_text(json.dumps({**here, "host": "another-machine"}))
    assert cell.state() == "stale"
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": 2**22 + 12345}))  # no such process
    assert cell.state() == "stale"


def test_hyperparameters_are_chosen_on_validation_data_only(tmp_path):
    grid = Grid("t", ["coat"], ["valid", "ood_valid"], [1], {"m": {}}, search={"learning.rate": [0.1, 0.2]})
    runner = GridRunner(grid, tmp_path, tmp_path)
    cells = [runner.cell("coat", "m", c, 1, {}) for c in grid.candidates("m")]
    # lr 0.1: better IID validation; lr 0.2: better OOD validation; the *test* file prefers lr 0.1 throughout,
    # so a choice that looked at the test file would pick 0.1 for both protocols
    _fake_run(cells[0].folder, _rows([0.30, 0.32], [0.10, 0.11], [0.50, 0.60]))
    _fake_run(cells[1].folder, _rows([0.20, 0.21], [0.15, 0.14], [0.05, 0.06]))
    chosen, scores = runner.choose(cells)
    assert chosen["valid"].candidate == {"learning.rate": 0.1}
    assert chosen["ood_valid"].candidate == {"learning.rate": 0.2}
    assert scores["valid"][0] == 0.32 and scores["ood_valid"][0] == 0.15  # the chosen runs' validation Recall@20
    assert selected_index(read_rows(cells[1].run_dir()), "ood_valid") == 0  # the first epoch, 0.15


def test_table_arithmetic_on_constructed_runs(tmp_path):
    seeds = [1, 2, 3]
    values = {"rns": [0.10, 0.12, 0.11], "cns": [0.13, 0.12, 0.15]}
    cells = []
    for method, vals in values.items():
        for seed, v in zip(seeds, vals):
            folder = tmp_path / "runs" / method / f"s{seed}"
            run = _fake_run(folder, _rows([0.5, 0.9], [0.1, 0.1], [v / 2, v]))  # valid picks the 2nd epoch
            cells.append({"id": f"d/{method}/s{seed}", "dataset": "d", "method": method, "candidate": {},
                          "seed": seed, "state": "finished", "error": "", "run": str(run.relative_to(tmp_path))})
    (tmp_path / "grid.json").write_text(json.dumps({"grid": "t", "protocols": ["valid"], "cells": cells,
                                                    "choices": {"d/rns": {"valid": {}}, "d/cns": {"valid": {}}}}))
    records = {r["method"]: r for r in T.summarize(T.collect(tmp_path))}
    cns, rns = records["cns"], records["rns"]
    assert cns["Recall@20"] == pytest.approx(statistics.mean(values["cns"]))
    assert cns["Recall@20_std"] == pytest.approx(statistics.stdev(values["cns"]))
    gain = statistics.mean(values["cns"]) / statistics.mean(values["rns"]) - 1  # same on all four metrics
    assert cns["improvement"] == pytest.approx(gain) and cns["vs"] == "rns"
    assert cns["vs_rns_R@20"] == pytest.approx(gain)
    assert cns["p_value"] == pytest.approx(stats.ttest_rel(values["cns"], values["rns"]).pvalue)
    assert rns["improvement"] == pytest.approx(statistics.mean(values["rns"]) / statistics.mean(values["cns"]) - 1)
    assert T.main([str(tmp_path)]) == 0
    text = (tmp_path / "table.md").read_text()
    assert f"**{statistics.mean(values['cns']):.5f} ± {statistics.stdev(values['cns']):.5f}**" in text
    assert "Complete: all 6 cells finished." in text
    assert "| cns | - | 3 | 2, 2, 2 | 2 |" in text  # seeds, the selected epoch of each seed, epochs trained
    assert cns["selected_epochs"] == "2 2 2"
    summary = (tmp_path / "summary.md").read_text()
    cns_mean, cns_std = statistics.mean(values["cns"]), statistics.stdev(values["cns"])
    assert f"| cns | **{cns_mean:.4f} ± {cns_std:.4f}** ({100 * gain:+.1f}%) [3] |" in summary
    assert f"| rns | {statistics.mean(values['rns']):.4f} ± {statistics.stdev(values['rns']):.4f} [3] |" in summary
    assert "change relative to RNS in round brackets" in summary
    no_rns = T.summary_markdown([r for r in T.summarize(T.collect(tmp_path)) if r["method"] != "rns"], "h")
    assert "(no RNS row to compare with)" in no_rns and "relative to RNS in round" not in no_rns
    # an interim table (a grid still running or stopped) says so and counts what is missing
    manifest = json.loads((tmp_path / "grid.json").read_text())
    manifest["cells"][-1].update(state="interrupted")
    manifest["choices"]["d/late"] = {"valid": None}
    (tmp_path / "grid.json").write_text(json.dumps(manifest))
    assert T.main([str(tmp_path)]) == 0
    text = (tmp_path / "table.md").read_text()
    assert "**Interim**: 5 of the 6 cells listed so far finished" in text and "of 1 dataset/method pair(s)" in text
    assert "| cns | - | 2 |" in text  # the row shows the seeds it has


def _grid_folder(folder, values):
    """A one-seed grid under protocol valid: per method (test_ood, test_iid) Recall@20 at the selected 2nd epoch
    of three; the 3rd epoch has a worse validation value and test_iid 0.9."""
    cells = []
    for method, (ood, iid) in values.items():
        rows = _rows([0.1, 0.2, 0.15], [0.1, 0.1, 0.1], [ood / 2, ood, ood / 3])
        for row, value in zip(rows, (iid / 2, iid, 0.9)):
            row.update({f"test_iid/{k}": value for k in T.FOUR})
        run = _fake_run(folder / "runs" / method, rows)
        cells.append({"id": f"d/{method}/s1", "dataset": "d", "method": method, "candidate": {}, "seed": 1,
                      "state": "finished", "error": "", "run": str(run.relative_to(folder))})
    (folder / "grid.json").write_text(json.dumps({"grid": folder.name, "protocols": ["valid"], "cells": cells,
                                                  "choices": {f"d/{m}": {"valid": {}} for m in values}}))
    return folder


def test_selection_against_another_grid_ranks_both_and_correlates(tmp_path, capsys):
    here = _grid_folder(tmp_path / "here", {"a": (0.30, 0.10), "b": (0.20, 0.40), "c": (0.10, 0.30), "x": (0.5, 0.5)})
    there = _grid_folder(tmp_path / "there", {"a": (0.10, 0.20), "b": (0.20, 0.40), "c": (0.40, 0.60)})
    shift = T.selection_shift(T.summarize(T.collect(here)), T.summarize(T.collect(there)), "valid")
    by = {r["method"]: r for r in shift}
    assert set(by) == {"a", "b", "c"}  # x is in one grid only: it is not ranked
    assert [(by[m]["rank"], by[m]["rank_against"]) for m in "abc"] == [(1, 3), (2, 2), (3, 1)]
    assert by["a"]["test_ood_change"] == pytest.approx(0.30 / 0.10 - 1)
    assert by["c"]["test_iid_change"] == pytest.approx(0.30 / 0.60 - 1)
    assert by["a"]["epochs"] == "2" and by["a"]["epochs_against"] == "2"
    assert T.main([str(here), "--against", str(there)]) == 0
    text = (here / "selection.md").read_text()
    assert by["a"]["test_iid_peak"] == pytest.approx(0.9)  # the 3rd epoch: the best IID, never selected
    assert "| a | 0.3000 (1) | 0.1000 (3) | +200.0% | 0.1000 (0.9000) | 0.2000 | -50.0% | 2 | 2 (-) |" in text
    assert "Spearman's rho between the two rankings over 3 methods: -1.00" in text
    assert T.main([str(here), "--against", str(tmp_path / "nothing")]) == 2
    assert "nothing has no grid.json" in capsys.readouterr().err
    assert T.main([str(here), "--against", str(there), "--against-protocol", "released"]) == 2
    assert "has no protocol 'released' (it has: valid)" in capsys.readouterr().err
    alone = _grid_folder(tmp_path / "alone", {"z": (0.1, 0.1)})
    assert T.main([str(here), "--against", str(alone)]) == 0
    assert "No dataset and method of this grid is also in" in (here / "selection.md").read_text()


def test_the_study_runs_grids_then_writes_their_tables(shared, tmp_path, monkeypatch):
    from bench import plot, study
    monkeypatch.setitem(study.AGAINST, "tiny", ("tiny", "valid"))  # as `released` is compared with main's valid
    path = write(tmp_path / "tiny.yaml", "name: tiny\ndatasets: [coat]\nprotocols: [valid]\nseeds: [1]\n"
                 "keys: {max.epoch: 1, fhn.probe: 0, batch.size: 256}\nmethods: {rns: {keys: {negative.sampler: rns}}}\n")
    args = ["--grids", str(path), "--dataset-root", str(shared), "--results", str(tmp_path / "grids"),
            "--tables", str(tmp_path / "tables")]
    assert study.main(args) == 0
    text = (tmp_path / "tables" / "tiny" / "table.md").read_text()
    assert "Complete: all 1 cells finished." in text and "| rns |" in text
    assert str(REPO) not in text  # a committed table names no machine's path
    selection = (tmp_path / "tables" / "tiny" / "selection.md").read_text()
    assert "| rns | " in selection and "(1) |" in selection
    assert (tmp_path / "grids" / "tiny" / "grid.json").is_file()
    figures = tmp_path / "tables" / "tiny" / "figures"
    assert figures.is_dir() == plot.available()
    assert not list(figures.glob("*-fhn.png"))  # the probe was off: no empty FHN figure
    assert study.main(["--grids", "no_such_grid"]) == 2
    assert study.main(["--grids", str(write(tmp_path / "bad.yaml", "name: bad\n"))]) == 2


def test_the_candidates_table_shows_every_value_and_marks_the_validation_choice(tmp_path):
    cells = []
    for lr, valid, test in ((0.1, [0.30, 0.32], [0.50, 0.60]), (0.2, [0.20, 0.40], [0.05, 0.06])):
        run = _fake_run(tmp_path / "runs" / f"lr{lr}", _rows(valid, [0.1, 0.1], test))
        cells.append({"id": f"d/m/{lr}/s1", "dataset": "d", "method": "m", "candidate": {"learning.rate": lr},
                      "seed": 1, "state": "finished", "error": "", "run": str(run.relative_to(tmp_path))})
    cells.append({"id": "d/m/0.2/s2", "dataset": "d", "method": "m", "candidate": {"learning.rate": 0.2},
                  "seed": 2, "state": "todo", "error": "", "run": None})  # a later seed: not a candidate row
    (tmp_path / "grid.json").write_text(json.dumps({"grid": "t", "protocols": ["valid"], "cells": cells,
                                                    "choices": {"d/m": {"valid": {"learning.rate": 0.2}}}}))
    records = T.candidates(tmp_path)
    assert [(r["candidate"]["learning.rate"], r["chosen"], r["epoch"], r["validation"], r["test_ood"])
            for r in records] == [(0.1, False, 2, 0.32, 0.60), (0.2, True, 2, 0.40, 0.06)]
    text = T.candidates_markdown(records)
    assert "| valid | d | m | **learning.rate=0.2** | finished | 2 / 2 | 0.40000 |" in text
    assert "| valid | d | m | learning.rate=0.1 | finished | 2 / 2 | 0.32000 |" in text
    assert "candidate distance" not in text  # no CNSDiff chain statistics in these runs
    # OOD ARP@20 and CNSDiff's candidate distance per start step, read at the selected epoch (the 2nd)
    rows = _rows([0.3, 0.5], [0.1, 0.1], [0.2, 0.3])
    for row, arp, near, far in zip(rows, (90.0, 70.5), (0.5, 0.125), (0.9, 0.25)):
        row.update({"test_ood/ARP@20": arp, "dist_s10": near, "dist_s18": far})
    run = _fake_run(tmp_path / "runs" / "cns", rows)
    cells = [{"id": "d/c/s1", "dataset": "d", "method": "c", "candidate": {"params.cnsdiff.sample_start": s},
              "seed": 1, "state": "finished", "error": "", "run": str(run.relative_to(tmp_path))} for s in (10, 18)]
    choices = {"d/c": {"valid": {"params.cnsdiff.sample_start": 10}}}
    (tmp_path / "grid.json").write_text(json.dumps({"grid": "t", "protocols": ["valid"], "cells": cells,
                                                    "choices": choices}))
    records = T.candidates(tmp_path)
    assert [(r["arp_ood"], r["distance"]) for r in records] == [(70.5, {"s10": 0.125, "s18": 0.25})] * 2
    text = T.candidates_markdown(records)
    assert ("| **params.cnsdiff.sample_start=10** | finished | 2 / 2 | 0.50000 |  | 0.30000 | 70.5 | "
            "s10 0.125, s18 0.250 |") in text


@pytest.mark.parametrize("path", sorted((REPO / "conf" / "grids").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_grid_resolves_to_valid_runs(path):
    """A typo in a shipped grid must fail here, not hours into a study."""
    from conf.config import resolve
    grid = load_grid(path)
    assert grid.name == path.stem  # bench.study finds a grid's results by its file name
    for dataset in grid.datasets:
        for method in grid.methods:
            for candidate in grid.candidates(method):
                cfg = resolve({**grid.keys, "dataset": dataset, **grid.methods[method].get("keys", {}), **candidate})
                assert cfg.dataset == dataset


def test_fhn_correlation_across_methods():
    def rec(method, fhn, chance, recall):
        return {"method": method, "file": "test_ood", "fhn_heldout": fhn, "fhn_heldout_base": chance, "Recall@20": recall}
    # more false hard negatives (relative to chance), lower OOD recall: rho = -1
    records = [rec("a", 0.10, 0.05, 0.030), rec("b", 0.20, 0.05, 0.020), rec("c", 0.05, 0.05, 0.040),
               {**rec("a", 0.9, 0.1, 0.9), "file": "test_iid"}]  # other files do not count
    rho, p, n = T.fhn_correlation(records)
    assert rho == pytest.approx(-1.0) and n == 3
    assert T.fhn_correlation(records[:2]) is None  # below three methods
    assert T.fhn_correlation(records, "fhn_true") is None  # no ground truth (not the synthetic dataset)


def test_popularity_correlation_across_the_trained_samplers():
    def rec(method, arp, recall, fhn=0.01):
        return {"method": method, "file": "test_ood", "ARP@20": arp, "Recall@20": recall,
                "fhn_heldout": fhn, "fhn_heldout_base": 0.01}
    # the more popular the recommendations, the higher the OOD recall, except the simple baseline (no FHN probe)
    records = [rec("a", 100.0, 0.02), rec("b", 150.0, 0.03), rec("c", 200.0, 0.05), rec("d", 120.0, 0.025),
               {**rec("mostpop", 300.0, 0.001), "fhn_heldout": None}, {**rec("a", 10.0, 0.9), "file": "test_iid"}]
    rho, p, n = T.popularity_correlation(records)
    assert rho == pytest.approx(1.0) and n == 4 and p < 0.01
    records[3]["Recall@20"] = 0.06  # d, second least popular, becomes the most accurate -> no longer monotone
    rho, _, _ = T.popularity_correlation(records)
    assert rho == pytest.approx(0.4)
    assert T.popularity_correlation(records[:2]) is None  # below three methods


def test_a_dry_run_writes_the_manifest_and_runs_nothing(shared, tmp_path, capsys):
    out = tmp_path / "quick"
    assert G.main([str(REPO / "conf/grids/quick.yaml"), "--datasets", "coat", "--dataset-root", str(shared),
                   "--out", str(out), "--dry-run"]) == 0
    manifest = json.loads((out / "grid.json").read_text())
    assert manifest["cells"] and {c["state"] for c in manifest["cells"]} == {"todo"}
    assert not list(out.rglob("config.json"))  # nothing ran
    assert "4 cells listed, 4 to run" in capsys.readouterr().out


def _record(root, grid, dataset, method, keys, epoch_s, epochs, eval_s=0.0, rows=None):
    run = root / grid / "runs" / dataset / method / "default" / "s1" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"input": {"dataset": dataset, **keys}}))
    (run / "metrics.json").write_text(json.dumps({"selection": {"epochs_run": epochs, "epoch": epochs - 10},
                                                  "median_epoch_seconds": {"sample_s": 0.0, "train_s": epoch_s,
                                                                           "eval_s": eval_s},
                                                  **({"data": {"users": 5, "items": 5, "train": rows}} if rows else {})}))


def test_the_cost_estimate_on_constructed_records(tmp_path):
    records = tmp_path / "records"
    _record(records, "old", "coat", "rns", {"negative.sampler": "rns"}, 2.0, 10, eval_s=1.0)  # 30 s, 10 epochs, best 0
    _record(records, "old", "coat", "rns2", {"negative.sampler": "rns"}, 4.0, 30)  # 120 s over 30 epochs, best 20
    _record(records, "old", "coat", "rns3", {"negative.sampler": "rns", "learning.rate": 0.5}, 100.0, 10)
    _record(records, "old", "coat", "ease", {"model.name": "EASE"}, 7.0, 1)
    _record(records, "old", "coat", "cns", {"negative.sampler": "cnsdiff", "params.cnsdiff.preset": "paper"}, 9.0, 5)
    grid = Grid("t", ["coat"], ["valid", "ood_valid"], [1, 2, 3],
                  {"rns": {"keys": {"negative.sampler": "rns", "max.epoch": 100}, "search": {"learning.rate": [0.1, 0.01]}},
                   "short": {"keys": {"negative.sampler": "rns", "max.epoch": 5}},
                   "ease": {"keys": {"model.name": "EASE"}, "search": {"learning.rate": None, "EASE.lambda": [1, 2, 3]}},
                   "official": {"keys": {"negative.sampler": "cnsdiff"}},
                   "dns": {"keys": {"negative.sampler": "dns"}}})
    assert grid.candidates("ease") == [{"EASE.lambda": 1}, {"EASE.lambda": 2}, {"EASE.lambda": 3}]  # null drops lr
    runner = GridRunner(grid, tmp_path / "out", tmp_path)
    data = {"dataset": "coat"}
    rns = runner.cell("coat", "rns", {"learning.rate": 0.1}, 1, data)
    all_records = run_records(records)
    assert len(all_records) == 5
    # at lr 0.1 (none recorded: every record of the kind): the median of (3, 4, 100) s per epoch, times the
    # median selected epoch of (0, 20, 0) plus the default patience 10
    assert estimate_seconds(rns, all_records) == pytest.approx(4.0 * 10)
    # at lr 0.01 (the default of the first two records): 3.5 s per epoch, best epochs (0, 20) -> 10, + patience 10
    at_default = runner.cell("coat", "rns", {"learning.rate": 0.01}, 1, data)
    assert estimate_seconds(at_default, all_records) == pytest.approx(3.5 * 20)
    assert estimate_seconds(runner.cell("coat", "short", {}, 1, data), all_records) == pytest.approx(3.5 * 5)
    assert estimate_seconds(runner.cell("coat", "ease", {"EASE.lambda": 1}, 1, data), all_records) == pytest.approx(7.0)
    assert estimate_seconds(runner.cell("coat", "official", {}, 1, data), all_records) is None  # paper's is not official's
    no_stop = runner.cell("coat", "rns", {}, 1, {**data, "early_stop.patience": 0})
    assert estimate_seconds(no_stop, all_records) == pytest.approx(3.5 * 100)  # runs to its max.epoch
    # a softmax-family loss is a kind of its own (hundreds of negatives per positive): BPR's records do not count
    softmax = runner.cell("coat", "rns", {"learning.rate": 0.01}, 1, {**data, "loss.name": "softmax"})
    assert estimate_seconds(softmax, all_records) is None
    _record(records, "old", "coat", "sl", {"negative.sampler": "rns", "loss.name": "softmax"}, 30.0, 10)
    assert estimate_seconds(softmax, run_records(records)) == pytest.approx(30.0 * 10)
    runner.plan = lambda datasets: GridRunner.plan(runner, [])  # nothing listed: no dataset files needed
    lines = cost_lines(runner, [], False, 2, records)
    assert lines[0].startswith("estimated CPU time of the listed cells to run: 0.0 h")
    cells_first = [rns, runner.cell("coat", "rns", {"learning.rate": 0.01}, 1, data), runner.cell("coat", "dns", {}, 1, data)]
    runner.plan = lambda datasets: (cells_first, [], {"coat/rns": {"valid": None, "ood_valid": None},
                                                     "coat/dns": {"valid": None, "ood_valid": None}})
    lines = cost_lines(runner, ["coat"], False, 2, records)
    assert "0.0 h (about 0.0 h at --jobs 2)" in lines[0]  # 140 s
    assert "1 cell(s) of a kind with no record" in lines[1] and "coat/dns" in lines[1]
    # later seeds of coat/rns: 2 seeds x 70 s (one choice) to 2 x 70 x 2 (a choice per protocol); coat/dns's are
    # in the count of pairs but add nothing, and a line says so
    assert "+0.0 h" in lines[2] and "2 pair(s)" in lines[2]
    assert lines[3] == "  not counted in that range: the later seeds of 1 pair(s) of a kind with no record, e.g. coat/dns"
    assert cost_lines.__defaults__[0] == REPO / "results" / "grids"


def test_a_loss_without_a_run_on_its_model_is_estimated_from_its_samplers_bpr_runs(tmp_path):
    records = tmp_path / "records"
    # measured on MF: softmax with 100 negatives of dimension 8 adds 9 - 1 = 8 s per epoch over 1000 rows
    _record(records, "fid", "cd", "bpr", {"negative.sampler": "rns", "model.name": "MF"}, 1.0, 50, rows=1000)
    _record(records, "fid", "cd", "sl", {"negative.sampler": "rns", "model.name": "MF", "loss.name": "softmax",
            "params.rns.n_negs": "100", "embedding.size": 8}, 9.0, 50, rows=1000)
    # LightGCN's BPR on coat: 2 s per epoch over 500 rows, best epoch 20
    _record(records, "main", "coat", "rns", {"negative.sampler": "rns"}, 2.0, 30, rows=500)
    all_records = run_records(records)
    assert loss_seconds_per_negative(all_records, "rns+softmax") == (pytest.approx(8.0 / (1000 * 100 * 8)), "cd (MF)")
    assert loss_seconds_per_negative(all_records, "rns+psl") == (None, "")  # no run of that loss anywhere
    grid = Grid("t", ["coat"], ["valid"], [1], {"sl": {"keys": {"negative.sampler": "rns", "loss.name": "softmax",
                                                                 "embedding.size": 16, "max.epoch": 100}},
                                                 "psl": {"keys": {"negative.sampler": "rns", "loss.name": "psl"}}})
    runner = GridRunner(grid, tmp_path / "out", tmp_path)
    cell = runner.cell("coat", "sl", {"params.rns.n_negs": 250}, 1, {"dataset": "coat"})
    # 2 s + 1e-5 s x 500 rows x 250 negatives x 16 dimensions = 22 s per epoch, for BPR's 20 + 10 epochs (660 s)
    assert estimate_seconds(cell, all_records) == pytest.approx((2.0 + 1e-5 * 500 * 250 * 16) * 30)
    assert estimate_seconds(runner.cell("coat", "psl", {}, 1, {"dataset": "coat"}), all_records) is None
    runner.plan = lambda datasets: ([cell], [], {})
    lines = cost_lines(runner, ["coat"], False, 1, records)
    assert "1 cell(s) of rns+softmax (0.2 h) have no run on their model" in lines[1]
    assert lines[1].endswith("extra seconds per row, negative and dimension measured on cd (MF)")
    # SL on CNSDiff's negatives: CNSDiff's BPR epochs on coat (5 s, best epoch 20) plus the same per-negative cost,
    # measured on RNS (no run of the loss on CNSDiff anywhere); the line names where it came from
    _record(records, "main", "coat", "cns", {"negative.sampler": "cnsdiff", "params.cnsdiff.preset": "official"},
            5.0, 30, rows=500)
    assert loss_seconds_per_negative(run_records(records), "cnsdiff.official+softmax") == (
        pytest.approx(8.0 / (1000 * 100 * 8)), "cd (MF, rns+softmax)")
    # RNS's measurement first, though another sampler's sorts before it
    _record(records, "fid", "cd", "dbpr", {"negative.sampler": "dns_mn", "model.name": "MF"}, 1.0, 50, rows=1000)
    _record(records, "fid", "cd", "dsl", {"negative.sampler": "dns_mn", "model.name": "MF", "loss.name": "softmax",
            "params.dns_mn.n_negs": "100", "embedding.size": 8}, 99.0, 50, rows=1000)
    assert loss_seconds_per_negative(run_records(records), "cnsdiff.official+softmax")[1] == "cd (MF, rns+softmax)"
    grid.methods["slc"] = {"keys": {"negative.sampler": "cnsdiff", "params.cnsdiff.preset": "official",
                                    "loss.name": "softmax", "embedding.size": 16, "max.epoch": 100}}
    on_cnsdiff = runner.cell("coat", "slc", {"params.cnsdiff.n_negs": 250}, 1, {"dataset": "coat"})
    assert estimate_seconds(on_cnsdiff, run_records(records)) == pytest.approx((5.0 + 1e-5 * 500 * 250 * 16) * 30)
    # once the loss has a run on LightGCN (another dataset) that run is scaled by size instead
    _record(records, "main", "food", "sl", {"negative.sampler": "rns", "loss.name": "softmax"}, 50.0, 30, rows=500)
    assert estimate_seconds(cell, run_records(records), {"coat": (5, 5, 500)}) == pytest.approx(50.0 * 30)


def test_a_dataset_with_records_of_one_method_scales_its_other_methods_by_size(tmp_path, shared):
    """coat's first records (RNS) must not leave its DNS cell uncounted: DNS's food runs are scaled by size."""
    records = tmp_path / "records"
    _record(records, "g", "coat", "rns", {"negative.sampler": "rns"}, 1.0, 30, rows=1363)
    _record(records, "g", "food", "dns", {"negative.sampler": "dns"}, 10.0, 30, rows=1000)  # (5, 5, 1000)
    grid = Grid("g", ["coat"], ["valid"], [1], {"rns": {"keys": {"negative.sampler": "rns"}},
                                                 "dns": {"keys": {"negative.sampler": "dns"}}})
    runner = GridRunner(grid, tmp_path / "out", shared)
    data = {"dataset": "coat"}
    runner.plan = lambda datasets: ([runner.cell("coat", "rns", {}, 1, data), runner.cell("coat", "dns", {}, 1, data)],
                                    [], {})
    lines = cost_lines(runner, ["coat"], False, 1, records)
    assert lines[1] == ("  coat: 1 cell(s) of a method without a run there: their epochs are scaled by size (users 290, "
                        "items 295, training rows 1363) from the largest recorded dataset's runs of the same method")
    assert not any("not counted" in line for line in lines)
    # rows x (users + items): 1363 x 585 against 1000 x 10 times food's 10 s, for 20 + 10 epochs; RNS's own 30 s
    dns = 10.0 * 1363 * 585 / (1000 * 10) * 30
    assert lines[0].startswith(f"estimated CPU time of the listed cells to run: {(dns + 30.0) / 3600:.1f} h")


def test_the_dry_run_sums_the_cpu_time_of_its_own_grids_records_only(tmp_path):
    records = tmp_path / "records"
    _record(records, "mine", "coat", "rns", {"negative.sampler": "rns"}, 50.0, 36, eval_s=50.0)  # 3600 s
    _record(records, "mine", "coat", "ease", {"model.name": "EASE"}, 1800.0, 1)  # 1800 s
    _record(records, "other", "coat", "rns", {"negative.sampler": "rns"}, 100.0, 18)  # 1800 s, not this grid's
    assert sorted(r["grid"] for r in run_records(records)) == ["mine", "mine", "other"]
    grid = Grid("mine", ["coat"], ["valid"], [1], {"rns": {"keys": {"negative.sampler": "rns"}}})
    for out, expected in ((records / "mine", "2 finished run records: 1.5 h"),  # both summed, the other grid's not
                          (records / "other", "1 finished run records: 0.5 h"),
                          (tmp_path / "elsewhere" / "mine", "0 finished run records: 0.0 h")):  # not under records
        runner = GridRunner(grid, out, tmp_path)
        runner.plan = lambda datasets: ([], [], {})
        assert cost_lines(runner, [], False, 1, records)[-1] == f"CPU time of this grid's {expected}"


def test_a_finished_cell_under_a_shorter_stopping_rule_is_short_and_costs_its_remaining_epochs(tmp_path):
    records = tmp_path / "records"
    _record(records, "old", "coat", "rns", {"negative.sampler": "rns"}, 2.0, 30)
    grid = Grid("t", ["coat"], ["valid"], [1], {"rns": {"keys": {"negative.sampler": "rns", "max.epoch": 100,
                                                                   "early_stop.patience": 10, "early_stop.min_epochs": 50}}})
    runner = GridRunner(grid, tmp_path / "out", tmp_path)
    cell = runner.cell("coat", "rns", {}, 1, {"dataset": "coat"})
    run = cell.folder / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"early_stop.patience": 10, "input": {}}))  # min_epochs 0 then
    (run / "status.json").write_text(json.dumps({"state": "finished"}))

    def selection(**values):
        (run / "metrics.json").write_text(json.dumps({"selection": {"epoch": 5, "epochs_run": 20, **values}}))
    selection(stopped_early=False)
    assert cell.state() == "finished"  # it ran to its end: no stopping rule changed it
    selection(stopped_early=True)
    assert cell.state() == "short" and cell.longer_rule() == {"early_stop.min_epochs": 50}
    assert to_run("short", retry_failed=False)
    # without its checkpoint (a clone) it runs again: 2 s per epoch for 50 epochs (the minimum)
    assert estimate_seconds(cell, run_records(records)) == pytest.approx(2.0 * 50)
    (run / "checkpoint.pt").write_bytes(b"")
    # with it, 2 s per epoch for the epochs 21..50 (its own best 5 + patience 10 is below the minimum)
    assert estimate_seconds(cell, run_records(records)) == pytest.approx(2.0 * 30)
    selection(stopped_early=True, epochs_run=55)
    assert cell.state() == "finished"  # it stopped after epoch 50: the minimum would not have changed it
    selection(stopped_early=True)
    (run / "config.json").write_text(json.dumps({"early_stop.patience": 0, "early_stop.min_epochs": 60}))
    assert cell.state() == "finished"  # patience 0 (never stops) and 60 epochs are longer than the grid's rule
    ease = GridRunner(Grid("t", ["coat"], ["valid"], [1], {"ease": {"keys": {
        "model.name": "EASE", "early_stop.min_epochs": 50}}}), tmp_path / "out", tmp_path).cell("coat", "ease", {}, 1, {})
    (ease.folder / "r1").mkdir(parents=True)
    for name in ("config.json", "status.json", "metrics.json"):
        (ease.folder / "r1" / name).write_bytes((run / name).read_bytes())
    assert ease.state() == "finished"  # fitted in closed form: no epochs for a stopping rule to change


def test_the_dose_response_table_on_constructed_runs(tmp_path):
    from bench import dose
    results = tmp_path / "dose"
    methods = {"dns-m1": {"keys": {"negative.sampler": "dns", "params.dns.n_candidates": 1}},
               "dns-m8": {"keys": {"negative.sampler": "dns", "params.dns.n_candidates": 8}},
               "cnsdiff-r0.5": {"keys": {"negative.sampler": "cnsdiff", "params.cnsdiff.fixed_ratio": 0.5}},
               "rns": {"keys": {"negative.sampler": "rns"}}}  # no dose knob: not in the table
    cells = []
    # per method: per seed, (fhn_true of epochs 1 and 2, valid R@20 of epochs 1 and 2, test_ood R@20 of 1 and 2)
    curves = {"dns-m1": {1: ((0.01, 0.03), (0.1, 0.2), (0.05, 0.06)), 2: ((0.01, 0.01), (0.1, 0.2), (0.05, 0.08))},
              "dns-m8": {1: ((0.10, 0.20), (0.3, 0.1), (0.04, 0.01)), 2: ((0.20, 0.20), (0.3, 0.2), (0.02, 0.01))},
              "cnsdiff-r0.5": {1: ((0.02, 0.02), (0.1, 0.3), (0.0, 0.07))},
              "rns": {1: ((0.01, 0.01), (0.1, 0.2), (0.05, 0.06))}}
    for method, seeds in curves.items():
        for seed, (fhn, valid, ood) in seeds.items():
            run = f"runs/synthetic/{method}/default/s{seed}/r"
            (results / run).mkdir(parents=True)
            header = "epoch,fhn_true,fhn_true_base,neg_score,valid/Recall@20,test_ood/Recall@20,test_iid/Recall@20,test_ood/ARP@20\n"
            body = "".join(f"{e + 1},{fhn[e]},0.01,{e + 0.5},{valid[e]},{ood[e]},{2 * ood[e]},{100 + e}\n" for e in range(2))
            (results / run / "epochs.csv").write_text(header + body)
            (results / run / "config.json").write_text(json.dumps({"commit": "abc"}))
            cells.append({"id": f"synthetic/{method}/default/s{seed}", "dataset": "synthetic", "method": method,
                          "candidate": {}, "seed": seed, "state": "finished", "run": run})
    (results / "grid.json").write_text(json.dumps({
        "grid": "dose", "protocols": ["valid"], "methods": methods, "cells": cells,
        "choices": {f"synthetic/{m}": {"valid": {}} for m in methods}}))
    assert dose.main([str(results), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "dose.md").read_text()
    assert "FHN rate exact" in text and "| rns |" not in text
    m1 = next(line for line in text.splitlines() if "M = 1 |" in line)
    # seed 1 selects epoch 2 (fhn mean 0.02, ood 0.06), seed 2 epoch 2 (0.01, 0.08): means 0.015 and 0.07
    assert "| DNS | M = 1 | 2 | 0.01500 ± 0.00707 | 1.50 ± 0.71 |" in m1 and "0.0700 ± 0.0141 |" in m1
    m8 = next(line for line in text.splitlines() if "M = 8 |" in line)
    # seed 1 selects epoch 1 (fhn 0.10, ood 0.04), seed 2 epoch 1 (the first best, 0.20, 0.02)
    assert "0.15000 ± 0.07071" in m8 and "0.0300 ± 0.0141 |" in m8 and "100.0 ± 0.0" in m8
    r = next(line for line in text.splitlines() if line.startswith("| CNSDiff official"))
    assert "r = 0.5 | 1 | 0.02000 ± 0.00000" in r
    # DNS's four runs: fhn (0.02, 0.01, 0.10, 0.20) against ood (0.06, 0.08, 0.04, 0.02): rho = -1 exactly
    assert "- DNS: Spearman's rho (FHN rate, test_ood R@20) over 4 runs = -1.00 (p = 0); highest mean test_ood R@20 at M = 1" in text
    assert "- CNSDiff official: highest mean test_ood R@20 at r = 0.5" in text  # one run: no correlation
    rows = (tmp_path / "out" / "dose.csv").read_text().splitlines()
    assert rows[0].startswith("protocol,dataset,sampler,knob,dose,seed") and len(rows) == 1 + 5
    assert dose.main([str(tmp_path / "none")]) == 2


def test_a_grid_lengthens_the_stopping_rule_of_its_finished_cells(shared, tmp_path, capsys):
    text = ("name: s\ndatasets: [coat]\nprotocols: [valid]\nseeds: [1]\nkeys: {max.epoch: 40, early_stop.patience: 1, "
            "learning.rate: 0.05, fhn.probe: 0%s}\nmethods:\n  rns: {keys: {negative.sampler: rns}}\n")
    out = tmp_path / "out"
    path = write(tmp_path / "g.yaml", text % "")
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out)]) == 0
    run = next((out / "runs" / "coat" / "rns" / "default" / "s1").glob("*/config.json")).parent
    ran = json.loads((run / "metrics.json").read_text())["selection"]["epochs_run"]
    assert ran < 30
    path = write(tmp_path / "g.yaml", text % f", early_stop.min_epochs: {ran + 3}")
    capsys.readouterr()
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out), "--dry-run"]) == 0
    assert "short       coat/rns/default/s1" in capsys.readouterr().out
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out)]) == 0
    assert [p.parent for p in (out / "runs" / "coat" / "rns" / "default" / "s1").glob("*/config.json")] == [run]
    lengthened = json.loads((run / "metrics.json").read_text())["selection"]["epochs_run"]
    assert lengthened >= ran + 3
    assert json.loads((run / "config.json").read_text())["lengthened"] == [
        f"after epoch {ran}: early_stop.min_epochs 0 -> {ran + 3}"]
    assert json.loads((out / "grid.json").read_text())["cells"][0]["state"] == "finished"
    # where the checkpoint is not (a clone of the committed records), a cell stopped too early runs again
    path = write(tmp_path / "g.yaml", text % f", early_stop.min_epochs: {lengthened + 2}")
    (run / "checkpoint.pt").unlink()
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out)]) == 0
    runs = sorted(p.parent for p in (out / "runs" / "coat" / "rns" / "default" / "s1").glob("*/config.json"))
    assert len(runs) == 2 and runs[0] == run
    assert json.loads((runs[1] / "metrics.json").read_text())["selection"]["epochs_run"] >= lengthened + 2


def test_a_grid_with_simple_baselines_and_a_candidate_search_resolves_runs_and_tables(shared, tmp_path, capsys):
    path = write(tmp_path / "g.yaml", "name: s\ndatasets: [coat]\nprotocols: [valid, ood_valid]\nseeds: [1, 2]\n"
                 "keys: {max.epoch: 2, fhn.probe: 256}\nsearch: {learning.rate: [0.01]}\nmethods:\n"
                 "  dns: {keys: {negative.sampler: dns}, search: {params.dns.n_candidates: [2, 8]}}\n"
                 "  mostpop: {keys: {model.name: MostPop}, search: {learning.rate: null}}\n"
                 "  ease: {keys: {model.name: EASE}, search: {learning.rate: null, EASE.lambda: [10, 1000]}}\n")
    out = tmp_path / "out"
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out), "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "coat/dns/rate=0.01_n_candidates=2/s1" in listed and "coat/ease/lambda=10/s1" in listed
    assert "coat/mostpop/default/s1" in listed and "invalid" not in listed
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(out), "--jobs", "2"]) == 0
    manifest = json.loads((out / "grid.json").read_text())
    assert {c["state"] for c in manifest["cells"]} == {"finished"}
    chosen = manifest["choices"]["coat/ease"]
    assert set(chosen) == {"valid", "ood_valid"} and all(c["EASE.lambda"] in (10, 1000) for c in chosen.values())
    assert T.main([str(out), "--out", str(tmp_path / "tables")]) == 0
    table = (tmp_path / "tables" / "table.md").read_text()
    assert "| mostpop |" in table and "| ease |" in table and "| dns |" in table


def test_a_stopped_grid_starts_nothing_and_leaves_no_trace_of_queued_cells(tmp_path, monkeypatch, caplog):
    grid = Grid("t", ["coat"], ["valid"], [1], {"a": {}})
    runner = GridRunner(grid, tmp_path, tmp_path)
    cell = runner.cell("coat", "a", {}, 1, {})

    def no_process(*args, **kwargs):
        raise AssertionError("a stopped grid started a cell")
    monkeypatch.setattr("bench.cluster.subprocess.Popen", no_process)
    runner.stop(15)
    with caplog.at_level("INFO"):
        assert runner.run_cell(cell) == "todo"
    assert not cell.folder.exists() and "run coat/a" not in caplog.text


def test_a_drained_grid_lets_the_running_cell_finish_and_starts_no_other(tmp_path, monkeypatch):
    grid = Grid("t", ["coat"], ["valid"], [1], {"a": {}, "b": {}})
    runner = GridRunner(grid, tmp_path, tmp_path, jobs=1)
    runner.datasets = []
    started = []

    class Finishing:  # a main.py that finishes its cell; SIGUSR1 reaches the grid while it runs
        returncode = 0

        def __init__(self, cmd, **kwargs):
            self.folder = Path([c for c in cmd if c.startswith("output=")][0][7:])
            started.append(self.folder)

        def communicate(self):
            runner.drain(10)
            _fake_run(self.folder, _rows([0.1], [0.1], [0.1]))
            return "", ""
    monkeypatch.setattr("bench.cluster.subprocess.Popen", Finishing)
    monkeypatch.setattr("bench.runner.repo_relative", lambda path: str(path))
    runner.run_all(["coat"])
    cells = runner.plan(["coat"])[0]
    assert len(started) == 1 and [c.state() for c in cells] == ["finished", "todo"]
    assert not cells[1].folder.exists()  # the cell that was queued left no trace


@pytest.mark.parametrize("jobs,threads,expected", [(1, None, str(os.cpu_count() or 1)), (2, None, "1"), (1, 1, "1"),
                                                   (2, 3, "3")])
def test_each_cell_runs_at_the_grids_thread_count(tmp_path, monkeypatch, jobs, threads, expected):
    grid = Grid("t", ["coat"], ["valid"], [1], {"a": {}})
    runner = GridRunner(grid, tmp_path, tmp_path, jobs=jobs, threads=threads)
    commands = []

    class Started:  # records the command and fails at once: no main.py runs
        returncode = 1

        def __init__(self, cmd, **kwargs):
            commands.append(cmd)

        def communicate(self):
            return "", "no run here"
    monkeypatch.setattr("bench.cluster.subprocess.Popen", Started)
    runner.run_cell(runner.cell("coat", "a", {}, 1, {}))
    cmd = commands[0]
    assert cmd[cmd.index("--threads") + 1] == expected


def test_a_bad_thread_count_is_refused_with_exit_2(tmp_path, caplog):
    path = tmp_path / "g.yaml"
    path.write_text("name: g\ndatasets: [coat]\nprotocols: [valid]\nseeds: [1]\nmethods: {a: {}}\n")
    with caplog.at_level("ERROR"):
        assert G.main([str(path), "--threads", "0", "--dry-run"]) == 2
    assert "--threads: 0 must be >= 1" in caplog.text
