"""The numba uniform sampler: never a positive, near-uniform, seeded, vectorised shapes; an epoch drawn batch by
batch from its one seed equals its whole-epoch draw."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from util.draws import EpochSampler
from util.seed import seed_everything


def _train(rows, n_users, n_items):
    u, i = zip(*rows)
    m = sp.csr_matrix((np.ones(len(u)), (u, i)), shape=(n_users, n_items))
    m.sort_indices()
    return m


def test_negatives_never_hit_a_training_item():
    rng = np.random.default_rng(0)
    dense = rng.random((50, 40)) < 0.6
    dense[:, 0] = False  # every user has at least one negative
    train = sp.csr_matrix(dense.astype(np.float32))
    train.sort_indices()
    seed_everything(1)
    users, pos, negs = EpochSampler(train, n_negs=5).epoch()
    assert negs.shape == (train.nnz, 5)
    assert not dense[users[:, None], negs].any()
    assert dense[users, pos].all()
    assert sorted(zip(users, pos)) == sorted(zip(*train.nonzero()))


def test_negatives_are_near_uniform_over_allowed_items():
    train = _train([(0, 0), (0, 1)], 1, 10)
    sampler = EpochSampler(train, n_negs=4000)
    seed_everything(3)
    _, _, negs = sampler.epoch()
    counts = np.bincount(negs.ravel(), minlength=10)
    assert counts[:2].sum() == 0
    expected = negs.size / 8
    chi2 = ((counts[2:] - expected) ** 2 / expected).sum()
    assert chi2 < 24.3  # 7 degrees of freedom, p = 0.001


def test_same_seed_same_epoch_and_different_seed_differs():
    train = _train([(u, i) for u in range(20) for i in range(u % 5 + 1)], 20, 30)
    sampler = EpochSampler(train)
    seed_everything(7)
    a = sampler.epoch()
    seed_everything(7)
    b = sampler.epoch()
    seed_everything(8)
    c = sampler.epoch()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[2], c[2])


def test_user_with_every_item_is_an_error_and_bad_count():
    with pytest.raises(ValueError, match="interacted with every item"):
        EpochSampler(_train([(0, 0), (0, 1), (1, 0)], 2, 2))
    with pytest.raises(ValueError, match="n_negs"):
        EpochSampler(_train([(0, 0)], 1, 2), n_negs=0)


@pytest.mark.parametrize("weighted", [False, True])
def test_bitset_and_binary_search_give_the_same_draws(weighted):
    rng = np.random.default_rng(5)
    train = sp.csr_matrix((rng.random((60, 45)) < 0.3).astype(np.float32))
    train.sort_indices()
    weights = rng.random(45) + 0.1 if weighted else None
    fast, slow = EpochSampler(train, 7, weights), EpochSampler(train, 7, weights, bitset_limit=0)
    assert fast.bits.shape == (60, 6) and slow.bits.shape == (0, 0)
    dense = train.toarray() > 0
    unpacked = np.unpackbits(fast.bits, axis=1, bitorder="little")[:, :45].astype(bool)
    assert np.array_equal(unpacked, dense)
    seed_everything(3)
    a = fast.epoch()
    seed_everything(3)
    b = slow.epoch()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not dense[a[0][:, None], a[2]].any()


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("batch", [1, 7, 64, 199])
def test_drawing_batch_by_batch_from_the_epochs_seed_gives_the_whole_epochs_draw(weighted, batch):
    rng = np.random.default_rng(9)
    train = sp.csr_matrix((rng.random((50, 60)) < 0.15).astype(np.float32))
    train.sort_indices()
    sampler = EpochSampler(train, 6, rng.random(60) + 0.1 if weighted else None)
    assert batch == 1 or len(sampler) % batch, "the last batch must be partial"
    seed_everything(4)
    users, pos, negs = sampler.epoch()
    after = sampler.shuffled()[0]  # numba's stream after the epoch's draw
    seed_everything(4)
    users_b, pos_b, seed = sampler.begin()
    parts = [sampler.draw_rows(users_b[s:s + batch], 6, seed, s) for s in range(0, len(users_b), batch)]
    assert np.array_equal(sampler.shuffled()[0], after)  # consumed alike: the seed once, where epoch() takes it
    assert np.array_equal(users_b, users) and np.array_equal(pos_b, pos)
    assert np.array_equal(np.concatenate(parts), negs)
    assert not np.array_equal(sampler.draw_rows(users_b[batch:2 * batch], 6, seed, 0), negs[batch:2 * batch])


def test_draw_rows_rejects_a_negative_offset():
    sampler = EpochSampler(_train([(0, 0), (1, 1)], 2, 5))
    with pytest.raises(ValueError, match="offset"):
        sampler.draw_rows(np.array([0]), 1, np.uint64(1), -1)
