"""Baseline fidelity: the reference splits, the MF backbone, the references' protocol and metric formulas."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from base.selection import ReferenceSelection
from data import download as dl
from data.presets import REFERENCE_SPLITS, get_preset
from module.samplers import SAMPLERS
from tests.test_end_to_end import _run
from tests.test_evaluation import _eval_set
from util.evaluation import RankingEvaluator

REFERENCE = sorted(REFERENCE_SPLITS)


@pytest.mark.parametrize("name", REFERENCE)
def test_each_reference_split_downloads_from_a_mirror_with_its_checksums(shared, tmp_path, name):
    preset = get_preset(name)
    assert preset.valid is None and preset.tests == {"test": "test.txt"} and preset.format == "adjacency"
    assert all(r.refs[0] in {"4c32d720efb040f316d1f14c39554abf93ecfd25", "735b0a75ccedbac6b0578fcc5830bebd3a7e88ac"}
               for r in preset.sources)
    paths = dl.download(name, tmp_path, mirror=str(shared))
    assert [p.name for p in paths] == ["train.txt", "test.txt"]
    for remote, path in zip(preset.sources, paths):
        assert dl.sha256_file(path) == remote.sha256


def test_a_reference_split_with_a_changed_byte_is_refused(shared, tmp_path):
    mirror = tmp_path / "mirror" / "dens-toy"
    mirror.mkdir(parents=True)
    (mirror / "train.txt").write_bytes((shared / "dens-toy" / "train.txt").read_bytes().replace(b"0 0 ", b"0 1 ", 1))
    (mirror / "test.txt").write_bytes((shared / "dens-toy" / "test.txt").read_bytes())
    with pytest.raises(dl.ChecksumError, match="train.txt"):
        dl.download("dens-toy", tmp_path / "out", mirror=str(tmp_path / "mirror"))
    assert not (tmp_path / "out" / "dens-toy" / "train.txt").exists()


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_mf_runs_every_sampler_for_an_epoch_on_dens_toy(shared, tmp_path, device_key, sampler):
    status, runs = _run(tmp_path, "dataset=dens-toy", f"dataset.root={shared}", "model.name=MF", "max.epoch=1",
                        f"negative.sampler={sampler}", "selection=reference", "embedding.size=16",
                        "fhn.probe=256", "params.adar.warmup_epochs=0" if sampler == "adar" else "seed=2025",
                        f"device={device_key}")
    assert status == 0
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["model"] == "MF" and metrics["selection"]["rule"] == "reference"
    assert metrics["selection"]["file"] == "test" and metrics["metrics"]["test"]["Recall@20"] > 0
    assert (runs[0] / f"MF@{sampler}-test-top-20items.txt").is_file()


class _Curve:
    """A recommender whose training does nothing and whose evaluation returns a constructed curve."""

    def __init__(self, rec, curve):
        self.evaluated, self.curve = [], curve
        rec.train_epoch = lambda epoch: {"loss": 0.5, "sample_s": 0.0, "train_s": 0.0}
        rec.fhn = None
        rec.save_checkpoint = lambda epoch, improved: None

        def evaluate_all():
            epoch = len(rec.epoch_rows)
            self.evaluated.append(epoch + 1)
            value = curve(epoch + 1)
            m = {"Recall@20": value, "NDCG@20": value / 2, "Recall@10": value, "NDCG@10": value / 2}
            return {"test": m}, (rec.model.user_emb.detach(), rec.model.item_emb.detach())
        rec.evaluate_all = evaluate_all


def test_the_reference_protocol_evaluates_every_5_epochs_and_stops_after_10_checks(tmp_path, device_key):
    from tests.test_samplers import _recommender, _toy_data
    data, _ = _toy_data()
    data.eval_sets = {"test": data.eval_sets["test_ood"]}
    rec = _recommender(tmp_path, "rns", data, **{"test.set": {"test": "o.txt"}, "selection": "reference",
                                                  "eval.every": 5, "early_stop.patience": 10, "max.epoch": 1000,
                                                  "device": device_key})
    # rises until epoch 41, ties at 51 (a tie moves the choice later), then falls
    curve = {1: 0.1, 6: 0.2, 11: 0.3, 16: 0.3, 21: 0.4, 26: 0.5, 31: 0.55, 36: 0.6, 41: 0.7, 46: 0.65, 51: 0.7}
    stub = _Curve(rec, lambda e: curve.get(e, 0.5))
    rec.evaluators = {"test": None}
    rec.train()
    assert stub.evaluated[:4] == [1, 6, 11, 16] and all((e - 1) % 5 == 0 for e in stub.evaluated)
    assert rec.best_epoch + 1 == 51  # the last evaluation at least as good as the best
    assert stub.evaluated[-1] == 51 + 10 * 5 and len(rec.epoch_rows) == 101  # 10 checks without a better one
    assert rec.stopped_early
    rows = rec.epoch_rows
    assert "test/Recall@20" in rows[0] and "test/Recall@20" not in rows[1] and rows[1]["eval_s"] == 0


def test_reference_selection_counts_checks_not_epochs():
    sel = ReferenceSelection("test", "Recall@20", patience=2)
    assert sel.update(0, {"test": {"Recall@20": 0.2}}) and not sel.should_stop()
    assert not sel.update(5, {"test": {"Recall@20": 0.1}}) and not sel.should_stop()
    assert sel.update(10, {"test": {"Recall@20": 0.2}}) and sel.best_epoch == 10  # tie: later epoch
    assert not sel.update(15, {"test": {"Recall@20": 0.19}})
    assert not sel.update(20, {"test": {"Recall@20": 0.0}}) and sel.should_stop()


def _reference_metrics(ranking, truth, k):
    """The references' utils/metrics.py, written out: recall = hits in the top k / all test items, NDCG = DCG of
    binary hits / DCG of min(|test|, k) ones, both with discount 1 / log2(rank + 1), averaged over test users."""
    recalls, ndcgs = [], []
    for items, held in zip(ranking, truth):
        r = np.array([1.0 if i in held else 0.0 for i in items[:k]])
        recalls.append(r.sum() / len(held))
        dcg = float(np.sum(r / np.log2(np.arange(2, r.size + 2))))
        ideal = np.array([1.0] * min(len(held), k) + [0.0] * (k - min(len(held), k)))
        ndcgs.append(dcg / float(np.sum(ideal / np.log2(np.arange(2, ideal.size + 2)))))
    return float(np.mean(recalls)), float(np.mean(ndcgs))


def test_our_recall_and_ndcg_equal_the_reference_formulas_on_a_constructed_ranking(device):
    rng = np.random.default_rng(7)
    n_users, n_items, k = 6, 30, 20
    scores = rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(np.float64)
    train = {u: set(rng.choice(n_items, 3, replace=False).tolist()) for u in range(n_users)}
    truth = {}
    for u in range(n_users):  # 1 to 25 held-out items: fewer and more than k
        free = [i for i in range(n_items) if i not in train[u]]
        truth[u] = set(rng.choice(free, [1, 2, 5, 12, 21, 25][u], replace=False).tolist())
    es = _eval_set([(u, i) for u in truth for i in truth[u]], [(u, i) for u in train for i in train[u]],
                   n_users, n_items)
    user = torch.eye(n_users, dtype=torch.float64, device=device)
    items = torch.from_numpy(scores.T.copy()).to(device)  # item i's score for user u is scores[u, i]
    ours = RankingEvaluator(es.users, es.truth, es.mask, [k], device).evaluate(user, items)
    ranking = [[i for i in np.argsort(-scores[u]) if i not in train[u]] for u in range(n_users)]
    recall, ndcg = _reference_metrics(ranking, [truth[u] for u in range(n_users)], k)
    assert ours["Recall@20"] == pytest.approx(recall, rel=1e-12)
    assert ours["NDCG@20"] == pytest.approx(ndcg, rel=1e-12)
    assert 0 < recall < 1 and not math.isclose(recall, ndcg)


def test_reg_form_weight_decay_moves_every_row_and_the_step_decay_scales_the_rate(tmp_path, device_key):
    from tests.test_samplers import _one_batch, _recommender, _toy_data
    data, _ = _toy_data()
    rec = _recommender(tmp_path, "rns", data, **{"reg.form": "weight_decay", "reg.lambda": 0.5,
                                                  "learning.rate.step": 2, "learning.rate.decay": 0.5,
                                                  "device": device_key})
    assert rec.optimizer.param_groups[0]["weight_decay"] == 0.5
    loss, logged = rec.batch_loss(*_one_batch(rec, rows=4), 0)
    assert logged["l2"].item() == 0.0  # Adam applies it
    for epoch, rate in [(0, 0.01), (1, 0.01), (2, 0.005), (5, 0.0025)]:
        rec.set_learning_rate(epoch)
        assert rec.optimizer.param_groups[0]["lr"] == pytest.approx(rate)


def test_bad_fidelity_keys_are_clear_errors(tmp_path):
    from conf.config import resolve
    from util.typing_coerce import ConfigError
    base = {"training.set": "t.txt", "test.set": {"test": "o.txt"}}
    for key, value, message in [("eval.every", 0, "below the minimum"),
                                ("reg.form", "l2", "not one of"), ("params.mixgcf.query", "mean", "pooled or layer"),
                                ("params.dns_mn.reduce", "max", "sum or mean"), ("selection", "best", "not one of")]:
        with pytest.raises(ConfigError, match=message):
            resolve({**base, "negative.sampler": key.split(".")[1] if key.startswith("params.") else "rns",
                     key: value})


def test_an_unknown_model_is_one_line_and_exit_2(tmp_path, caplog):
    status, _ = _run(tmp_path, "model.name=FM", "max.epoch=1")
    assert status == 2
    assert "model.name: unknown model 'FM'" in caplog.text and "valid: LightGCN, MF" in caplog.text


def test_the_reference_codes_printed_tables_are_read_with_its_rule():
    from bench.fidelity import reference_log_choice
    text = """+-------+-----+
