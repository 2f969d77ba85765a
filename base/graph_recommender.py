"""GraphRecommender: the training loop with a pluggable negative sampler and ranking loss (BPR by default),
evaluating every eval file after each epoch; the evaluation and result files are base/reporting.py's, the checkpoints base/checkpointing.py's."""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Optional

import numpy as np

import torch
import torch.nn as nn
import torch.nn.functional as F

from base.fhn import FHNProbe, truth_matrix
from base.checkpointing import Checkpointing
from base.reporting import Reporting
from conf.config import RunConfig
from module.losses import get_loss_class
from module.losses.base import RankingLoss
from module.samplers import SAMPLERS, get_sampler_class
from module.samplers.base import NegativeOutput, NegativeSampler, TrainBatch
from util.logger import Progress
from util.loss import l2_lightgcn, l2_selfrec
from util.device import available_memory, host_device, human_bytes
from util.draws import EpochSampler
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
# ids that travel to a device as int32 (half the copy and the memory) when every user and item id fits
INT32_IDS = int(np.iinfo(np.int32).max)


class EpochIds:
    """One epoch's shuffled training pairs and their candidates on the run's device, handed out per batch as int64.

    On the CPU the arrays are the host's own (int64) and the candidates of the whole epoch are drawn up front, in
    one parallel launch. On a GPU the ids lie there as int32 (when they fit) and are widened on the device per
    batch, and `draw` gives each batch's candidates just before the batch: the host's draw for batch b + 1 then
    overlaps the device's asynchronous work on batch b."""

    def __init__(self, users: torch.Tensor, pos: torch.Tensor, negs: Optional[torch.Tensor],
                 draw: Optional[Callable[[int, int], torch.Tensor]] = None):
        if (negs is None) == (draw is None):
            raise ValueError("EpochIds takes exactly one of the epoch's candidates and a draw of a batch's")
        self.users, self.pos, self.negs, self.draw = users, pos, negs, draw

    def __len__(self) -> int:
        return len(self.users)

    def batch(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(users, positives, candidates) of rows start..stop-1, as int64 on the run's device."""
        negs = self.negs[start:stop] if self.negs is not None else self.draw(start, stop)  # type: ignore[misc]
        return self.users[start:stop].long(), self.pos[start:stop].long(), negs.long()


class GraphRecommender(Checkpointing, Reporting):
    """Trains an encoder (build_encoder) with the configured loss (BPR by default) on the configured sampler's
    negatives."""

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Raise a ConfigError when the configured loss cannot train on the configured sampler's negatives (a sampler
        that synthesises them or adds terms of its own, fewer per row than the loss needs, or several per row that
        BPR would not use; docs/losses.md), before any data is read."""
        sampler_cls = get_sampler_class(cfg.negative_sampler)
        loss_cls = get_loss_class(cfg.loss_name)
        given = sampler_cls.negatives_per_row(cfg.params)
        if cfg.loss_name == "bpr":
            if sampler_cls.embedding_negatives and given > 1:
                raise ConfigError(f"params.{cfg.negative_sampler}.n_negs: {given} negatives per row feed a loss other "
                                  f"than BPR (loss.name softmax, bsl or psl); BPR trains on {cfg.negative_sampler}'s "
                                  f"one negative (n_negs 1; docs/losses.md)")
            return

        def feeds(sampler: type[NegativeSampler]) -> bool:
            """Whether the sampler's negatives can train this loss."""
            return sampler.real_negatives or (sampler.embedding_negatives and not loss_cls.needs_items)
        if not feeds(sampler_cls):
            able = ", ".join(n for n, c in SAMPLERS.items() if feeds(c))
            what = ("synthesises its negatives and AdvInfoNCE's adversary weighs real items"
                    if sampler_cls.embedding_negatives else "synthesises its negatives or adds BPR-shaped terms of its own")
            raise ConfigError(f"loss.name: {cfg.loss_name} cannot train on {cfg.negative_sampler}'s negatives: "
                              f"{cfg.negative_sampler} {what} (samplers that can feed it: {able}; docs/losses.md)")
        if given < loss_cls.min_negatives:
            raise ConfigError(f"loss.name: {cfg.loss_name} needs at least {loss_cls.min_negatives} negatives per row "
                              f"(with one, its logsumexp is the linear gap (f_j - f_i) / tau, unbounded below); "
                              f"{cfg.negative_sampler} gives {given} (params.rns.n_negs, params.pns.n_negs, "
                              f"params.dns_mn.n_negs, params.cnsdiff.n_negs)")

    def build_encoder(self) -> nn.Module:
        """The encoder: forward() -> (user embeddings, item embeddings)."""
        raise NotImplementedError

    def build(self) -> None:
        """Encoder, negative sampler, optimiser, evaluators and selection rule."""
        cfg = self.config
        self.check_config(cfg)  # SELFRec.execute checks before the run folder is made; a direct build checks here
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
        self.loss: RankingLoss = get_loss_class(cfg.loss_name)(cfg.loss_params, self.data.n_users, self.data.n_items,
                                                                cfg.embedding_size, self.device, cfg.loss_score)
        self.loss_optimizer = self.loss.make_optimizer(decay)
        # the softmax family draws its N negatives per batch, as its references do (an epoch of 1000 per positive
        # would not fit in memory); BPR draws the epoch's at once, as it always has
        self.draw_per_batch = cfg.loss_name != "bpr"
        self.epoch_sampler = EpochSampler(self.data.train, self.sampler.n_candidates,
                                          self.sampler.candidate_weights(self.data.item_degree()))
        self.build_evaluation()
        self.fhn: Optional[FHNProbe] = None
        if cfg.fhn_probe > 0:
            self.fhn = FHNProbe(self.data, cfg.fhn_probe, cfg.seed, cfg.batch_size,
                                truth_matrix(self.data, cfg.training_set.parent), self.loss.cosine)
        log.info("negative sampler: %s", self.sampler.describe())
        if cfg.loss_name != "bpr":
            log.info("loss: %s", self.loss.describe())
        if self.selection.rule in ("test_all4", "reference"):
            whose = "the released code's" if self.selection.rule == "test_all4" else "the baselines' reference code's"
            log.warning("model selection: %s picks the reported epoch on the test file %r (%s protocol); these "
                        "numbers are optimistic. Use selection: valid for honest ones.", self.selection.rule,
                        self.selection.file, whose)
        else:
            log.info("model selection: best %s on the validation file, patience %d", cfg.selection_metric,
                     cfg.patience)

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
        terms = {self.loss.name: self.loss(batch, e_u, e_i, out), "l2": self.l2_term(users, pos, out)}
        loss = self.loss.weight(out) * terms[self.loss.name] + terms["l2"]
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
        ids = self.epoch_ids()
        t1 = time.perf_counter()
        self.model.train()
        self.sampler.train()
        trains_model = self.loss.trains_model(epoch)
        sums: dict[str, torch.Tensor] = {}
        n_batches = math.ceil(len(ids) / cfg.batch_size)
        progress = Progress(f"epoch {epoch + 1}", n_batches)
        for b in range(n_batches):
            loss, logged = self.batch_loss(*ids.batch(b * cfg.batch_size, (b + 1) * cfg.batch_size), epoch)
            self.optimizer.zero_grad(set_to_none=True)
            if self.loss_optimizer is not None:
                self.loss_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if trains_model:
                self.optimizer.step()
            else:  # an epoch of the loss's own parameters (AdvInfoNCE's adversary): the model stays as it is
                self.step_loss_parameters()
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

    def step_loss_parameters(self) -> None:
        """One step of the loss's own optimiser; an error, not a silent no-op, when none of its parameters has a
        gradient."""
        assert self.loss_optimizer is not None, "a loss that does not train the model needs its own optimiser"
        if all(p.grad is None for g in self.loss_optimizer.param_groups for p in g["params"]):
            raise RuntimeError(f"{self.loss.name}: its own parameters got no gradient in an epoch that trains them")
        self.loss_optimizer.step()

    def epoch_ids(self) -> EpochIds:
        """An epoch's shuffled pairs and candidates on the run's device. The softmax family draws each batch's
        candidates from a seed of its own; BPR draws from one seed per epoch, on the CPU all at once, elsewhere
        batch by batch (EpochSampler.draw_rows: the same candidates, numba's stream consumed alike)."""
        sampler, n = self.epoch_sampler, self.sampler.n_candidates
        if self.draw_per_batch:
            users_np, pos_np = sampler.shuffled()
            return EpochIds(self.ids_to_device(users_np), self.ids_to_device(pos_np), None,
                            lambda start, stop: self.ids_to_device(sampler.draw(users_np[start:stop], n)))
        if host_device(self.device):
            users_np, pos_np, negs_np = sampler.epoch()
            return EpochIds(self.ids_to_device(users_np), self.ids_to_device(pos_np), self.ids_to_device(negs_np))
        users_np, pos_np, seed = sampler.begin()
        return EpochIds(self.ids_to_device(users_np), self.ids_to_device(pos_np), None,
                        lambda start, stop: self.ids_to_device(sampler.draw_rows(users_np[start:stop], n, seed, start)))

    def ids_to_device(self, ids: np.ndarray) -> torch.Tensor:
        """Host user or item ids (int64) on the run's device: on the CPU the array itself; elsewhere as int32 when
        every id of the data fits (EpochIds.batch widens them to int64 on the device), on a GPU through pinned
        memory without blocking the host."""
        tensor = torch.from_numpy(ids)
        narrow = not host_device(self.device) and max(self.data.n_users, self.data.n_items) <= INT32_IDS
        dtype = torch.int32 if narrow else tensor.dtype
        if self.device.type != "cuda":
            return tensor.to(self.device, dtype)
        staged = torch.empty(tensor.shape, dtype=dtype, pin_memory=True)
        staged.copy_(tensor)
        return staged.to(self.device, non_blocking=True)

    @torch.no_grad()
    def evaluate_all(self) -> tuple[dict[str, dict[str, float]], tuple[torch.Tensor, torch.Tensor]]:
        """Metrics of every eval file for the current model, and the embeddings they came from."""
        self.model.eval()
        user_all, item_all = self.model()
        self.check_scorable(len(self.epoch_rows), (("final user", user_all), ("final item", item_all)))
        if self.loss.cosine:  # a loss that scores by cosine ranks by cosine
            user_all, item_all = F.normalize(user_all, dim=-1), F.normalize(item_all, dim=-1)
        return self.ranking.evaluate(user_all, item_all), (user_all, item_all)

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
        """Whether 0-based `epoch` ends with an evaluation: epoch eval.first (1-based), every eval.every epochs after it,
        and the last."""
        since = epoch + 1 - self.config.eval_first
        return (since >= 0 and since % self.config.eval_every == 0) or epoch == self.config.max_epoch - 1

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

    def method_settings(self) -> dict[str, Any]:
        """What metrics.json records under "sampler": the negative sampler and its settings."""
        return self.sampler.describe()

    def method_tag(self) -> str:
        """The part of the top-K file names after `model@`: the sampler's name."""
        return self.sampler.name
