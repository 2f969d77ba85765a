"""The third reliability pass, the user's own workflow: resumes that keep the values a run started with and
check the data it read, the layers of every value, and config.json as a record."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest

from conf import config as C
from conf import params as P
from conf.config import BUILT_IN, PARAMS_FILE, REPO, load_config, not_default
from main import main
from tests.conftest import write
from tests.test_end_to_end import _run
from tests.test_robust import COAT, _cut_after_second_epoch, _same_run


@dataclasses.dataclass
class _EditedRNS(P.RNSParams):
    """conf/params.py as a user might edit it after a run started: another default."""

    n_negs: int = 3


def test_a_resumed_run_keeps_the_values_it_started_with_when_a_default_was_edited(tmp_path, shared, monkeypatch,
                                                                                   caplog):
    common = [*COAT, f"dataset.root={shared}"]
    status, whole = _run(tmp_path / "whole", *common)
    assert status == 0
    cut = _cut_after_second_epoch(tmp_path / "cut", monkeypatch, common)
    monkeypatch.setitem(C.PARAMS, "rns", _EditedRNS)  # the edit: conf/params.py now says n_negs = 3
    monkeypatch.setitem(C.REFERENCE_REG_FORM, "rns", "selfrec")  # and RNS's reg.form: auto now means selfrec
    assert load_config(REPO / "conf" / "LightGCN.yaml", ["negative.sampler=rns"]).params.n_negs == 3
    assert main(["--resume", str(cut)]) == 0
    assert "where today's defaults differ: params.rns.n_negs recorded 1, today 3; reg.form recorded 'lightgcn', " \
           "today 'selfrec'" in caplog.text
    _same_run(cut, whole[0])  # bit for bit the run that was never interrupted, with n_negs 1
    assert json.loads((cut / "config.json").read_text())["params"]["rns"]["n_negs"] == 1


def test_a_resume_refuses_changed_data_and_names_the_file(tmp_path, shared, caplog):
    data = tmp_path / "data"
    shutil.copytree(shared / "coat", data / "coat")
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={data}", "max.epoch=2")
    assert status == 0
    record = json.loads((runs[0] / "config.json").read_text())
    assert set(record["data.files"]) == {"train", "valid", "test_ood"}
    assert len(record["data.files"]["train"]["sha256"]) == 64
    (runs[0] / "status.json").write_text(json.dumps({"state": "interrupted"}))
    train = data / "coat" / "train.txt"
    train.write_text(train.read_text().replace("\n", "\n", 1)[:-40] + "\n")  # a few rows fewer
    before = (runs[0] / "status.json").read_bytes()
    assert main(["--resume", str(runs[0])]) == 2
    assert "the data changed since the run started: train (" in caplog.text and "coat/train.txt" in caplog.text
    assert "put them back, or start a new run" in caplog.text and "size mismatch" not in caplog.text
    assert (runs[0] / "status.json").read_bytes() == before  # the record is left as it was


@pytest.mark.parametrize("key,value", [("commit", "0123456"), ("device.resolved", "cuda:3")])
def test_a_hand_edited_record_key_does_not_survive_a_resume(tmp_path, shared, caplog, key, value):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", "max.epoch=2")
    assert status == 0
    path = runs[0] / "config.json"
    config = json.loads(path.read_text())
    config[key] = value
    path.write_text(json.dumps(config))
    (runs[0] / "status.json").write_text(json.dumps({"state": "interrupted"}))
    assert main(["--resume", str(runs[0])]) == 2
    assert f"config.json was edited after the run started ({key}; {key} was" in caplog.text
    assert json.loads(path.read_text())[key] == value and "metrics.json" in {p.name for p in runs[0].iterdir()}


def test_a_checkpoint_copied_from_another_run_is_named_as_such(tmp_path, shared, caplog):
    status, one = _run(tmp_path / "a", "dataset=coat", f"dataset.root={shared}", "max.epoch=2")
    status2, two = _run(tmp_path / "b", "dataset=coat", f"dataset.root={shared}", "max.epoch=2", "seed=7")
    assert status == status2 == 0
    shutil.copy(two[0] / "checkpoint.pt", one[0] / "checkpoint.pt")
    (one[0] / "status.json").write_text(json.dumps({"state": "interrupted"}))
    assert main(["--resume", str(one[0])]) == 2
    assert "checkpoint.pt belongs to another run (run id" in caplog.text
    assert "was edited" not in caplog.text


def test_a_config_file_with_resume_is_refused_not_ignored(tmp_path, shared, caplog):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", "max.epoch=2")
    assert status == 0
    other = write(tmp_path / "other.yaml", "max.epoch: 9\n")
    assert main(["-c", str(other), "--resume", str(runs[0])]) == 2
    assert f"-c {other} would be ignored: drop -c, or start a new run with it" in caplog.text


def test_the_input_section_keeps_no_absolute_path(tmp_path, shared):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared.resolve()}", "max.epoch=1")
    assert status == 0
    record = json.loads((runs[0] / "config.json").read_text())

    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        return [s for v in value for s in strings(v)] if isinstance(value, list) else [value]
    assert not [s for s in strings(record) if isinstance(s, str) and s.startswith("/")]
    assert record["input"]["dataset.root"].endswith("shared/datasets") and record["input"]["output"].endswith("results")
    assert main(["--resume", str(runs[0]), "--show-config"]) == 0  # it still resolves to the same folders


def test_a_validation_file_equal_to_a_test_file_is_refused_under_the_valid_rule(tmp_path, shared, caplog):
    copy = tmp_path / "copy_of_test.txt"
    shutil.copy(shared / "coat" / "test_ood.txt", copy)
    for valid in (shared / "coat" / "test_ood.txt", copy):  # the same path, and a copy of it
        caplog.clear()
        status, _ = _run(tmp_path / "r", "dataset=coat", f"dataset.root={shared}", f"valid.set={valid}", "max.epoch=1")
        assert status == 2
        assert "valid.set is the same file as test.set.test_ood" in caplog.text
        assert "selecting on it would select on the test set" in caplog.text
    status, _ = _run(tmp_path / "t", "dataset=coat", f"dataset.root={shared}", f"valid.set={copy}", "max.epoch=1",
                     "selection=test_all4", "eval.mask=train")
    assert status == 0  # asked for by name, a test-set protocol stays possible


def test_show_config_marks_every_value_with_its_layer(tmp_path):
    conf = write(tmp_path / "mine.yaml", "dataset: synthetic\nnegative.sampler: cnsdiff\nmax.epoch: 7\n")
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "-c", str(conf), "--show-config", "--set",
                           "params.cnsdiff.cl_weight=0.5"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    layers = shown["layers"]
    assert layers["max.epoch"].endswith("mine.yaml") and layers["params.cnsdiff.cl_weight"] == "--set"
    assert layers["batch.size"] == BUILT_IN and layers["params.cnsdiff.temperature"] == PARAMS_FILE
    assert layers["params.cnsdiff.train_denoiser"] == "params.cnsdiff.preset official"
    assert layers["training.set"] == "dataset preset synthetic"
    assert set(layers) >= {k for k in shown if k not in ("layers", "input", "params", "selection.resolved")}


def test_an_edit_of_conf_params_reaches_a_run_of_the_shipped_config(monkeypatch):
    """The shipped YAML sets only what it must: conf/params.py's default of the CNSDiff preset is the one used."""
    shipped = (REPO / "conf" / "LightGCN.yaml").read_text()
    assert "\nparams:" not in shipped  # the params section is a commented example
    assert load_config(REPO / "conf" / "LightGCN.yaml").params.preset == "official"

    @dataclasses.dataclass
    class Edited(P.CNSDiffParams):
        preset: str = "paper"
    monkeypatch.setitem(C.PARAMS, "cnsdiff", Edited)
    cfg = load_config(REPO / "conf" / "LightGCN.yaml", ["params.cnsdiff.cl_weight=0.5"])
    assert cfg.params.preset == "paper" and cfg.params.train_denoiser is True
    lines = not_default(cfg)
    assert "params.cnsdiff.cl_weight = 0.5 (--set)" in lines
    assert "params.cnsdiff.train_denoiser = True (params.cnsdiff.preset paper)" in lines
    assert "negative.sampler = cnsdiff (conf/LightGCN.yaml)" in lines
    assert not any(line.startswith("batch.size") for line in lines)  # a built-in default is not listed


def test_the_run_log_names_the_source_of_every_value_that_is_not_a_default(tmp_path, shared):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", "max.epoch=1", "learning.rate=0.005")
    assert status == 0
    text = (runs[0] / "run.log").read_text()
    assert "setting learning.rate = 0.005 (--set)" in text and "setting negative.sampler = rns (--set)" in text
    assert "setting dataset = coat (--set)" in text and "setting batch.size" not in text
