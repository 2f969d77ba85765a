"""Power and halving in grids: early_stop.halt_after, successive halving of the first-seed candidates, the best
other method chosen on validation and the power seeds it and the methods under test get."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from bench import grid as G
from bench.cells import Cell
from bench.cost import estimate_seconds, run_records
from bench.gridfile import Grid, Halving, Power
from bench.runner import GridRunner
from tests.conftest import write
from tests.test_grid import _fake_run


def _run(folder, rows, state="finished", config=None):
    """A fake run (tests/test_grid.py) whose metrics.json says it stopped early exactly when halt_after halted it."""
    halted = bool((config or {}).get("early_stop.halt_after"))
    return _fake_run(folder, rows, state, config, {"epoch": 1, "epochs_run": len(rows), "stopped_early": halted})


def _rows(valid, ood_valid):
    """epochs.csv rows with these validation Recall@20 values (NDCG@20 equal, so Recall decides)."""
    return [{"epoch": e + 1, "valid/Recall@20": v, "valid/NDCG@20": v, "ood_valid/Recall@20": o,
             "ood_valid/NDCG@20": o, "test_ood/Recall@20": 0.5} for e, (v, o) in enumerate(zip(valid, ood_valid))]


# ---- early_stop.halt_after ---------------------------------------------------------------
def _curve(run):
    return [line for line in (run / "epochs.csv").read_text().splitlines()]


def _strip_times(lines):
    """epochs.csv lines without the timing columns (the only values that differ between two equal runs)."""
    header = lines[0].split(",")
    keep = [i for i, k in enumerate(header) if not k.endswith("_s")]
    return [",".join(line.split(",")[i] for i in keep) for line in lines]


def test_a_halted_run_continued_is_the_uninterrupted_run(shared, tmp_path):
    from main import main as run_main
    keys = ["dataset=coat", f"dataset.root={shared}", "max.epoch=6", "early_stop.patience=0", "negative.sampler=dns",
            "fhn.probe=0", "LightGCN.n_layer=2", "seed=7"]
    sets = lambda extra, out: sum((["--set", k] for k in keys + extra + [f"output={out}", f"log.dir={out}/log"]), [])
    assert run_main(sets([], tmp_path / "whole")) == 0
    assert run_main(sets(["early_stop.halt_after=2"], tmp_path / "halted")) == 0
    whole = next((tmp_path / "whole").glob("*/epochs.csv")).parent
    halted = next((tmp_path / "halted").glob("*/epochs.csv")).parent
    metrics = json.loads((halted / "metrics.json").read_text())["selection"]
    assert metrics["epochs_run"] == 2 and metrics["stopped_early"]
    assert _strip_times(_curve(halted)) == _strip_times(_curve(whole))[:3]  # header and the first two epochs
    assert run_main(["--resume", str(halted), "--set", "early_stop.halt_after=0"]) == 0
    assert _strip_times(_curve(halted)) == _strip_times(_curve(whole))  # bit for bit the run never halted
    assert json.loads((halted / "config.json").read_text())["lengthened"] == [
        "after epoch 2: early_stop.halt_after 2 -> 0"]
    assert run_main(["--resume", str(halted), "--set", "early_stop.halt_after=1"]) == 2  # shorter: refused


# ---- successive halving ------------------------------------------------------------------
def _halving_grid(keep=1):
    return Grid("t", ["coat"], ["valid", "ood_valid"], [1], {"m": {}},
                  search={"learning.rate": [0.1, 0.2, 0.3, 0.4]}, halving=Halving(["coat"], rung=2, keep=keep))



def test_a_run_continued_by_the_code_of_another_commit_says_so(shared, tmp_path, monkeypatch, caplog):
    import SELFRec
    from main import main as run_main
    keys = ["dataset=coat", f"dataset.root={shared}", "max.epoch=3", "early_stop.patience=0", "fhn.probe=0",
            "LightGCN.n_layer=1", "seed=7", f"output={tmp_path}", f"log.dir={tmp_path}/log", "early_stop.halt_after=1"]
    monkeypatch.setattr(SELFRec, "git_commit", lambda: "aaaaaaa")
    assert run_main(sum((["--set", k] for k in keys), [])) == 0
    run = next(tmp_path.glob("*/epochs.csv")).parent
    monkeypatch.setattr(SELFRec, "git_commit", lambda: "bbbbbbb")
    assert run_main(["--resume", str(run), "--set", "early_stop.halt_after=0"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["commit"] == "aaaaaaa"  # the record's commit is the start's
    assert config["lengthened"] == ["after epoch 1: early_stop.halt_after 1 -> 0 (continued at commit bbbbbbb)"]
    assert "started at commit aaaaaaa, with the code of commit bbbbbbb" in caplog.text

def test_halving_lists_the_rung_then_the_best_of_each_protocol_under_the_full_rule(tmp_path):
    grid = _halving_grid()
    runner = GridRunner(grid, tmp_path, tmp_path)
    runner.data_keys = lambda dataset: {"dataset": dataset}
    first, later, choices = runner.plan(["coat"])
    assert [c.keys["early_stop.halt_after"] for c in first] == [2, 2, 2, 2]  # every candidate at the rung
    assert choices["coat/m"] == {"valid": None, "ood_valid": None} and not later
    # at the rung: lr 0.1 best on valid, lr 0.3 best on ood_valid; lr 0.2 the best on valid *after* the rung
    curves = {0.1: ([0.3, 0.4], [0.1, 0.1]), 0.2: ([0.2, 0.3], [0.1, 0.1]), 0.3: ([0.1, 0.1], [0.2, 0.3]),
              0.4: ([0.1, 0.2], [0.1, 0.2])}
    for cell in first:
        v, o = curves[cell.candidate["learning.rate"]]
        _run(cell.folder, _rows(v, o), config={"early_stop.halt_after": 2})
    first, later, choices = runner.plan(["coat"])
    kept = {c.candidate["learning.rate"]: c.keys["early_stop.halt_after"] for c in first}
    assert kept == {0.1: 0, 0.2: 2, 0.3: 0, 0.4: 2}  # the best of each protocol goes on; the others stay
    assert [c.halted_at for c in first] == [None, 2, None, 2]
    assert {c.candidate["learning.rate"]: c.state() for c in first} == {0.1: "short", 0.2: "finished", 0.3: "short",
                                                                        0.4: "finished"}
    assert choices["coat/m"] == {"valid": None, "ood_valid": None}  # the kept ones have not finished the full rule
    # the kept candidates continue (their curves go on from the rung's epochs); lr 0.3 ends best on both files
    for cell in first:
        if cell.halted_at is None:
            v, o = curves[cell.candidate["learning.rate"]]
            shutil.rmtree(cell.run_dir())
            more = [0.9] if cell.candidate["learning.rate"] == 0.3 else [0.5]
            _run(cell.folder, _rows(v + more, o + more), config={"early_stop.halt_after": 0})
    first, later, choices = runner.plan(["coat"])
    assert choices["coat/m"] == {"valid": {"learning.rate": 0.3}, "ood_valid": {"learning.rate": 0.3}}
    # the ranking at the rung reads the first `rung` epochs, also of a run continued since: the same cells stay kept
    assert {c.candidate["learning.rate"]: c.keys["early_stop.halt_after"] for c in first} == kept
    manifest = runner.manifest(["coat"], {})
    assert manifest["halving"] == {"datasets": ["coat"], "rung": 2, "keep": 1}
    assert sorted(c["candidate"]["learning.rate"] for c in manifest["cells"] if c.get("halted_at")) == [0.2, 0.4]


def test_halving_breaks_a_tie_at_the_rung_by_the_tag_never_by_the_grid_order(tmp_path):
    results = []
    for order in ([0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]):
        grid = Grid("t", ["coat"], ["valid"], [1], {"m": {}}, search={"learning.rate": order},
                      halving=Halving(["coat"], rung=1, keep=2))
        out = tmp_path / str(order[0])
        runner = GridRunner(grid, out, tmp_path)
        runner.data_keys = lambda dataset: {"dataset": dataset}
        for cell in runner.plan(["coat"])[0]:
            _run(cell.folder, _rows([0.2], [0.1]))  # all four tie on every metric
        results.append(sorted(c.candidate["learning.rate"] for c in runner.plan(["coat"])[0] if c.halted_at is None))
    assert results[0] == results[1] == [0.1, 0.2]  # tags rate=0.1 and rate=0.2 sort first


def test_a_closed_form_model_is_not_halved(tmp_path):
    grid = Grid("t", ["coat"], ["valid"], [1], {"ease": {"keys": {"model.name": "EASE"},
                                                           "search": {"EASE.lambda": [1, 2]}}},
                  halving=Halving(["coat"], rung=1, keep=1))
    runner = GridRunner(grid, tmp_path, tmp_path)
    runner.data_keys = lambda dataset: {"dataset": dataset}
    assert all(c.halted_at is None and "early_stop.halt_after" not in c.keys for c in runner.plan(["coat"])[0])


# ---- power: the best other method and its seeds -----------------------------------------
def _power_grid():
    return Grid("t", ["coat"], ["valid", "ood_valid"], [1, 2], {"cns": {}, "a": {}, "b": {}, "rns": {}},
                  power=Power(seeds=[1, 2, 3, 4, 5], methods=["cns"], at_least={"rns": 3}))


def test_power_seeds_go_to_the_methods_under_test_and_the_best_other_method_by_validation(tmp_path):
    runner = GridRunner(_power_grid(), tmp_path, tmp_path)
    runner.data_keys = lambda dataset: {"dataset": dataset}
    first = runner.plan(["coat"])[0]
    # a: the best IID validation; b: the best OOD validation, tied with rns on Recall@20, ahead on NDCG@20; the
    # method under test (cns) scores highest of all and is not an "other" method
    values = {"cns": ([0.9], [0.9]), "a": ([0.5], [0.1]), "b": ([0.2], [0.4]), "rns": ([0.1], [0.4])}
    for cell in first:
        v, o = values[cell.method]
        rows = _rows(v, o)
        if cell.method == "rns":
            rows[0]["ood_valid/NDCG@20"] = 0.3
        _run(cell.folder, rows)
    del values
    # not before every other method's first seeds have ended
    partial = GridRunner(_power_grid(), tmp_path / "partial", tmp_path)
    partial.data_keys = runner.data_keys
    _run(partial.cell("coat", "a", {}, 1, {"dataset": "coat"}).folder, _rows([0.5], [0.1]))
    partial.plan(["coat"])
    assert partial.best_other == {}
    first, later, choices = runner.plan(["coat"])
    assert runner.best_other == {"coat/valid": "a", "coat/ood_valid": "b"}
    seeds = {}
    for cell in later:
        seeds.setdefault(cell.method, []).append(cell.seed)
    assert seeds == {"cns": [2, 3, 4, 5], "a": [2, 3, 4, 5], "b": [2, 3, 4, 5], "rns": [2, 3]}
    assert runner.manifest(["coat"], {})["power"] == {"seeds": [1, 2, 3, 4, 5], "methods": ["cns"],
                                                      "at_least": {"rns": 3},
                                                      "best_other": {"coat/ood_valid": "b", "coat/valid": "a"}}


@pytest.mark.parametrize("section,message", [
    ("power: {seeds: [1]}", "`power.seeds` must list at least two seeds, got [1]"),
    ("power: {seeds: [1, 2, 1]}", "`power.seeds` lists seed 1 twice"),
    ("power: {seeds: [1, 2], methods: [x]}", "`power` names method 'x', which is not in `methods`"),
    ("power: {seeds: [1, 2], at_least: {m: 3}}", "`power.at_least.m` must be a number of seeds from 1 to 2"),
    ("power: {seeds: [1, 2], best_other: 1}", "`power.best_other` must be true or false, got 1"),
    ("power: {seeds: [1, 2], more: 1}", "`power`: unknown entries ['more']"),
    ("halving: {datasets: [food], rung: 5, keep: 2}", "`halving.datasets` names datasets not in `datasets`: ['food']"),
    ("halving: {datasets: [coat], rung: 0, keep: 2}", "`halving.rung` must be a whole number of at least 1, got 0"),
    ("halving: {datasets: [coat], rung: 5}", "`halving.keep` must be a whole number of at least 1, got None"),
    ("halving: [coat]", "`halving` must be a mapping"),
    ("deferred: [x]", "`deferred` names method 'x', which is not in `methods`"),
    ("deferred: [m, m]", "`deferred` names method 'm' twice"),
    ("deferred: [m, n]", "`deferred` names every method"),
    ("deferred: [m]\npower: {seeds: [1, 2], methods: [m]}", "`deferred` names 'm', a method under test of"),
    ("deferred: m", "`deferred` must be a list of names, got 'm'"),
])
def test_bad_power_halving_and_deferred_sections_are_grid_file_errors(tmp_path, caplog, section, message):
    path = write(tmp_path / "g.yaml", f"name: g\ndatasets: [coat]\nprotocols: [valid]\nseeds: [1]\n"
                                      f"methods: {{m: {{}}, n: {{}}}}\n{section}\n")
    with caplog.at_level("ERROR"):
        assert G.main([str(path), "--dataset-root", str(tmp_path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert message in caplog.text and not (tmp_path / "out").exists()


# ---- the cost of a dataset without records -------------------------------------------------
def test_a_dataset_without_records_is_estimated_by_scaling_anothers(tmp_path):
    run = tmp_path / "records" / "old" / "runs" / "food" / "rns" / "default" / "s1" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"input": {"dataset": "food", "negative.sampler": "rns"}}))
    (run / "metrics.json").write_text(json.dumps({
        "selection": {"epochs_run": 10, "epoch": 5}, "data": {"users": 10, "items": 30, "train": 100},
        "median_epoch_seconds": {"sample_s": 0.0, "train_s": 2.0, "eval_s": 1.0}}))
    records = run_records(tmp_path / "records")
    grid = Grid("t", ["coat"], ["valid"], [1], {"rns": {"keys": {"negative.sampler": "rns", "max.epoch": 100}}})
    cell = GridRunner(grid, tmp_path / "out", tmp_path).cell("coat", "rns", {}, 1, {"dataset": "coat"})
    assert estimate_seconds(cell, records) is None  # no size given: nothing to scale by
    # twice the rows and users + items 80 instead of 40: training 2 s x 4; users x items 1200 instead of 300: 1 s x 4;
    # epochs: the median selected epoch 5 + the default patience 10
    assert estimate_seconds(cell, records, {"coat": (20, 60, 200)}) == pytest.approx((2.0 * 4 + 1.0 * 4) * 15)
    halted = Cell("coat", "rns", {}, 1, cell.folder, {**cell.keys, "early_stop.halt_after": 3}, halted_at=3)
    assert estimate_seconds(halted, records, {"coat": (20, 60, 200)}) == pytest.approx(12.0 * 3)  # the rung only



def test_the_best_other_methods_power_seeds_are_estimated_as_a_range_before_it_is_named(tmp_path):
    from bench.cost import _best_other_range, cost_lines
    from tests.test_grid import _record
    records = tmp_path / "records"
    _record(records, "old", "coat", "rns", {"negative.sampler": "rns"}, 2.0, 10)  # 2 s x (best 0 + patience 10)
    _record(records, "old", "coat", "ease", {"model.name": "EASE"}, 7.0, 1)  # fitted once: 7 s
    _record(records, "old", "coat", "cns", {"negative.sampler": "cnsdiff"}, 50.0, 10)
    _record(records, "old", "coat", "sl", {"negative.sampler": "rns", "loss.name": "softmax"}, 90.0, 10)
    grid = Grid("t", ["coat"], ["valid", "ood_valid"], [1, 2],
                {"rns": {"keys": {"negative.sampler": "rns", "max.epoch": 100}},
                 "ease": {"keys": {"model.name": "EASE"}, "search": {"EASE.lambda": [1, 2]}},
                 "cns": {"keys": {"negative.sampler": "cnsdiff"}},
                 "sl": {"keys": {"negative.sampler": "rns", "loss.name": "softmax"}}},
                power=Power(seeds=[1, 2, 3, 4, 5], methods=["cns"], at_least={"rns": 4}), deferred=["sl"])
    runner = GridRunner(grid, tmp_path / "out", tmp_path)
    data = {"dataset": "coat"}
    first = [runner.cell("coat", m, c, 1, data) for m in grid.methods for c in grid.candidates(m)]
    all_records = run_records(records)
    # the power seeds beyond each method's own: RNS 5 - 4 (its at_least) = 1 seed of 20 s, EASE 5 - 2 = 3 fits of
    # 7 s; the method under test and the deferred method are never the best other
    low, high = _best_other_range(runner, "coat", first, all_records, {})
    assert low == pytest.approx(20.0) and high == pytest.approx(21.0 * 2)
    # a grid where only the dear method is eligible: its seconds bound both ends
    grid.deferred = ["sl", "ease"]
    assert _best_other_range(runner, "coat", first, all_records, {}) == (pytest.approx(20.0), pytest.approx(40.0))
    grid.deferred = ["sl"]
    runner.plan = lambda datasets: (first, [], {f"coat/{m}": {"valid": None, "ood_valid": None} for m in grid.methods})
    runner.best_other = {}
    lines = cost_lines(runner, ["coat"], False, 1, records)
    assert any(line.startswith("  the power seeds of the best other method of coat (chosen once every first seed there "
                               "has ended): +0.0 h") for line in lines)
    runner.best_other = {"coat/valid": "rns", "coat/ood_valid": "rns"}  # named: its seeds are listed cells instead
    assert not any("power seeds of the best other" in line for line in cost_lines(runner, ["coat"], False, 1, records))

def test_a_halved_grid_continues_its_kept_candidates_into_the_runs_a_full_grid_makes(shared, tmp_path):
    text = ("name: h\ndatasets: [coat]\nprotocols: [valid, ood_valid]\nseeds: [1]\n"
            "keys: {max.epoch: 4, early_stop.patience: 0, fhn.probe: 0, LightGCN.n_layer: 1}\n"
            "search: {learning.rate: [0.01, 0.05, 0.2]}\nmethods:\n  rns: {keys: {negative.sampler: rns}}\n%s")
    halved, full = tmp_path / "halved", tmp_path / "full"
    path = write(tmp_path / "h.yaml", text % "halving: {datasets: [coat], rung: 2, keep: 1}\n")
    assert G.main([str(path), "--dataset-root", str(shared), "--out", str(halved), "--threads", "1"]) == 0
    assert G.main([str(write(tmp_path / "f.yaml", text % "")), "--dataset-root", str(shared), "--out", str(full),
                   "--threads", "1"]) == 0
    manifest = json.loads((halved / "grid.json").read_text())
    assert {c["state"] for c in manifest["cells"]} == {"finished"}
    kept = [c for c in manifest["cells"] if not c.get("halted_at")]
    stopped = [c for c in manifest["cells"] if c.get("halted_at")]
    assert 1 <= len(kept) <= 2 and len(kept) + len(stopped) == 3
    for cell in stopped:
        assert len(_curve(halved / cell["run"])) == 1 + 2  # header and the rung's two epochs
    for cell in kept:  # one run folder, continued: the curve of the grid that never halved
        run = halved / cell["run"]
        assert len(list(run.parent.glob("*/config.json"))) == 1
        assert json.loads((run / "config.json").read_text())["lengthened"] == [
            "after epoch 2: early_stop.halt_after 2 -> 0"]
        twin = next(c for c in json.loads((full / "grid.json").read_text())["cells"] if c["id"] == cell["id"])
        assert _strip_times(_curve(run)) == _strip_times(_curve(full / twin["run"]))
    chosen = {tuple(v.items()) for v in manifest["choices"]["coat/rns"].values()}
    assert chosen <= {tuple(c["candidate"].items()) for c in kept}  # chosen among the kept candidates only


def test_the_kept_candidates_stay_kept_when_they_are_trained_again_or_fail_after_the_rung(tmp_path):
    runner = GridRunner(_halving_grid(), tmp_path, tmp_path)
    runner.data_keys = lambda dataset: {"dataset": dataset}
    first = runner.plan(["coat"])[0]
    curves = {0.1: ([0.3, 0.4], [0.1, 0.1]), 0.2: ([0.2, 0.3], [0.1, 0.1]), 0.3: ([0.1, 0.1], [0.2, 0.3]),
              0.4: ([0.1, 0.2], [0.1, 0.2])}
    for cell in first:
        v, o = curves[cell.candidate["learning.rate"]]
        _run(cell.folder, _rows(v, o), config={"early_stop.halt_after": 2})
    kept = {c.candidate["learning.rate"] for c in runner.plan(["coat"])[0] if c.halted_at is None}
    assert kept == {0.1, 0.3}
    # lr 0.1 trained again from the start in another session (its checkpoint lost): a newer run folder whose first
    # epochs differ (another thread count) and which is still running; lr 0.3's continuation failed
    again = first[0].folder / "LightGCN-x-s1-20270101-000000"
    shutil.copytree(first[0].run_dir(), again)
    (again / "epochs.csv").write_text("epoch,valid/Recall@20,valid/NDCG@20,ood_valid/Recall@20,ood_valid/NDCG@20\n"
                                      "1,0.01,0.01,0.01,0.01\n")
    (again / "status.json").write_text(json.dumps({"state": "running", "pid": 2**22 + 7}))
    failed = first[2].folder / "LightGCN-x-s1-20270101-000000"
    shutil.copytree(first[2].run_dir(), failed)
    (failed / "status.json").write_text(json.dumps({"state": "failed", "pid": 0, "message": "diverged"}))
    listed = runner.plan(["coat"])[0]
    assert {c.candidate["learning.rate"] for c in listed if c.halted_at is None} == kept  # the rung's own records rank
    assert {c.candidate["learning.rate"]: c.state() for c in listed if c.halted_at is None} == {0.1: "stale",
                                                                                               0.3: "failed"}


def test_plans_made_at_once_by_several_threads_agree(tmp_path):
    import threading
    runner = GridRunner(_power_grid(), tmp_path, tmp_path)
    runner.data_keys = lambda dataset: {"dataset": dataset}
    values = {"cns": ([0.9], [0.9]), "a": ([0.5], [0.1]), "b": ([0.2], [0.4]), "rns": ([0.1], [0.3])}
    for cell in runner.plan(["coat"])[0]:
        _run(cell.folder, _rows(*values[cell.method]))
    seen, errors = [], []

    def plan():
        try:
            for _ in range(5):
                later = runner.plan(["coat"])[1]
                seen.append((dict(runner.best_other), sorted(c.id for c in later)))
        except Exception as exc:  # noqa: BLE001 - any error of a concurrent plan fails the test below
            errors.append(repr(exc))
    threads = [threading.Thread(target=plan) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(seen) == 20 and all(s == seen[0] for s in seen)
    assert seen[0][0] == {"coat/valid": "a", "coat/ood_valid": "b"}


def test_the_records_of_power_seeds_are_compared_like_the_others(tmp_path):
    runner = GridRunner(_power_grid(), tmp_path, tmp_path)
    runner.data_keys = lambda dataset: {"dataset": dataset}
    cell = runner.cell("coat", "a", {}, 5, {"dataset": "coat"})  # a power seed only (the grid's seeds are 1, 2)
    _run(cell.folder, _rows([0.1], [0.1]))
    assert cell.id in [c.id for c in runner.recorded_cells(["coat"])]


# ---- deferred methods: after every other cell, never the best other method ---------------------------------------
def _deferred_grid():
    return Grid("t", ["coat"], ["valid", "ood_valid"], [1, 2], {"cns": {}, "a": {}, "sl": {}},
                power=Power(seeds=[1, 2, 3], methods=["cns"]), deferred=["sl"])


def test_a_deferred_method_is_never_the_best_other_method_and_the_name_does_not_wait_for_it(tmp_path):
    runner = GridRunner(_deferred_grid(), tmp_path, tmp_path)
    runner.data_keys = lambda dataset: {"dataset": dataset}
    for cell in runner.plan(["coat"])[0]:
        if cell.method != "sl":  # sl has not run at all
            _run(cell.folder, _rows([0.5], [0.5]) if cell.method == "a" else _rows([0.9], [0.9]))
    later = runner.plan(["coat"])[1]
    assert runner.best_other == {"coat/valid": "a", "coat/ood_valid": "a"}
    assert sorted((c.method, c.seed) for c in later) == [("a", 2), ("a", 3), ("cns", 2), ("cns", 3)]
    sl = [c for c in runner.plan(["coat"])[0] if c.method == "sl"][0]
    _run(sl.folder, _rows([0.99], [0.99]))  # the best validation scores of all, once it has run: still not named
    later = runner.plan(["coat"])[1]
    assert runner.best_other == {"coat/valid": "a", "coat/ood_valid": "a"}
    assert sorted((c.method, c.seed) for c in later) == [("a", 2), ("a", 3), ("cns", 2), ("cns", 3), ("sl", 2)]
    assert runner.manifest(["coat"], {})["deferred"] == ["sl"]


def test_the_cells_of_a_deferred_method_start_only_when_every_other_cell_has_ended(tmp_path, monkeypatch):
    runner = GridRunner(_deferred_grid(), tmp_path, tmp_path, jobs=2)
    runner.datasets = []
    runner.data_keys = lambda dataset: {"dataset": dataset}
    started = []

    class Finishing:  # a main.py that finishes its cell at once, the method under test scoring highest
        returncode = 0

        def __init__(self, cmd, **kwargs):
            self.folder = Path([c for c in cmd if c.startswith("output=")][0][7:])
            self.method = self.folder.parts[-3]
            with runner._lock:
                first, later, _ = runner.plan(["coat"])
            others = {c.id for c in first + later if c.method != "sl" and c.state() != "finished"}
            started.append((self.method, int(self.folder.name[1:]), others))

        def communicate(self):
            _run(self.folder, _rows([0.9], [0.9]) if self.method == "cns" else _rows([0.5], [0.5]))
            return "", ""
    monkeypatch.setattr("bench.cluster.subprocess.Popen", Finishing)
    monkeypatch.setattr("bench.runner.repo_relative", lambda path: str(path))
    runner.run_all(["coat"])
    assert sorted((m, s) for m, s, _ in started) == [("a", 1), ("a", 2), ("a", 3), ("cns", 1), ("cns", 2),
                                                     ("cns", 3), ("sl", 1), ("sl", 2)]
    assert [m for m, _, _ in started][-2:] == ["sl", "sl"]  # after the power seeds of cns and of a, the best other
    assert all(others == set() for m, _, others in started if m == "sl")  # every other cell had finished by then
    assert all(others for m, _, others in started if m != "sl")  # (the check sees the cell that is starting)
