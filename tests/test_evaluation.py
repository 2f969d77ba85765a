"""Ranking metrics: hand-computed cases and a slow per-user reference with SELFRec's definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from data.interaction import EvalSet
from util.evaluation import EvalBuffers, RankingEvaluator, SharedRanking


def _eval_set(truth_rows, mask_rows, n_users, n_items):
    def csr(rows):
        if not rows:
            return sp.csr_matrix((n_users, n_items), dtype=np.float32)
        u, i = zip(*rows)
        m = sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=(n_users, n_items))
        m.sort_indices()
        return m
    truth = csr(truth_rows)
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    return EvalSet("t", "test", users, truth, csr(mask_rows), {})


def test_hand_computed_case(device):
    # one user, 5 items, scores rank items 4,3,2,1,0; item 4 is masked -> ranking 3,2,1,0
    user = torch.tensor([[1.0]], device=device)
    items = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]], device=device)
    es = _eval_set([(0, 2), (0, 0)], [(0, 4)], 1, 5)
    m = RankingEvaluator(es.users, es.truth, es.mask, [1, 2, 4], device).evaluate(user, items)
    assert m["Recall@1"] == 0 and m["Recall@2"] == 0.5 and m["Recall@4"] == 1.0
    assert m["Precision@2"] == 0.5 and m["Hit Ratio@2"] == 0.5
    idcg2 = 1 + 1 / math.log2(3)
    assert m["NDCG@2"] == pytest.approx((1 / math.log2(3)) / idcg2)
    assert m["NDCG@4"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / idcg2)


def _reference(user_emb, item_emb, es, top_n):
    """SELFRec-style slow evaluation: per user, sort all unmasked items, count hits."""
    scores = user_emb @ item_emb.T
    out = {}
    per_user = {}
    for u in es.users:
        masked = set(es.mask.indices[es.mask.indptr[u]:es.mask.indptr[u + 1]])
        ranked = [i for i in np.argsort(-scores[u], kind="stable") if i not in masked]
        per_user[u] = (ranked, set(es.truth.indices[es.truth.indptr[u]:es.truth.indptr[u + 1]]))
    total = sum(len(t) for _, t in per_user.values())
    for k in top_n:
        hits = {u: len(set(r[:k]) & t) for u, (r, t) in per_user.items()}
        out[f"Hit Ratio@{k}"] = sum(hits.values()) / total
        out[f"Precision@{k}"] = sum(hits.values()) / (len(hits) * k)
        out[f"Recall@{k}"] = np.mean([hits[u] / len(per_user[u][1]) for u in hits])
        ndcg = []
        for u, (r, t) in per_user.items():
            dcg = sum(1 / math.log2(n + 2) for n, i in enumerate(r[:k]) if i in t)
            idcg = sum(1 / math.log2(n + 2) for n in range(min(len(t), k)))
            ndcg.append(dcg / idcg)
        out[f"NDCG@{k}"] = np.mean(ndcg)
    return out


@pytest.mark.parametrize("batch_users", [3, 1000])
def test_matches_slow_reference_on_random_data(device, batch_users):
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 60
    dense = rng.random((n_users, n_items))
    truth = [(u, i) for u, i in zip(*np.nonzero(dense < 0.08))]
    mask = [(u, i) for u, i in zip(*np.nonzero(dense > 0.85))]
    es = _eval_set(truth, mask, n_users, n_items)
    user_emb = rng.standard_normal((n_users, 8)).astype(np.float32)
    item_emb = rng.standard_normal((n_items, 8)).astype(np.float32)
    got = RankingEvaluator(es.users, es.truth, es.mask, [5, 10, 20], device, batch_users).evaluate(
        torch.from_numpy(user_emb).to(device), torch.from_numpy(item_emb).to(device))
    ref = _reference(user_emb, item_emb, es, [5, 10, 20])
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key


def test_shared_buffers_give_the_numbers_of_fresh_memory(device):
    rng = np.random.default_rng(3)
    n_users, n_items = 50, 70
    dense = rng.random((n_users, n_items))
    mask = [(u, i) for u, i in zip(*np.nonzero(dense > 0.85))]
    sets = [_eval_set([(u, i) for u, i in zip(*np.nonzero(dense < bound)) if u < users], mask, n_users, n_items)
            for bound, users in ((0.08, 50), (0.05, 20))]  # two files of different sizes, several batches each
    degree = rng.integers(1, 50, n_items).astype(np.float64)
    evs = [RankingEvaluator(es.users, es.truth, es.mask, [5, 20], device, 7, degree, 0.1) for es in sets]
    u = torch.from_numpy(rng.standard_normal((n_users, 8)).astype(np.float32)).to(device)
    i = torch.from_numpy(rng.standard_normal((n_items, 8)).astype(np.float32)).to(device)
    buffers = EvalBuffers(max(ev.batch_rows for ev in evs), n_items, torch.float32, device)
    for ev in evs:
        for start in range(0, len(ev.users_np), 7):  # each batch's top-k, bit for bit, in the buffer or fresh memory
            end = min(start + 7, len(ev.users_np))
            fresh, reused = ev.topk(u, i, 20, start, end), ev.topk(u, i, 20, start, end, buffers.scores)
            assert torch.equal(fresh[0], reused[0]) and torch.equal(fresh[1], reused[1])
            matrix = ev.topk(u @ i.T, None, 20, start, end), ev.topk(u @ i.T, None, 20, start, end, buffers.scores)
            assert torch.equal(matrix[0][0], matrix[1][0]) and torch.equal(matrix[0][1], matrix[1][1])
        assert ev.evaluate(u, i, buffers) == ev.evaluate(u, i)  # shared across files, or made for the call
        assert ev.evaluate(u @ i.T, None, buffers) == ev.evaluate(u @ i.T, None)
        assert not buffers.truth.any()  # cleared after every batch: a stale mask would count old hits
    wide = (u.double(), i.double())  # float64 embeddings do not fit a float32 buffer: the call makes its own
    assert not buffers.fits(7, n_items, wide[0]) and evs[0].evaluate(*wide, buffers) == evs[0].evaluate(*wide)
    small = EvalBuffers(3, n_items, torch.float32, device)
    assert not small.fits(7, n_items, u) and evs[0].evaluate(u, i, small) == evs[0].evaluate(u, i)
    for bad in (small.scores, buffers.scores[:, :-1]):  # too few rows or items: a clear error, not a resized buffer
        with pytest.raises(ValueError, match="does not hold 7 x 70 scores"):
            evs[0].topk(u, i, 20, 0, 7, bad)
    with pytest.raises(ValueError, match="does not hold"):  # float64 scores are not rounded into a float32 buffer
        evs[0].topk(wide[0] @ wide[1].T, None, 20, 0, 7, buffers.scores)


def test_topk_excludes_masked_items(device):
    es = _eval_set([(0, 1)], [(0, 0), (0, 2)], 1, 4)
    scores, items = RankingEvaluator(es.users, es.truth, es.mask, [2], device).topk(
        torch.ones(1, 1, device=device), torch.tensor([[9.0], [1.0], [8.0], [2.0]], device=device), 2)
    assert items.tolist() == [[3, 1]] and scores.tolist() == [[2.0, 1.0]]


def test_average_recommendation_popularity(device):
    # one user, items ranked 3, 2, 1, 0 by score (item 4 masked); popularity = 10 x item id
    user = torch.tensor([[1.0]], device=device)
    items = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]], device=device)
    es = _eval_set([(0, 2)], [(0, 4)], 1, 5)
    pop = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    m = RankingEvaluator(es.users, es.truth, es.mask, [1, 2], device, 16, pop).evaluate(user, items)
    assert m["ARP@1"] == 30.0 and m["ARP@2"] == 25.0
    assert "ARP@1" not in RankingEvaluator(es.users, es.truth, es.mask, [1], device).evaluate(user, items)


def test_early_stopping_waits_for_every_watched_file():
    from base.selection import ValidSelection
    sel = ValidSelection("Recall@20", patience=2, watch=["ood_valid"])
    series = [(0.1, 0.1), (0.2, 0.1), (0.15, 0.2), (0.15, 0.3), (0.1, 0.2), (0.1, 0.2)]
    stopped = None
    for epoch, (v, o) in enumerate(series):
        sel.update(epoch, {"valid": {"Recall@20": v}, "ood_valid": {"Recall@20": o}})
        if sel.should_stop():
            stopped = epoch
            break
    assert sel.best_epoch == 1  # selection stays on the validation file
    assert stopped == 5  # ood_valid improved up to epoch 3, so it ran two more epochs
    alone = ValidSelection("Recall@20", patience=2)
    for epoch, (v, _) in enumerate(series):
        alone.update(epoch, {"valid": {"Recall@20": v}})
        if alone.should_stop():
            break
    assert epoch == 3


def test_popularity_penalty_reranks_by_score_minus_gamma_log_degree(device):
    user = torch.tensor([[1.0]], device=device)
    items = torch.tensor([[1.0], [0.9]], device=device)  # item 0 scores higher but is far more popular
    es = _eval_set([(0, 1)], [], 1, 2)
    pop = np.array([1000.0, 1.0])
    plain = RankingEvaluator(es.users, es.truth, es.mask, [1], device, 16, pop)
    assert plain.evaluate(user, items)["Recall@1"] == 0.0
    penalised = RankingEvaluator(es.users, es.truth, es.mask, [1], device, 16, pop, pop_penalty=0.1)
    # 1.0 - 0.1 log(1001) = 0.309 < 0.9 - 0.1 log(2) = 0.831
    m = penalised.evaluate(user, items)
    assert m["Recall@1"] == 1.0 and m["ARP@1"] == 1.0


def _nested_files(rng, n_users: int, n_items: int, sizes: tuple[int, int, int]) -> dict[str, EvalSet]:
    """A valid file masking the training items and two test files masking the training and valid items (as
    data/interaction.py builds them), over the first `sizes` users each."""
    dense = rng.random((n_users, n_items))
    train = [(u, i) for u, i in zip(*np.nonzero(dense > 0.8))]
    valid = _eval_set([(u, i) for u, i in zip(*np.nonzero(dense < 0.05)) if u < sizes[0]], train, n_users, n_items)
    both = train + [(u, i) for u, i in zip(*valid.truth.nonzero())]
    tests = {name: _eval_set([(u, i) for u, i in zip(*np.nonzero((dense >= low) & (dense < low + 0.05)))
                              if u >= n_users - size], both, n_users, n_items)
             for name, low, size in (("test_iid", 0.05, sizes[1]), ("test_ood", 0.1, sizes[2]))}
    return {"valid": valid, **tests}


def _embeddings(rng, n_users: int, n_items: int, dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(rng.standard_normal((n, dim)).astype(np.float32)).to(device)
                 for n in (n_users, n_items))


@pytest.mark.parametrize("penalty", [0.0, 0.2])
def test_shared_ranking_gives_each_files_own_numbers(device, penalty):
    rng = np.random.default_rng(5)
    n_users, n_items = 61, 80
    files = _nested_files(rng, n_users, n_items, (45, 52, 30))  # batches of 8: every file's last has 4 or more
    degree = rng.integers(1, 50, n_items).astype(np.float64)
    evs = {name: RankingEvaluator(es.users, es.truth, es.mask, [5, 20], device, 8, degree, penalty)
           for name, es in files.items()}
    shared = SharedRanking(evs)
    # one chain: valid's mask, then the tests' (equal masks share a step); every batch of 4 or more rows
    assert shared.alone == [] and len(shared.chains) == 1
    assert [s.names for s in shared.chains[0].steps] == [["valid"], ["test_iid", "test_ood"]]
    assert len(shared.chains[0].users) == n_users and min(b - a for a, b in shared.chains[0].batches) >= 4
    u, i = _embeddings(rng, n_users, n_items, 8, device)
    for emb in ((u, i), (u @ i.T, None)):  # embeddings, or a closed-form model's score matrix
        assert shared.evaluate(*emb) == {name: ev.evaluate(*emb) for name, ev in evs.items()}
    hits = [m["Recall@20"] for m in shared.evaluate(u, i).values()]
    assert all(0 < h < 1 for h in hits)  # not vacuous: every file has hits and misses


def test_shared_ranking_with_ties_as_a_popularity_ranking_has(device):
    rng = np.random.default_rng(8)
    n_users, n_items = 40, 60
    files = _nested_files(rng, n_users, n_items, (40, 36, 20))
    evs = {name: RankingEvaluator(es.users, es.truth, es.mask, [5, 10], device, 64) for name, es in files.items()}
    ones = torch.ones(n_users, 1, device=device)
    popularity = torch.from_numpy(rng.integers(0, 4, (n_items, 1)).astype(np.float32)).to(device)  # 4 values
    shared = SharedRanking(evs)
    assert shared.alone == [] and len(shared.chains) == 1
    assert shared.evaluate(ones, popularity) == {name: ev.evaluate(ones, popularity) for name, ev in evs.items()}


def test_shared_ranking_keeps_files_that_do_not_nest_apart(device):
    rng = np.random.default_rng(6)
    files = _nested_files(rng, 30, 40, (30, 30, 30))
    other = _eval_set(list(zip(*files["test_ood"].truth.nonzero())), [(0, 1), (5, 7)], 30, 40)  # not a superset
    evs = {name: RankingEvaluator(es.users, es.truth, es.mask, [5, 10], device, 16) for name, es in files.items()}
    evs["other"] = RankingEvaluator(other.users, other.truth, other.mask, [5, 10], device, 16)
    valid = files["valid"]
    evs["deeper"] = RankingEvaluator(valid.users, valid.truth, valid.mask, [5, 30], device, 16)  # another depth
    degree = np.arange(1, 41, dtype=np.float64)
    evs["penalised"] = RankingEvaluator(valid.users, valid.truth, valid.mask, [5, 10], device, 16, degree, 0.1)
    shared = SharedRanking(evs)
    assert shared.alone == []
    assert {frozenset(n for s in c.steps for n in s.names) for c in shared.chains} == {
        frozenset({"other"}), frozenset({"deeper"}), frozenset({"penalised"}),
        frozenset({"valid", "test_iid", "test_ood"})}
    u, i = _embeddings(rng, 30, 40, 4, device)
    assert shared.evaluate(u, i) == {name: ev.evaluate(u, i) for name, ev in evs.items()}
    assert list(shared.evaluate(u, i)) == list(evs)  # in the files' order


def test_a_stored_zero_in_a_mask_masks_its_item_both_ways(device):
    es = _eval_set([(0, 1), (1, 1), (2, 1), (3, 1)], [(0, 0), (1, 0), (2, 0), (3, 0)], 4, 3)
    es.mask.data[0] = 0.0  # stored, value 0: the per-file path masks every stored entry
    ev = RankingEvaluator(es.users, es.truth, es.mask, [1], device, 8)
    u, i = torch.ones(4, 1, device=device), torch.tensor([[3.0], [2.0], [1.0]], device=device)
    assert ev.evaluate(u, i)["Recall@1"] == 1.0  # item 0 masked for every user, item 1 first
    assert SharedRanking({"t": ev}).evaluate(u, i) == {"t": ev.evaluate(u, i)}


@pytest.mark.parametrize("n_users,batch_users,alone", [(2050, 2048, True), (2052, 2048, False), (3, 8, True),
                                                       (20, 6, True), (20, 8, False), (24, 10, False)])
def test_shared_ranking_batches_have_4_or_more_rows(device, n_users, batch_users, alone):
    """A file whose own batches include one of 1-3 users (or with batches under 8) is evaluated alone: MKL computes
    a product of 1-3 rows another way; a shared chain's batches are as even as the size allows."""
    es = _eval_set([(u, 0) for u in range(n_users)], [], n_users, 3)
    shared = SharedRanking({"t": RankingEvaluator(es.users, es.truth, es.mask, [1], device, batch_users)})
    assert shared.alone == (["t"] if alone else [])
    for chain in shared.chains:
        sizes = [end - start for start, end in chain.batches]
        assert sum(sizes) == n_users and min(sizes) >= 4 and max(sizes) <= batch_users and max(sizes) - min(sizes) <= 1
    u = torch.ones(n_users, 1, device=device)
    i = torch.tensor([[1.0], [2.0], [3.0]], device=device)
    assert shared.evaluate(u, i)["t"]["Recall@1"] == 0.0  # item 2 ranks first, the held-out item 0 last


