"""A CSR sparse times dense product in numba: out = A x, bit for bit what torch.sparse.mm gives on the CPU (each
output row sums its nonzeros' products in their column order, a multiply then an add, from zero), faster on
LightGCN's propagation (docs/speed.md#propagation). Rows run in parallel blocks; each row's order is fixed, so the
result does not depend on the thread count. Numba's workqueue layer runs one parallel kernel at a time: call it
from one Python thread (the grids run their jobs as processes)."""
from __future__ import annotations

import numba
import numpy as np

import util.draws  # noqa: F401  (sets numba's workqueue threading layer before any parallel launch)

_BLOCK = 256  # rows per parallel task, with one accumulator row each


@numba.njit(cache=True, parallel=True, fastmath=False)
def _csr_matmul(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """Fill out (rows x d) with A x for A in CSR (indptr, indices, data); no fused multiply-add (fastmath off)."""
    rows, d = out.shape
    for block in numba.prange((rows + _BLOCK - 1) // _BLOCK):
        acc = np.empty(d, dtype=np.float32)
        for row in range(block * _BLOCK, min(rows, (block + 1) * _BLOCK)):
            acc[:] = 0.0
            for k in range(indptr[row], indptr[row + 1]):
                x_row = x[indices[k]]
                a = data[k]
                for c in range(d):
                    acc[c] += a * x_row[c]
            out[row, :] = acc


def csr_matmul(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, x: np.ndarray,
               out: np.ndarray | None = None, trusted: bool = False) -> np.ndarray:
    """A x as a float32 (rows, d) array, for A given by CSR arrays (integer indptr and indices, float32 data) and a
    float32 (columns, d) x; `out`, if given, is filled and returned. trusted: skip the scan of every column index
    (a caller whose matrix was checked when it was built)."""
    rows = len(indptr) - 1
    if x.ndim != 2 or x.dtype != np.float32 or data.dtype != np.float32:
        raise ValueError(f"csr_matmul: x must be a float32 matrix and data float32, got x {x.dtype} {x.shape}, "
                         f"data {data.dtype}")
    if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        raise ValueError(f"csr_matmul: indptr and indices must be integers, got {indptr.dtype} and {indices.dtype}")
    if rows < 0 or indptr[0] != 0 or indptr[-1] != len(indices) or len(indices) != len(data):
        raise ValueError(f"csr_matmul: inconsistent CSR arrays ({len(indptr)} indptr entries, {len(indices)} indices, "
                         f"{len(data)} values)")
    if not trusted and len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= x.shape[0]):
        raise ValueError(f"csr_matmul: a column index is outside x's rows [0, {x.shape[0]})")
    if out is None:
        out = np.empty((rows, x.shape[1]), dtype=np.float32)
    elif out.shape != (rows, x.shape[1]) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"csr_matmul: out must be a contiguous float32 {(rows, x.shape[1])} array, got "
                         f"{out.dtype} {out.shape}")
    elif np.shares_memory(out, x):
        raise ValueError("csr_matmul: out shares memory with x")
    _csr_matmul(indptr, indices, data, np.ascontiguousarray(x), out)
    return out
