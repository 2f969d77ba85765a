"""The one interface every ranking loss implements (loss.name), and the scores the softmax family shares."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from module.samplers.base import NegativeOutput, TrainBatch
from util.device import host_path
from util.scores import GatheredDots

# Scoring N negatives per row (bench/bench_losses.py measures the three ways): on the CPU a numba kernel computes
# the B x N dot products and their gradients (B x N x d multiply-adds each way, util.scores.GatheredDots); elsewhere,
# with at most this many items per negative, the rows are scored against the whole (normalised) item table with one
# product (B x items x d) and the N scores gathered, and above it the N rows are gathered (a (B, N, d) copy forward,
# a scatter of as many rows backward).
PRODUCT_ITEMS_PER_NEGATIVE = 64


def row_cosines(query: torch.Tensor, table: torch.Tensor, ids: torch.Tensor, path: str = "auto") -> torch.Tensor:
    """(B, N) cos(query[b], table[ids[b, n]]) for (B, d) queries and (B, N) ids, with gradient to both. path: auto
    (as above) | kernel | product | gather."""
    q = F.normalize(query, dim=-1)
    if path == "auto":
        if host_path(q) and q.dtype == torch.float32 and table.dtype == torch.float32:
            path = "kernel"
        else:
            path = "product" if table.shape[0] <= PRODUCT_ITEMS_PER_NEGATIVE * ids.shape[1] else "gather"
    if path == "gather":  # only the gathered rows are normalised
        return torch.einsum("bd,bnd->bn", q, F.normalize(table[ids], dim=-1))
    t = F.normalize(table, dim=-1)
    if path == "kernel":
        return GatheredDots.apply(q, t, ids)
    return (q @ t.T).gather(1, ids)


def half_cosines(user: torch.Tensor, pos: torch.Tensor, out: NegativeOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """f(u, i) = cos(u, i) / 2 of the positives (B,) and of the negatives (B, N) (the PSL paper's score, section 2)."""
    pos_score = F.cosine_similarity(user, pos, dim=-1, eps=1e-12) / 2
    if out.neg_emb is None:
        assert out.table is not None and out.neg_items is not None
        ids = out.neg_items if out.neg_items.dim() == 2 else out.neg_items.unsqueeze(1)
        return pos_score, row_cosines(user, out.table, ids) / 2
    neg = out.neg_emb if out.neg_emb.dim() == 3 else out.neg_emb.unsqueeze(1)
    synthesised = torch.einsum("bd,bnd->bn", F.normalize(user, dim=-1), F.normalize(neg, dim=-1)) / 2
    if out.extra_items is None:
        return pos_score, synthesised
    assert out.table is not None, "NegativeOutput: extra_items without their table"
    return pos_score, torch.cat([synthesised, row_cosines(user, out.table, out.extra_items) / 2], dim=1)


class RankingLoss(nn.Module):
    """Base class: the training loss of one batch from its users, positives and the sampler's negatives."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = object
    description: ClassVar[str] = ""
    min_negatives: ClassVar[int] = 1  # negatives per row it needs (SL and BSL: 2; with one they are a linear gap)
    needs_items: ClassVar[bool] = False  # True: it weighs the negatives as real items (AdvInfoNCE's adversary)
    default_score: ClassVar[str] = "cosine"  # loss.score auto: what the reference scores with

    def __init__(self, params: Any, n_users: int, n_items: int, dim: int, device: torch.device,
                 score: Optional[str] = None):
        super().__init__()
        self.params = params
        self.n_users, self.n_items, self.dim, self.device = n_users, n_items, dim, device
        # True: scores are cosines, and evaluation ranks by cosine too, as the references do (loss.score)
        self.cosine = (score or self.default_score) == "cosine"

    def forward(self, batch: TrainBatch, user: torch.Tensor, pos: torch.Tensor,  # type: ignore[override]
                out: NegativeOutput) -> torch.Tensor:
        """The batch's loss (a scalar) for (B, d) final user and positive embeddings and the sampler's negatives."""
        raise NotImplementedError

    def weight(self, out: NegativeOutput) -> float:
        """The factor of this loss in the total (1: only BPR takes a sampler's bpr_weight)."""
        return 1.0

    def trains_model(self, epoch: int) -> bool:
        """Whether 0-based `epoch` steps the model's optimiser (False: only this loss's own parameters move)."""
        return True

    def make_optimizer(self, weight_decay: float) -> Optional[torch.optim.Optimizer]:
        """The optimiser of the loss's own parameters (None: it has none)."""
        return None

    def describe(self) -> dict[str, Any]:
        """The settings to log."""
        return {"loss": self.name, **(dataclasses.asdict(self.params) if dataclasses.is_dataclass(self.params) else {})}
