"""DENS (Lai et al. WSDM 2023): disentangled negatives.

User-conditioned gates split an item into a relevant factor (e * gate) and an irrelevant one
(e - e * gate). The positive's gate is sigmoid(W_item e_i + W_user e_u); a candidate's gate is
sigmoid(W_neg e_c + W_pos (relevant factor of e_i)). Candidates are scored by e_u . (w e_c - e_c * gate_c)
with w = 1 - min(1, epoch / warmup): the irrelevant-factor similarity at the start, the negated
relevant-factor score after the warm-up; the argmax is the negative. Four softplus terms (weight gamma)
teach the gates to separate the factors: the positive's relevant part scores above its irrelevant part
and above the negative's relevant part; the negative's irrelevant part scores above its relevant part
and above the positive's irrelevant part.

per_layer (the reference, Riwei-HEU/DENS modules/LightGCN.py): the gates act on every LightGCN layer
(weights shared across layers) and each layer picks its own argmax with the user's layer-l embedding, so
the negative is the layer-mean of per-layer winners' (ungated) rows, possibly of different items; the loss
terms score the layer-mean of the per-layer factors against the final user embedding; the L2 row is the
layer-0 winner's. With per_layer off, gating and selection use the final embeddings and the negative is
one real item. On MF (one layer) the two agree."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from conf.params import DENSParams
from module.samplers.base import NegativeOutput, NegativeSampler, pick
from util.device import host_path

# rows whose candidates are scored at a time on the CPU: their (rows, L+1, M, d) temporaries stay in cache instead of
# going to fresh memory (about 3x faster at B = 2048, M = 16, docs/speed.md). At one thread the same bits as all rows
# at once when d is a multiple of 16 (the element-wise kernels' vectors of floats then start where they would over
# all rows, CHUNK_ROWS being a multiple of 16 too) and no chunk's gate products have 1-3 rows (MKL computes those
# another way: a short last chunk joins the one before). Other d, and a GPU: all rows at once
CHUNK_ROWS = 128


class DENSSampler(NegativeSampler):
    """Gated factor scoring of M uniform candidates; the gates are trained by the factor terms."""

    name = "dens"
    Params = DENSParams
    description = "disentangled negatives: user-conditioned gates, pick by the factor opposite the positive's"

    def __init__(self, params: DENSParams, n_users: int, n_items: int, dim: int, device: torch.device):
        super().__init__(params, n_users, n_items, dim, device)
        self.needs_layers = params.per_layer
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
        """(relevant factor of the positive, relevant factor of item_emb). user_emb and pos_emb are (..., d);
        item_emb has their shape or one candidate axis more, just before the last (..., M, d)."""
        pos_rel = pos_emb * torch.sigmoid(self.item_gate(pos_emb) + self.user_gate(user_emb))
        cond = self.pos_gate(pos_rel)
        if item_emb.dim() == pos_emb.dim() + 1:
            cond = cond.unsqueeze(-2)
        return pos_rel, item_emb * torch.sigmoid(self.neg_gate(item_emb) + cond)

    @torch.no_grad()
    def layer_scores(self, batch, users_l: torch.Tensor, pos_l: torch.Tensor, weight: float) -> torch.Tensor:
        """(B, L+1, M) scores e_u^l . (w e_c^l - relevant factor of e_c^l) of every row's candidates at every layer;
        on the CPU with d a multiple of 16 CHUNK_ROWS rows at a time (at one thread the bits of all rows at once)."""
        n = batch.cands.shape[0]
        size = CHUNK_ROWS if host_path(users_l) and users_l.shape[-1] % 16 == 0 else max(n, 1)
        starts = list(range(0, n, size)) or [0]
        if len(starts) > 1 and (n - starts[-1]) * users_l.shape[1] < 4:  # gate products of 1-3 rows: join the last
            starts.pop()
        out = []
        for start, end in zip(starts, starts[1:] + [n]):
            rows = slice(start, end)
            cand_l = batch.item_layers(batch.cands[rows]).transpose(0, 1)  # (rows, L+1, M, d)
            _, cand_rel = self.factors(users_l[rows], pos_l[rows], cand_l)
            out.append((users_l[rows].unsqueeze(-2) * (weight * cand_l - cand_rel)).sum(-1))
        return torch.cat(out)

    def negatives(self, batch, user_emb, pos_emb) -> NegativeOutput:
        """The selected negative (a real item, or per layer), plus the gate-separation term."""
        weight = 1.0 - min(1.0, batch.epoch / self.params.warmup)
        if self.params.per_layer:
            # (B, L+1, d) per-layer user and positive, (B, M, L+1, d) candidates -> (B, L+1, M, d)
            users_l = batch.user_layers().transpose(0, 1)
            pos_l = batch.item_layers(batch.pos).transpose(0, 1)
            with torch.no_grad():
                scores = self.layer_scores(batch, users_l.detach(), pos_l.detach(), weight)  # (B, L+1, M)
                winners = batch.cands.gather(1, scores.argmax(dim=2))  # (B, L+1) item id per layer
            hops = torch.arange(users_l.shape[1], device=users_l.device)
            neg_l = batch.layers[hops, batch.user_all.shape[0] + winners]  # (B, L+1, d), with gradient
            pos_rel_l, neg_rel_l = self.factors(users_l, pos_l, neg_l)
            neg = neg_l.mean(1)
            pos_rel, neg_rel = pos_rel_l.mean(1), neg_rel_l.mean(1)
            items, neg_items = winners[:, 0], None
        else:
            with torch.no_grad():
                cand_emb = batch.items(batch.cands).detach()
                _, cand_rel = self.factors(user_emb.detach(), pos_emb.detach(), cand_emb)
                scores = torch.einsum("bd,bmd->bm", user_emb.detach(), weight * cand_emb - cand_rel)
                items = pick(batch.cands, scores.argmax(dim=1))
            neg = batch.items(items)
            pos_rel, neg_rel = self.factors(user_emb, pos_emb, neg)
            neg_items = items
        pos_irr, neg_irr = pos_emb - pos_rel, neg - neg_rel

        def score(x: torch.Tensor) -> torch.Tensor:
            return (user_emb * x).sum(-1)
        s_pr, s_pi, s_nr, s_ni = score(pos_rel), score(pos_irr), score(neg_rel), score(neg_irr)
        terms = {"dens_pos_sep": F.softplus(s_pi - s_pr).mean(), "dens_neg_sep": F.softplus(s_nr - s_ni).mean(),
                 "dens_rel": F.softplus(s_nr - s_pr).mean(), "dens_irr": F.softplus(s_pi - s_ni).mean()}
        gate_loss = sum(terms.values()) / 4
        diagnostics = {k: v.detach() for k, v in terms.items()}
        diagnostics["dens_select_w"] = user_emb.new_full((), weight)
        return NegativeOutput(neg, items, neg_items, {"dens_gate": (self.params.gamma, gate_loss)}, diagnostics)
