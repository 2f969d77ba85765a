"""The traps of a run found by the probe: out-of-range seeds, tables larger than the memory, a full disk, names too
long, Ctrl-C before the first checkpoint, a step decay of 0, absurd learning rates, temporary files of a killed
writer. Each ends in one line naming the problem (exit 2) or works, with nothing lost."""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import base.graph_recommender as gr
from main import main
from tests.conftest import REPO, wait_for
from tests.test_end_to_end import _run
from tests.test_robust import _cut_after_second_epoch, _rows
from util.io import TEMP_NAME, WriteError, atomic_write, atomic_write_text, remove_stale_temp_files
from util.results import read_status
from util.typing_coerce import ConfigError

COAT = ["dataset=coat", "max.epoch=3", "early_stop.patience=0", "fhn.probe=0"]


def _coat(shared):
    return [*COAT, f"dataset.root={shared}"]


def _main_process(tmp_path, *overrides, **popen):
    """main.py in its own process, on the CPU unless an override names another device (f"device={device_key}")."""
    args = [sys.executable, str(REPO / "main.py"), "--threads", "1", "--set", f"output={tmp_path / 'results'}",
            "--set", f"log.dir={tmp_path / 'log'}",
            "--set", "device=cpu",  # CPU: the default; a test passes f"device={device_key}", or "device=cpu" saying why
            "--set", "negative.sampler=rns"]
    for o in overrides:
        args += ["--set", o]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


# 1: the seed ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [-1, 2**32, 2**63, 2**64, 10**30])
def test_a_seed_outside_0_to_2_32_is_one_line_naming_the_range(tmp_path, caplog, seed):
    """2**64 and above used to end in torch's 'Overflow when unpacking long long', -1 in numpy's 'expected
    non-negative integer' (the FHN probe's generator); 2**32 ran, silently the same run as seed 0 on the CPU."""
    status, runs = _run(tmp_path, "max.epoch=1", f"seed={seed}")
    assert status == 2 and runs == []
    assert f"seed: {seed} is outside the allowed range 0 to 4294967295" in caplog.text
    assert "Traceback" not in caplog.text


def test_the_seed_range_is_what_every_library_takes_whole():
    from util.seed import SEED_MAX, seed_everything
    seed_everything(SEED_MAX)  # numpy, numba, torch and python take the largest allowed seed as it is
    first = torch.rand(3)
    seed_everything(0)
    assert not torch.equal(first, torch.rand(3))
    torch.manual_seed(2**32)  # why the range stops there: torch's CPU generator keeps only the low 32 bits
    above = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(above, torch.rand(3))
    for seed in (-1, SEED_MAX + 1):
        with pytest.raises(ConfigError, match=r"seed: .* is outside the allowed range 0 to 4294967295"):
            seed_everything(seed)


# 2: tables larger than the memory ---------------------------------------------------------------------------------
def test_an_embedding_size_beyond_the_memory_is_refused_before_allocating(tmp_path, shared, caplog, device_key):
    """embedding.size 10^9 asked torch for ~1 TB: an allocator error with a traceback, or the OOM killer."""
    status, runs = _run(tmp_path, *_coat(shared), "embedding.size=1000000000", f"device={device_key}")
    assert status == 2 and "Traceback" not in caplog.text
    message = read_status(runs[0])["message"]
    assert message.startswith("embedding.size: 1000000000 needs at least 10.6 TiB (585 user and item rows x "
                              "1000000000 x 4 bytes, 5 times: the tables, their gradients, Adam's two moments and a "
                              "forward pass), more than the ")
    assert message.endswith("use a smaller embedding.size") and message in caplog.text
    assert not (runs[0] / "checkpoint.pt").exists() and not (runs[0] / "epochs.csv").exists()


def test_the_memory_check_compares_the_estimate_with_the_device_limit(tmp_path, shared, caplog, monkeypatch,
                                                                      device_key):
    monkeypatch.setattr(gr, "available_memory", lambda device: (585 * 64 * 4 * 5 - 1, "available (test)"))
    status, runs = _run(tmp_path / "small", *_coat(shared), "max.epoch=1", f"device={device_key}")  # one byte short
    assert status == 2
    assert ("embedding.size: 64 needs at least 731.2 KiB (585 user and item rows x 64 x 4 bytes, 5 times: the "
            "tables, their gradients, Adam's two moments and a forward pass), more than the 731.2 KiB of memory "
            "available (test); use a smaller embedding.size") in caplog.text
    monkeypatch.setattr(gr, "available_memory", lambda device: (585 * 64 * 4 * 5, "available (test)"))
    status, runs = _run(tmp_path / "fits", *_coat(shared), "max.epoch=1", f"device={device_key}")
    assert status == 0 and read_status(runs[0])["state"] == "finished"


