"""EASE (Steck, WWW 2019): a closed-form item-item linear model with a zero diagonal (`EASE.lambda`)."""
from __future__ import annotations

import numpy as np
import scipy.linalg.lapack
import scipy.sparse as sp

from base.closed_form_recommender import ClosedFormRecommender
from conf.config import RunConfig
from util.typing_coerce import ConfigError


def ease_weights(train: sp.csr_matrix, lam: float) -> np.ndarray:
    """B = argmin ||X - X B||^2 + lam ||B||^2 subject to diag(B) = 0: with P = (X^T X + lam I)^-1,
    B[i, j] = -P[i, j] / P[j, j] off the diagonal (Steck's closed form)."""
    x = (train > 0).astype(np.float64).tocsc()
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += lam
    # X^T X + lam I is symmetric positive definite: Cholesky (potrf) and its inverse (potri), about half the
    # work of a general inverse; potri fills the upper triangle
    factor, info = scipy.linalg.lapack.dpotrf(gram, lower=False, overwrite_a=True)
    if info != 0:
        raise ValueError(f"EASE: X^T X + lambda I is not positive definite (LAPACK info {info})")
    p, info = scipy.linalg.lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise ValueError(f"EASE: the Cholesky inverse failed (LAPACK info {info})")
    p = np.triu(p) + np.triu(p, 1).T
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


class EASE(ClosedFormRecommender):
    """Scores X B."""

    settings = ("EASE.lambda",)

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """EASE.lambda must be positive (checked before any data is read)."""
        if cfg.ease_lambda <= 0:
            raise ConfigError("EASE.lambda: must be > 0 (X^T X alone is singular whenever two items share their users)")

    def fit(self, train: sp.csr_matrix) -> np.ndarray:
        """X B."""
        b = ease_weights(train, self.config.ease_lambda)
        return np.asarray((train > 0).astype(np.float64) @ b)
