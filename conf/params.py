"""Settings of the negative samplers, one typed dataclass per method, with the papers' defaults.

This is the file users edit. Values can also be overridden from conf/LightGCN.yaml
(`params: {rns: {n_negs: 2}}`) or the command line (`--set params.n_negs=2` for the active
sampler, `--set params.rns.n_negs=2` for a named one). Types are checked and coerced.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RNSParams:
    """Uniform random negatives, rejecting the user's training items (BPR, Rendle et al. 2009)."""

    n_negs: int = 1  # negatives per positive; BPR is averaged over them

    def __post_init__(self) -> None:
        if self.n_negs < 1:
            raise ValueError(f"params.rns.n_negs must be >= 1, got {self.n_negs}")
