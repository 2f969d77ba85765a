"""Resolve the one torch.device of a run from `auto|cpu|cuda|cuda:N`, and set its CPU threads."""
from __future__ import annotations

import re

import torch

from util.sampler import set_draw_threads
from util.typing_coerce import ConfigError


def resolve_device(spec: str) -> torch.device:
    """Turn a device spec into a torch.device; error if a GPU is asked for but absent."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match is None:
        raise ConfigError(f"device: {spec!r} is not one of auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"device: {spec!r} was asked for but no CUDA GPU is available (use auto or cpu)")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device: {spec!r} but only {torch.cuda.device_count()} GPU(s) exist")
    return torch.device(f"cuda:{index}")


def set_threads(n: int) -> None:
    """Use n CPU threads for torch and for the parallel candidate draws (main.py's --threads)."""
    if n < 1:
        raise ConfigError(f"--threads: {n} must be >= 1")
    torch.set_num_threads(n)
    set_draw_threads(n)
