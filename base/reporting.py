"""Reporting: what every model shares once it has scores, trained or fitted in closed form: one evaluator per
eval file, the selection rule, the epoch lines of the log, metrics.json and the top-K recommendation files."""
from __future__ import annotations

import logging
import os
import statistics
from typing import Any, Optional

import numpy as np
import torch

from base.recommender import Recommender
from base.selection import make_selection
from util.evaluation import RankingEvaluator, SharedRanking
from util.io import name_max, path_max
from util.typing_coerce import ConfigError

log = logging.getLogger(__name__)
SHORT = {"Recall": "R", "NDCG": "N", "Precision": "P", "Hit Ratio": "HR", "ARP": "ARP"}


class Reporting(Recommender):
    """Evaluation, selection and the run's result files; a model says what it records (method_settings) and how
    its top-K files are named (method_tag)."""

    def build_evaluation(self) -> None:
        """One evaluator per eval file, the selection rule and the empty epoch record (every model's)."""
        cfg = self.config
        degree = self.data.item_degree().astype(np.float64)
        self.evaluators = {name: RankingEvaluator(es.users, es.truth, es.mask, cfg.top_n, self.device,
                                                  cfg.eval_batch_users, degree, cfg.pop_penalty,
                                                  self.data.n_users if cfg.eval_users == "all" else None)
                           for name, es in self.data.eval_sets.items()}
        self.ranking = SharedRanking(self.evaluators)  # ranks each user once for files whose masks nest
        self.selection = make_selection(cfg.selection_rule(), cfg.selection_metric, cfg.patience,
                                        cfg.selection_test, cfg.stop_watch)
        self.start_epoch, self.best_epoch, self.stopped_early = 0, None, False
        self.best_emb: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # the embeddings of the selected epoch
        self.epoch_rows: list[dict[str, Any]] = []
        self.check_file_names()


    def recommendation_file(self, name: str) -> str:
        """The name of the top-K recommendation file of test file `name`."""
        return f"{self.model_name}@{self.method_tag()}-{name}-top-{max(self.config.top_n)}items.txt"


    def check_file_names(self) -> None:
        """ConfigError before training when a top-K file's name (made from the test file's name) is longer than the
        run folder's file system takes: it used to fail only when the results were written, after training."""
        longest, limit = path_max(self.run_dir), name_max(self.run_dir)
        for name in self.evaluators:
            if name == "valid":
                continue
            file = self.recommendation_file(name)
            size, whole = len(os.fsencode(file)), len(os.fsencode(str(self.run_dir / file)))
            if size > limit or whole > longest:
                what = (f"{size} bytes, a name may have {limit}" if size > limit
                        else f"the path {whole} bytes, at most {longest}")
                raise ConfigError(f"test.set: the top-K file of the test file named {name!r} would be {file!r} ({what} "
                                  f"in {self.run_dir}); give it a shorter name (test.set as a mapping name: path)")


    def _epoch_line(self, epoch: int, stats: dict[str, float], metrics: dict[str, dict[str, float]],
                    improved: bool) -> str:
        cfg = self.config
        losses = " ".join(f"{k} {v:.4g}" for k, v in stats.items() if not k.endswith("_s"))
        k = max(cfg.top_n)
        if not metrics:
            return f"epoch {epoch + 1}/{cfg.max_epoch} | {losses} | sample {stats['sample_s']:.2f}s train {stats['train_s']:.2f}s"
        evals = " | ".join(f"{name} R@{k} {m[f'Recall@{k}']:.5f} N@{k} {m[f'NDCG@{k}']:.5f}"
                           for name, m in metrics.items())
        times = f"sample {stats['sample_s']:.2f}s train {stats['train_s']:.2f}s eval {stats['eval_s']:.2f}s"
        return f"epoch {epoch + 1}/{cfg.max_epoch} | {losses} | {evals} | {times}{' *' if improved else ''}"


    def finish(self) -> dict[str, Any]:
        """metrics.json and one top-K recommendation file per test file, from the selected epoch."""
        cfg = self.config
        best_row = self.epoch_rows[self.best_epoch]
        per_file = {name: {m: best_row[f"{name}/{m}"] for m in self._metric_names()} for name in self.evaluators}
        evaluated = [r for r in self.epoch_rows if r["eval_s"] > 0]  # eval_s is the median of evaluations
        timing = {key: statistics.median(r[key] for r in (evaluated if key == "eval_s" else self.epoch_rows))
                  for key in ("sample_s", "train_s", "eval_s")}
        result = {
            "run": self.run_dir.name,
            "model": cfg.model_name,
            "sampler": self.method_settings(),
            "dataset": cfg.dataset or str(cfg.training_set),
            "device": str(self.device),
            "seed": cfg.seed,
            "selection": {"rule": self.selection.rule, "requested": cfg.selection, "file": self.selection.file,
                          "metric": self.selection.metric, "epoch": self.best_epoch + 1,
                          "epochs_run": len(self.epoch_rows), "max_epoch": cfg.max_epoch,
                          "stopped_early": self.stopped_early},
            "metrics": per_file,
            "data": self.data.summary(),
            "median_epoch_seconds": timing,
        }
        self.writer.write_metrics(result)
        self.write_recommendations()
        self._log_final(result)
        return result


    def _metric_names(self) -> list[str]:
        return [f"{m}@{k}" for k in sorted(self.config.top_n) for m in ("Hit Ratio", "Precision", "Recall", "NDCG", "ARP")]


    def write_recommendations(self) -> None:
        """SELFRec-style top-K lists of each test file's users at the selected epoch; '*' marks a hit."""
        user_all, item_all = self.best_emb
        k = max(self.config.top_n)
        for name, ev in self.evaluators.items():
            if name == "valid":
                continue
            scores, items = ev.topk(user_all, item_all, k)
            scores, items = scores.cpu().numpy(), items.cpu().numpy()
            truth = self.data.eval_sets[name].truth
            lines = []
            for row, u in enumerate(ev.users_np):
                held = set(truth.indices[truth.indptr[u]:truth.indptr[u + 1]].tolist())
                recs = " ".join(f"({self.data.item_ids[i]},{s:.6g}){'*' if i in held else ''}"
                                for i, s in zip(items[row], scores[row]))
                lines.append(f"{self.data.user_ids[u]}: {recs}\n")
            path = self.writer.write_recommendations(self.recommendation_file(name), lines)
            log.info("top-%d recommendations for %s written to %s", k, name, path)


    def _log_final(self, result: dict[str, Any]) -> None:
        sel = result["selection"]
        log.info("selected epoch %d of %d by rule %s (%s on %s)", sel["epoch"], sel["epochs_run"], sel["rule"],
                 sel["metric"], sel["file"])
        for name, m in result["metrics"].items():
            log.info("  %-9s %s", name, "  ".join(f"{SHORT[k.split('@')[0]]}@{k.split('@')[1]} {v:.5f}"
                                                   for k, v in m.items()))
        log.info("results in %s", self.run_dir)


    def method_settings(self) -> dict[str, Any]:
        """What metrics.json records under "sampler": the method and its settings."""
        raise NotImplementedError

    def method_tag(self) -> str:
        """The part of the top-K file names after `model@`."""
        raise NotImplementedError
