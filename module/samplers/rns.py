"""RNS: uniform random negatives (plain BPR)."""
from __future__ import annotations

from conf.params import RNSParams
from module.samplers.base import NegativeOutput, NegativeSampler


class RNSSampler(NegativeSampler):
    """Uses the numba sampler's uniform candidates as the negatives."""

    name = "rns"
    Params = RNSParams
    real_negatives = True
    description = "uniform random negatives (plain BPR)"

    def negatives(self, batch, user_emb, pos_emb) -> NegativeOutput:
        """The candidates themselves; (B, d) when n_negs is 1."""
        items = batch.cands[:, 0] if batch.cands.shape[1] == 1 else batch.cands
        return NegativeOutput.real(batch, items)