def test_a_score_rows_bits_do_not_depend_on_its_batch_of_4_or_more_rows(device):
    """What the shared ranking's bit-for-bit claim rests on, checked for this machine's BLAS (MKL gives a row of a
    1-3-row product other bits; _shares_rows keeps such batches out of the shared ranking)."""
    if device.type != "cpu":
        pytest.skip("the claim is made for the CPU's BLAS")
    gen = torch.Generator().manual_seed(0)
    users, items = torch.randn(3000, 64, generator=gen), torch.randn(6293, 64, generator=gen)
    full = users[:2048] @ items.T
    for rows in (4, 5, 7, 8, 9, 15, 16, 17, 33, 100, 1023, 2047):
        pick = torch.randperm(2048, generator=gen)[:rows]
        assert torch.equal(users[pick] @ items.T, full[pick]), rows


def test_shared_ranking_on_food_matches_each_file_bit_for_bit(shared, device):
    """Real sizes, food's three files and batches of 2048 users: the same numbers as each file on its own."""
    from data.dataset import load_data
    root = shared / "food"
    data = load_data(root / "train.txt", {"valid": root / "valid_iid.txt", "test_iid": root / "test_iid.txt",
                                          "test_ood": root / "test_ood.txt"},
                     "triples")
    degree = data.item_degree().astype(np.float64)
    evs = {name: RankingEvaluator(es.users, es.truth, es.mask, [10, 20], device, 2048, degree)
           for name, es in data.eval_sets.items()}
    shared_ranking = SharedRanking(evs)
    assert [s.names for s in shared_ranking.chains[0].steps] == [["valid"], ["test_iid", "test_ood"]]
    gen = torch.Generator().manual_seed(0)
    u = (0.1 * torch.randn(data.n_users, 64, generator=gen)).to(device)
    i = (0.1 * torch.randn(data.n_items, 64, generator=gen)).to(device)
    assert shared_ranking.evaluate(u, i) == {name: ev.evaluate(u, i) for name, ev in evs.items()}
