"""GraphRecommender: the BPR training loop with a pluggable negative sampler, full-ranking
evaluation of every eval file after each epoch, model selection, and the results files."""
from __future__ import annotations

import logging
import math
import os
import statistics
import time
from typing import Any, Optional

import numpy as np

import torch
import torch.nn as nn

from base.fhn import FHNProbe, truth_matrix
from base.recommender import Recommender
from base.selection import make_selection
from module.samplers import get_sampler_class
from module.samplers.base import NegativeOutput, NegativeSampler, TrainBatch
from util.evaluation import RankingEvaluator
from util.logger import Progress
from util.loss import bpr_loss, l2_lightgcn, l2_selfrec
from util.device import available_memory, human_bytes
from util.io import atomic_write, name_max, path_max
from util.results import STOP_KEYS, check_record, read_checkpoint
from util.draws import EpochSampler
from util.seed import random_state, set_random_state
from util.signals import held
from util.typing_coerce import ConfigError

log = logging.getLogger(__name__)


class DivergedError(RuntimeError):
    """A non-finite loss term or embedding: the run stops, status failed, no metrics.json."""

    user_error = True

# the largest embedding value that still scores: 64 dims of (1e15)^2 stay far below float32's 3.4e38
SCORABLE = 1e15
# a loss term whose epoch mean exceeds this gets a warning (once per run): ~2400 times the largest term of the
# project's 1129 recorded runs (CNSDiff paper's causal_kl, 4.1e5 on yahoo at the default learning rate) and 1.4e9
# times BPR's value at the start (log 2); not a divergence: the scores are still finite and rankable
LOSS_WARN = 1e9
# what the embedding tables take at least, in copies of (users + items) x embedding.size float32 values: the
# tables, their gradients, Adam's two moments, and the propagated output of a forward pass
TABLE_COPIES = 5
SHORT = {"Recall": "R", "NDCG": "N", "Precision": "P", "Hit Ratio": "HR", "ARP": "ARP"}


