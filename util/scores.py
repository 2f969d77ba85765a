"""Scores of gathered rows in numba: out[b, m] = user[b] . table[ids[b, m]], without materialising the
(B, M, d) gathered embeddings. The table (items x d, a few MB) stays in cache and each row's dot products
run in registers, so scoring M candidates per row costs about B * M * d multiply-adds and no copies (on
Food, DNS(M,N)'s sampler went from 34.4 to 3.4 ms per batch, docs/speed.md)."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, parallel=True, fastmath=True)
def _gathered_dots(user: np.ndarray, table: np.ndarray, ids: np.ndarray, out: np.ndarray) -> None:
    """Fill out[b, m] with user[b] . table[ids[b, m]]; one row per thread, a fixed summation order."""
    rows, m = ids.shape
    d = user.shape[1]
    for b in numba.prange(rows):
        u = user[b]
        for j in range(m):
            row = table[ids[b, j]]
            acc = np.float32(0.0)
            for k in range(d):
                acc += u[k] * row[k]
            out[b, j] = acc


def gathered_dots(user: np.ndarray, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(B, M) float32 scores user[b] . table[ids[b, m]] for float32 (B, d) user and (N, d) table rows."""
    if user.ndim != 2 or table.ndim != 2 or ids.ndim != 2 or user.shape[0] != ids.shape[0] \
            or user.shape[1] != table.shape[1]:
        raise ValueError(f"gathered_dots: shapes user {user.shape}, table {table.shape}, ids {ids.shape} do not fit")
    user = np.ascontiguousarray(user, dtype=np.float32)
    table = np.ascontiguousarray(table, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
        raise ValueError(f"gathered_dots: ids outside [0, {table.shape[0]})")
    out = np.empty(ids.shape, dtype=np.float32)
    _gathered_dots(user, table, ids, out)
    return out
