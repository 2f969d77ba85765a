"""The false-hard-negative probe: known answers, chance level, ground truth, no effect on training."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from base.fhn import FHNProbe, truth_matrix
from conf.params import RNSParams
from data.synthetic import SyntheticSpec, write
from module.samplers.base import NegativeOutput, NegativeSampler
from tests.test_samplers import _recommender, _toy_data


class HeldOutOracle(NegativeSampler):
    """Always returns one of the user's held-out positives (or, with synthetic=True, its embedding); the table of
    item ids lives on `device`, the probe's."""

    name = "oracle"
    Params = RNSParams

    def __init__(self, table: torch.Tensor, device: torch.device, synthetic: bool = False):
        super().__init__(RNSParams(), 0, 0, 0, device)
        self.table, self.synthetic = table.to(device), synthetic

    def negatives(self, batch, user_emb, pos_emb) -> NegativeOutput:
        items = self.table[batch.users]
        if self.synthetic:  # a vector: the probe must map it back to the item
            return NegativeOutput(batch.item_all[items] * 3.0, items, None)
        return NegativeOutput(batch.item_all[items], items, items)


def _first_heldout(data) -> torch.Tensor:
    truth = data.eval_sets["test_ood"].truth
    first = np.array([truth.indices[truth.indptr[u]] if truth.indptr[u + 1] > truth.indptr[u] else 0
                      for u in range(data.n_users)])
    return torch.from_numpy(first)


@pytest.mark.parametrize("synthetic", [False, True])
def test_a_sampler_returning_held_out_positives_scores_one(tmp_path, device, device_key, synthetic):
    data, _ = _toy_data(n_users=40, n_items=60)
    rec = _recommender(tmp_path, "rns", data, device=device_key)
    keep = np.diff(data.eval_sets["test_ood"].truth.indptr) > 0
    probe = FHNProbe(data, 10_000, 1, 64)
    probe.users, probe.pos = probe.users[keep[probe.users]], probe.pos[keep[probe.users]]
    oracle = HeldOutOracle(_first_heldout(data), device, synthetic)
    out = probe.measure(rec.model, oracle, rec.epoch_sampler, 0, 3, device)
    assert out["fhn_heldout"] == 1.0
    assert 0 < out["fhn_heldout_base"] < 0.5


def test_real_items_beside_a_synthesised_negative_are_probed_too(tmp_path, device, device_key):
    """CNSDiff with a softmax loss: the loss scores the synthesised negative and real extra_items; the probe counts
    all of them. Here the vector maps to a held-out item, the extras are a held-out item and a training item."""
    data, _ = _toy_data(n_users=40, n_items=60)
    rec = _recommender(tmp_path, "rns", data, device=device_key)
    keep = (np.diff(data.eval_sets["test_ood"].truth.indptr) > 0) & (np.diff(data.train.indptr) > 0)
    probe = FHNProbe(data, 10_000, 1, 64)
    probe.users, probe.pos = probe.users[keep[probe.users]], probe.pos[keep[probe.users]]
    heldout = _first_heldout(data).to(device)
    trained = torch.from_numpy(data.train.indices[data.train.indptr[:-1].clip(max=len(data.train.indices) - 1)]).to(device)

    class WithExtras(HeldOutOracle):
        def negatives(self, batch, user_emb, pos_emb) -> NegativeOutput:
            out = super().negatives(batch, user_emb, pos_emb)
            extra = torch.stack([heldout[batch.users], trained[batch.users].long()], dim=1)
            return NegativeOutput(out.neg_emb, out.reg_items, None, table=batch.item_all, extra_items=extra)
    out = probe.measure(rec.model, WithExtras(heldout, device, synthetic=True), rec.epoch_sampler, 0, 3, device)
    assert out["fhn_heldout"] == pytest.approx(2 / 3)


def test_uniform_negatives_hit_held_out_items_at_the_base_rate(tmp_path, device, device_key):
    data, _ = _toy_data(seed=2, n_users=200, n_items=80, density=0.2)
    rec = _recommender(tmp_path, "rns", data, **{"params.rns.n_negs": 20, "device": device_key})
    probe = FHNProbe(data, 100_000, 1, 512)
    out = probe.measure(rec.model, rec.sampler, rec.epoch_sampler, 0, 3, device)
    n = len(probe) * 20
    base = out["fhn_heldout_base"]
    # exact chance level: mean over probe rows of |held-out of u| / |non-training items of u|
    train = data.train.toarray() > 0
    truth = data.eval_sets["test_ood"].truth.toarray() > 0
    expected = np.mean(truth[probe.users].sum(1) / (~train[probe.users]).sum(1))
    assert base == pytest.approx(expected)
    assert abs(out["fhn_heldout"] - base) < 4 * np.sqrt(base * (1 - base) / n)
    assert out["neg_pop"] > 0 and np.isfinite(out["neg_score"]) and np.isfinite(out["pos_score"])


