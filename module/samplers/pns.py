"""PNS: popularity-biased negatives, P(j) proportional to training degree^exponent."""
from __future__ import annotations

from typing import Optional

import numpy as np

from conf.params import PNSParams
from module.samplers.rns import RNSSampler


class PNSSampler(RNSSampler):
    """RNS with the numba sampler drawing j with probability deg(j)^exponent (the user's items rejected)."""

    name = "pns"
    Params = PNSParams
    description = "popularity negatives: P(j) ~ training degree^{exponent} (the popularity confounder itself)"

    def candidate_weights(self, degree: np.ndarray) -> Optional[np.ndarray]:
        """deg(j)^exponent."""
        return np.power(degree.astype(np.float64), self.params.exponent)
