"""DNS(M, N): the top N of M uniform candidates (Shi et al. WWW 2023); BPR summed over the N (the
reference's loss) or averaged (params.dns_mn.reduce)."""
from __future__ import annotations

from conf.params import DNSMNParams
from module.samplers.base import NegativeOutput, NegativeSampler, pick


class DNSMNSampler(NegativeSampler):
    """topk over the candidates of e_u . e_j; the trainer's BPR (a mean over the N) is weighted by N for `sum`."""

    name = "dns_mn"
    Params = DNSMNParams
    real_negatives = True
    description = "DNS(M,N): the top N={n_negs} of M={n_candidates} uniform candidates, {reduce} of BPR over the N"

    def negatives(self, batch, user_emb, pos_emb) -> NegativeOutput:
        """(B, N, d): the N highest-scoring candidates, best first."""
        items = pick(batch.cands, batch.cand_scores(user_emb).topk(self.params.n_negs, dim=1).indices)
        weight = float(self.params.n_negs) if self.params.reduce == "sum" else 1.0
        return NegativeOutput.real(batch, items, bpr_weight=weight)
