"""DENS (Lai et al. WSDM 2023): disentangled negatives.

User-conditioned gates split an item into a relevant factor (e * gate) and an irrelevant one
(e - e * gate). The positive's gate is sigmoid(W_item e_i + W_user e_u); a candidate's gate is
sigmoid(W_neg e_c + W_pos (relevant factor of e_i)). Candidates are scored by e_u . (w e_c - e_c * gate_c)
with w = 1 - min(1, epoch / warmup): the irrelevant-factor similarity at the start, the negated
relevant-factor score after the warm-up; the argmax is the negative (a real item). Four softplus
terms (weight gamma) teach the gates to separate the factors: the positive's relevant part scores
above its irrelevant part and above the negative's relevant part; the negative's irrelevant part
scores above its relevant part and above the positive's irrelevant part.

Unlike the reference code, which gates and selects per LightGCN layer, we gate and select on the final
(layer-mean) embeddings, so the negative is one real item (needed by the FHN probe)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from conf.params import DENSParams
from module.samplers.base import NegativeOutput, NegativeSampler, pick


class DENSSampler(NegativeSampler):
    """Gated factor scoring of M uniform candidates; the gates are trained by the factor terms."""

    name = "dens"
    Params = DENSParams
    description = "disentangled negatives: user-conditioned gates, pick by the factor opposite the positive's"

    def __init__(self, params: DENSParams, n_users: int, n_items: int, dim: int, device: torch.device):
        super().__init__(params, n_users, n_items, dim, device)
        self.user_gate = nn.Linear(dim, dim)
        self.item_gate = nn.Linear(dim, dim)
        self.pos_gate = nn.Linear(dim, dim)
        self.neg_gate = nn.Linear(dim, dim)


    def param_groups(self) -> list[dict[str, Any]]:
        """The four gates (lr gate_lr, or the run's learning rate when 0)."""
        group: dict[str, Any] = {"params": list(self.parameters())}
        if self.params.gate_lr > 0:
            group["lr"] = self.params.gate_lr
        return [group]

    def factors(self, user_emb: torch.Tensor, pos_emb: torch.Tensor,
                item_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(relevant factor of the positive, relevant factor of item_emb); item_emb is (B, d) or (B, M, d)."""
        pos_rel = pos_emb * torch.sigmoid(self.item_gate(pos_emb) + self.user_gate(user_emb))
        cond = self.pos_gate(pos_rel)
        if item_emb.dim() == 3:
            cond = cond.unsqueeze(1)
        return pos_rel, item_emb * torch.sigmoid(self.neg_gate(item_emb) + cond)

    def negatives(self, batch, user_emb, pos_emb) -> NegativeOutput:
        """The chosen real item, plus the gate-separation term."""
        weight = 1.0 - min(1.0, batch.epoch / self.params.warmup)
        with torch.no_grad():
            cand_emb = batch.items(batch.cands).detach()
            _, cand_rel = self.factors(user_emb.detach(), pos_emb.detach(), cand_emb)
            scores = torch.einsum("bd,bmd->bm", user_emb.detach(), weight * cand_emb - cand_rel)
            items = pick(batch.cands, scores.argmax(dim=1))
        neg = batch.items(items)
        pos_rel, neg_rel = self.factors(user_emb, pos_emb, neg)
        pos_irr, neg_irr = pos_emb - pos_rel, neg - neg_rel

        def score(x: torch.Tensor) -> torch.Tensor:
            return (user_emb * x).sum(-1)
        s_pr, s_pi, s_nr, s_ni = score(pos_rel), score(pos_irr), score(neg_rel), score(neg_irr)
        terms = {"dens_pos_sep": F.softplus(s_pi - s_pr).mean(), "dens_neg_sep": F.softplus(s_nr - s_ni).mean(),
                 "dens_rel": F.softplus(s_nr - s_pr).mean(), "dens_irr": F.softplus(s_pi - s_ni).mean()}
        gate_loss = sum(terms.values()) / 4
        diagnostics = {k: v.detach() for k, v in terms.items()}
        diagnostics["dens_select_w"] = user_emb.new_full((), weight)
        return NegativeOutput(neg, items, items, {"dens_gate": (self.params.gamma, gate_loss)}, diagnostics)