def test_available_memory_is_a_positive_byte_count_on_this_machine():
    from util.device import available_memory
    free, where = available_memory(torch.device("cpu"))  # CPU: its branch; the CUDA one below, on a GPU
    assert free is not None and free > 0 and where
    if torch.cuda.is_available():
        free, where = available_memory(torch.device("cuda:0"))
        assert free > 0 and "cuda:0" in where


# 3: a disk that refuses the write ----------------------------------------------------------------------------------
class _FailingHandle:
    """A file handle whose writes fail with an OSError of the disk once `after` bytes are written."""

    def __init__(self, handle, code, after):
        self.handle, self.code, self.left = handle, code, after

    def write(self, data):
        if len(data) > self.left:
            raise OSError(self.code, os.strerror(self.code))
        self.left -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)


def _disk_refuses(monkeypatch, code, after=100, only=None):
    """os.fdopen (the atomic writer's) gives handles that fail with `code`; `only(path)` picks the files."""
    real = os.fdopen

    def fdopen(fd, *args, **kw):
        handle = real(fd, *args, **kw)
        path = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        return _FailingHandle(handle, code, after) if only is None or only(path) else handle
    monkeypatch.setattr(os, "fdopen", fdopen)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
@pytest.mark.parametrize("writer", ["torch.save", "text"])
def test_a_refused_write_is_one_line_the_old_file_intact_no_temporary_file(tmp_path, monkeypatch, code, writer):
    """torch.save turns the failed write into its own 'unexpected pos ...' RuntimeError: the writer keeps the OSError."""
    target = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1}, target)
    before = target.read_bytes()
    _disk_refuses(monkeypatch, code)
    big = {"epoch": 2, "w": torch.zeros(10000)}
    with pytest.raises(WriteError) as caught:
        if writer == "torch.save":
            atomic_write(target, lambda handle: torch.save(big, handle))
        else:
            atomic_write_text(target, "x" * 10000)
    assert str(caught.value) == f"cannot write {target}: {os.strerror(code)}"
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, OSError)  # exit 2; callers' except OSError
    assert caught.value.errno == code
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_full_disk_at_a_checkpoint_stops_with_one_line_and_keeps_the_previous_one(tmp_path, shared, monkeypatch,
                                                                                     caplog):
    original = gr.GraphRecommender.save_checkpoint
    full = {"now": False}

    def save(self, epoch, improved):
        full["now"] = epoch == 1  # the disk fills up during the second epoch
        original(self, epoch, improved)
    monkeypatch.setattr(gr.GraphRecommender, "save_checkpoint", save)
    _disk_refuses(monkeypatch, errno.ENOSPC, after=1000,
                  only=lambda path: full["now"] and os.path.basename(path).startswith(".checkpoint.pt."))
    status, runs = _run(tmp_path, *_coat(shared))
    run = runs[0]
    assert status == 2 and "Traceback" not in caplog.text
    message = f"cannot write {run / 'checkpoint.pt'}: No space left on device"
    assert message in caplog.text
    assert read_status(run)["state"] == "failed" and read_status(run)["message"] == message
    assert torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 0  # epoch 1's checkpoint, whole
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert len(_rows(run)) == 2 and not (run / "metrics.json").exists()


