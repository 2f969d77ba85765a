"""Runs that survive interruption and bad input: resume, status, exit codes, file modes, --list."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import base.graph_recommender as gr
from main import main
from module.samplers import SAMPLERS
from data.presets import PRESETS
from SELFRec import Interrupted
from tests.conftest import REPO, write
from tests.test_end_to_end import CONF, _run
from util.results import read_status

COAT = ["dataset=coat", "max.epoch=4", "early_stop.patience=0"]


def _metrics(run):
    m = json.loads((run / "metrics.json").read_text())
    for key in ("run", "median_epoch_seconds"):
        m.pop(key)
    return m


def _rows(run):
    import csv
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in csv.DictReader((run / "epochs.csv").open())]


def _cut_after_second_epoch(path, monkeypatch, common):
    """A run interrupted (as by Ctrl-C) after its second epoch's checkpoint: its run folder."""
    original = gr.GraphRecommender.save_checkpoint

    def stop_after_second(self, epoch, improved):
        original(self, epoch, improved)
        if epoch == 1:
            raise Interrupted(130, "Ctrl-C (SIGINT)")
    monkeypatch.setattr(gr.GraphRecommender, "save_checkpoint", stop_after_second)
    status, cut = _run(path, *common)
    monkeypatch.setattr(gr.GraphRecommender, "save_checkpoint", original)
    assert status == 130
    assert read_status(cut[0])["state"] == "interrupted" and not (cut[0] / "metrics.json").exists()
    assert (cut[0] / "checkpoint.pt").is_file() and len(_rows(cut[0])) == 2
    return cut[0]


def _same_run(resumed, whole):
    """Every metric, loss term and diagnostic of every epoch, and metrics.json: equal bit for bit."""
    assert read_status(resumed)["state"] == "finished"
    assert _metrics(resumed) == _metrics(whole)  # the floats are compared exactly
    assert _rows(resumed) == _rows(whole)


@pytest.mark.parametrize("sampler", [["negative.sampler=rns"],
                                     ["negative.sampler=cnsdiff", "params.preset=paper"],
                                     ["negative.sampler=dens"]])
def test_interrupt_and_resume_ends_with_the_metrics_of_an_uninterrupted_run(tmp_path, shared, monkeypatch, sampler):
    common = [*COAT, f"dataset.root={shared}", *sampler]
    status, runs = _run(tmp_path / "whole", *common)
    assert status == 0
    cut = _cut_after_second_epoch(tmp_path / "cut", monkeypatch, common)
    assert main(["--resume", str(cut)]) == 0
    _same_run(cut, runs[0])
    assert "resumed after epoch 2 of 4" in (cut / "run.log").read_text()


def test_resume_in_a_fresh_process_uses_the_threads_the_run_started_with(tmp_path, shared, monkeypatch):
    common = [*COAT, f"dataset.root={shared}", "negative.sampler=cnsdiff", "params.preset=paper"]
    status, runs = _run(tmp_path / "whole", *common)  # one torch thread (conftest), recorded in config.json
    assert status == 0 and json.loads((runs[0] / "config.json").read_text())["threads"] == 1
    cut = _cut_after_second_epoch(tmp_path / "cut", monkeypatch, common)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}  # a new process that would otherwise use 2 threads
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "--resume", str(cut)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming with 1 CPU thread(s), as the run started (--threads N to change)" in proc.stderr
    _same_run(cut, runs[0])


def test_resume_with_other_threads_says_the_last_digits_may_differ(tmp_path, shared, monkeypatch, caplog):
    from util.device import set_threads
    common = [*COAT, f"dataset.root={shared}", "negative.sampler=rns", "max.epoch=3"]
    cut = _cut_after_second_epoch(tmp_path / "cut", monkeypatch, common)
    try:
        assert main(["--threads", "2", "--resume", str(cut)]) == 0
    finally:
        set_threads(1)
    assert "the run started with 1 CPU thread(s) and resumes with 2 (--threads): the rest of the run may differ " \
           "from an uninterrupted one in its last digits" in caplog.text


SHORT = [*COAT, "max.epoch=40", "early_stop.patience=1", "learning.rate=0.05"]


def _stopped_early(tmp_path, shared, *more):
    """A coat run that early stopping ended before max.epoch: (run folder, epochs it ran)."""
    status, runs = _run(tmp_path, *SHORT, f"dataset.root={shared}", *more)
    assert status == 0
    selection = json.loads((runs[0] / "metrics.json").read_text())["selection"]
    assert selection["stopped_early"] and selection["epochs_run"] < 35, selection  # the setting must stop early
    return runs[0], selection["epochs_run"]


