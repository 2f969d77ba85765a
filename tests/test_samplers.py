"""The baseline samplers (PNS, DNS, DNS(M,N), MixGCF, DENS, AHNS) and what every sampler must do."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conf.config import resolve
from data.interaction import Interaction
from data.loader import RawInteractions
from model.graph.LightGCN import LightGCN
from module.samplers import SAMPLERS, get_sampler_class
from module.samplers.base import TrainBatch
from tests.test_end_to_end import _run
from util.device import resolve_device
from util.draws import EpochSampler
from util.seed import seed_everything

REAL_ITEM = ["rns", "pns", "dns", "dns_mn", "ahns"]  # DENS per layer (its default) mixes the layers of per-layer winners


def _toy_data(seed=0, n_users=30, n_items=40, density=0.25):
    """A random train file plus a test file, as an Interaction."""
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density
    dense[:, 0] = True  # every user and every item occurs in training
    dense[0, :] = True
    dense[0, -5:] = False
    test = (~dense) & (rng.random((n_users, n_items)) < 0.2)
    test[0, -1] = True

    def raw(mat, name):
        u, i = np.nonzero(mat)
        return RawInteractions(name, [str(x) for x in u], [str(x) for x in i])
    data = Interaction(raw(dense, "train"), {"test_ood": raw(test, "test")})
    return data, data.train.toarray() > 0  # internal ids


def _recommender(tmp_path, sampler, data, **keys):
    """A built LightGCN on data with this sampler; keys: config keys over these, device=device_key (the fixture's)
    to build it on the tests' device."""
    flat = {"training.set": "t.txt", "test.set": {"test_ood": "o.txt"}, "negative.sampler": sampler, "max.epoch": 3,
            "batch.size": 64, "embedding.size": 8,
            "device": "cpu",  # CPU: the default; a test passes device=device_key, or "cpu" saying why
            "fhn.probe": 64, **keys}
    if sampler == "adar":
        flat.setdefault("params.adar.warmup_epochs", 0)  # generate from the first batch
    cfg = resolve(flat)
    seed_everything(3)
    rec = LightGCN(cfg, data, resolve_device(flat["device"]), tmp_path)
    rec.build()
    return rec


def _one_batch(rec, rows=48):
    """The first rows of an epoch's (users, positives, candidates), on the recommender's device."""
    users, pos, cands = rec.epoch_sampler.epoch()
    sl = slice(0, rows)
    return tuple(torch.from_numpy(a[sl]).to(rec.device) for a in (users, pos, cands))


def _negatives(rec, users, pos, cands, epoch=0):
    user_all, item_all, layers = rec.model.propagate(rec.sampler.needs_layers)
    batch = TrainBatch(users, pos, cands, epoch, rec.config.max_epoch, user_all, item_all, layers)
    return rec.sampler.negatives(batch, user_all[users], item_all[pos]), user_all, item_all


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_avoids_training_items_has_shapes_and_gradients(tmp_path, device_key, name):
    data, dense = _toy_data()
    rec = _recommender(tmp_path, name, data, device=device_key)
    users, pos, cands = _one_batch(rec)
    assert not dense[users.cpu().numpy()[:, None], cands.cpu().numpy()].any()  # candidates are never training items
    out, _, item_all = _negatives(rec, users, pos, cands)
    assert out.embeddings().shape[0] == len(users) and out.embeddings().shape[-1] == 8
    if name in REAL_ITEM:
        items = out.neg_items.reshape(len(users), -1).cpu().numpy()
        assert not dense[users.cpu().numpy()[:, None], items].any()
        picked = item_all[out.neg_items]
        assert torch.allclose(picked, out.embeddings())  # the embedding is the named item's
    else:
        assert out.neg_items is None
        nearest = rec.fhn.nearest(out.embeddings().detach().reshape(len(users), -1, 8), users, item_all)
        assert not dense[users.cpu().numpy()[:, None], nearest.cpu().numpy()].any()
    loss, _ = rec.batch_loss(users, pos, cands, 0)
    rec.optimizer.zero_grad()
    loss.backward()
    assert rec.model.item_emb.grad is not None and rec.model.item_emb.grad.abs().sum() > 0
    assert rec.model.user_emb.grad.abs().sum() > 0


def test_dens_gates_receive_gradients_and_are_optimised(tmp_path, device_key):
    data, _ = _toy_data()
    rec = _recommender(tmp_path, "dens", data, device=device_key)
    gates = list(rec.sampler.parameters())
    assert len(gates) == 8  # four Linear layers, weight and bias
    in_optimizer = {id(p) for g in rec.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for p in gates)
    before = [p.detach().clone() for p in gates]
    loss, logged = rec.batch_loss(*_one_batch(rec), 0)
    assert "dens_gate" in logged and "dens_pos_sep" in logged
    rec.optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gates)
    rec.optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, gates))


