"""ClosedFormRecommender: a model fitted once from the training matrix (no negatives, no epochs), evaluated,
selected and written exactly like the trained models: the same evaluators, masks, selection rule,
epochs.csv (one row), metrics.json and top-K files."""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

import numpy as np
import scipy.sparse as sp
import torch

from base.reporting import Reporting
from conf.config import KEYS, RunConfig

log = logging.getLogger(__name__)


class ClosedFormRecommender(Reporting):
    """Subclasses implement fit() -> the score matrix; the rest is shared with the trained models."""

    checkpointed = False  # fitted again on --resume (deterministically): nothing to continue from

    settings: tuple[str, ...] = ()  # the config keys of the model's own hyperparameters (for metrics.json)

    @classmethod
    def run_tag(cls, config: RunConfig) -> str:
        """model-dataset-sSEED (no sampler: these models train on no negatives)."""
        return f"{config.model_name}-{config.data_name()}-s{config.seed}"

    def fit(self, train: sp.csr_matrix) -> np.ndarray:
        """The (n_users, n_items) score matrix, or (n_items,) scores shared by every user."""
        raise NotImplementedError

    def build(self) -> None:
        """Evaluators and the selection rule, as for every model (no encoder, sampler or optimiser)."""
        self.build_evaluation()
        self.fhn = None
        log.info("model %s fitted in closed form (%s); negative.sampler is not used", self.model_name,
                 ", ".join(f"{k} {v}" for k, v in self.method_settings().items() if k != "model") or "no settings")

    def load_checkpoint(self) -> None:
        """Nothing to restore: a resumed run fits again (deterministically)."""

    def train(self) -> None:
        """Fit once, evaluate every eval file once: epochs.csv gets one row, the selection sees one epoch."""
        t0 = time.perf_counter()
        scores = np.ascontiguousarray(self.fit(self.data.train), dtype=np.float32)
        if scores.ndim == 1:  # one score per item: a rank-1 product, no (n_users, n_items) matrix
            user_t = torch.ones(self.data.n_users, 1, device=self.device)
            item_t: Optional[torch.Tensor] = torch.from_numpy(scores[:, None]).to(self.device)
        else:
            user_t, item_t = torch.from_numpy(scores).to(self.device), None
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = self.ranking.evaluate(user_t, item_t)
        eval_s = time.perf_counter() - t0
        self.selection.update(0, metrics)
        self.best_epoch, self.best_emb = 0, (user_t, item_t)
        row: dict[str, Any] = {"epoch": 1}
        for name, m in metrics.items():
            row.update({f"{name}/{k}": v for k, v in m.items()})
        row.update({"sample_s": 0.0, "train_s": fit_s, "eval_s": eval_s})
        self.epoch_rows.append(row)
        self.writer.add_epoch(row)
        log.info("%s", self._epoch_line(0, {"sample_s": 0.0, "train_s": fit_s, "eval_s": eval_s}, metrics, True))

    def method_settings(self) -> dict[str, Any]:
        """The model and its hyperparameters (recorded where the trained models record their sampler)."""
        return {"model": self.model_name, **{key: getattr(self.config, KEYS[key].name) for key in self.settings}}

    def method_tag(self) -> str:
        """Top-K files are MODEL@fit-TEST-top-Kitems.txt."""
        return "fit"
