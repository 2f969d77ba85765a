"""The GPU path, checked on the CPU: resume loads onto the CPU and restores CPU random states; no sampler reads
anything back from the device inside the batch loop (counted by the same means a GPU would pay for: item, bool,
int, float, tolist, numpy, nonzero and boolean-mask indexing, with the GPU code paths forced); the GPU variant
of ADAR's reverse jumps equals the CPU one up to rounding; the ids travel to the device as int32 and BPR's
candidates are drawn batch by batch there, the runs' numbers bit-identical to the CPU path's."""
from __future__ import annotations

import collections
import contextlib
import csv
import json
import warnings
from typing import Iterator

import numpy as np
import pytest
import torch

import base.graph_recommender
import util.device
from module.samplers import SAMPLERS
from tests.test_samplers import _recommender, _toy_data
from util.seed import random_state, seed_everything, set_random_state

READBACKS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero")


@contextlib.contextmanager
def counted_readbacks() -> Iterator[collections.Counter]:
    """Count every call that makes a GPU wait for the device (a read-back of a value) while the block runs."""
    counts: collections.Counter = collections.Counter()
    saved = {name: getattr(torch.Tensor, name) for name in READBACKS + ("__getitem__", "__setitem__")}
    saved_nonzero = torch.nonzero

    def counting(name):
        original = saved[name]

        def wrapper(self, *args, **kwargs):
            counts[name] += 1
            return original(self, *args, **kwargs)
        return wrapper

    def masked(index) -> bool:
        parts = index if isinstance(index, tuple) else (index,)
        return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)

    def getitem(self, index):
        if masked(index):
            counts["boolean indexing"] += 1
        return saved["__getitem__"](self, index)

    def setitem(self, index, value):
        if masked(index):
            counts["boolean indexing"] += 1
        return saved["__setitem__"](self, index, value)

    def nonzero(*args, **kwargs):
        counts["torch.nonzero"] += 1
        return saved_nonzero(*args, **kwargs)
    try:
        for name in READBACKS:
            setattr(torch.Tensor, name, counting(name))
        torch.Tensor.__getitem__, torch.Tensor.__setitem__ = getitem, setitem
        torch.nonzero = nonzero
        yield counts
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)
        torch.nonzero = saved_nonzero


def test_the_counter_sees_each_kind_of_read_back():
    x = torch.arange(6.0)
    originals = {name: getattr(torch.Tensor, name) for name in READBACKS + ("__getitem__", "__setitem__")}
    with counted_readbacks() as counts:
        int(x.sum()), x[0].item(), bool(x.any()), x.tolist(), x[x > 2], torch.nonzero(x)
        y = x.clone()
        y[y > 2] = 0
    assert counts == {"__int__": 1, "item": 1, "__bool__": 1, "tolist": 1, "boolean indexing": 2,
                      "torch.nonzero": 1}
    assert all(getattr(torch.Tensor, name) is f for name, f in originals.items())  # restored on leaving


SETTINGS = [(name, {}) for name in sorted(SAMPLERS)] + [
    ("cnsdiff", {"params.cnsdiff.preset": "paper"}), ("adar", {"params.adar.scan": True}),
    ("adar", {"params.adar.gen_mode": "onestep"}), ("dens", {"params.dens.per_layer": False})] + [
    ("rns", {"loss.name": loss, "params.rns.n_negs": 8}) for loss in ("softmax", "bsl", "psl", "advinfonce")] + [
    ("dns_mn", {"loss.name": "psl", "params.psl.activation": "relu"}),
    ("cnsdiff", {"loss.name": "softmax", "params.cnsdiff.n_negs": 8})]


@pytest.mark.parametrize("sampler,keys", SETTINGS, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k.split('.')[-1]}={x}" for k, x in v.items()) or "default")
def test_no_sampler_reads_back_from_the_device_inside_the_batch_loop(tmp_path, monkeypatch, device, device_key,
                                                                      sampler, keys):
    monkeypatch.setattr(util.device, "FORCE_DEVICE_PATHS", True)  # the GPU code paths, also on the CPU
    rec = _recommender(tmp_path, sampler, _toy_data(n_users=40, n_items=50)[0],
                       **{"device": device_key, "fhn.probe": 0, "selection": "test_all4", **keys})
    ids = rec.epoch_ids()  # as train_epoch: the ids on the device (int32), BPR's candidates drawn per batch
    gpu = device.type == "cuda"
    with counted_readbacks() as counts, contextlib.ExitStack() as stack:
        if gpu:  # torch's own detector too: it sees read-backs inside torch's C++ code (a check of an argument)
            caught = stack.enter_context(warnings.catch_warnings(record=True))
            warnings.simplefilter("always")
            torch.cuda.synchronize(device)
            torch.cuda.set_sync_debug_mode("warn")
            stack.callback(torch.cuda.set_sync_debug_mode, "default")
        for epoch in (0, 1):  # a second batch too: nothing is read back once, then cached
            loss, logged = rec.batch_loss(*ids.batch(48 * epoch, 48 * (epoch + 1)), epoch)  # with its draw, widening
            rec.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if gpu:
            torch.cuda.set_sync_debug_mode("default")
            synced = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
            assert not synced, f"{sampler} {keys} synchronises with the device: {synced[:3]}"
    assert torch.isfinite(loss) and logged
    assert dict(counts) == {}, f"{sampler} {keys} reads back from the device in the batch loop: {dict(counts)}"


