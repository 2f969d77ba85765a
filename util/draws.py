"""Negative candidates in numba: uniform, or weighted by a per-item distribution (e.g. degree^0.75),
the user's training items rejected, no per-row Python loop.

Random numbers: each call takes one 64-bit seed from numba's own stream (so `seed_everything` and a
saved numba state reproduce it) and gives row r its own counter-based splitmix64 stream derived
from that seed and r. Rows are therefore independent of each other and of the thread that draws
them: the draw is parallel over rows and still bit-identical for any number of threads. The same holds across
calls: with one seed taken for an epoch (EpochSampler.begin), draw_rows gives any slice of the epoch's rows the
streams they have in the whole-epoch draw (row offset), so drawing batch by batch gives the same candidates."""
from __future__ import annotations

from typing import Optional

import numba
import numpy as np
import scipy.sparse as sp

# numba's OpenMP layer keeps its idle workers spinning after a parallel region, which took about half a
# core from torch between draws; the workqueue layer's workers sleep. (Set before any parallel launch.)
numba.config.THREADING_LAYER = "workqueue"

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ROW = np.uint64(0xD1B54A32D192ED03)


@numba.njit(cache=True)
def _contains(indices: np.ndarray, start: int, end: int, value: int) -> bool:
    """Binary search for value in the sorted slice indices[start:end]."""
    lo, hi = start, end
    while lo < hi:
        mid = (lo + hi) // 2
        v = indices[mid]
        if v == value:
            return True
        if v < value:
            lo = mid + 1
        else:
            hi = mid
    return False


@numba.njit(cache=True)
def _splitmix(z: np.uint64) -> np.uint64:
    """The splitmix64 output function: a well-mixed 64-bit value of a counter."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True)
def _call_seed() -> np.uint64:
    """One 64-bit seed from numba's stream (two 31-bit draws and a few bits more)."""
    hi = np.uint64(np.random.randint(0, 2**31))
    lo = np.uint64(np.random.randint(0, 2**31))
    top = np.uint64(np.random.randint(0, 4))
    return (top << np.uint64(62)) | (hi << np.uint64(31)) | lo


@numba.njit(cache=True, parallel=True)
def _draw(users: np.ndarray, indptr: np.ndarray, indices: np.ndarray, n_items: int, cdf: np.ndarray,
          n_negs: int, seed: np.uint64, bits: np.ndarray, offset: int) -> np.ndarray:
    """For each user row, n_negs items outside the user's training set: uniform when cdf is empty,
    else with P(j) proportional to the increments of cdf (the cumulative item weights). The training
    set is looked up in `bits` (one bit per user and item) when it is not empty, else by binary search:
    the same answers, so the same draws. Row r draws from the stream of row r + offset of `seed`."""
    out = np.empty((users.shape[0], n_negs), dtype=np.int64)
    weighted = cdf.shape[0] > 0
    use_bits = bits.shape[0] > 0
    total = cdf[-1] if weighted else 0.0
    for r in numba.prange(users.shape[0]):
        u = users[r]
        start, end = indptr[u], indptr[u + 1]
        state = seed + np.uint64(r + offset) * _ROW
        for k in range(n_negs):
            while True:
                state += _GOLDEN
                z = _splitmix(state)
                if weighted:
                    x = np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0) * total
                    j = np.searchsorted(cdf, x, side="right")
                    if j >= cdf.shape[0]:
                        continue
                else:
                    j = np.int64(((z >> np.uint64(32)) * np.uint64(n_items)) >> np.uint64(32))
                if use_bits:
                    if (bits[u, j >> 3] >> (j & 7)) & 1 == 0:
                        break
                elif not _contains(indices, start, end, j):
                    break
            out[r, k] = j
    return out


@numba.njit(cache=True)
def _permutation(n: int) -> np.ndarray:
    return np.random.permutation(n)


