"""Checkpointing: a trained model's state after every epoch (checkpoint.pt, and best.pt / epoch-NNN.pt as
checkpoint.keep asks), restored by --resume exactly as the uninterrupted run would have gone on, with a stopping
rule that may only be lengthened."""
from __future__ import annotations

import logging
from typing import Any

import torch

from util.io import atomic_write
from util.results import STOP_KEYS, check_record, read_checkpoint
from util.seed import random_state, set_random_state

log = logging.getLogger(__name__)


class Checkpointing:
    """For a trainer with model, optimizer, sampler, loss, loss_optimizer, selection, best_epoch, best_emb, epoch_rows, stopped_early,
    start_epoch, writer, halts() and stop_due() (base/graph_recommender.py)."""

    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        """Everything needed to continue after `epoch` exactly as an uninterrupted run would."""
        return {"epoch": epoch, "config": self.config.to_dict(), "record": self.config.record, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "sampler": self.sampler.state_dict(), "selection": dict(vars(self.selection)),
                "best_epoch": self.best_epoch, "best_emb": tuple(t.detach().cpu() for t in self.best_emb or ()),
                "epoch_rows": self.epoch_rows, "stopped_early": self.stopped_early, "random": random_state(self.device),
                "loss": self.loss.state_dict(),
                "loss_optimizer": self.loss_optimizer.state_dict() if self.loss_optimizer is not None else None}


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
        self.loss.load_state_dict(state.get("loss") or {})  # checkpoints from before the loss switch: BPR's, empty
        if self.loss_optimizer is not None:
            if state.get("loss_optimizer") is None:
                raise RuntimeError(f"{self.run_dir / 'checkpoint.pt'}: no state of {self.loss.name}'s own optimiser; "
                                   f"the checkpoint is not this run's")
            self.loss_optimizer.load_state_dict(state["loss_optimizer"])
        vars(self.selection).update(state["selection"])
        self.selection.patience = self.config.patience  # a lengthened stopping rule (--resume --set) applies
        self.best_epoch = state["best_epoch"]
        self.best_emb = tuple(t.to(self.device) for t in state["best_emb"]) or None  # () before any evaluation
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
        if self.config.resumed_at:  # the rest of the run is trained by other code than its record's commit
            note += f" (continued at commit {self.config.resumed_at})"
        self.writer.lengthen_config(now, f"after epoch {last + 1}: {note}")
        self.save_checkpoint(last, improved=False)  # checkpoint and config.json agree again (also if it stops here)
        log.info("stopping rule lengthened after epoch %d (%s): %s", last + 1, note,
                 "it stops there again" if self.stopped_early else "training continues")