@pytest.mark.parametrize("name", ["mixgcf", "cnsdiff"])
def test_synthetic_parts_are_detached_where_the_method_says(tmp_path, device_key, name):
    data, _ = _toy_data()
    rec = _recommender(tmp_path, name, data, device=device_key)
    users, pos, cands = _one_batch(rec)
    user_all, item_all, layers = rec.model.propagate(rec.sampler.needs_layers)
    item_all.retain_grad()
    if layers is not None:
        layers.retain_grad()
    batch = TrainBatch(users, pos, cands, 0, rec.config.max_epoch, user_all, item_all, layers)
    out = rec.sampler.negatives(batch, user_all[users], item_all[pos])
    out.embeddings().sum().backward()
    # gradient on the final item embeddings (MixGCF's flows through the per-layer tensor)
    grad = (item_all.grad if layers is None else layers.grad[:, user_all.shape[0]:].sum(0)).abs().sum(1)
    pos_rows = set(pos.tolist()) - set(cands.reshape(-1).tolist())  # rows reached only as positives
    reached = float(grad[sorted(pos_rows)].sum())
    if name == "mixgcf":  # positive mixing: the negative carries the positive's gradient (as in the reference)
        assert reached > 0
    else:  # CNSDiff: the synthetic part is generated from a detached positive; only the random negative learns
        assert reached == 0 and float(grad[cands[:, 0]].sum()) > 0


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_seeded_negatives_are_identical(tmp_path, device_key, name):
    data, _ = _toy_data()
    outs = []
    for _ in range(2):
        rec = _recommender(tmp_path, name, data, device=device_key)
        seed_everything(11)
        out, _, _ = _negatives(rec, *_one_batch(rec))
        outs.append(out.embeddings().detach())
    assert torch.equal(outs[0], outs[1])


def _batch_with_scores(device, sampler_name, user, pos, cand, **params):
    """A sampler on hand-made embeddings (moved to device): final embeddings only (no graph)."""
    cls = get_sampler_class(sampler_name)
    sampler = cls(cls.Params(**params), 1, cand.shape[0], user.shape[-1], device).to(device)
    user, pos, cand = user.to(device), pos.to(device), cand.to(device)
    b, m = cand.shape[0], cand.shape[1]
    cands = torch.arange(b * m, device=device).reshape(b, m)
    users, pos_ids = (torch.zeros(b, dtype=torch.long, device=device) for _ in range(2))
    batch = TrainBatch(users, pos_ids, cands, 0, 10, user, cand.reshape(b * m, -1))
    return sampler.negatives(batch, user, pos), cands


def test_dns_takes_the_top_candidate_and_dns_mn_the_top_n(device):
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.zeros(2, 2)
    cand = torch.tensor([[[0.1, 5.0], [0.9, 0.0], [0.5, 0.0], [0.7, 0.0]],
                         [[9.0, 0.2], [0.0, -1.0], [0.0, 0.3], [0.0, 0.25]]])
    out, cands = _batch_with_scores(device, "dns", user, pos, cand, n_candidates=4)
    assert out.neg_items.tolist() == [cands[0, 1].item(), cands[1, 2].item()]
    out, cands = _batch_with_scores(device, "dns_mn", user, pos, cand, n_candidates=4, n_negs=2)
    assert out.neg_items.tolist() == [[cands[0, 1].item(), cands[0, 3].item()], [cands[1, 2].item(), cands[1, 3].item()]]
    assert out.embeddings().shape == (2, 2, 2)


