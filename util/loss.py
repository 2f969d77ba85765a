"""Loss terms shared by all samplers: BPR and the two L2 forms."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F


def bpr_loss(user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """mean softplus(-(u.i - u.n)); neg is (B, d) or (B, K, d) (averaged over the K negatives)."""
    pos_score = (user * pos).sum(-1)
    if neg.dim() == 3:
        neg_score = torch.einsum("bd,bkd->bk", user, neg)
        return F.softplus(neg_score - pos_score.unsqueeze(1)).mean()
    neg_score = (user * neg).sum(-1)
    return F.softplus(neg_score - pos_score).mean()


def l2_selfrec(reg: float, batch_size: int, *tables: torch.Tensor) -> torch.Tensor:
    """SELFRec's form: reg * sum_t ||t||_F / rows(t), then / batch_size (the configured batch size)."""
    total = sum(torch.linalg.norm(t.reshape(-1, t.shape[-1])) / t.reshape(-1, t.shape[-1]).shape[0]
                for t in tables)
    return reg * total / batch_size


def l2_lightgcn(reg: float, *tables: torch.Tensor) -> torch.Tensor:
    """LightGCN paper's form: reg * sum of squared row norms / 2 / rows of the first table."""
    rows = tables[0].shape[0]
    total = sum(t.pow(2).sum() for t in tables)
    return reg * total / 2 / rows


class _SharedLogSumExp(torch.autograd.Function):
    """Row-wise logsumexp of a @ n^T. The (rows x negatives) matrix is written into a reusable
    workspace (a fresh 32 MB tensor per batch costs more in page faults than the arithmetic), the
    softmax is kept for the backward pass, and the max-shift is skipped when |a.n| is bounded."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, n: torch.Tensor, workspace: Optional[torch.Tensor],  # type: ignore[override]
                bound: Optional[float], frozen: int) -> torch.Tensor:
        scores = torch.mm(a, n.T, out=workspace) if workspace is not None else a @ n.T
        if bound is not None and bound <= 30.0:
            top = torch.zeros((), dtype=a.dtype, device=a.device)  # exp cannot overflow
        else:
            top = scores.amax(dim=1, keepdim=True)
            scores.sub_(top)
        probs = scores.exp_()
        total = probs.sum(dim=1, keepdim=True)
        ctx.save_for_backward(a, n, probs, total)
        ctx.frozen = frozen
        return (top + total.log()).reshape(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        a, n, probs, total = ctx.saved_tensors
        weighted = probs.mul_(grad.unsqueeze(1) / total)  # softmax * upstream gradient, in place
        grad_a = weighted @ n if ctx.needs_input_grad[0] else None
        grad_n = None
        if ctx.needs_input_grad[1]:
            frozen = ctx.frozen
            if frozen and splits_frozen_grad(len(n) - frozen, n.shape[1], n.dtype):
                grad_n = n.new_zeros(n.shape)
                torch.mm(weighted[:, frozen:].T, a, out=grad_n[frozen:])
            else:
                grad_n = weighted.T @ a
                grad_n[:frozen] = 0
        return grad_a, grad_n, None, None, None


def splits_frozen_grad(rows: int, dim: int, dtype: torch.dtype) -> bool:
    """Whether n's gradient skips its frozen rows: float32, dim a multiple of 16, 16 or more others (docs/speed.md)."""
    return dtype == torch.float32 and dim % 16 == 0 and rows >= 16


def shared_logsumexp(a: torch.Tensor, n: torch.Tensor, workspace: Optional[torch.Tensor] = None,
                     bound: Optional[float] = None, frozen: int = 0) -> torch.Tensor:
    """logsumexp over j of a_i . n_j for every row i (all rows share the negatives n).

    workspace: optional (rows, negatives) buffer reused across calls (autograd's version check raises
    if it is overwritten before the backward of the call that used it); bound: a known upper bound of
    |a_i . n_j| that allows skipping the max-shift; frozen: the first `frozen` rows of n need no gradient (the
    caller knows nothing upstream of them does): theirs is returned as zeros and the product for the other rows
    alone (CNSDiff's synthetic half). Backward may run once (the softmax is consumed)."""
    if not 0 <= frozen <= len(n):
        raise ValueError(f"frozen must be in [0, {len(n)}] (the rows of n), got {frozen}")
    return _SharedLogSumExp.apply(a, n, workspace, bound, frozen)


class Workspace:
    """A flat buffer kept between batches; it only grows, so a smaller last batch reuses it."""

    def __init__(self) -> None:
        self.buffer: Optional[torch.Tensor] = None

    def get(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A contiguous tensor of the given shape (contents undefined), a view of the buffer."""
        size = math.prod(shape)
        buf = self.buffer
        if buf is None or buf.numel() < size or buf.dtype != like.dtype or buf.device != like.device:
            self.buffer = buf = torch.empty(size, dtype=like.dtype, device=like.device)
        return buf[:size].view(shape)