def test_a_real_file_size_limit_ends_in_one_line_and_exit_2(tmp_path, shared, device_key):
    """A real OSError from the kernel: RLIMIT_FSIZE makes the checkpoint write fail with EFBIG (SIGXFSZ ignored)."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # the checkpoint of coat is ~0.6 MB
    proc = _main_process(tmp_path, *_coat(shared), f"device={device_key}", preexec_fn=limit)
    _, err = proc.communicate(timeout=300)
    run = next((tmp_path / "results").iterdir())
    assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
    message = f"cannot write {run / 'checkpoint.pt'}: File too large"
    assert message in err and read_status(run)["message"] == message
    assert not (run / "checkpoint.pt").exists() and not [p for p in run.iterdir() if p.name.endswith(".tmp")]


# 4: names too long -------------------------------------------------------------------------------------------------
def _coat_copy(shared, folder):
    folder.mkdir(parents=True)
    for name in ("train.txt", "valid.txt", "test_ood.txt"):
        shutil.copy(shared / "coat" / name, folder / name)
    return folder


def test_a_dataset_folder_name_too_long_for_the_run_folder_is_one_line(tmp_path, shared, caplog):
    """The run folder's name carries the dataset's folder name: 240 characters made mkdir fail (ENAMETOOLONG)."""
    data = _coat_copy(shared, tmp_path / ("d" * 240))
    status, runs = _run(tmp_path, f"training.set={data / 'train.txt'}", f"test.set={data / 'test_ood.txt'}",
                        "data.format=triples", "max.epoch=1")
    assert status == 2 and runs == [] and "Traceback" not in caplog.text
    line = next(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert line.startswith(f"output: the run folder name would be 275 bytes, more than the 247 allowed in "
                           f"{tmp_path / 'results'} (the file system's 255 less 8 for '-N' and '.log'): "
                           f"{tmp_path / 'results' / ('LightGCN-rns-' + 'd' * 240 + '-s2025-')}")
    assert line.endswith("; use a dataset folder (or preset) with a shorter name") and "\n" not in line


def test_a_test_file_name_too_long_for_its_top_k_file_is_refused_before_training(tmp_path, shared, caplog):
    """The top-K file is named after the test file: it used to fail with a traceback after the whole training."""
    test = shutil.copy(shared / "coat" / "test_ood.txt", tmp_path / ("t" * 240 + ".txt"))
    status, runs = _run(tmp_path, *_coat(shared), f"test.set={test}")
    assert status == 2 and "Traceback" not in caplog.text
    message = read_status(runs[0])["message"]
    assert message.startswith(f"test.set: the top-K file of the test file named '{'t' * 240}' would be "
                              f"'LightGCN@rns-{'t' * 240}-top-20items.txt' (269 bytes, a name may have 255 in ")
    assert message.endswith("give it a shorter name (test.set as a mapping name: path)")
    assert not (runs[0] / "epochs.csv").exists()  # nothing trained


def test_a_long_output_folder_works_and_a_long_file_name_still_gets_its_temporary_file(tmp_path, shared, device_key):
    out = tmp_path / ("o" * 240)
    status = main(["-c", str(REPO / "conf" / "LightGCN.yaml"), "--set", f"output={out}", "--set",
                   f"log.dir={tmp_path / 'log'}", "--set", f"device={device_key}", "--set", "negative.sampler=rns",
                   *sum((["--set", o] for o in [*_coat(shared), "max.epoch=1"]), [])])
    assert status == 0 and read_status(next(out.iterdir()))["state"] == "finished"
    name = "n" * 250  # fits, but '.NAME.xxxxxxxx.tmp' (264 bytes) would not: the temporary name is cut instead
    seen = []

    def write(handle):
        seen.extend(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
        handle.write(b"kept")
    atomic_write(tmp_path / name, write)
    assert (tmp_path / name).read_text() == "kept"
    assert len(seen) == 1 and len(seen[0]) == 255 and seen[0].startswith("." + "n" * 241 + ".")
    assert TEMP_NAME.match(seen[0])  # still found (and removed) as a killed writer's temporary file


# 5: Ctrl-C before the first checkpoint ------------------------------------------------------------------------------
def test_ctrl_c_in_the_first_epoch_says_there_is_nothing_to_resume(tmp_path, shared):
    """A real SIGINT to a real process while its first epoch trains (about 10 s here): it used to say 'the last
    finished epoch is checkpointed: resume with ...' with no checkpoint at all."""
    proc = _main_process(tmp_path, *_coat(shared), "batch.size=1", "embedding.size=1024", "max.epoch=1",
                         "device=cpu")  # CPU: the signal is timed by a first epoch of about 10 s on the CPU
    try:
        log_file = wait_for(lambda: next((tmp_path / "results").glob("*/run.log"), None))
        wait_for(lambda: "negative sampler:" in log_file.read_text())  # built: the first epoch is training
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    run = log_file.parent
    assert proc.returncode == 130 and "Traceback" not in err
    assert not (run / "checkpoint.pt").exists()
    assert (f"interrupted by Ctrl-C (SIGINT) before the first epoch finished: nothing is checkpointed, so there is "
            f"nothing to resume; start the run again ({run} can be deleted)") in err
    assert "resume with" not in err
    assert read_status(run)["state"] == "interrupted"
    assert read_status(run)["message"] == "Ctrl-C (SIGINT), before the first epoch finished: nothing to resume"


