"""SELFRec: load the data once, resolve the model from the registry, run it."""
from __future__ import annotations

import logging
from typing import Any

from data.dataset import load_data
from model import get_model_class
from conf.config import RunConfig
from util.device import resolve_device
from util.logger import add_log_file, remove_log_file
from util.results import RunWriter, make_run_dir
from util.seed import seed_everything

log = logging.getLogger(__name__)


class SELFRec:
    """One run: a resolved config in, a run folder (results/<run_id>/) and a log file (log/) out."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.model_class = get_model_class(config.model_name)
        self.device = resolve_device(config.device)

    def run_stem(self) -> str:
        """model-sampler-dataset, the start of the run id."""
        cfg = self.config
        data_name = cfg.dataset or cfg.training_set.parent.name or "data"
        return f"{cfg.model_name}-{cfg.negative_sampler}-{data_name}"

    def execute(self) -> dict[str, Any]:
        """Train and evaluate; returns what metrics.json holds."""
        cfg = self.config
        run_dir = make_run_dir(cfg.output, self.run_stem())
        log_file = cfg.log_dir / f"{run_dir.name}.log"
        add_log_file(log_file)
        try:
            log.info("run %s | log %s", run_dir.name, log_file)
            RunWriter(run_dir).write_config({**cfg.to_dict(), "device.resolved": str(self.device)})
            data = load_data(cfg)
            seed_everything(cfg.seed)
            recommender = self.model_class(cfg, data, self.device, run_dir)
            return recommender.execute()
        finally:
            remove_log_file(log_file)
