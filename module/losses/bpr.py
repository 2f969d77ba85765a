"""BPR (Rendle et al. 2009): the default loss, softplus of the score gap on the final embeddings' inner product."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from module.losses.base import RankingLoss
from module.samplers.base import NegativeOutput, TrainBatch
from util.loss import bpr_loss


class BPRLoss(RankingLoss):
    """mean softplus(e_u . e_j - e_u . e_i), averaged over the row's negatives; weighted by the sampler's bpr_weight.
    With loss.score cosine, on the normalised embeddings: softplus(cos_j - cos_i) (IR-Benchmark's BPR with --norm)."""

    name = "bpr"
    description = "BPR: softplus of the score gap (inner product; cosine with loss.score cosine)"
    default_score = "dot"

    def forward(self, batch: TrainBatch, user: torch.Tensor, pos: torch.Tensor,  # type: ignore[override]
                out: NegativeOutput) -> torch.Tensor:
        """bpr_loss on the negatives' embeddings (normalised first for the cosine score)."""
        if self.cosine:
            return bpr_loss(F.normalize(user, dim=-1), F.normalize(pos, dim=-1), F.normalize(out.embeddings(), dim=-1))
        return bpr_loss(user, pos, out.embeddings())

    def weight(self, out: NegativeOutput) -> float:
        """The sampler's bpr_weight (DNS(M,N)'s sum over N, CNSDiff's and ADAR's own weights)."""
        return out.bpr_weight