def test_min_epochs_defers_the_early_stop_and_changes_nothing_before_it(tmp_path, shared):
    short, ran = _stopped_early(tmp_path / "short", shared)
    status, runs = _run(tmp_path / "long", *SHORT, f"dataset.root={shared}", f"early_stop.min_epochs={ran + 2}")
    assert status == 0
    selection = json.loads((runs[0] / "metrics.json").read_text())["selection"]
    assert selection["epochs_run"] >= ran + 2
    assert _rows(runs[0])[:ran] == _rows(short)  # the rule decides when to stop, not what is computed


def test_a_finished_run_lengthened_by_resume_equals_a_run_started_with_the_longer_rule(tmp_path, shared, caplog):
    short, ran = _stopped_early(tmp_path / "short", shared)
    longer = f"early_stop.min_epochs={ran + 2}"
    status, fresh = _run(tmp_path / "fresh", *SHORT, f"dataset.root={shared}", longer)
    assert status == 0
    assert main(["--resume", str(short), "--set", longer]) == 0
    _same_run(short, fresh[0])
    record = json.loads((short / "config.json").read_text())
    assert record["early_stop.min_epochs"] == ran + 2 and record["input"]["early_stop.min_epochs"] == str(ran + 2)
    assert record["lengthened"] == [f"after epoch {ran}: early_stop.min_epochs 0 -> {ran + 2}"]
    assert "stopping rule lengthened after epoch" in caplog.text and "training continues" in caplog.text
    # lengthening it once more by patience, after it finished again, also continues from the checkpoint
    assert main(["--resume", str(short), "--set", "early_stop.patience=3"]) == 0
    assert len(json.loads((short / "config.json").read_text())["lengthened"]) == 2


