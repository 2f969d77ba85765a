"""Shared test set-up: one torch thread (fast, deterministic), paths to ../shared/datasets."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


@pytest.fixture
def shared() -> Path:
    """The folder of real datasets beside the repository (skips if it is absent)."""
    if not SHARED.is_dir():
        pytest.skip("../shared/datasets is not present beside the repository")
    return SHARED


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts and ends at one torch thread and one draw thread: a test that sets more (the epoch
    benchmark's --threads 2, a resume with --threads 2) must not change the runs of the tests after it."""
    from util.device import set_threads
    set_threads(1)
    yield
    set_threads(1)


@pytest.fixture(autouse=True)
def _quiet_root_logger():
    """Keep the root logger's handlers as they were (main.py reconfigures logging)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


def write(path: Path, text: str) -> Path:
    """Write text to path (creating folders) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def wait_for(predicate: Callable[[], Any], seconds: float = 120.0, every: float = 0.1) -> Any:
    """Poll predicate until it returns something true (returned), or fail the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(every)
    raise AssertionError("timed out")
