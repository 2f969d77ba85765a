"""MF: matrix factorisation, the embedding tables scored by inner product (no propagation). The backbone of
the AHNS and DNS(M,N) papers (their reference code: AHNS `modules/MF.py`, swt-user/WWW_2023_code `model.py`)."""
from __future__ import annotations

import torch.nn as nn

from base.graph_recommender import GraphRecommender
from model.graph.LightGCN import LGCNEncoder


class MF(GraphRecommender):
    """MF with the configured loss and negative sampler: LightGCN's (Xavier-initialised) tables with zero layers, so
    every sampler sees one layer (layer 0 = the final embedding); LightGCN.n_layer is not used."""

    def build_encoder(self) -> nn.Module:
        """The two embedding tables on the run's device (an encoder with no propagation layers)."""
        enc = LGCNEncoder(self.data.n_users, self.data.n_items, self.config.embedding_size, 0, adj=None,
                          init=self.config.embedding_init)
        return enc.to(self.device)
