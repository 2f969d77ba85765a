"""Turn file paths and reading options into an Interaction (generating the synthetic dataset if needed, and
detecting the file format when none is given and the content of every file leaves no doubt)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from data import synthetic
from data.interaction import Interaction
from data.loader import DataFileError, detect_formats, read_interactions
from data.presets import get_preset

log = logging.getLogger(__name__)


def load_data(training_set: Path, eval_files: dict[str, Path], data_format: Optional[str], min_weight: float = 0.0,
              eval_mask: str = "train_valid", preset: Optional[str] = None,
              dataset_root: Optional[Path] = None) -> Interaction:
    """Read the training file and every eval file; a missing preset file names its fetch command. data_format
    None: detected from all the files together (data.loader.detect_formats) or a DataFileError saying to set it."""
    if preset == "synthetic" and dataset_root is not None and training_set.parent == dataset_root / "synthetic":
        synthetic.ensure(dataset_root / "synthetic", setting="dataset.root")  # not when files were overridden
    files = {"train": training_set, **eval_files}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        hint = f"; get the {preset} files with: {get_preset(preset).how_to_get}" if preset is not None else ""
        raise DataFileError(f"data file(s) not found: {', '.join(missing)}{hint}")
    if data_format is None:
        data_format, why = detect_formats(files)
        others = f"; the other {len(files) - 1} file(s) fit it too" if len(files) > 1 else ""
        log.info("data.format not given: read as %s (%s)%s", data_format, why, others)
    train = read_interactions(training_set, data_format, min_weight)
    evals = {name: read_interactions(path, data_format, min_weight) for name, path in eval_files.items()}
    return Interaction(train, evals, eval_mask)