@pytest.mark.parametrize("reduce,weight", [("sum", 2.0), ("mean", 1.0)])
def test_dns_mn_trains_on_bpr_summed_or_averaged_over_the_n_negatives(device, reduce, weight):
    from util.loss import bpr_loss
    user, pos = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]])
    cand = torch.tensor([[[0.2, 0.0], [0.9, 0.0], [0.1, 0.0]]])
    out, _ = _batch_with_scores(device, "dns_mn", user, pos, cand, n_candidates=3, n_negs=2, reduce=reduce)
    terms = [torch.nn.functional.softplus(torch.tensor(s - 0.5)).item() for s in (0.9, 0.2)]
    assert out.bpr_weight == weight
    assert (out.bpr_weight * bpr_loss(user, pos, out.embeddings().cpu())).item() == pytest.approx(sum(terms) * weight / 2)


def test_ahns_takes_the_candidate_closest_to_its_target(device):
    user = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    pos = torch.tensor([[1.0, 0.0], [-0.5, 0.0]])  # s_ui = 1 (easy) and -0.5 (hard)
    # targets with alpha 1, beta 0.1, p -2: 0.1 / (s_ui + 1) = 0.05 and 0.2
    cand = torch.tensor([[[0.06, 0.0], [0.19, 0.0], [0.9, 0.0]], [[0.06, 0.0], [0.19, 0.0], [0.9, 0.0]]])
    out, cands = _batch_with_scores(device, "ahns", user, pos, cand, n_candidates=3)
    assert out.neg_items.tolist() == [cands[0, 0].item(), cands[1, 1].item()]
    sampler = get_sampler_class("ahns")(get_sampler_class("ahns").Params(), 1, 1, 2, device).to(device)
    assert sampler.target(torch.tensor([1.0, -0.5], device=device)).tolist() == pytest.approx([0.05, 0.2])


def _tiny_layers(data, rec, n_layer):
    """Per-layer embeddings E_l = A^l E_0 of a recommender's graph, by hand (float64)."""
    adj = data.normalized_adjacency().toarray()
    e0 = torch.cat([rec.model.user_emb, rec.model.item_emb]).detach().double().cpu().numpy()
    layers = [e0]
    for _ in range(n_layer):
        layers.append(adj @ layers[-1])
    return layers


def _free_candidates(data, users, n, device):
    return torch.tensor(np.stack([np.flatnonzero(~np.isin(np.arange(data.n_items), data.train[u].indices))[:n]
                                  for u in users]), device=device)


@pytest.mark.parametrize("query", ["pooled", "layer"])
def test_mixgcf_negative_equals_a_hand_computation_on_a_tiny_graph(tmp_path, device_key, query):
    data, _ = _toy_data(n_users=4, n_items=6, density=0.5)
    rec = _recommender(tmp_path, "mixgcf", data, **{"params.mixgcf.n_candidates": 2, "LightGCN.n_layer": 2,
                                                      "params.mixgcf.query": query, "device": device_key})
    users, pos = torch.tensor([0, 1], device=rec.device), torch.tensor([0, 0], device=rec.device)
    cands = _free_candidates(data, (0, 1), 2, rec.device)
    torch.manual_seed(5)
    out, _, _ = _negatives(rec, users, pos, cands)
    # by hand: per layer the candidate with the best score against the query (the user's pooled embedding, or
    # its layer-l one), mixed with the positive by alpha_l (the same torch draw), averaged over the layers
    layers = _tiny_layers(data, rec, 2)
    pooled = np.mean(layers, axis=0)
    torch.manual_seed(5)
    alpha = torch.rand(2, 3, 1, dtype=torch.float32, device=rec.device).double().cpu().numpy()  # the device's stream
    expected, reg = [], []
    for row, u in enumerate(users.tolist()):
        per_layer = []
        for lay in range(3):
            emb = layers[lay]
            q = pooled[u] if query == "pooled" else emb[u]
            scores = [q @ emb[data.n_users + c] for c in cands[row].tolist()]
            best = cands[row, int(np.argmax(scores))].item()
            a = alpha[row, lay, 0]
            per_layer.append(a * emb[data.n_users + pos[row].item()] + (1 - a) * emb[data.n_users + best])
        expected.append(np.mean(per_layer, axis=0))
        reg.append(per_layer[0])  # the reference regularises the mixed layer-0 vector
    np.testing.assert_allclose(out.embeddings().detach().cpu().numpy(), np.array(expected), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.reg_emb.detach().cpu().numpy(), np.array(reg), rtol=1e-4, atol=1e-6)