# 6: a step decay of 0 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decay", ["0", "-0.5"])
def test_a_step_decay_of_zero_or_below_is_a_config_error(tmp_path, caplog, decay):
    """decay 0 set every rate to 0 after the first step: training went on, silently frozen."""
    status, runs = _run(tmp_path, "max.epoch=3", "learning.rate.step=1", f"learning.rate.decay={decay}")
    assert status == 2 and runs == []
    assert f"learning.rate.decay: {float(decay)!r} must be > 0" in caplog.text


def test_a_positive_step_decay_still_scales_the_rate(tmp_path, shared):
    import csv
    status, runs = _run(tmp_path / "decay", *_coat(shared), "learning.rate.step=1", "learning.rate.decay=0.5")
    assert status == 0 and read_status(runs[0])["state"] == "finished"
    status, flat = _run(tmp_path / "flat", *_coat(shared))
    assert status == 0
    decayed, constant = (list(csv.DictReader((r / "epochs.csv").open())) for r in (runs[0], flat[0]))
    # coat is one batch per epoch: epoch 2's loss is taken before its step (at the full rate's parameters),
    # epoch 3's after the first step at half the rate
    assert decayed[1]["bpr"] == constant[1]["bpr"] and decayed[2]["bpr"] != constant[2]["bpr"]


# 7: an absurd learning rate ------------------------------------------------------------------------------------------
def test_losses_far_above_any_real_run_get_one_warning_and_the_run_goes_on(tmp_path, shared, caplog):
    """learning.rate 1e12 trained on BPR losses of 1e23 without a word. The scores stay finite and rank (after one
    Adam step every rate >= 1e4 selects the same epoch with the same metrics on coat), so it is a warning."""
    status, runs = _run(tmp_path / "huge", *_coat(shared), "learning.rate=1e12")
    assert status == 0 and (runs[0] / "metrics.json").is_file()
    warnings = [r.getMessage() for r in caplog.records if "probably far too large" in r.getMessage()]
    assert warnings == ["epoch 2: loss term 'bpr' is 1.49e+22, above 1e+09 (BPR starts at 0.69; the largest term of "
                        "this project's recorded runs is 4.1e+05): learning.rate 1e+12 is probably far too large; "
                        "training goes on (the scores are finite and the metrics measured), but lower learning.rate"]
    caplog.clear()
    status, _ = _run(tmp_path / "usual", *_coat(shared), "learning.rate=0.05")
    assert status == 0 and "probably far too large" not in caplog.text


# 8: temporary files of a killed writer -------------------------------------------------------------------------------
def test_the_temporary_files_of_a_killed_writer_are_removed_on_resume(tmp_path, shared, monkeypatch, caplog):
    run = _cut_after_second_epoch(tmp_path, monkeypatch, _coat(shared))
    # a real writer killed (SIGKILL) in the middle of atomic_write of the run's checkpoint.pt
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from util.io import atomic_write
        def write(handle):
            handle.write(b"half a checkpoint" * 1000)
            handle.flush()
            print("writing", flush=True)
            time.sleep(600)
        atomic_write({str(run / 'checkpoint.pt')!r}, write)
    """)
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.kill()
    writer.wait(timeout=30)
    left = [p for p in run.iterdir() if TEMP_NAME.match(p.name)]
    assert len(left) == 1 and left[0].name.startswith(".checkpoint.pt.") and left[0].stat().st_size == 17000
    keep = [run / "notes.tmp", run / ".notes.tmp"]  # not the atomic writer's names: left alone
    for path in keep:
        path.write_text("mine")
    assert main(["--resume", str(run)]) == 0
    assert f"removed 1 temporary file(s) left by a process killed while writing: {left[0].name} (17000 bytes)" \
        in caplog.text
    assert not left[0].exists() and all(p.read_text() == "mine" for p in keep)
    assert read_status(run)["state"] == "finished" and len(_rows(run)) == 3
    assert remove_stale_temp_files(run) == []  # nothing more to remove
