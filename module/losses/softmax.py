"""SL, the sampled softmax loss (Tiny-Snow/IR-Benchmark src/itemrec/optimizer/optim_Softmax.py)."""
from __future__ import annotations

import torch

from conf.params import SoftmaxParams
from module.losses.base import RankingLoss, half_cosines
from module.samplers.base import NegativeOutput, TrainBatch


class SoftmaxLoss(RankingLoss):
    """mean over rows of logsumexp_j((f_j - f_i) / tau): the positive is not in the sum, as in the reference."""

    name = "softmax"
    Params = SoftmaxParams
    min_negatives = 2
    description = "SL: sampled softmax over the sampler's N negatives, f = cos/2, temperature tau"

    def forward(self, batch: TrainBatch, user: torch.Tensor, pos: torch.Tensor,  # type: ignore[override]
                out: NegativeOutput) -> torch.Tensor:
        """The sampled softmax loss of the batch."""
        f_pos, f_neg = half_cosines(user, pos, out)
        return torch.logsumexp((f_neg - f_pos.unsqueeze(1)) / self.params.tau, dim=1).mean()
