"""PNS: popularity-biased negatives, P(j) proportional to training degree^exponent."""
from __future__ import annotations

from typing import Optional

import numpy as np

from conf.params import PNSParams
from module.samplers.base import NegativeOutput, NegativeSampler


class PNSSampler(NegativeSampler):
    """Real items drawn by the numba sampler with probability deg(j)^exponent, the user's items rejected."""

    name = "pns"
    Params = PNSParams
    description = "popularity negatives: P(j) ~ training degree^0.75 (the popularity confounder itself)"

    @property
    def n_candidates(self) -> int:
        """n_negs popularity-weighted negatives per positive."""
        return self.params.n_negs

    def candidate_weights(self, degree: np.ndarray) -> Optional[np.ndarray]:
        """deg(j)^exponent."""
        return np.power(degree.astype(np.float64), self.params.exponent)

    def negatives(self, batch, user_emb, pos_emb) -> NegativeOutput:
        """The drawn items themselves; (B, d) when n_negs is 1."""
        items = batch.cands[:, 0] if batch.cands.shape[1] == 1 else batch.cands
        return NegativeOutput(batch.items(items), items, items)
