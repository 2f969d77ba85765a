"""Sparse helpers: scipy CSR to torch, a sparse product (a numba kernel on the CPU), and a product with a symmetric
matrix whose backward reuses it."""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from torch.autograd.function import once_differentiable

from util.device import host_path
from util.sparse import csr_matmul


def to_torch_csr(mat: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """Convert a scipy CSR matrix to a float32 torch sparse CSR tensor on device, its structure checked once (indptr
    monotone, column indices in range: sparse_mm's kernel trusts it)."""
    mat = mat.tocsr()
    mat.check_format(full_check=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(mat.indptr.astype(np.int64)), torch.from_numpy(mat.indices.astype(np.int64)),
            torch.from_numpy(mat.data.astype(np.float32)), size=mat.shape, device=device,
            check_invariants=False)


def sparse_mm(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """adj @ x for a sparse CSR adj made by to_torch_csr, without gradient (symmetric_spmm is the differentiable
    product): on the CPU in float32 the numba kernel of util.sparse (bit for bit torch.sparse.mm's result, faster:
    docs/speed.md), elsewhere torch.sparse.mm."""
    if x.requires_grad and torch.is_grad_enabled():
        raise ValueError("sparse_mm: x requires a gradient; use symmetric_spmm for a differentiable product")
    if adj.shape[1] != x.shape[0]:
        raise ValueError(f"sparse_mm: a {tuple(adj.shape)} matrix cannot multiply a {tuple(x.shape)} one")
    if host_path(x) and adj.layout == torch.sparse_csr and adj.dtype == x.dtype == torch.float32:
        out = torch.empty((adj.shape[0], x.shape[1]), dtype=torch.float32)
        # trusted: to_torch_csr checked the column indices when it built the matrix
        csr_matmul(adj.crow_indices().numpy(), adj.col_indices().numpy(), adj.values().numpy(),
                   x.detach().contiguous().numpy(), out.numpy(), trusted=True)
        return out
    return torch.sparse.mm(adj, x)


class _SymmetricSpMM(torch.autograd.Function):
    """y = A x for a symmetric sparse A; the gradient A^T g equals A g, so no transpose is built."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj = adj
        return sparse_mm(adj, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, sparse_mm(ctx.adj, grad.contiguous())


def symmetric_spmm(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Multiply a symmetric sparse matrix by a dense matrix, differentiable in x."""
    return _SymmetricSpMM.apply(adj, x)