@pytest.mark.parametrize("override, message", [
    ("max.epoch=20", "--set can only lengthen its stopping rule (early_stop.min_epochs, early_stop.patience, early_stop.halt_after), "
                     "not max.epoch"),
    ("early_stop.min_epochs=1", "--resume: --set early_stop.min_epochs=1 is below the run's 3"),
    ("early_stop.min_epochs=x", "early_stop.min_epochs"),
])
def test_resume_refuses_other_keys_and_shorter_rules_and_keeps_the_run(tmp_path, shared, capsys, override, message):
    status, runs = _run(tmp_path, *SHORT, f"dataset.root={shared}", "early_stop.min_epochs=3", "max.epoch=3")
    assert status == 0
    before = {p.name: p.read_bytes() for p in runs[0].iterdir() if p.is_file() and p.name != "run.log"}
    capsys.readouterr()
    assert main(["--resume", str(runs[0]), "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    after = {p.name: p.read_bytes() for p in runs[0].iterdir() if p.is_file() and p.name != "run.log"}
    assert after == before  # a refused resume changes nothing


def test_a_refused_lengthening_without_checkpoint_leaves_the_finished_record_as_it_was(tmp_path, shared, capsys):
    run, ran = _stopped_early(tmp_path, shared)
    (run / "checkpoint.pt").unlink()  # as in a clone of committed records
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != "run.log"}
    capsys.readouterr()
    assert main(["--resume", str(run), "--set", f"early_stop.min_epochs={ran + 2}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no checkpoint.pt" in err[0]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != "run.log"} == before
    assert read_status(run)["state"] == "finished"  # not `failed`: a grid would drop the candidate


def test_after_a_lengthening_the_record_still_refuses_a_shorter_hand_edited_rule(tmp_path, shared, caplog):
    run, ran = _stopped_early(tmp_path, shared)
    assert main(["--resume", str(run), "--set", "early_stop.patience=4"]) == 0
    record = json.loads((run / "config.json").read_text())
    assert record["lengthened"] and record["early_stop.patience"] == 4
    record["early_stop.patience"], record["input"]["early_stop.patience"] = 1, "1"  # shorter than it ran under
    (run / "config.json").write_text(json.dumps(record))
    assert main(["--resume", str(run)]) == 2
    assert "config.json was edited after the run started (early_stop.patience; early_stop.patience was 4)" \
        in caplog.text
    assert read_status(run)["state"] == "finished"  # refused before its checkpoint was restored: as it was


def test_a_lengthening_that_stops_at_once_is_recorded_once(tmp_path, shared, caplog):
    run, ran = _stopped_early(tmp_path, shared)
    assert main(["--resume", str(run), "--set", f"early_stop.min_epochs={ran}"]) == 0  # stops there again
    assert "it stops there again" in caplog.text
    assert main(["--resume", str(run)]) == 0  # the checkpoint was saved with the new rule: nothing more to record
    assert json.loads((run / "config.json").read_text())["lengthened"] == [
        f"after epoch {ran}: early_stop.min_epochs 0 -> {ran}"]
    assert json.loads((run / "metrics.json").read_text())["selection"]["epochs_run"] == ran


def test_checkpoint_keep_options(tmp_path, shared):
    _run(tmp_path / "last", *COAT, f"dataset.root={shared}", "max.epoch=2")
    _run(tmp_path / "all", *COAT, f"dataset.root={shared}", "max.epoch=2", "checkpoint.keep=all")
    _run(tmp_path / "best", *COAT, f"dataset.root={shared}", "max.epoch=2", "checkpoint.keep=best")
    names = {k: {p.name for p in next((tmp_path / k / "results").iterdir()).glob("*.pt")} for k in ("last", "all", "best")}
    assert names == {"last": {"checkpoint.pt"}, "all": {"checkpoint.pt", "epoch-001.pt", "epoch-002.pt"},
                     "best": {"checkpoint.pt", "best.pt"}}


def test_status_name_log_and_modes_of_a_finished_run(tmp_path, shared):
    old = os.umask(0o022)
    try:
        status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", "max.epoch=1",
                            "negative.sampler=cnsdiff", "params.preset=paper", "seed=11")
    finally:
        os.umask(old)
    run = runs[0]
    assert status == 0 and read_status(run)["state"] == "finished"
    assert run.name.startswith("LightGCN-cnsdiff.paper-coat-s11-")
    assert json.loads((run / "config.json").read_text())["commit"] not in ("", None)  # which code made it
    assert "epoch 1/1" in (run / "run.log").read_text()
    assert (tmp_path / "log" / f"{run.name}.log").is_file()
    for path in run.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path.name


@pytest.mark.parametrize("rate,message", [("nan", "learning.rate: expected a finite number, got 'nan'"),
                                          ("inf", "learning.rate: expected a finite number, got 'inf'"),
                                          ("0", "learning.rate: 0.0 must be > 0"),
                                          ("-0.1", "learning.rate: -0.1 must be > 0")])
def test_a_bad_learning_rate_is_a_config_error_naming_the_key(tmp_path, caplog, rate, message):
    status, runs = _run(tmp_path, "max.epoch=1", f"learning.rate={rate}")
    assert status == 2 and runs == [] and message in caplog.text


def test_a_huge_learning_rate_is_caught_as_divergence_not_reported(tmp_path, shared, caplog):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", "max.epoch=3", "learning.rate=1e30")
    assert status == 3
    state = read_status(runs[0])
    assert state["state"] == "failed" and "diverged in epoch 1" in state["message"]
    # one batch: the loss stays finite, the embeddings reach 1e30 (every score would be inf)
    assert "embeddings reach 1e+30, too large to score" in state["message"] and "lower learning.rate" in state["message"]
    assert not (runs[0] / "metrics.json").exists()
    assert not list(runs[0].glob("*top-20items.txt"))


@pytest.mark.parametrize("override,message", [
    ("device=tpu", "device: 'tpu' is not one of auto, cpu, cuda, cuda:N"),
    ("device=cuda", "device: 'cuda' was asked for but no CUDA GPU is available (use auto or cpu)"),
])
def test_bad_device_is_one_line_and_exit_2(tmp_path, caplog, override, message):
    if override == "device=cuda" and __import__("torch").cuda.is_available():
        pytest.skip("a GPU is present")
    args = ["-c", CONF, "--set", f"output={tmp_path / 'r'}", "--set", f"log.dir={tmp_path / 'l'}", "--set", override]
    with caplog.at_level("ERROR"):
        assert main(args) == 2
    assert message in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize("key", ["output", "log.dir"])
def test_output_or_log_dir_that_is_a_file_is_exit_2(tmp_path, caplog, key):
    blocker = write(tmp_path / "blocker", "x")
    other = "log.dir" if key == "output" else "output"
    args = ["-c", CONF, "--set", f"{key}={blocker}", "--set", f"{other}={tmp_path / 'fine'}"]
    with caplog.at_level("ERROR"):
        assert main(args) == 2
    assert f"{key}: {blocker} exists and is not a folder" in caplog.text


def test_output_below_a_file_cannot_be_created_exit_2(tmp_path, caplog):
    blocker = write(tmp_path / "blocker", "x")
    args = ["-c", CONF, "--set", f"output={blocker / 'sub'}", "--set", f"log.dir={tmp_path / 'fine'}"]
    with caplog.at_level("ERROR"):
        assert main(args) == 2
    assert f"output: cannot create the folder {blocker / 'sub'} (Not a directory)" in caplog.text


def test_duplicate_yaml_key_and_threads_zero_are_exit_2(tmp_path, caplog):
    config = write(tmp_path / "dup.yaml", "max.epoch: 3\nseed: 1\nmax.epoch: 4\n")
    with caplog.at_level("ERROR"):
        assert main(["-c", str(config)]) == 2
    assert "duplicate key 'max.epoch' (first on line 1)" in caplog.text
    caplog.clear()
    with caplog.at_level("ERROR"):
        assert main(["--threads", "0", "--show-config"]) == 2
    assert "--threads: 0 must be >= 1" in caplog.text


def _cli(*args, cwd=REPO, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, **kw)


@pytest.mark.parametrize("flag", ["--show-config", "--list"])
def test_a_reader_that_stops_early_is_not_an_error(tmp_path, flag):
    proc = subprocess.run(f"{sys.executable} {REPO / 'main.py'} {flag} | head -n 1; echo \"status ${{PIPESTATUS[0]}}\"",
                          shell=True, executable="/bin/bash", cwd=tmp_path, capture_output=True, text=True)
    first, status = proc.stdout.splitlines()[0], proc.stdout.splitlines()[-1]
    assert first == ("{" if flag == "--show-config" else "models (model.name):")
    assert status == "status 0" and proc.stderr.strip() == ""


def test_list_shows_the_defaults_a_run_gets_from_the_config_file(tmp_path):
    proc = _cli("--list")
    assert proc.returncode == 0
    line = next(x for x in proc.stdout.splitlines() if x.startswith("  negative.sampler "))
    assert "default cnsdiff" in line and "*" in line  # conf/LightGCN.yaml's value, not the built-in rns
    assert "default synthetic" in next(x for x in proc.stdout.splitlines() if x.startswith("  dataset "))
    assert "LightGCN, MF, MostPop, ItemKNN, EASE" in proc.stdout
    other = write(tmp_path / "c.yaml", "negative.sampler: dns\nparams:\n  dns:\n    n_candidates: 8\n")
    proc = _cli("-c", str(other), "--list")
    assert "default dns" in next(x for x in proc.stdout.splitlines() if x.startswith("  negative.sampler "))
    assert "default 8*" in next(x for x in proc.stdout.splitlines() if x.startswith("  params.dns.n_candidates "))
    assert "default None " in next(x for x in proc.stdout.splitlines() if x.startswith("  dataset "))


def test_main_works_from_any_directory_and_lists_everything(tmp_path):
    proc = _cli("--show-config", "--set", "dataset=food", cwd=tmp_path)
    assert proc.returncode == 0
    config = json.loads(proc.stdout)
    # written relative to the repository root, against which it resolves from any directory
    assert config["training.set"] == os.path.join("dataset", "food", "train.txt")
    assert str(REPO) not in proc.stdout
    proc = _cli("--list", cwd=tmp_path)
    assert proc.returncode == 0
    for name in SAMPLERS:
        assert f"  {name} " in proc.stdout
    for name in PRESETS:
        assert f"  {name} " in proc.stdout
    for key in ("max.epoch", "fhn.probe", "checkpoint.keep", "data.min_weight", "params.dns.n_candidates"):
        assert key in proc.stdout


def test_sigterm_stops_cleanly_keeps_the_checkpoint_and_resumes(tmp_path, shared):
    out = tmp_path / "results"
    args = ["--set", "dataset=coat", "--set", f"dataset.root={shared}", "--set", "max.epoch=400",
            "--set", "early_stop.patience=0", "--set", f"output={out}", "--set", f"log.dir={tmp_path / 'log'}",
            "--set", "negative.sampler=rns", "--set", "device=cpu", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("*/checkpoint.pt")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err
    run = next(out.iterdir())
    assert read_status(run)["state"] == "interrupted" and (run / "checkpoint.pt").is_file()
    assert "interrupted by SIGTERM" in err and f"--resume {run}" in err


@pytest.mark.parametrize("argv, message", [
    (["--set", "params.adar.bogus=1"], "unknown config key 'params.adar.bogus'"),
    (["--set", "nokey"], "expected KEY=VALUE"),
    (["--set", "params.adar.reverse_stride=0"], "reverse_stride must be >= 1"),
])
def test_benchmark_bad_setting_is_one_line_and_exit_2_before_timing(tmp_path, caplog, argv, message):
    from bench.bench_epoch import main as bench_main
    out = tmp_path / "bench"
    assert bench_main(["--dataset-root", str(tmp_path), "--configs", "adar", "--out", str(out), *argv]) == 2
    assert message in caplog.text
    assert not out.exists()  # nothing was timed or written


def test_benchmark_missing_dataset_is_one_line_and_exit_2(tmp_path, caplog):
    from bench.bench_epoch import main as bench_main
    assert bench_main(["--dataset-root", str(tmp_path), "--configs", "rns", "--out", str(tmp_path / "b")]) == 2
    assert "data file(s) not found" in caplog.text and "train.txt" in caplog.text
