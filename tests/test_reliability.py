"""The reliability pass: each bad or unusual input of the probe, with its exact message and exit status."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from bench import grid as G
from bench.cells import Cell
from main import main
from tests.conftest import REPO, wait_for, write
from tests.test_end_to_end import _run
from util.results import read_status

COAT_LONG = ["dataset=coat", "max.epoch=400", "early_stop.patience=0", "negative.sampler=rns", "device=cpu"]


def _popen(tmp_path, *overrides):
    args = [sys.executable, str(REPO / "main.py"), "--threads", "1", "--set", f"output={tmp_path / 'results'}",
            "--set", f"log.dir={tmp_path / 'log'}"]
    for o in overrides:
        args += ["--set", o]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli(*args):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=REPO, capture_output=True, text=True)


def _finished_run(tmp_path, shared, *extra):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", "max.epoch=2", *extra)
    assert status == 0
    return runs[0]


def _edit_config(run, change):
    path = run / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
    (run / "status.json").write_text(json.dumps({"state": "interrupted"}))


# 1 and 7: config.json is a record
@pytest.mark.parametrize("change,key,was", [
    (lambda c: c["input"].update({"dataset": "food"}), "input.dataset", "'coat'"),
    (lambda c: c.update({"learning.rate": 0.5}), "learning.rate", "0.01"),
    (lambda c: c.update({"max.epoch": 9}), "max.epoch", "2"),
])
def test_resume_after_config_json_was_edited_names_the_key(tmp_path, shared, caplog, change, key, was):
    run = _finished_run(tmp_path, shared)
    _edit_config(run, change)
    assert main(["--resume", str(run)]) == 2
    assert f"config.json was edited after the run started ({key}" in caplog.text and f"{key} was {was}" in caplog.text
    assert "put it back, or start a new run with the new settings" in caplog.text and "size mismatch" not in caplog.text


# 2: every field of a grid file is type-checked
@pytest.mark.parametrize("text,message", [
    ("seeds: one", "`seeds` must be a list of integers, got 'one'"),
    ("seeds: [1, two]", "`seeds` must be a list of integers, got [1, 'two']"),
    ("datasets: coat", "`datasets` must be a list of names, got 'coat'"),
    ("search: {learning.rate: 0.01}", "`search.learning.rate` must be a list, got 0.01"),
    ("ood_valid_fraction: 2", "`ood_valid_fraction` must be between 0 and 1, got 2"),
    ("extra_seeds: {coat: {rns: 2028}}", "`extra_seeds.coat.rns` must be a list of integers, got 2028"),
    ("methods: {rns: {keys: [1]}}", "`methods.rns.keys` must be a mapping, got [1]"),
    ("methods: {rns: {seeds: x}}", "`methods.rns.seeds` must be a list of integers, got 'x'"),
])
def test_bad_grid_field_types_are_one_line_and_exit_2(tmp_path, caplog, text, message):
    fields = {"name": "t", "datasets": "[coat]", "protocols": "[valid]", "seeds": "[1]", "methods": "{rns: {}}"}
    key = text.split(":")[0]
    body = "".join(f"{k}: {v}\n" for k, v in fields.items() if k != key) + text + "\n"
    path = write(tmp_path / "g.yaml", body)
    assert G.main([str(path), "--dry-run", "--out", str(tmp_path / "out")]) == 2
    assert message in caplog.text


# 3: a cut-off above the item count
def test_a_cut_off_above_the_number_of_items_is_a_config_error(tmp_path, shared, caplog):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", "item.ranking.topN=20,5000")
    assert status == 2
    assert "item.ranking.topN: 5000 is more than the 295 items of the data; use cut-offs up to 295" in caplog.text
    assert read_status(runs[0])["state"] == "failed" and "Traceback" not in caplog.text


# 4: a truncated checkpoint
def test_resume_of_a_truncated_checkpoint_says_what_to_do(tmp_path, shared, caplog):
    run = _finished_run(tmp_path, shared, "checkpoint.keep=all")
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    (run / "status.json").write_text(json.dumps({"state": "interrupted"}))
    assert main(["--resume", str(run)]) == 2
    assert f"--resume: {run / 'checkpoint.pt'} is unreadable (truncated or corrupt" in caplog.text
    assert "copy one of the checkpoints checkpoint.keep kept (epoch-001.pt, epoch-002.pt) over checkpoint.pt" in caplog.text
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    for extra in run.glob("epoch-*.pt"):
        extra.unlink()
    assert main(["--resume", str(run)]) == 2
    assert "is unreadable (truncated or corrupt" in caplog.text and "start the run again" in caplog.text


# 6: paths with spaces
def test_paths_with_spaces_are_never_split(tmp_path, shared):
    folder = tmp_path / "dir with space"
    folder.mkdir()
    for name in ("train.txt", "valid.txt", "test_ood.txt"):
        shutil.copyfile(shared / "coat" / name, folder / name)
    status, runs = _run(tmp_path, f"training.set={folder / 'train.txt'}", f"valid.set={folder / 'valid.txt'}",
                        f"test.set={folder / 'test_ood.txt'}", "data.format=adjacency", "max.epoch=1")
    assert status == 0
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["test.set"] == {"test_ood": os.path.relpath(folder / "test_ood.txt", REPO)}
    shutil.copyfile(shared / "coat" / "valid.txt", folder / "held out.txt")
    cfg_file = write(tmp_path / "c.yaml", f"training.set: '{folder / 'train.txt'}'\ntest.set: ['{folder / 'test_ood.txt'}', "
                                          f"'{folder / 'held out.txt'}']\ndata.format: adjacency\nmax.epoch: 1\n"
                                          f"negative.sampler: rns\noutput: {tmp_path / 'r2'}\nlog.dir: {tmp_path / 'l2'}\n")
    assert main(["-c", str(cfg_file)]) == 0
    config = json.loads(next((tmp_path / "r2").iterdir()).joinpath("config.json").read_text())
    assert set(config["test.set"]) == {"test_ood", "held out"} and " " in config["training.set"]


# 8 and 13: one trainer per run folder; the heartbeat; a writer that is gone
def test_a_second_process_cannot_train_a_live_run_and_a_killed_one_is_said_gone(tmp_path, shared):
    first = _popen(tmp_path, *COAT_LONG, f"dataset.root={shared}")
    try:
        run = wait_for(lambda: next((p.parent for p in (tmp_path / "results").glob("*/checkpoint.pt")), None))
        status = wait_for(lambda: read_status(run) if read_status(run).get("epoch") else None)
        assert status["state"] == "running" and status["pid"] == first.pid and status["epoch"] >= 1  # the heartbeat
        later = wait_for(lambda: read_status(run) if read_status(run)["epoch"] > status["epoch"] else None)
        assert later["updated"] >= status["updated"]
        second = _cli("--resume", str(run))
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"is being trained by process {first.pid}" in second.stderr and "one trainer per run folder" in second.stderr
        rows = (run / "epochs.csv").read_text().splitlines()
        assert len(rows) == len(set(r.split(",")[0] for r in rows))  # no duplicate epochs
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert read_status(run)["state"] == "running"  # what SIGKILL leaves
        cell = Cell("coat", "rns", {}, 1, run.parent, {})
        assert cell.state() == "stale"  # bench.grid sees that the writer is gone
        third = subprocess.Popen([sys.executable, str(REPO / "main.py"), "--threads", "1", "--resume", str(run)],
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: "resuming run" in (run / "run.log").read_text())
        third.send_signal(signal.SIGTERM)
        _, err = third.communicate(timeout=60)
        assert "(status was running, epoch" in err and "its process is gone" in err
    finally:
        first.kill()


# 9: your own files without data.format
def test_own_files_without_a_format_are_detected_only_without_doubt(tmp_path, shared, caplog):
    ambiguous = write(tmp_path / "a" / "train.txt", "".join(f"{u} {u % 5} {(u + 1) % 5}\n" for u in range(30)))
    status, _ = _run(tmp_path, f"training.set={ambiguous}", f"test.set={ambiguous}", "max.epoch=1")
    assert status == 2
    assert "data.format is required (triples, pairs or adjacency): lines like `0 5 1` are either user 0 with items 5 " \
           "and 1 (adjacency) or user 0, item 5, weight 1 (triples)" in caplog.text
    status, runs = _run(tmp_path, f"training.set={shared / 'coat' / 'train.txt'}", f"test.set={shared / 'coat' / 'test_ood.txt'}",
                        "valid.set=none", "max.epoch=1")
    assert status == 0
    assert "data.format not given: read as adjacency (line 1 has 4 or more columns; triples and pairs have at most 3)" \
        in caplog.text
    weights = write(tmp_path / "w" / "train.txt", "".join(f"{u} {u % 7} 0.5\n" for u in range(40)))
    from data.loader import detect_formats
    assert detect_formats({"train": weights})[0] == "triples"
    assert detect_formats({"train": write(tmp_path / "p.txt", "1 2\n3 4\n")})[0] == "pairs"


# 10 and 11: the dry run resolves every cell; a failed cell fails the grid
def test_a_dry_run_reports_invalid_cells_and_exits_2(tmp_path, shared, capsys, caplog):
    path = write(tmp_path / "g.yaml", "name: t\ndatasets: [coat]\nprotocols: [valid]\nseeds: [1]\n"
                                      "methods: {good: {keys: {max.epoch: 1}}, bad: {keys: {max.epochs: 1}}}\n")
    assert G.main([str(path), "--dry-run", "--dataset-root", str(shared), "--out", str(tmp_path / "out")]) == 2
    out = capsys.readouterr().out
    assert "invalid     coat/bad/default/s1: unknown config key 'max.epochs' (did you mean 'max.epoch'?)" in out
    assert "coat/good" not in out.split("todo")[0]
    assert "1 cell(s) have an invalid configuration" in caplog.text


def test_a_grid_with_a_failed_cell_exits_1_after_its_summary(tmp_path, shared, caplog):
    path = write(tmp_path / "g.yaml", "name: t\ndatasets: [coat]\nprotocols: [valid]\nseeds: [1]\n"
                                      "methods: {ok: {keys: {max.epoch: 1, negative.sampler: rns}},"
                                      " broken: {keys: {max.epoch: 1, negative.sampler: rns, item.ranking.topN: 999}}}\n")
    with caplog.at_level("INFO"):
        assert G.main([str(path), "--dataset-root", str(shared), "--out", str(tmp_path / "out")]) == 1
    assert "1 finished, 1 failed" in caplog.text and "failed: coat/broken/default/s1: " in caplog.text


# 12: stopping a grid
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_grid_reaches_its_cells_which_are_interrupted_not_failed(tmp_path, shared, sig):
    path = write(tmp_path / "g.yaml", "name: t\ndatasets: [coat]\nprotocols: [valid]\nseeds: [1, 2]\n"
                                      "methods: {rns: {keys: {max.epoch: 400, early_stop.patience: 0, "
                                      "negative.sampler: rns}}}\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "bench.grid", str(path), "--dataset-root", str(shared), "--out",
                             str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = wait_for(lambda: next((p.parent for p in out.glob("runs/*/*/*/*/*/checkpoint.pt")), None))
    child = read_status(run)["pid"]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig and "Traceback" not in err
    assert read_status(run)["state"] == "interrupted" and (run / "checkpoint.pt").is_file()
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # no orphan left behind
    assert "failed" not in err.lower().replace("0 failed", "")
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert f"grid stopped by {sig.name}: 1 cell(s) interrupted with their checkpoints; continue with: " \
           f"python -m bench.grid {path}" in last
    assert not (run.parent / "error.txt").exists() and len(list(out.glob("runs/*/*/*/*"))) == 1  # nothing new


def test_a_signal_inside_a_checkpoint_write_is_raised_after_the_file_is_whole(tmp_path):
    """A SIGTERM landing inside torch.save used to become torch's RuntimeError (the run ended 'failed', not
    'interrupted': the grid test above failed now and then) or abort the process; now it waits for the write."""
    import torch
    import main as entry
    from SELFRec import Interrupted
    from util.io import atomic_write

    def write(handle):
        signal.raise_signal(signal.SIGTERM)  # arrives while the file is being written
        torch.save({"w": torch.arange(5.0)}, handle)

    previous = signal.signal(signal.SIGTERM, entry._on_signal)
    try:
        with pytest.raises(Interrupted) as caught:
            atomic_write(tmp_path / "checkpoint.pt", write)
        assert caught.value.exit_code == 143
        assert torch.load(tmp_path / "checkpoint.pt")["w"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left
        with pytest.raises(Interrupted):  # outside a write the signal is raised at once
            signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


# 16: the shipped preset next to your own files
def test_the_preset_warning_only_when_the_user_chose_a_preset(tmp_path, shared, caplog):
    files = [f"training.set={shared / 'coat' / 'train.txt'}", f"test.set={shared / 'coat' / 'test_ood.txt'}",
             "valid.set=none", "data.format=adjacency", "max.epoch=1"]
    with caplog.at_level("INFO"):
        assert _run(tmp_path / "a", *files)[0] == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "ignored" in r.getMessage()]
    caplog.clear()
    assert _run(tmp_path / "b", "dataset=food", *files)[0] == 0
    assert [r for r in caplog.records if r.levelname == "WARNING" and "preset 'food' ignored" in r.getMessage()]


# 17: suggestions only for close names
def test_download_suggests_only_close_names(tmp_path, caplog):
    from data.download import main as download_main
    assert download_main(["netflix", "--root", str(tmp_path)]) == 2
    assert "unknown preset 'netflix'" in caplog.text and "did you mean" not in caplog.text
    caplog.clear()
    assert download_main(["fod", "--root", str(tmp_path)]) == 2
    assert "did you mean 'food'" in caplog.text
