"""BSL, the bilateral softmax loss (Wu et al., ICDE 2024; Tiny-Snow/IR-Benchmark optim_BSL.py)."""
from __future__ import annotations

import torch

from conf.params import BSLParams
from module.losses.base import RankingLoss, half_cosines
from module.samplers.base import NegativeOutput, TrainBatch


class BSLLoss(RankingLoss):
    """mean over rows of -f_i / tau1 + (tau2 / tau1) logsumexp_j(f_j / tau2): the reference's
    -log(exp(f_i / tau1) / (sum_j exp(f_j / tau2))^(tau2 / tau1)), computed stably (it exponentiates directly)."""

    name = "bsl"
    Params = BSLParams
    min_negatives = 2
    description = "BSL: bilateral softmax, positive temperature tau1, negative temperature tau2, f = cos/2"

    def forward(self, batch: TrainBatch, user: torch.Tensor, pos: torch.Tensor,  # type: ignore[override]
                out: NegativeOutput) -> torch.Tensor:
        """The bilateral softmax loss of the batch."""
        p = self.params
        f_pos, f_neg = half_cosines(user, pos, out)
        return (-f_pos / p.tau1 + (p.tau2 / p.tau1) * torch.logsumexp(f_neg / p.tau2, dim=1)).mean()
