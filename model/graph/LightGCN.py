"""LightGCN (He et al., SIGIR 2020): the encoder and its recommender."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from base.graph_recommender import GraphRecommender
from base.torch_interface import symmetric_spmm, to_torch_csr


class LGCNEncoder(nn.Module):
    """Xavier- (or N(0, 1)-) initialised user/item tables propagated over D^-1/2 A D^-1/2; output = mean of layers 0..L."""

    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int, adj: Optional[torch.Tensor],
                 init: str = "xavier"):
        super().__init__()
        self.n_users, self.n_items, self.n_layers = n_users, n_items, n_layers
        fill = nn.init.xavier_uniform_ if init == "xavier" else nn.init.normal_  # normal: N(0, 1) (embedding.init)
        self.user_emb = nn.Parameter(fill(torch.empty(n_users, dim)))
        self.item_emb = nn.Parameter(fill(torch.empty(n_items, dim)))
        self.register_buffer("adj", adj, persistent=False)  # follows model.to(); not in the checkpoint

    def propagate(self, keep_layers: bool = False) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Final (user, item) embeddings and, if asked, every layer stacked as (L+1, n_users + n_items, d)."""
        ego = torch.cat([self.user_emb, self.item_emb], dim=0)
        layers = [ego] if keep_layers else None
        total = ego
        for _ in range(self.n_layers):
            ego = symmetric_spmm(self.adj, ego)
            total = total + ego
            if layers is not None:
                layers.append(ego)
        out = total / (self.n_layers + 1)
        stacked = torch.stack(layers) if layers is not None else None
        return out[: self.n_users], out[self.n_users:], stacked

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user, item) embeddings after full propagation."""
        user, item, _ = self.propagate(False)
        return user, item


class LightGCN(GraphRecommender):
    """LightGCN trained with the configured loss (BPR by default) and negative sampler."""

    def build_encoder(self) -> nn.Module:
        """The LightGCN encoder on the run's device."""
        adj = to_torch_csr(self.data.normalized_adjacency(), self.device)
        enc = LGCNEncoder(self.data.n_users, self.data.n_items, self.config.embedding_size,
                          self.config.n_layer, adj, self.config.embedding_init)
        return enc.to(self.device)