| Epoch | training time(s) | tesing time(s) | Loss | recall | ndcg | precision | hit_ratio |
|   0   | 1.0 | 2.0 | 21.4 | [0.0100] | [0.0050] | [0.002] | [0.03] |
using time 14.5141s, training loss at epoch 1: 20.5553
|   5   | 1.0 | 2.0 | 11.4 | [0.0300] | [0.0150] | [0.002] | [0.03] |
|   10  | 1.0 | 2.0 | 9.4 | [0.0300] | [0.0140] | [0.002] | [0.03] |
|   15  | 1.0 | 2.0 | 9.0 | [0.0290] | [0.0160] | [0.002] | [0.03] |
early stopping at 15, recall@20:0.0300"""
    assert reference_log_choice(text) == (10, 0.03, 0.014)  # a tie moves the choice later; NDCG from its row
    assert reference_log_choice("no table here") is None


def test_the_fidelity_table_on_constructed_runs(tmp_path):
    from bench.fidelity import REFERENCE, main as fidelity_main
    results = tmp_path / "grid"
    cells = []
    values = {("dens-toy", "rns"): [0.0444, 0.0448], ("dens-toy", "dns"): [0.0400, 0.0410],
              ("ahns-tool", "mf32-rns"): [0.05, 0.05], ("ahns-tool", "mf32-dns_mn"): [0.06, 0.06]}
    for (dataset, method), recalls in values.items():
        for seed, recall in zip((1, 2), recalls):
            run = f"runs/{dataset}/{method}/default/s{seed}/r"
            (results / run).mkdir(parents=True)
            (results / run / "metrics.json").write_text(json.dumps({
                "model": "MF" if method.startswith("mf") else "LightGCN",
                "selection": {"file": "test", "epoch": 11, "epochs_run": 61},
                "metrics": {"test": {"Recall@20": recall, "NDCG@20": recall / 2}}}))
            (results / run / "config.json").write_text(json.dumps({"commit": "abc1234"}))
            cells.append({"dataset": dataset, "method": method, "seed": seed, "state": "finished", "run": run})
    (results / "grid.json").write_text(json.dumps({"grid": "fidelity", "cells": cells, "choices": {}}))
    own = tmp_path / "own"
    own.mkdir()
    (own / "dens-toy-rns-s1.log").write_text("| 5 | 1 | 1 | 1 | [0.0450] | [0.0230] | [0] | [0] |\nearly stopping at 55\n")
    (own / "dens-toy-dns-s1.log").write_text("| 5 | 1 | 1 | 1 | [0.0450] | [0.0230] | [0] | [0] |\n")  # unfinished: left out
    assert fidelity_main([str(results), "--out", str(tmp_path / "out"), "--reference-runs", str(own)]) == 0
    text = (tmp_path / "out" / "fidelity.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| dens-toy | rns |"))
    assert "0.0446 ± 0.0003 (2)" in row and "1.004" in row and "beauty" not in row and "toy-rns.ipynb" in row
    dns = next(line for line in text.splitlines() if line.startswith("| dens-toy | dns |"))
    assert "**miss**" in dns  # 0.0405 / 0.0477 = 0.85
    assert "| dens-toy | rns > dns |" not in text  # the order needs every logged method of the dataset
    assert "| ahns-tool | mf32-dns_mn | mf32-rns | 0.0600 | 0.0500 | +20.0% |" in text
    own_rows = [line for line in text.splitlines() if line.startswith("| dens-toy |") and "0.0450" in line]
    assert len(own_rows) == 1 and "rns" in own_rows[0]
    logged = REFERENCE[("dens-toy", "rns")].recall  # the reference code's own value against its log
    assert own_rows[0].endswith(f"| {0.0450 / logged:.3f} |") and abs(0.0450 / logged - 1) < 0.05
    assert fidelity_main([str(tmp_path / "nothing")]) == 2
    assert fidelity_main([str(results), "--reference-runs", str(tmp_path / "absent")]) == 2


@pytest.mark.parametrize("sampler,form", [("rns", "lightgcn"), ("dns", "lightgcn"), ("adar", "lightgcn"),
                                          ("cnsdiff", "selfrec")])
def test_reg_form_auto_is_the_samplers_reference_form(sampler, form):
    from conf.config import resolve
    base = {"training.set": "t.txt", "test.set": {"test": "o.txt"}, "negative.sampler": sampler}
    cfg = resolve(base)
    assert cfg.reg_form == form and cfg.to_dict()["reg.form"] == form and cfg.source.get("reg.form") is None
    assert resolve({**base, "reg.form": "selfrec"}).reg_form == "selfrec"  # an explicit form stays