def set_draw_threads(n: int) -> None:
    """Use at most n threads for the parallel draws (util.device.set_threads sets torch's too)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


class EpochSampler:
    """Shuffles the training pairs and draws their negative candidates, one epoch at a time.

    weights: unnormalised draw probability per item (None = uniform); every user must have at least
    one non-training item of positive weight. bitset_limit: bytes allowed for the users x items bitset
    of the rejection test (above it, binary search in the CSR rows)."""

    def __init__(self, train: sp.csr_matrix, n_negs: int = 1, weights: Optional[np.ndarray] = None,
                 bitset_limit: int = 256 * 2**20):
        if n_negs < 1:
            raise ValueError(f"n_negs must be >= 1, got {n_negs}")
        self.indptr = train.indptr.astype(np.int64)
        self.indices = train.indices.astype(np.int64)
        self.n_items = int(train.shape[1])
        degree = np.diff(self.indptr)
        full = np.flatnonzero(degree >= self.n_items)
        if len(full):
            raise ValueError(f"user(s) {full[:5].tolist()} interacted with every item: no negative exists for them")
        self.users = np.repeat(np.arange(train.shape[0], dtype=np.int64), degree)
        # one bit per (user, item) makes the rejection test O(1); only where it is small
        n_bytes = (self.n_items + 7) // 8
        self.bits = np.zeros((0, 0), dtype=np.uint8)
        if train.shape[0] * n_bytes <= bitset_limit:
            self.bits = np.zeros((train.shape[0], n_bytes), dtype=np.uint8)
            np.bitwise_or.at(self.bits, (self.users, self.indices >> 3),
                             (np.uint8(1) << (self.indices & 7).astype(np.uint8)))
        self.items = self.indices.copy()
        self.n_negs = n_negs
        self.cdf = np.zeros(0, dtype=np.float64)
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            if weights.shape != (self.n_items,) or not np.all(np.isfinite(weights)) or np.any(weights < 0):
                raise ValueError("item weights must be one finite, non-negative value per item")
            mass = np.bincount(self.users, weights=weights[self.indices], minlength=train.shape[0])
            if np.any(weights.sum() - mass <= 1e-12 * weights.sum()):
                raise ValueError("some user has no non-training item of positive weight")
            self.cdf = np.cumsum(weights)

    def __len__(self) -> int:
        return len(self.users)

    def epoch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(users, positives, negatives[n_rows, n_negs]) in a fresh random order."""
        users, items, seed = self.begin()
        return users, items, self.draw_rows(users, self.n_negs, seed)

    def begin(self) -> tuple[np.ndarray, np.ndarray, np.uint64]:
        """(users, positives) in a fresh random order and the seed of their candidates, taken from numba's stream
        where epoch() takes it: draw_rows(users[a:b], n_negs, seed, a) are rows a..b-1 of epoch()'s negatives."""
        users, items = self.shuffled()
        return users, items, np.uint64(_call_seed())

    def shuffled(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, positives) in a fresh random order, without negatives (draw() gives them, e.g. per batch)."""
        order = _permutation(len(self.users))
        return self.users[order], self.items[order]

    def draw(self, users: np.ndarray, n_negs: int) -> np.ndarray:
        """(len(users), n_negs) candidates for the given user ids (seeded from numba's stream)."""
        return self.draw_rows(users, n_negs, np.uint64(_call_seed()))

    def draw_rows(self, users: np.ndarray, n_negs: int, seed: np.uint64, offset: int = 0) -> np.ndarray:
        """(len(users), n_negs) candidates drawn from `seed` (numba's stream untouched) as rows offset,
        offset + 1, ... of a draw from it: a slice of an epoch's rows with its first row's index gives that slice of
        the whole-epoch draw."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        users = np.ascontiguousarray(users, dtype=np.int64)
        return _draw(users, self.indptr, self.indices, self.n_items, self.cdf, n_negs, np.uint64(seed), self.bits,
                     int(offset))
