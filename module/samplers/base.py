"""The one interface every negative sampler implements."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn


@dataclass
class TrainBatch:
    """One training batch: ids on the device plus where we are in training."""

    users: torch.Tensor  # (B,)
    pos: torch.Tensor  # (B,)
    cands: torch.Tensor  # (B, n_candidates) uniform non-interacted items from the numba sampler
    epoch: int  # 0-based
    max_epoch: int
    item_all: torch.Tensor  # (n_items, d) final item embeddings of this batch's forward pass


@dataclass
class NegativeOutput:
    """What a sampler hands back to the trainer."""

    neg_emb: torch.Tensor  # (B, d) or (B, K, d): the negatives BPR is computed against
    reg_items: torch.Tensor  # item ids whose layer-0 rows enter the L2 term
    losses: dict[str, tuple[float, torch.Tensor]] = field(default_factory=dict)  # name -> (weight, value)
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars, averaged per epoch


class NegativeSampler(nn.Module):
    """Base class: turns (user, positive, candidates) into negatives, extra losses and diagnostics."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = object

    def __init__(self, params: Any, n_users: int, n_items: int, dim: int, device: torch.device):
        super().__init__()
        self.params = params
        self.n_users, self.n_items, self.dim, self.device = n_users, n_items, dim, device

    @property
    def n_candidates(self) -> int:
        """How many uniform candidate items per positive the numba sampler should draw."""
        return 1

    def negatives(self, batch: TrainBatch, user_emb: torch.Tensor, pos_emb: torch.Tensor,
                  cand_emb: torch.Tensor) -> NegativeOutput:
        """Negatives for one batch; cand_emb is (B, n_candidates, d)."""
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups of the sampler's own trainable parts (none by default)."""
        return []

    def on_epoch_end(self, epoch: int) -> None:
        """Hook called after each training epoch."""

    def describe(self) -> dict[str, Any]:
        """The settings to log and store with the results."""
        return {"sampler": self.name, **dataclasses.asdict(self.params)}
