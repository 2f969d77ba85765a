"""Shared test set-up: one torch thread (fast, deterministic), paths to ../shared/datasets, and the device the
tests run on.

The device: the environment variable CNSDIFF_TEST_DEVICE chooses it for the whole suite: `cpu` (the default, also
when the variable is unset or empty), `cuda`, `cuda:N` (or `auto`: the first GPU if there is one, else the CPU),
as the `device` config key takes them, resolved by util.device.resolve_device. A value that is not a device, or a
GPU this machine lacks, stops pytest before any test with one line naming the variable (exit status 4):

    CNSDIFF_TEST_DEVICE=cuda:0 OMP_NUM_THREADS=1 python -m pytest -q tests/test_samplers.py

Two fixtures hand it to the tests:
- `device`: the torch.device (torch.device("cpu") by default), for tests that build a model, sampler or evaluator
  themselves (their inputs go onto it with .to(device), their results come back with .cpu());
- `device_key`: the same device as a config value ("cpu", "cuda:0"), for tests that set the `device` key, in a
  keys dict or as a run's `--set device=...` (tests.test_end_to_end._run takes f"device={device_key}" as one of its
  overrides: a later --set wins over its own device=cpu).
A test that must run on the CPU whatever the variable says (exact recorded CPU numbers, bit-for-bit equal runs,
CPU-only behaviour such as thread counts or the CPU memory estimate, the CPU branch of a function) keeps "cpu" and
says why in a `# CPU: <why>` comment on that line. The pytest header names the device the session runs on.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
DEVICE_VARIABLE = "CNSDIFF_TEST_DEVICE"


def device_from_env(value: Optional[str]) -> torch.device:
    """The torch.device a CNSDIFF_TEST_DEVICE value names (None or blank: the CPU). pytest.UsageError naming the
    variable when the value is not a device (`gpu0`) or asks for a GPU this machine does not have."""
    from util.device import resolve_device
    from util.typing_coerce import ConfigError
    spec = (value or "").strip() or "cpu"
    try:
        return resolve_device(spec)
    except ConfigError as err:
        raise pytest.UsageError(f"{DEVICE_VARIABLE}={value!r} is not a device the tests can run on ({err}); "
                                f"unset it to run on the CPU") from None


# the device of every test that can run on any (see the docstring); a bad value is reported by pytest_configure,
# as one line rather than the traceback of a failed conftest import
_DEVICE_ERROR: Optional[pytest.UsageError] = None
try:
    DEVICE = device_from_env(os.environ.get(DEVICE_VARIABLE))
except pytest.UsageError as _err:
    DEVICE, _DEVICE_ERROR = torch.device("cpu"), _err
DEVICE_KEY = str(DEVICE)  # as the `device` config key takes it: "cpu", "cuda:0"


def pytest_configure(config):
    """Stop before collecting anything when CNSDIFF_TEST_DEVICE names no usable device."""
    if _DEVICE_ERROR is not None:
        raise _DEVICE_ERROR


def pytest_report_header(config):
    """The device line of pytest's header."""
    return f"device: {DEVICE} ({DEVICE_VARIABLE}={os.environ.get(DEVICE_VARIABLE, '')!r})"


@pytest.fixture
def device() -> torch.device:
    """The torch.device the tests run on (CNSDIFF_TEST_DEVICE; the CPU by default)."""
    return DEVICE


@pytest.fixture
def device_key() -> str:
    """The same device as a value of the `device` config key ("cpu", "cuda:0")."""
    return DEVICE_KEY


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