def test_mixgcf_pooled_and_layer_queries_pick_different_winners_somewhere(tmp_path, device_key):
    data, _ = _toy_data(seed=1)
    winners = {}
    for query in ("pooled", "layer"):
        rec = _recommender(tmp_path, "mixgcf", data, **{"params.mixgcf.query": query, "LightGCN.n_layer": 3,
                                                          "params.mixgcf.reg": "winner", "device": device_key})
        torch.manual_seed(0)
        out, _, _ = _negatives(rec, *_one_batch(rec))
        assert out.reg_emb is None  # reg winner: the trainer regularises the layer-0 winner's row
        winners[query] = out.embeddings().detach()
    assert not torch.allclose(winners["pooled"], winners["layer"])


def _gates(sampler, u, p, c):
    """The DENS gates by hand (numpy float64): relevant factor of the positive, and of the candidate."""
    def lin(layer, x):
        return x @ layer.weight.detach().double().cpu().numpy().T + layer.bias.detach().double().cpu().numpy()

    def sig(x):
        return 1 / (1 + np.exp(-x))
    p_rel = p * sig(lin(sampler.item_gate, p) + lin(sampler.user_gate, u))
    c_rel = c * sig(lin(sampler.neg_gate, c) + lin(sampler.pos_gate, p_rel))
    return p_rel, c_rel


@pytest.mark.parametrize("epoch", [0, 60])
def test_dens_per_layer_gating_and_selection_equal_a_hand_computation(tmp_path, device_key, epoch):
    data, _ = _toy_data(n_users=4, n_items=8, density=0.4)
    rec = _recommender(tmp_path, "dens", data, **{"params.dens.n_candidates": 3, "LightGCN.n_layer": 2,
                                                    "device": device_key})
    assert rec.sampler.needs_layers
    users, pos = torch.tensor([0, 1, 2], device=rec.device), torch.tensor([0, 0, 0], device=rec.device)
    cands = _free_candidates(data, (0, 1, 2), 3, rec.device)
    out, user_all, _ = _negatives(rec, users, pos, cands, epoch=epoch)
    layers = _tiny_layers(data, rec, 2)
    n_u, w = data.n_users, 1 - min(1.0, epoch / 100.0)
    expected, first, terms = [], [], []
    for row, u in enumerate(users.tolist()):
        per_layer, p_rels, n_rels = [], [], []
        for lay in range(3):
            emb = layers[lay]
            e_u, e_p = emb[u], emb[n_u + pos[row].item()]
            scores = []
            for c in cands[row].tolist():
                _, c_rel = _gates(rec.sampler, e_u, e_p, emb[n_u + c])
                scores.append(e_u @ (w * emb[n_u + c] - c_rel))
            best = cands[row, int(np.argmax(scores))].item()
            per_layer.append(emb[n_u + best])
            p_rel, n_rel = _gates(rec.sampler, e_u, e_p, emb[n_u + best])
            p_rels.append(p_rel)
            n_rels.append(n_rel)
            if lay == 0:
                first.append(best)
        neg, p_rel, n_rel = np.mean(per_layer, 0), np.mean(p_rels, 0), np.mean(n_rels, 0)
        e_u, e_p = np.mean(layers, 0)[u], np.mean(layers, 0)[n_u + pos[row].item()]
        s_pr, s_pi, s_nr, s_ni = e_u @ p_rel, e_u @ (e_p - p_rel), e_u @ n_rel, e_u @ (neg - n_rel)
        terms.append([s_pi - s_pr, s_nr - s_ni, s_nr - s_pr, s_pi - s_ni])
        expected.append(neg)
    np.testing.assert_allclose(out.embeddings().detach().cpu().numpy(), np.array(expected), rtol=1e-4, atol=1e-6)
    assert out.reg_items.tolist() == first and out.neg_items is None
    softplus = np.log1p(np.exp(np.array(terms))).mean(0)
    names = ["dens_pos_sep", "dens_neg_sep", "dens_rel", "dens_irr"]
    np.testing.assert_allclose([out.diagnostics[n].item() for n in names], softplus, rtol=1e-4)
    weight, gate_loss = out.losses["dens_gate"]
    assert weight == 0.3 and gate_loss.item() == pytest.approx(softplus.mean(), rel=1e-4)