class GraphRecommender(Recommender):
    """Trains an encoder (build_encoder) with BPR; negatives come from the configured sampler."""

    def build_encoder(self) -> nn.Module:
        """The encoder: forward() -> (user embeddings, item embeddings)."""
        raise NotImplementedError

    def build(self) -> None:
        """Encoder, negative sampler, optimiser, evaluators and selection rule."""
        cfg = self.config
        self.check_memory()
        self.loss_names: tuple[str, ...] = ()  # the loss terms of batch_loss (the rest it logs are diagnostics)
        self.loss_warned = False
        self.model = self.build_encoder()
        sampler_cls = get_sampler_class(cfg.negative_sampler)
        self.sampler: NegativeSampler = sampler_cls(cfg.params, self.data.n_users, self.data.n_items,
                                                    cfg.embedding_size, self.device).to(self.device)
        decay = cfg.reg_lambda if cfg.reg_form == "weight_decay" else 0.0  # Adam's, on the encoder's tables
        groups = [{"params": list(self.model.parameters()), "lr": cfg.learning_rate, "weight_decay": decay}]
        groups += [{"lr": cfg.learning_rate, **g} for g in self.sampler.param_groups()]
        self.optimizer = torch.optim.Adam(groups)
        for group in self.optimizer.param_groups:  # the rates learning.rate.decay scales
            group["base_lr"] = group["lr"]
        self.epoch_sampler = EpochSampler(self.data.train, self.sampler.n_candidates,
                                          self.sampler.candidate_weights(self.data.item_degree()))
        self.build_evaluation()
        self.fhn: Optional[FHNProbe] = None
        if cfg.fhn_probe > 0:
            self.fhn = FHNProbe(self.data, cfg.fhn_probe, cfg.seed, cfg.batch_size,
                                truth_matrix(self.data, cfg.training_set.parent))
        log.info("negative sampler: %s", self.sampler.describe())
        if self.selection.rule in ("test_all4", "reference"):
            whose = "the released code's" if self.selection.rule == "test_all4" else "the baselines' reference code's"
            log.warning("model selection: %s picks the reported epoch on the test file %r (%s protocol); these "
                        "numbers are optimistic. Use selection: valid for honest ones.", self.selection.rule,
                        self.selection.file, whose)
        else:
            log.info("model selection: best %s on the validation file, patience %d", cfg.selection_metric,
                     cfg.patience)

    def build_evaluation(self) -> None:
        """One evaluator per eval file, the selection rule and the empty epoch record (every model's)."""
        cfg = self.config
        degree = self.data.item_degree().astype(np.float64)
        self.evaluators = {name: RankingEvaluator(es.users, es.truth, es.mask, cfg.top_n, self.device,
                                                  cfg.eval_batch_users, degree, cfg.pop_penalty)
                           for name, es in self.data.eval_sets.items()}
        self.selection = make_selection(cfg.selection_rule(), cfg.selection_metric, cfg.patience,
                                        cfg.selection_test, cfg.stop_watch)
        self.start_epoch, self.best_epoch, self.stopped_early = 0, None, False
        self.epoch_rows: list[dict[str, Any]] = []
        self.check_file_names()

    def check_memory(self) -> None:
        """ConfigError, before anything is allocated, when the embedding tables cannot fit: (users + items) x
        embedding.size x 4 bytes, TABLE_COPIES times, against the device's available memory."""
        cfg = self.config
        rows = self.data.n_users + self.data.n_items
        estimate = TABLE_COPIES * rows * cfg.embedding_size * 4
        limit, where = available_memory(self.device)
        if limit is not None and estimate > limit:
            raise ConfigError(f"embedding.size: {cfg.embedding_size} needs at least {human_bytes(estimate)} ({rows} "
                              f"user and item rows x {cfg.embedding_size} x 4 bytes, {TABLE_COPIES} times: the tables, "
                              f"their gradients, Adam's two moments and a forward pass), more than the "
                              f"{human_bytes(limit)} of memory {where}; use a smaller embedding.size")

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

    def l2_term(self, users: torch.Tensor, pos: torch.Tensor, out: NegativeOutput) -> torch.Tensor:
        """The L2 term on layer-0 rows (the sampler's reg_emb in place of the negatives' rows if it gives one),
        in the configured form; zero under weight_decay (Adam applies it)."""
        cfg = self.config
        if cfg.reg_form == "weight_decay":
            return users.new_zeros((), dtype=self.model.user_emb.dtype)
        u0 = self.model.user_emb[users]
        i0 = self.model.item_emb[pos]
        j0 = out.reg_emb if out.reg_emb is not None else self.model.item_emb[out.reg_items.reshape(-1)]
        if cfg.reg_form == "selfrec":
            return l2_selfrec(cfg.reg_lambda, cfg.batch_size, u0, i0, j0)
        return l2_lightgcn(cfg.reg_lambda, u0, i0, j0)

    def batch_loss(self, users: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor,
                   epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward pass of one batch: the total loss, and every loss term and diagnostic to log."""
        user_all, item_all, layers = self.model.propagate(self.sampler.needs_layers)
        e_u, e_i = user_all[users], item_all[pos]
        batch = TrainBatch(users, pos, negs, epoch, self.config.max_epoch, user_all, item_all, layers)
        out = self.sampler.negatives(batch, e_u, e_i)
        terms = {"bpr": bpr_loss(e_u, e_i, out.neg_emb), "l2": self.l2_term(users, pos, out)}
        loss = out.bpr_weight * terms["bpr"] + terms["l2"]
        for name, (weight, value) in out.losses.items():
            terms[name] = value
            loss = loss + weight * value
        terms["loss"] = loss
        self.loss_names = tuple(terms)
        return loss, {**terms, **out.diagnostics}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the shuffled training pairs; returns mean loss terms, diagnostics and timings."""
        cfg = self.config
        t0 = time.perf_counter()
        users_t, pos_t, negs_t = (self.to_device(a) for a in self.epoch_sampler.epoch())
        t1 = time.perf_counter()
        self.model.train()
        self.sampler.train()
        sums: dict[str, torch.Tensor] = {}
        n_batches = math.ceil(len(users_t) / cfg.batch_size)
        progress = Progress(f"epoch {epoch + 1}", n_batches)
        for b in range(n_batches):
            sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
            loss, logged = self.batch_loss(users_t[sl], pos_t[sl], negs_t[sl], epoch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for name, value in logged.items():
                value = value.detach()
                sums[name] = sums[name] + value if name in sums else value
            progress.update(b + 1)
        progress.close()
        self.sampler.on_epoch_end(epoch)
        means = (torch.stack([v.float() for v in sums.values()]) / n_batches).tolist()  # one device sync
        result = dict(zip(sums, means))
        result["sample_s"] = t1 - t0
        result["train_s"] = time.perf_counter() - t1
        return result

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        """A host array on the run's device: on a GPU through pinned memory, without blocking the host."""
        tensor = torch.from_numpy(array)
        if self.device.type != "cuda":
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)

    @torch.no_grad()
    def evaluate_all(self) -> tuple[dict[str, dict[str, float]], tuple[torch.Tensor, torch.Tensor]]:
        """Metrics of every eval file for the current model, and the embeddings they came from."""
        self.model.eval()
        user_all, item_all = self.model()
        self.check_scorable(len(self.epoch_rows), (("final user", user_all), ("final item", item_all)))
        progress = Progress("evaluating", len(self.evaluators))
        metrics = {}
        for n, (name, ev) in enumerate(self.evaluators.items()):
            metrics[name] = ev.evaluate(user_all, item_all)
            progress.update(n + 1)
        progress.close()
        return metrics, (user_all, item_all)

    def train(self) -> None:
        """Epoch loop with evaluation, selection, early stopping, a divergence guard and a checkpoint
        after every epoch; starts after the last finished epoch of a resumed run."""
        cfg = self.config
        if self.stopped_early:
            return
        for epoch in range(self.start_epoch, cfg.max_epoch):
            self.set_learning_rate(epoch)
            stats = self.train_epoch(epoch)
            self.check_finite(epoch, stats)
            self.check_loss_scale(epoch, stats)
            if self.fhn is not None:
                t0 = time.perf_counter()
                stats.update(self.fhn.measure(self.model, self.sampler, self.epoch_sampler, epoch, cfg.max_epoch,
                                              self.device))
                stats["fhn_s"] = time.perf_counter() - t0
            metrics: dict[str, dict[str, float]] = {}
            improved = False
            stats["eval_s"] = 0.0
            if self.evaluates(epoch):
                t0 = time.perf_counter()
                metrics, embeddings = self.evaluate_all()
                stats["eval_s"] = time.perf_counter() - t0
                improved = self.selection.update(epoch, metrics)
                if improved:
                    self.best_epoch, self.best_emb = epoch, embeddings
            row: dict[str, Any] = {"epoch": epoch + 1}
            row.update({k: v for k, v in stats.items() if not k.endswith("_s")})
            for name, m in metrics.items():
                row.update({f"{name}/{k}": v for k, v in m.items()})
            row.update({k: v for k, v in stats.items() if k.endswith("_s")})
            with held():  # the epoch's record, checkpoint and heartbeat are written whole; a signal waits for them
                self.epoch_rows.append(row)
                self.writer.add_epoch(row)
                log.info("%s", self._epoch_line(epoch, stats, metrics, improved))
                if self.halts(epoch):
                    self.stopped_early = True
                    log.info("halted after epoch %d (early_stop.halt_after)", epoch + 1)
                elif metrics and self.stop_due(epoch):
                    self.stopped_early = True
                    log.info("early stop after epoch %d: no %s improvement for %d evaluations", epoch + 1,
                             cfg.selection_metric, cfg.patience)
                self.save_checkpoint(epoch, improved)
                self.writer.write_status("running", epoch=epoch + 1)  # the heartbeat: epoch and time after each epoch
            if self.stopped_early:
                break

    def halts(self, epoch: int) -> bool:
        """Whether early_stop.halt_after ends training after 0-based `epoch`, whatever validation says."""
        return 0 < self.config.halt_after <= epoch + 1

    def stop_due(self, epoch: int) -> bool:
        """Whether training stops after evaluated 0-based `epoch`: the selection's patience ran out and at least
        early_stop.min_epochs epochs have run."""
        return epoch + 1 >= self.config.min_epochs and self.selection.should_stop()

    def set_learning_rate(self, epoch: int) -> None:
        """Step decay (learning.rate.decay every learning.rate.step epochs; torch's StepLR), stateless so a
        resumed run gets the same rates; each group keeps its own base rate."""
        cfg = self.config
        if cfg.lr_step <= 0:
            return
        factor = cfg.lr_decay ** (epoch // cfg.lr_step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def evaluates(self, epoch: int) -> bool:
        """Whether 0-based `epoch` ends with an evaluation: every eval.every epochs from the first, and the last."""
        return epoch % self.config.eval_every == 0 or epoch == self.config.max_epoch - 1

    def check_finite(self, epoch: int, stats: dict[str, float]) -> None:
        """Stop with DivergedError when a loss term or an embedding table is not finite."""
        for name, value in stats.items():
            if name != "loss" and not name.endswith("_s") and not math.isfinite(value):
                raise DivergedError(f"training diverged in epoch {epoch + 1}: loss term {name!r} is {value} "
                                    f"(lower learning.rate?)")
        if not math.isfinite(stats.get("loss", 0.0)):
            raise DivergedError(f"training diverged in epoch {epoch + 1}: the total loss is {stats['loss']}")
        self.check_scorable(epoch, (("user", self.model.user_emb), ("item", self.model.item_emb)))

    def check_loss_scale(self, epoch: int, stats: dict[str, float]) -> None:
        """A warning, once per run, when a loss term's epoch mean exceeds LOSS_WARN: the learning rate is far too large.
        Training goes on: such a model still ranks (finite scores, measured honestly, and selection sees them)."""
        if self.loss_warned:
            return
        for name in self.loss_names:
            value = stats.get(name)
            if value is not None and abs(value) > LOSS_WARN:
                self.loss_warned = True
                log.warning("epoch %d: loss term %r is %.3g, above %.0e (BPR starts at 0.69; the largest term of this "
                            "project's recorded runs is 4.1e+05): learning.rate %g is probably far too large; training "
                            "goes on (the scores are finite and the metrics measured), but lower learning.rate",
                            epoch + 1, name, value, LOSS_WARN, self.config.learning_rate)
                return

    def check_scorable(self, epoch: int, tables: tuple[tuple[str, torch.Tensor], ...]) -> None:
        """DivergedError when an embedding table is not finite or too large for its inner products to be finite."""
        for name, table in tables:
            if not bool(torch.isfinite(table).all()):
                raise DivergedError(f"training diverged in epoch {epoch + 1}: the {name} embeddings are not finite "
                                    f"(lower learning.rate?)")
            largest = float(table.detach().abs().max()) if table.numel() else 0.0
            if largest > SCORABLE:
                raise DivergedError(f"training diverged in epoch {epoch + 1}: the {name} embeddings reach {largest:.3g}, "
                                    f"too large to score (limit {SCORABLE:.0e}; lower learning.rate?)")

    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        """Everything needed to continue after `epoch` exactly as an uninterrupted run would."""
        return {"epoch": epoch, "config": self.config.to_dict(), "record": self.config.record, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "sampler": self.sampler.state_dict(), "selection": dict(vars(self.selection)),
                "best_epoch": self.best_epoch, "best_emb": tuple(t.detach().cpu() for t in self.best_emb),
                "epoch_rows": self.epoch_rows, "stopped_early": self.stopped_early, "random": random_state(self.device)}

    def save_checkpoint(self, epoch: int, improved: bool) -> None:
        """checkpoint.pt (atomic) after every epoch; best.pt / epoch-NNN.pt as checkpoint.keep asks."""
        state = self.checkpoint_state(epoch)
        atomic_write(self.run_dir / "checkpoint.pt", lambda handle: torch.save(state, handle))
        keep = self.config.checkpoint_keep
        if keep == "all":
            atomic_write(self.run_dir / f"epoch-{epoch + 1:03d}.pt", lambda handle: torch.save(state, handle))
        if keep == "best" and improved:
            atomic_write(self.run_dir / "best.pt", lambda handle: torch.save(state, handle))

    def load_checkpoint(self) -> None:
        """Restore model, optimiser, sampler, selection, best embeddings, rows and random streams."""
        # onto the CPU whatever the run's device: load_state_dict copies each tensor where its module lives, and
        # the random states must stay CPU tensors (SELFRec checked that the file exists)
        state = read_checkpoint(self.run_dir / "checkpoint.pt", "cpu")
        check_record(self.run_dir, state)  # config.json must still be the run's record
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        vars(self.selection).update(state["selection"])
        self.selection.patience = self.config.patience  # a lengthened stopping rule (--resume --set) applies
        self.best_epoch = state["best_epoch"]
        self.best_emb = tuple(t.to(self.device) for t in state["best_emb"])
        self.epoch_rows = state["epoch_rows"]
        self.writer.rows = list(self.epoch_rows)
        self.stopped_early = state["stopped_early"]
        self.start_epoch = state["epoch"] + 1
        set_random_state(state["random"], self.device)
        log.info("resumed after epoch %d of %d", self.start_epoch, self.config.max_epoch)
        self.lengthen(state)

    def lengthen(self, state: dict[str, Any]) -> None:
        """A resumed run whose stopping rule was lengthened (STOP_KEYS, checked by config_of_run): it stops
        early only if the new rule stops it at its last epoch, and config.json records the change."""
        now = self.config.to_dict()
        before = state.get("config") or {}
        changed = {k: (before.get(k, 0), now[k]) for k in STOP_KEYS if before.get(k, 0) != now[k]}
        if not changed:
            return
        last = state["epoch"]
        self.stopped_early = bool(state["stopped_early"]) and (self.halts(last) or self.stop_due(last))
        note = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
        self.writer.lengthen_config(now, f"after epoch {last + 1}: {note}")
        self.save_checkpoint(last, improved=False)  # checkpoint and config.json agree again (also if it stops here)
        log.info("stopping rule lengthened after epoch %d (%s): %s", last + 1, note,
                 "it stops there again" if self.stopped_early else "training continues")

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

    def method_settings(self) -> dict[str, Any]:
        """What metrics.json records under "sampler": the negative sampler and its settings."""
        return self.sampler.describe()

    def method_tag(self) -> str:
        """The part of the top-K file names after `model@`: the sampler's name."""
        return self.sampler.name

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