def test_a_cosine_loss_gets_cosine_scores_from_the_probe(tmp_path, device, device_key):
    data, _ = _toy_data(seed=2, n_users=60, n_items=50, density=0.2)
    rec = _recommender(tmp_path, "rns", data, **{"params.rns.n_negs": 5, "device": device_key})
    dot, cos = FHNProbe(data, 200, 1, 64), FHNProbe(data, 200, 1, 64, cosine=True)
    with torch.no_grad():  # propagation is linear: every final embedding is 7x longer, its direction the same
        rec.model.user_emb.mul_(7.0)
        rec.model.item_emb.mul_(7.0)
    first = cos.measure(rec.model, rec.sampler, rec.epoch_sampler, 0, 3, device)
    plain = dot.measure(rec.model, rec.sampler, rec.epoch_sampler, 0, 3, device)
    with torch.no_grad():
        rec.model.user_emb.mul_(3.0)
        rec.model.item_emb.mul_(3.0)
    again = cos.measure(rec.model, rec.sampler, rec.epoch_sampler, 0, 3, device)
    assert again["pos_score"] == pytest.approx(first["pos_score"], rel=1e-5)
    assert again["neg_score"] == pytest.approx(first["neg_score"], rel=1e-5)
    assert abs(first["pos_score"]) <= 1 and abs(first["neg_score"]) <= 1
    assert plain["pos_score"] != pytest.approx(first["pos_score"], rel=1e-3)


def test_ground_truth_columns_on_the_synthetic_dataset(tmp_path, device, device_key):
    write(SyntheticSpec(n_users=60, n_items=50, exposures_biased=30, exposures_ood=20, like_rate=0.2), tmp_path / "syn")
    from conf.config import resolve
    from data.dataset import load_data
    syn = tmp_path / "syn"
    cfg = resolve({"training.set": str(syn / "train.txt"), "valid.set": str(syn / "valid_iid.txt"),
                   "test.set": {"test_ood": str(syn / "test_ood.txt")}, "device": device_key, "data.format": "triples"})
    data = load_data(**cfg.data_arguments())
    truth = truth_matrix(data, tmp_path / "syn")
    assert truth is not None and truth.shape == (data.n_users, data.n_items)
    liked = np.unpackbits(np.load(tmp_path / "syn" / "truth.npz")["liked"], axis=1, count=50).astype(bool)
    u, i = 5, 7
    assert truth[u, i] == liked[int(data.user_ids[u]), int(data.item_ids[i])]
    rec = _recommender(tmp_path, "rns", data, **{"params.rns.n_negs": 10, "device": device_key})
    probe = FHNProbe(data, 500, 1, 128, truth)
    out = probe.measure(rec.model, rec.sampler, rec.epoch_sampler, 0, 3, device)
    assert 0 < out["fhn_true_base"] < 1
    n = len(probe) * 10
    assert abs(out["fhn_true"] - out["fhn_true_base"]) < 4 * np.sqrt(out["fhn_true_base"] / n)
    # a sampler that returns a truly liked non-training item scores 1
    free_liked = truth.toarray() & ~(data.train.toarray() > 0)
    table = torch.from_numpy(free_liked.argmax(1))
    keep = free_liked.any(1)
    probe.users, probe.pos = probe.users[keep[probe.users]], probe.pos[keep[probe.users]]
    out = probe.measure(rec.model, HeldOutOracle(table, device), rec.epoch_sampler, 0, 3, device)
    assert out["fhn_true"] == 1.0


@pytest.mark.parametrize("name", ["dns", "cnsdiff", "mixgcf"])
def test_the_probe_does_not_change_the_training_trajectory(tmp_path, name):
    data, _ = _toy_data(seed=4, n_users=50, n_items=40)
    rows = []
    for probe in (0, 64):
        rec = _recommender(tmp_path / str(probe), name, data, **{"fhn.probe": probe, "selection": "test_all4",
                                                                 "device": "cpu"},  # CPU: trainings equal bit for bit
                           **({"params.cnsdiff.preset": "paper"} if name == "cnsdiff" else {}))
        rec.train()
        rows.append([{k: v for k, v in r.items() if "/" in k} for r in rec.epoch_rows])
        assert ("fhn_heldout" in rec.epoch_rows[0]) == (probe > 0)
    assert rows[0] == rows[1]
