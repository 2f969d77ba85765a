"""Loss terms shared by all samplers: BPR and the two L2 forms."""
from __future__ import annotations

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
