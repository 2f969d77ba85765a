"""The loss fidelity table (bench.loss_fidelity) on constructed grid records."""
from __future__ import annotations

import csv
import json
import statistics

import pytest

from bench.loss_fidelity import PUBLISHED, main as loss_fidelity_main

# (dataset, method) -> per-seed test_ood Recall@20 (NDCG@20 is half of it); an empty list: listed, not run
VALUES = {("ir-cd-pop", "bpr"): [0.0500, 0.0520], ("ir-cd-pop", "sl"): [0.1000, 0.1100],
          ("ir-cd-pop", "bsl"): [0.1180], ("ir-cd-pop", "psl-tanh"): [0.1300, 0.1320, 0.1310], ("ir-cd-pop", "psl-atan"): [],
          ("ir-cd-pop", "psl-relu"): [0.1250, 0.1230], ("ir-cd-pop", "advinfonce"): [],
          ("ir-electronic-pop", "bpr"): [0.0300], ("ir-electronic-pop", "sl"): [0.0200],
          ("ir-electronic-pop", "bsl"): []}


def _grid(tmp_path, values=VALUES, failed=("ir-electronic-pop", "bsl")):
    """A grid folder as bench.grid leaves it: grid.json, and per finished cell metrics.json and config.json."""
    results = tmp_path / "grid"
    results.mkdir()
    cells = []
    for (dataset, method), recalls in values.items():
        if not recalls:
            cells.append({"dataset": dataset, "method": method, "seed": 2025, "candidate": {},
                          "state": "failed" if (dataset, method) == failed else "todo", "run": None})
        for seed, recall in zip((2025, 2026, 2027), recalls):
            run = f"runs/{dataset}/{method}/default/s{seed}/r"
            (results / run).mkdir(parents=True)
            (results / run / "metrics.json").write_text(json.dumps({
                "model": "MF", "selection": {"rule": "reference", "file": "test_ood", "metric": "NDCG@20",
                                             "epoch": 16, "epochs_run": 66},
                "metrics": {"test_ood": {"Recall@20": recall, "NDCG@20": recall / 2}}}))
            (results / run / "config.json").write_text(json.dumps({"commit": "abc1234"}))
            cells.append({"dataset": dataset, "method": method, "seed": seed, "candidate": {}, "state": "finished",
                          "run": run})
    (results / "grid.json").write_text(json.dumps({
        "grid": "loss-fidelity", "grid_file": "conf/grids/loss-fidelity.yaml", "protocols": ["reference"],
        "datasets": list(dict.fromkeys(d for d, _ in values)), "cells": cells,
        "choices": {f"{d}/{m}": {"reference": {} if r else None} for (d, m), r in values.items()}}))
    return results


def _row(text, dataset, method):
    return next(line for line in text.splitlines() if line.startswith(f"| {dataset} | {method} |"))


def _order(text, dataset):
    return next(line for line in text.split("## Order")[1].splitlines() if line.startswith(f"| {dataset} |"))


def _cells(row):
    return [c.strip() for c in row.strip("|").split("|")]


