"""MixGCF (Huang et al. KDD 2021): a synthetic negative built from the per-layer LightGCN embeddings.

Per layer l and row: positive mixing e'_c = a_l e_i^(l) + (1 - a_l) e_c^(l) for every candidate c, with
a_l ~ U(0, 1) drawn per row and layer (shared by the candidates, as in the reference code); hop mixing
keeps, per layer, the mixed candidate with the largest inner product with the user's layer-l
embedding; the chosen per-layer vectors are pooled (mean, LightGCN's readout) into one negative.
Because a_l is shared by the candidates of a row, argmax_c e_u^(l) . e'_c = argmax_c e_u^(l) . e_c^(l)
(for a_l < 1), so only the winners are mixed: the same result without building M mixed vectors.
Gradients flow into the positive's and the chosen candidates' embeddings, as in the reference."""
from __future__ import annotations

import torch

from conf.params import MixGCFParams
from module.samplers.base import NegativeOutput, NegativeSampler, table_scores


class MixGCFSampler(NegativeSampler):
    """Positive mixing + hop mixing over M uniform candidates; the negative is synthetic."""

    name = "mixgcf"
    Params = MixGCFParams
    needs_layers = True
    description = "MixGCF: per-layer positive mixing + hop mixing of M=64 candidates into a synthetic negative"

    def negatives(self, batch, user_emb, pos_emb) -> NegativeOutput:
        """(B, d) pooled synthetic negative."""
        layers = batch.layers  # (L+1, n_users + n_items, d)
        n_users, n_layers = batch.user_all.shape[0], layers.shape[0]
        with torch.no_grad():
            flat = layers.detach()
            best = torch.stack([table_scores(flat[l, batch.users], flat[l, n_users:], batch.cands).argmax(dim=1)
                                for l in range(n_layers)], dim=1)
            winners = batch.cands.gather(1, best)  # (B, L+1) item id chosen per layer
        hops = torch.arange(n_layers, device=layers.device)
        chosen = layers[hops, n_users + winners]  # (B, L+1, d), with gradient
        positive = layers[:, n_users + batch.pos].transpose(0, 1)  # (B, L+1, d)
        alpha = torch.rand(chosen.shape[0], n_layers, 1, device=chosen.device, dtype=chosen.dtype)
        neg = (alpha * positive + (1 - alpha) * chosen).mean(1)  # mean over layers: LightGCN's readout
        return NegativeOutput(neg, winners[:, 0], None, diagnostics={"mix_alpha": alpha.mean()})