@pytest.mark.parametrize("dim,rows", [(64, 300), (32, 101), (128, 37), (16, 55), (48, 300), (64, 129), (64, 257),
                                      (7, 101), (10, 37), (33, 300)])
def test_dens_scores_its_candidates_in_chunks_with_the_bits_of_all_rows_at_once(monkeypatch, device, dim, rows):
    """d a multiple of 16: chunks of 16-128 rows (a last chunk of 1 row x 3 layers joins the one before); other d are
    not chunked (chunks would differ in the last bits)."""
    import types
    import module.samplers.dens as dens
    gen = torch.Generator().manual_seed(dim + rows)
    sampler = dens.DENSSampler(dens.DENSParams(), 50, 300, dim, device)
    layers = torch.randn(3, 350, dim, generator=gen).to(device)
    cands = torch.randint(0, 300, (rows, 5), generator=gen).to(device)
    batch = types.SimpleNamespace(cands=cands, item_layers=lambda items: layers[:, 50 + items])
    users_l = layers[:, torch.randint(0, 50, (rows,), generator=gen).to(device)].transpose(0, 1)
    pos_l = layers[:, 50 + torch.randint(0, 300, (rows,), generator=gen).to(device)].transpose(0, 1)
    with torch.no_grad():  # the formula over all rows at once, as the sampler computed it before the chunks
        cand_l = batch.item_layers(cands).transpose(0, 1)
        _, cand_rel = sampler.factors(users_l, pos_l, cand_l)
        whole = (users_l.unsqueeze(-2) * (0.3 * cand_l - cand_rel)).sum(-1)
    assert whole.shape == (rows, 3, 5)
    for chunk in (16, 32, 128):  # multiples of 16, as CHUNK_ROWS is
        monkeypatch.setattr(dens, "CHUNK_ROWS", chunk)
        assert torch.equal(sampler.layer_scores(batch, users_l, pos_l, 0.3), whole), chunk


def test_dens_without_per_layer_picks_one_real_item_on_the_final_embeddings(tmp_path, device_key):
    data, dense = _toy_data()
    rec = _recommender(tmp_path, "dens", data, **{"params.dens.per_layer": "false", "device": device_key})
    assert not rec.sampler.needs_layers
    users, pos, cands = _one_batch(rec)
    out, _, item_all = _negatives(rec, users, pos, cands)
    assert torch.allclose(item_all[out.neg_items], out.embeddings())
    assert not dense[users.cpu().numpy(), out.neg_items.cpu().numpy()].any()