def test_the_loss_fidelity_table_on_constructed_runs(tmp_path):
    results = _grid(tmp_path)
    out = tmp_path / "out"
    assert loss_fidelity_main([str(results), "--out", str(out)]) == 0
    text = (out / "loss-fidelity.md").read_text()
    assert "Test-set protocol" in text and "best *test* NDCG@20" in text and "(test_ood)" in text
    assert "`python -m bench.loss_fidelity`" in text and "abc1234" in text
    assert "python -m bench.grid conf/grids/loss-fidelity.yaml" in text

    # columns: seeds, ours R@20, published R@20, ratio (**no** outside ±5%), ours N@20, published N@20, ratio, epochs
    bpr = _cells(_row(text, "ir-cd-pop", "bpr"))
    assert bpr[2:] == ["2", f"0.0510 ± {statistics.stdev([0.05, 0.052]):.4f}", "0.0518", f"{0.051 / 0.0518:.3f}",
                       f"0.0255 ± {statistics.stdev([0.025, 0.026]):.4f}", "0.0318", f"{0.0255 / 0.0318:.3f} **no**",
                       "16/66, 16/66"]
    sl = _cells(_row(text, "ir-cd-pop", "sl"))
    assert sl[3] == "0.1050 ± 0.0071" and sl[5] == f"{0.105 / 0.1184:.3f} **no**"  # 0.887
    assert _cells(_row(text, "ir-cd-pop", "bsl"))[2:6] == ["1", "0.1180 ± 0.0000", "0.1184", "0.997"]
    relu = _cells(_row(text, "ir-cd-pop", "psl-relu"))
    assert relu[4:5] == ["0.1203"] and relu[5] == f"{0.124 / 0.1203:.3f}"  # 1.031
    tanh = _cells(_row(text, "ir-cd-pop", "psl-tanh"))
    assert tanh[2:8] == ["3", "0.1310 ± 0.0010", "0.1202", f"{0.131 / 0.1202:.3f} **no**", "0.0655 ± 0.0005", "0.0834"]
    # the paper's one BPR row stands beside both of ours (it does not record --norm)
    assert PUBLISHED[("ir-cd-pop", "bpr-cos")] == PUBLISHED[("ir-cd-pop", "bpr")] == (0.0518, 0.0318)
    assert PUBLISHED[("ir-cd-pop", "bpr-200")] == (0.0518, 0.0318) and ("ir-electronic-pop", "bpr-200") not in PUBLISHED
    assert "also beside `bpr-200`" in text and "`bpr-200`: no stop" in text
    assert PUBLISHED[("ir-electronic-pop", "psl-atan")] == (0.0239, 0.0146)
    # listed but not run, absent from the grid, failed: "not run", with the published values still beside it
    adv = _cells(_row(text, "ir-cd-pop", "advinfonce"))
    assert adv[2:9] == ["0", "not run", "0.1189", "—", "not run", "0.0818", "—"]
    assert _cells(_row(text, "ir-cd-pop", "psl-atan"))[2:5] == ["0", "not run", "0.1202"]
    assert _cells(_row(text, "ir-electronic-pop", "psl-relu"))[3:5] == ["not run", "0.0241"]
    assert _cells(_row(text, "ir-electronic-pop", "bsl"))[3] == "not run (1 failed)"

    # the order over the methods with a published value and a run; equal published values are not compared
    cd = _cells(_order(text, "ir-cd-pop"))
    assert cd[1:] == ["psl-relu > psl-tanh > sl = bsl > bpr", "psl-tanh > psl-relu > bsl > sl > bpr",
                      "no (8 of 9 pairs)", "bpr-cos, bpr-200, psl-atan, advinfonce"]
    electronic = _cells(_order(text, "ir-electronic-pop"))
    assert electronic[2:4] == ["bpr > sl", "no (0 of 1 pairs)"]

    with open(out / "loss-fidelity.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if (r["dataset"], r["method"]) == ("ir-cd-pop", "sl"))
    assert float(row["recall"]) == pytest.approx(0.105) and row["within"] == "False" and row["seeds"] == "2"
    assert float(row["ratio"]) == pytest.approx(0.105 / 0.1184)


def test_no_run_at_all_is_a_table_of_not_run(tmp_path):
    results = _grid(tmp_path, {("ir-cd-pop", "bpr"): [], ("ir-electronic-pop", "bpr"): []})
    assert loss_fidelity_main([str(results), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "loss-fidelity.md").read_text()
    assert _cells(_row(text, "ir-cd-pop", "sl"))[3] == "not run"  # published, not in this grid
    assert _cells(_order(text, "ir-cd-pop"))[2] == "not run"


def test_bad_results_folders_are_one_line_and_exit_2(tmp_path, caplog):
    assert loss_fidelity_main([str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 2
    assert "has no grid.json" in caplog.text
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "grid.json").write_text("{}")
    assert loss_fidelity_main([str(tmp_path / "plain"), "--out", str(tmp_path / "out")]) == 2
    assert "not a grid.json of bench.grid" in caplog.text
    other = _grid(tmp_path, {("dens-toy", "rns"): [0.04]})
    assert loss_fidelity_main([str(other), "--out", str(tmp_path / "out")]) == 2
    assert "none of the datasets the PSL paper reports" in caplog.text
    assert not (tmp_path / "out").exists()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 3 and all("\n" not in r.getMessage() for r in errors)
