"""CNSDiff inside the trainer: presets end to end, denoiser training on/off, seeded identity."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from data.dataset import load_data
from model.graph.LightGCN import LightGCN
from tests.test_end_to_end import _run
from conf.config import resolve
from util.device import resolve_device
from util.seed import seed_everything


def _recommender(shared, tmp_path, preset, device_key):
    cfg = resolve({"dataset": "coat", "dataset.root": str(shared), "negative.sampler": "cnsdiff",
                   "params.cnsdiff.preset": preset, "max.epoch": 2, "device": device_key})
    seed_everything(1)
    rec = LightGCN(cfg, load_data(**cfg.data_arguments()), resolve_device(device_key), tmp_path)
    rec.build()
    return rec


@pytest.mark.parametrize("preset,changes", [("official", False), ("paper", True)])
def test_denoiser_trained_only_in_paper_preset(shared, tmp_path, device_key, preset, changes):
    rec = _recommender(shared, tmp_path, preset, device_key)
    before = {k: v.clone() for k, v in rec.sampler.denoiser.state_dict().items()}
    item_before = rec.model.item_emb.detach().clone()
    rec.train_epoch(0)
    after = rec.sampler.denoiser.state_dict()
    moved = any(not torch.equal(before[k], after[k]) for k in before)
    assert moved is changes
    assert not torch.equal(item_before, rec.model.item_emb)


@pytest.mark.parametrize("preset,rule", [("official", "test_all4"), ("paper", "valid")])
def test_two_epoch_runs_of_both_presets_on_coat(shared, tmp_path, device_key, preset, rule):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", "max.epoch=2",
                        "negative.sampler=cnsdiff", f"params.preset={preset}", f"device={device_key}")
    assert status == 0
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["selection"]["rule"] == rule
    assert metrics["sampler"]["preset"] == preset and "dropout_at_generation" in metrics["sampler"]
    rows = list(csv.DictReader((runs[0] / "epochs.csv").open()))
    for column in ("bpr", "cl", "diffusion", "diff_mse", "causal_kl", "l2", "mix_ratio", "score_synth",
                   "score_pos", "score_rand", "win_s10", "win_s14", "win_s18"):
        assert column in rows[0], column
    log = next((tmp_path / "log").iterdir()).read_text()
    assert f"'preset': '{preset}'" in log


@pytest.mark.parametrize("preset", ["official", "paper"])
def test_two_epoch_runs_on_the_synthetic_default(tmp_path, device_key, preset):
    status, runs = _run(tmp_path, f"dataset.root={tmp_path / 'data'}", "max.epoch=2",
                        "negative.sampler=cnsdiff", f"params.cnsdiff.preset={preset}", f"device={device_key}")
    assert status == 0
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"valid", "test_iid", "test_ood"}


def test_seeded_cnsdiff_runs_are_identical_and_reweight_off_runs(shared, tmp_path):
    common = ["dataset=coat", f"dataset.root={shared}", "max.epoch=2", "negative.sampler=cnsdiff",
              "device=cpu"]  # CPU: two runs compared bit for bit
    _run(tmp_path / "a", *common)
    _run(tmp_path / "b", *common)
    status, _ = _run(tmp_path / "c", *common, "params.reweight=false")
    read = [json.loads(next((tmp_path / x / "results").iterdir()).joinpath("metrics.json").read_text())
            for x in "abc"]
    assert read[0]["metrics"] == read[1]["metrics"]
    assert status == 0 and read[2]["sampler"]["reweight"] is False
