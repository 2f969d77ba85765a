"""AdvInfoNCE (Zhang et al., NeurIPS 2023): InfoNCE with adversarially learned hardness of each negative
(Tiny-Snow/IR-Benchmark src/itemrec/optimizer/optim_AdvInfoNCE.py)."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from conf.params import AdvInfoNCEParams
from module.losses.base import RankingLoss, half_cosines, row_cosines
from module.samplers.base import NegativeOutput, TrainBatch


class AdvInfoNCELoss(RankingLoss):
    """mean over rows of -log(e^{s_i} / (e^{s_i} + K sum_j w_j e^{s_j})), s = f / tau, w_j = N softmax_j(cos(a_u, a_j))
    from the adversary's own tables a (N(0, 1) at the start, as nn.Embedding's); every adv_every-th epoch trains
    only the adversary, raising the loss (Adam, maximize), the other epochs only the model."""

    name = "advinfonce"
    needs_items = True
    Params = AdvInfoNCEParams
    description = "AdvInfoNCE: InfoNCE with adversarially learned hardness weights of the negatives"

    def __init__(self, params: AdvInfoNCEParams, n_users: int, n_items: int, dim: int, device: torch.device,
                 score: Optional[str] = None):
        super().__init__(params, n_users, n_items, dim, device, score)
        width = params.adv_dim or dim  # the reference's: the model's embedding size
        self.adv_user = nn.Parameter(torch.randn(n_users, width, device=device))
        self.adv_item = nn.Parameter(torch.randn(n_items, width, device=device))

    def trains_model(self, epoch: int) -> bool:
        """Epochs adv_every, 2 adv_every, ... (1-based) train the adversary only."""
        return (epoch + 1) % self.params.adv_every != 0

    def make_optimizer(self, weight_decay: float) -> Optional[torch.optim.Optimizer]:
        """Adam on the adversary tables, maximising the loss, with the model's weight decay (as the reference)."""
        return torch.optim.Adam([self.adv_user, self.adv_item], lr=self.params.adv_lr, weight_decay=weight_decay,
                                maximize=True)

    def hardness(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, N) log w_j = log N + log softmax_j cos(a_u, a_j) over each row's negatives."""
        return math.log(items.shape[1]) + torch.log_softmax(row_cosines(self.adv_user[users], self.adv_item, items), 1)

    def forward(self, batch: TrainBatch, user: torch.Tensor, pos: torch.Tensor,  # type: ignore[override]
                out: NegativeOutput) -> torch.Tensor:
        """The adversarially weighted InfoNCE loss of the batch (the adversary's gradient only in its epochs)."""
        if out.neg_items is None:
            raise ValueError("advinfonce needs real negative items (a sampler with real_negatives)")
        f_pos, f_neg = half_cosines(user, pos, out)
        s_pos, s_neg = f_pos / self.params.tau, f_neg / self.params.tau
        items = out.neg_items if out.neg_items.dim() == 2 else out.neg_items.unsqueeze(1)
        with torch.set_grad_enabled(not self.trains_model(batch.epoch) and torch.is_grad_enabled()):
            log_w = self.hardness(batch.users, items)
        terms = torch.cat([s_pos.unsqueeze(1), math.log(self.params.neg_weight) + log_w + s_neg], dim=1)
        return (torch.logsumexp(terms, dim=1) - s_pos).mean()
