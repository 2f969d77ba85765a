"""MixGCF (Huang et al. KDD 2021): a synthetic negative built from the per-layer LightGCN embeddings.

Per layer l and row: positive mixing e'_c = a_l e_i^(l) + (1 - a_l) e_c^(l) for every candidate c, with
a_l ~ U(0, 1) drawn per row and layer (shared by the candidates, as in the reference code); hop mixing
keeps, per layer, the mixed candidate with the largest inner product with the query: the user's pooled
embedding (params.mixgcf.query pooled, the reference with pool mean) or its layer-l embedding (layer);
the chosen per-layer vectors are pooled (mean, LightGCN's readout) into one negative.
Because a_l is shared by the candidates of a row, argmax_c q . e'_c = argmax_c q . e_c^(l) (for a_l < 1),
so only the winners are mixed: the same result without building M mixed vectors.
Gradients flow into the positive's and the chosen candidates' embeddings, as in the reference. The L2
term takes the mixed layer-0 vector (reg mixed, the reference) or the layer-0 winner's row (winner).
On MF (no layers) there is one layer: the negative is a_0 e_i + (1 - a_0) e_c* of the top-scored candidate."""
from __future__ import annotations

import torch

from conf.params import MixGCFParams
from module.samplers.base import NegativeOutput, NegativeSampler, table_scores


class MixGCFSampler(NegativeSampler):
    """Positive mixing + hop mixing over M uniform candidates; the negative is synthetic."""

    name = "mixgcf"
    Params = MixGCFParams
    needs_layers = True
    description = ("MixGCF: per-layer positive mixing + hop mixing of M={n_candidates} candidates into a synthetic "
                   "negative")

    def negatives(self, batch, user_emb, pos_emb) -> NegativeOutput:
        """(B, d) pooled synthetic negative."""
        layers = batch.layers  # (L+1, n_users + n_items, d)
        n_users, n_layers = batch.user_all.shape[0], layers.shape[0]
        with torch.no_grad():
            flat = layers.detach()
            pooled = self.params.query == "pooled"
            best = torch.stack([table_scores(user_emb if pooled else flat[l, batch.users], flat[l, n_users:],
                                             batch.cands).argmax(dim=1)
                                for l in range(n_layers)], dim=1)
            winners = batch.cands.gather(1, best)  # (B, L+1) item id chosen per layer
        hops = torch.arange(n_layers, device=layers.device)
        chosen = layers[hops, n_users + winners]  # (B, L+1, d), with gradient
        positive = layers[:, n_users + batch.pos].transpose(0, 1)  # (B, L+1, d)
        alpha = torch.rand(chosen.shape[0], n_layers, 1, device=chosen.device, dtype=chosen.dtype)
        mixed = alpha * positive + (1 - alpha) * chosen
        neg = mixed.mean(1)  # mean over layers: LightGCN's readout
        reg_emb = mixed[:, 0] if self.params.reg == "mixed" else None
        return NegativeOutput(neg, winners[:, 0], None, diagnostics={"mix_alpha": alpha.mean()}, reg_emb=reg_emb)
