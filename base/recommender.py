"""Recommender: the template every model follows (build, train, write results)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from data.interaction import Interaction
from conf.config import RunConfig
from util.io import remove_stale_temp_files
from util.results import RunWriter

log = logging.getLogger(__name__)


class Recommender:
    """SELFRec's base class: holds config, data and device; execute() runs the template."""

    checkpointed = True  # writes checkpoint.pt after every epoch (what --resume continues from)

    def __init__(self, config: RunConfig, data: Interaction, device: torch.device, run_dir: Path,
                 resume: bool = False):
        self.config = config
        self.resume = resume
        self.data = data
        self.device = device
        self.run_dir = Path(run_dir)
        self.writer = RunWriter(self.run_dir)
        self.model_name = config.model_name
        self.restored = False  # a resumed run: set once its checkpoint is loaded (from then on it is changed)

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Raise a ConfigError for a configuration this model cannot run, found without data (none here)."""

    @classmethod
    def run_tag(cls, config: RunConfig) -> str:
        """The start of a run folder's name (model-sampler[.preset]-dataset-sSEED)."""
        return config.run_tag()

    def execute(self) -> dict[str, Any]:
        """Build, train, and write the results; returns the content of metrics.json."""
        self.log_model_info()
        self.build()
        if self.resume:
            self.load_checkpoint()
            self.restored = True
            # a process killed while writing left its temporary files; this one holds the run's lock (SELFRec), so
            # no other writer is at work here. After the restore: a refused resume changes nothing in the folder
            remove_stale_temp_files(self.run_dir)
        self.train()
        return self.finish()

    def log_model_info(self) -> None:
        """Log the data sizes and the main settings."""
        summary = self.data.summary()
        log.info("model %s | device %s | users %d items %d train %d", self.model_name, self.device,
                 summary["users"], summary["items"], summary["train"])
        for name, es in self.data.eval_sets.items():
            log.info("  eval file %-9s users %6d rows %7d", name, len(es.users), es.n_rows)

    def build(self) -> None:
        """Create the model and optimiser."""
        raise NotImplementedError

    def load_checkpoint(self) -> None:
        """Restore the state saved after the last finished epoch (for --resume)."""
        raise NotImplementedError

    def train(self) -> None:
        """Run the training epochs (from the first one not yet finished)."""
        raise NotImplementedError

    def finish(self) -> dict[str, Any]:
        """Write metrics and recommendations; return metrics."""
        raise NotImplementedError
