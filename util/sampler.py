"""Uniform negative sampling in numba: seeded through numba's own stream, no per-row Python loop."""
from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp


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
def uniform_negatives(users: np.ndarray, indptr: np.ndarray, indices: np.ndarray, n_items: int,
                      n_negs: int) -> np.ndarray:
    """For each user row, n_negs items drawn uniformly from items outside the user's training set."""
    out = np.empty((users.shape[0], n_negs), dtype=np.int64)
    for r in range(users.shape[0]):
        u = users[r]
        start, end = indptr[u], indptr[u + 1]
        for k in range(n_negs):
            while True:
                j = np.random.randint(0, n_items)
                if not _contains(indices, start, end, j):
                    break
            out[r, k] = j
    return out


@numba.njit(cache=True)
def _permutation(n: int) -> np.ndarray:
    return np.random.permutation(n)


class EpochSampler:
    """Shuffles the training pairs and draws their negatives, one epoch at a time."""

    def __init__(self, train: sp.csr_matrix, n_negs: int = 1):
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
        self.items = self.indices.copy()
        self.n_negs = n_negs

    def __len__(self) -> int:
        return len(self.users)

    def epoch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(users, positives, negatives[n_rows, n_negs]) in a fresh random order."""
        order = _permutation(len(self.users))
        users = self.users[order]
        items = self.items[order]
        negs = uniform_negatives(users, self.indptr, self.indices, self.n_items, self.n_negs)
        return users, items, negs
