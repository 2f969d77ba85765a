"""LightGCN (He et al., SIGIR 2020): the encoder and its recommender."""
from __future__ import annotations

import torch
import torch.nn as nn

from base.graph_recommender import GraphRecommender
from base.torch_interface import symmetric_spmm, to_torch_csr


class LGCNEncoder(nn.Module):
    """Xavier-initialised user/item tables propagated over D^-1/2 A D^-1/2; output = mean of layers 0..L."""

    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int, adj: torch.Tensor):
        super().__init__()
        self.n_users, self.n_items, self.n_layers = n_users, n_items, n_layers
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, dim)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, dim)))
        self.adj = adj

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user, item) embeddings after full propagation."""
        ego = torch.cat([self.user_emb, self.item_emb], dim=0)
        total = ego
        for _ in range(self.n_layers):
            ego = symmetric_spmm(self.adj, ego)
            total = total + ego
        out = total / (self.n_layers + 1)
        return out[: self.n_users], out[self.n_users:]


class LightGCN(GraphRecommender):
    """LightGCN trained with BPR and the configured negative sampler."""

    def build_encoder(self) -> nn.Module:
        """The LightGCN encoder on the run's device."""
        adj = to_torch_csr(self.data.normalized_adjacency(), self.device)
        enc = LGCNEncoder(self.data.n_users, self.data.n_items, self.config.embedding_size,
                          self.config.n_layer, adj)
        return enc.to(self.device)