def test_pns_draws_follow_degree_to_the_exponent(device):
    rng = np.random.default_rng(0)
    n_items = 12
    degree_target = np.arange(1, n_items + 1)
    rows = [(u, i) for i in range(n_items) for u in rng.choice(200, degree_target[i], replace=False)]
    u, i = zip(*rows)
    train = sp.csr_matrix((np.ones(len(u)), (u, i)), shape=(200, n_items))
    train.sort_indices()
    cls = get_sampler_class("pns")
    sampler = cls(cls.Params(exponent=0.75), 200, n_items, 4, device).to(device)
    degree = np.diff(train.tocsc().indptr)
    weights = sampler.candidate_weights(degree)
    np.testing.assert_allclose(weights, degree ** 0.75)
    lonely = np.flatnonzero(np.diff(train.indptr) == 0)  # users with no training item: draws are unbiased
    seed_everything(4)
    draws = EpochSampler(train, 1, weights).draw(np.repeat(lonely, 200)[:20000], 1).ravel()
    counts = np.bincount(draws, minlength=n_items)
    expected = len(draws) * weights / weights.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 31.3  # 11 degrees of freedom, p = 0.001
    uniform = len(draws) / n_items
    assert ((counts - uniform) ** 2 / uniform).sum() > 100  # and clearly not uniform
    seed_everything(4)
    users = np.arange(200)
    got = EpochSampler(train, 1, weights).draw(users, 3)
    assert not train.toarray()[users[:, None], got].any()


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_two_epoch_run_on_coat_writes_its_columns(shared, tmp_path, device_key, name):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", "max.epoch=2",
                        f"negative.sampler={name}", f"device={device_key}")
    assert status == 0
    rows = list(csv.DictReader((runs[0] / "epochs.csv").open()))
    assert len(rows) == 2
    expected = {"bpr", "l2", "fhn_heldout", "fhn_heldout_base", "neg_score", "pos_score", "neg_pop", "fhn_s"}
    expected |= {"dens": {"dens_gate", "dens_pos_sep", "dens_select_w"}, "mixgcf": {"mix_alpha"},
                 "adar": {"adar_denoiser"},
                 "ahns": {"ahns_target"}, "cnsdiff": {"cl", "mix_ratio"}}.get(name, set())
    assert expected <= set(rows[0])
    assert "fhn_true" not in rows[0]  # coat has no ground truth
    for r in rows:
        assert 0 <= float(r["fhn_heldout"]) <= 1 and 0 < float(r["fhn_heldout_base"]) < 1
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["sampler"]["sampler"] == name


@pytest.mark.parametrize("n_items,m", [(50, 4), (300, 2)])  # whole-table product path, then the gather path
def test_table_scores_equal_the_direct_scores(n_items, m):
    from module.samplers.base import table_scores, torch_table_scores
    g = torch.Generator().manual_seed(0)
    user, table = torch.randn(300, 8, generator=g), torch.randn(n_items, 8, generator=g)
    ids = torch.randint(0, n_items, (300, m), generator=g)
    direct = (user.unsqueeze(1) * table[ids]).sum(-1)
    torch.testing.assert_close(table_scores(user, table, ids, chunk=64), direct, rtol=1e-5, atol=1e-5)  # numba
    torch.testing.assert_close(torch_table_scores(user, table, ids, chunk=64), direct, rtol=1e-5, atol=1e-5)
    # float64 goes the torch way and keeps its precision
    exact = table_scores(user.double(), table.double(), ids)
    assert exact.dtype == torch.float64
    torch.testing.assert_close(exact, (user.double().unsqueeze(1) * table.double()[ids]).sum(-1))


def test_gathered_dots_rejects_bad_input():
    from util.scores import gathered_dots
    user, table = np.ones((3, 4), np.float32), np.ones((5, 4), np.float32)
    assert gathered_dots(user, table, np.zeros((3, 0), np.int64)).shape == (3, 0)
    with pytest.raises(ValueError, match="outside"):
        gathered_dots(user, table, np.full((3, 2), 5))
    with pytest.raises(ValueError, match="outside"):
        gathered_dots(user, table, np.full((3, 2), -1))
    with pytest.raises(ValueError, match="do not fit"):
        gathered_dots(user, np.ones((5, 3), np.float32), np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="do not fit"):
        gathered_dots(user, table, np.zeros((2, 2), np.int64))