def test_the_gpu_reverse_jumps_of_adar_equal_the_cpu_ones(tmp_path, monkeypatch):
    rec = _recommender(tmp_path, "adar", _toy_data(n_users=40, n_items=50)[0],
                       **{"fhn.probe": 0, "params.adar.reverse_stride": 7})
    sampler = rec.sampler
    z0, user, noise = torch.randn(30, 8), torch.randn(30, 8), torch.randn(30, 8)
    t = torch.randint(1, sampler.params.steps + 1, (30,))
    t[:3] = torch.tensor([1, sampler.params.steps, 7])  # one step, the most steps, exactly one stride
    on_cpu = sampler.generate(z0, t, user, noise, mode="reverse")
    monkeypatch.setattr(util.device, "FORCE_DEVICE_PATHS", True)
    on_gpu_path = sampler.generate(z0, t, user, noise, mode="reverse")
    torch.testing.assert_close(on_gpu_path, on_cpu, rtol=1e-5, atol=1e-6)
    assert not torch.equal(sampler.generate(z0, t.clamp(max=1) + 20, user, noise, mode="reverse"), on_gpu_path)


# ---- int32 ids and the overlapped draw -------------------------------------------------------------
def test_ids_lie_on_the_device_as_int32_and_reach_the_batch_as_int64_with_the_cpus_candidates(tmp_path, monkeypatch):
    data = _toy_data(n_users=40, n_items=50)[0]
    rec = _recommender(tmp_path, "dns_mn", data, **{"fhn.probe": 0})  # CPU: the host path, compared bit for bit
    seed_everything(5)
    on_cpu = rec.epoch_ids()
    assert on_cpu.negs is not None and on_cpu.draw is None  # the CPU draws the epoch up front, int64 as drawn
    assert on_cpu.users.dtype == on_cpu.pos.dtype == on_cpu.negs.dtype == torch.int64
    monkeypatch.setattr(util.device, "FORCE_DEVICE_PATHS", True)
    seed_everything(5)
    ids = rec.epoch_ids()
    assert ids.negs is None and ids.draw is not None and len(ids) == len(on_cpu)
    assert ids.users.dtype == ids.pos.dtype == torch.int32
    rows, size = len(ids), 64
    assert rows % size, "a last partial batch"
    for start in range(0, rows, size):
        batch, expected = ids.batch(start, start + size), on_cpu.batch(start, start + size)
        assert ids.draw(start, start + size).dtype == torch.int32  # what crosses to the device
        assert [t.dtype for t in batch] == [torch.int64] * 3
        assert all(torch.equal(a, b) for a, b in zip(batch, expected))
    monkeypatch.setattr(base.graph_recommender, "INT32_IDS", data.n_items - 1)  # ids that would not fit stay int64
    wide = rec.epoch_ids()
    assert wide.users.dtype == wide.draw(0, 4).dtype == torch.int64


@pytest.mark.parametrize("keys", [("negative.sampler=dns_mn",),
                                  ("negative.sampler=rns", "loss.name=softmax", "params.rns.n_negs=16")],
                         ids=["dns_mn", "rns-softmax"])
def test_a_run_on_the_gpu_paths_equals_the_cpu_run_bit_for_bit(tmp_path, shared, monkeypatch, keys):
    """Two epochs on coat in 5 batches each (the last partial), the GPU code paths forced (int32 ids, BPR's
    candidates drawn per batch) against the plain CPU run: every number of epochs.csv and metrics.json equal."""
    from tests.test_end_to_end import _run
    common = ("dataset=coat", f"dataset.root={shared}", "max.epoch=2", "batch.size=300", "seed=5", "fhn.probe=0", *keys)
    runs = {}
    for force in (False, True):
        monkeypatch.setattr(util.device, "FORCE_DEVICE_PATHS", force)
        status, folders = _run(tmp_path / str(force), *common)  # CPU: both, compared bit for bit
        assert status == 0 and len(folders) == 1
        rows = list(csv.DictReader((folders[0] / "epochs.csv").open()))
        metrics = json.loads((folders[0] / "metrics.json").read_text())["metrics"]
        runs[force] = [{k: v for k, v in row.items() if not k.endswith("_s")} for row in rows], metrics
    assert len(runs[False][0]) == 2 and runs[True] == runs[False]


