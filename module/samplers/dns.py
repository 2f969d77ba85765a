"""DNS: the top-scoring of M uniform candidates (Zhang et al. SIGIR 2013)."""
from __future__ import annotations

from conf.params import DNSParams
from module.samplers.base import NegativeOutput, NegativeSampler, pick


class DNSSampler(NegativeSampler):
    """argmax over the candidates of e_u . e_j on the final embeddings."""

    name = "dns"
    Params = DNSParams
    real_negatives = True
    description = "dynamic negatives: the highest-scoring of M={n_candidates} uniform candidates"

    def negatives(self, batch, user_emb, pos_emb) -> NegativeOutput:
        """The hardest candidate (chosen without gradient; its embedding keeps it)."""
        items = pick(batch.cands, batch.cand_scores(user_emb).argmax(dim=1))
        return NegativeOutput.real(batch, items)
