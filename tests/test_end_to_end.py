"""End-to-end runs through main.py: run folder contents, determinism, clear errors."""
from __future__ import annotations

import csv
import json
import logging

import pytest

from main import main
from tests.conftest import REPO

CONF = str(REPO / "conf" / "LightGCN.yaml")


def _run(tmp_path, *overrides):
    """Run main.py with the shipped config (RNS unless an override names another sampler), on the CPU unless an
    override names another device (f"device={device_key}": the tests' device, see tests/conftest.py)."""
    args = ["-c", CONF, "--set", f"output={tmp_path / 'results'}", "--set", f"log.dir={tmp_path / 'log'}",
            "--set", "device=cpu",  # CPU: the default of its many callers that compare runs bit for bit
            "--set", "negative.sampler=rns"]
    for o in overrides:
        args += ["--set", o]
    status = main(args)
    runs = sorted((tmp_path / "results").iterdir()) if (tmp_path / "results").exists() else []
    return status, runs


def _check_run_folder(run, expected_files, epochs):
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.json", "epochs.csv"} <= names
    for test in expected_files:
        assert f"LightGCN@rns-{test}-top-20items.txt" in names
        lines = (run / f"LightGCN@rns-{test}-top-20items.txt").read_text().splitlines()
        assert lines[0].startswith("userId:") and len(lines) > 1 and lines[1].count("(") == 20
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["metrics"]) >= set(expected_files)
    assert 1 <= metrics["selection"]["epoch"] <= epochs
    rows = list(csv.DictReader((run / "epochs.csv").open()))
    assert len(rows) == epochs
    assert {"bpr", "l2", "loss", "sample_s", "train_s", "eval_s"} <= set(rows[0])
    config = json.loads((run / "config.json").read_text())
    assert config["max.epoch"] == epochs and "selection.resolved" in config
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    return metrics


def test_coat_two_epochs(tmp_path, shared, device_key):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", "max.epoch=2", f"device={device_key}")
    assert status == 0 and len(runs) == 1
    metrics = _check_run_folder(runs[0], ["test_ood"], 2)
    assert metrics["selection"]["rule"] == "valid" and "valid" in metrics["metrics"]
    assert (tmp_path / "log" / f"{runs[0].name}.log").read_text().count("epoch 2/2") == 1


def test_synthetic_default_two_epochs_shows_ood_gap(tmp_path, device_key):
    status, runs = _run(tmp_path, f"dataset.root={tmp_path / 'data'}", "max.epoch=2", "negative.sampler=rns",
                        f"device={device_key}")
    assert status == 0
    assert (tmp_path / "data" / "synthetic" / "truth.npz").is_file()
    metrics = _check_run_folder(runs[0], ["test_iid", "test_ood"], 2)
    assert metrics["metrics"]["test_iid"]["Recall@20"] > 3 * metrics["metrics"]["test_ood"]["Recall@20"]


def test_same_seed_gives_identical_metrics(tmp_path, shared):
    common = ["dataset=coat", f"dataset.root={shared}", "max.epoch=2", "device=cpu", "seed=7"]  # CPU: bit for bit
    _run(tmp_path / "a", *common)
    _run(tmp_path / "b", *common)
    _run(tmp_path / "c", *common[:-1], "seed=8")
    read = [json.loads(next((tmp_path / x / "results").iterdir()).joinpath("metrics.json").read_text())["metrics"]
            for x in "abc"]
    assert read[0] == read[1]
    assert read[0] != read[2]


def test_bad_config_and_missing_files_exit_with_clear_message(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        status, _ = _run(tmp_path, "max.epochs=2")
    assert status == 2 and "did you mean 'max.epoch'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        status, _ = _run(tmp_path, "dataset=food", f"dataset.root={tmp_path / 'empty'}")
    assert status == 2 and "python -m data.download food" in caplog.text


def test_test_all4_selection_when_no_validation_file(tmp_path, shared, device_key):
    status, runs = _run(tmp_path, "dataset=adressa", f"dataset.root={shared}", "max.epoch=1", f"device={device_key}")
    assert status == 0
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["selection"]["rule"] == "test_all4" and metrics["selection"]["file"] == "test_ood"


@pytest.mark.parametrize("form", ["selfrec", "lightgcn"])
def test_both_l2_forms_run(tmp_path, shared, device_key, form):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", "max.epoch=1", f"reg.form={form}",
                        f"device={device_key}")
    row = next(csv.DictReader((runs[0] / "epochs.csv").open()))
    assert status == 0 and float(row["l2"]) > 0


def test_explicit_files_override_the_synthetic_preset_without_generating(tmp_path, shared, device_key):
    status, runs = _run(tmp_path, f"dataset.root={tmp_path / 'data'}", "max.epoch=1", "data.format=adjacency",
                        f"training.set={shared / 'coat' / 'train.txt'}", "valid.set=none",
                        f"test.set={shared / 'coat' / 'test_ood.txt'}", f"device={device_key}")
    assert status == 0 and not (tmp_path / "data" / "synthetic").exists()
    assert json.loads((runs[0] / "metrics.json").read_text())["data"]["users"] == 290