# ---- resume on any device --------------------------------------------------------------------
def test_random_states_are_cpu_tensors_of_the_runs_own_device_only():
    state = random_state(torch.device("cpu"))
    assert "cuda" not in state and state["torch"].device.type == "cpu" and state["torch"].dtype == torch.uint8
    torch.manual_seed(1)
    old_format = {**random_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)]}  # every GPU's, before the fix
    expected = torch.rand(3)
    set_random_state(old_format, torch.device("cpu"))  # a CPU run ignores CUDA states it does not use
    assert torch.equal(torch.rand(3), expected)


def test_a_resume_loads_the_checkpoint_onto_the_cpu_whatever_the_runs_device(shared, tmp_path, monkeypatch):
    """A checkpoint loaded onto the run's device put the saved random state there (a CUDA tensor), which
    torch.set_rng_state refuses; loading onto anything but the CPU is simulated by the meta device."""
    from main import main as run_main
    keys = ["dataset=coat", f"dataset.root={shared}", "max.epoch=3", "early_stop.patience=0", "negative.sampler=cnsdiff",
            "fhn.probe=0", "LightGCN.n_layer=1", "seed=11", "device=cpu"]
    sets = lambda extra, out: sum((["--set", k] for k in keys + extra + [f"output={out}", f"log.dir={out}/log"]), [])
    assert run_main(sets([], tmp_path / "whole")) == 0
    assert run_main(sets(["early_stop.halt_after=1"], tmp_path / "halted")) == 0
    halted = next((tmp_path / "halted").glob("*/epochs.csv")).parent
    original_load = torch.load
    where = []

    def load(path, map_location=None, **kwargs):
        where.append(str(map_location))
        state = original_load(path, map_location="cpu", **kwargs)
        if str(map_location) == "cpu":
            return state
        return _to_meta(state)  # anywhere else: the tensors are not on the CPU
    monkeypatch.setattr(torch, "load", load)
    assert run_main(["--resume", str(halted), "--set", "early_stop.halt_after=0"]) == 0
    assert where and set(where) == {"cpu"}
    whole = next((tmp_path / "whole").glob("*/epochs.csv")).parent
    strip = lambda run: [",".join(v for k, v in zip(lines[0].split(","), line.split(",")) if not k.endswith("_s"))
                         for lines in [(run / "epochs.csv").read_text().splitlines()] for line in lines]
    assert strip(halted) == strip(whole)
    assert json.loads((halted / "metrics.json").read_text())["selection"]["epochs_run"] == 3


def _to_meta(value):
    if isinstance(value, torch.Tensor):
        return value.to("meta")
    if isinstance(value, dict):
        return {k: _to_meta(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_meta(v) for v in value)
    return value


# ---- grid cells fix their device -------------------------------------------------------------
def test_grid_cells_name_their_device_and_records_of_auto_match_what_it_resolved_to(tmp_path, caplog):
    from bench import grid as G
    from bench.gridfile import Grid
    from bench.records import record_differences
    from bench.runner import GridRunner
    from tests.conftest import write
    grid = Grid("t", ["coat"], ["valid"], [1], {"m": {"keys": {"negative.sampler": "rns"}}})
    assert GridRunner(grid, tmp_path, tmp_path).cell("coat", "m", {}, 1, {}).keys["device"] == "cpu"
    assert GridRunner(grid, tmp_path, tmp_path, device="cuda:1").cell("coat", "m", {}, 1, {}).keys["device"] == "cuda:1"
    pinned = Grid("t", ["coat"], ["valid"], [1], {"m": {}}, keys={"device": "cuda"})
    assert GridRunner(pinned, tmp_path, tmp_path).cell("coat", "m", {}, 1, {}).keys["device"] == "cuda"  # the file wins
    wanted = {"device": "cpu", "seed": 1}
    assert record_differences({"device": "auto", "device.resolved": "cpu", "seed": 1}, wanted, {}) == []
    assert record_differences({"device": "auto", "device.resolved": "cuda:0", "seed": 1}, wanted, {}) == [
        "device: recorded cuda:0, grid cpu"]
    path = write(tmp_path / "g.yaml", "name: g\ndatasets: [coat]\nprotocols: [valid]\nseeds: [1]\nmethods: {m: {}}\n")
    with caplog.at_level("ERROR"):
        assert G.main([str(path), "--dataset-root", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "auto",
                       "--dry-run"]) == 2
    assert "--device: give the device (cpu, cuda, cuda:N), not auto" in caplog.text
