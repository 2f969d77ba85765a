"""AHNS: adaptive hardness (Lai et al. AAAI 2024): the candidate whose score is closest to
beta * (s_ui + alpha)^(p + 1), p < 0, so a harder (lower-scored) positive gets a harder negative target
and an easy positive a softer one."""
from __future__ import annotations

import torch

from conf.params import AHNSParams
from module.samplers.base import NegativeOutput, NegativeSampler, pick


class AHNSSampler(NegativeSampler):
    """argmin over the candidates of |s_uj - beta (s_ui + alpha)^(p+1)| on the final embeddings."""

    name = "ahns"
    Params = AHNSParams
    real_negatives = True
    description = "adaptive hardness: the candidate scored closest to beta*(s_ui+alpha)^(p+1) of M={n_candidates}"

    def target(self, pos_score: torch.Tensor) -> torch.Tensor:
        """The score the chosen negative should have, per row."""
        p = self.params
        return p.beta * torch.pow(pos_score + p.alpha, p.p + 1)

    def negatives(self, batch, user_emb, pos_emb) -> NegativeOutput:
        """The candidate closest to the target (chosen without gradient)."""
        with torch.no_grad():
            pos_score = (user_emb * pos_emb).sum(-1, keepdim=True)
            gap = (batch.cand_scores(user_emb) - self.target(pos_score)).abs()
            best = gap.nan_to_num(nan=torch.inf).argmin(dim=1)
        items = pick(batch.cands, best)
        return NegativeOutput.real(batch, items,
                                   diagnostics={"ahns_target": self.target(pos_score).nan_to_num(posinf=1e6, neginf=-1e6).mean()})
