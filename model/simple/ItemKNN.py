"""ItemKNN: item-item cosine similarity with shrinkage, the k nearest neighbours kept per item (the item-based
CF of Sarwar et al., WWW 2001, in the form Dacrema et al., RecSys 2019, tune: `ItemKNN.k`, `ItemKNN.shrink`)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from base.closed_form_recommender import ClosedFormRecommender


def knn_similarity(train: sp.csr_matrix, k: int, shrink: float) -> np.ndarray:
    """S (items x items): S[i, j] = x_i . x_j / (|x_i| |x_j| + shrink) over the binary user columns, the diagonal
    zero, and in each column j only the k largest entries kept (j's k neighbours); score(u, j) = sum_{i in u} S[i, j]."""
    x = (train > 0).astype(np.float32).tocsc()
    co = (x.T @ x).toarray()  # co-occurrence counts
    norms = np.sqrt(np.diag(co)).astype(np.float32)
    sim = co / (np.outer(norms, norms) + shrink + 1e-12)
    np.fill_diagonal(sim, 0.0)
    n = sim.shape[0]
    if k < n:
        drop = np.argpartition(-sim, k, axis=0)[k:]  # per column, the rows beyond its k largest
        np.put_along_axis(sim, drop, 0.0, axis=0)
    return sim  # float32: co-occurrences and norms are


class ItemKNN(ClosedFormRecommender):
    """Scores X S: the user's items' similarities to each item."""

    settings = ("ItemKNN.k", "ItemKNN.shrink")

    def fit(self, train: sp.csr_matrix) -> np.ndarray:
        """X S (sparse X: one product over the training rows)."""
        sim = knn_similarity(train, self.config.knn_neighbours, self.config.knn_shrink)
        return np.asarray((train > 0).astype(np.float32) @ sim)
