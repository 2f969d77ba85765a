"""Turn a RunConfig's file keys into an Interaction (generating the synthetic dataset if needed)."""
from __future__ import annotations

import logging

from data import synthetic
from data.interaction import Interaction
from data.loader import DataFileError, read_interactions
from data.presets import get_preset
from conf.config import RunConfig

log = logging.getLogger(__name__)


def load_data(cfg: RunConfig) -> Interaction:
    """Read the training file and every eval file of cfg; a missing preset file names its fetch command."""
    folder = cfg.dataset_root / "synthetic"
    if cfg.dataset == "synthetic" and cfg.training_set.parent == folder:  # not when files were overridden
        synthetic.ensure(folder)
    files = {"train": cfg.training_set, **cfg.eval_files()}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        hint = ""
        if cfg.dataset is not None:
            hint = f"; get the {cfg.dataset} files with: {get_preset(cfg.dataset).how_to_get}"
        raise DataFileError(f"data file(s) not found: {', '.join(missing)}{hint}")
    train = read_interactions(cfg.training_set, cfg.data_format, cfg.min_weight)
    evals = {name: read_interactions(path, cfg.data_format, cfg.min_weight) for name, path in cfg.eval_files().items()}
    return Interaction(train, evals, cfg.eval_mask)
