"""PSL, the pairwise softmax loss (Yang et al., NeurIPS 2024; Tiny-Snow/IR-Benchmark optim_PSL.py)."""
from __future__ import annotations

import torch

from conf.params import PSLParams
from module.losses.base import RankingLoss, half_cosines
from module.samplers.base import NegativeOutput, TrainBatch

TINY = 1e-30  # relu(d + 1) is 0 only at d = -1 (opposite vectors); its log is kept finite there


def log_activation(d: torch.Tensor, activation: str) -> torch.Tensor:
    """log sigma(d) for the score gap d = f_j - f_i in [-1, 1]: tanh(d) + 1, atan(d) + 1, relu(d + 1) or exp(d)."""
    if activation == "tanh":
        return torch.log(torch.tanh(d) + 1)
    if activation == "atan":
        return torch.log(torch.atan(d) + 1)
    if activation == "relu":
        return torch.log(torch.relu(d + 1).clamp_min(TINY))
    if activation == "exp":
        return d
    raise ValueError(f"PSL activation {activation!r}")


class PSLLoss(RankingLoss):
    """mean over rows of logsumexp_j(log sigma(f_j - f_i) / tau) = log sum_j sigma(d_j)^(1/tau) (the paper's
    equation 4.1, the reference's method 1); sigma = exp gives SL."""

    name = "psl"
    Params = PSLParams
    description = "PSL: softmax of the pairwise gaps through a surrogate of exp (tanh, atan, relu), f = cos/2, tau"

    def forward(self, batch: TrainBatch, user: torch.Tensor, pos: torch.Tensor,  # type: ignore[override]
                out: NegativeOutput) -> torch.Tensor:
        """The pairwise softmax loss of the batch."""
        f_pos, f_neg = half_cosines(user, pos, out)
        log_sigma = log_activation(f_neg - f_pos.unsqueeze(1), self.params.activation)
        return torch.logsumexp(log_sigma / self.params.tau, dim=1).mean()
