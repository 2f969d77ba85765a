"""One seed for python, numpy, torch and numba (numba keeps its own random stream), and the state of
all four streams as one object (to set aside and restore: the FHN probe, checkpoints)."""
from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numba
import numpy as np
import torch
from numba import _helperlib


@numba.njit(cache=True)
def _seed_numba(seed: int) -> None:
    np.random.seed(seed)


def seed_everything(seed: int) -> None:
    """Seed python's random, numpy's global RNG, torch (all devices) and numba's RNG."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    _seed_numba(seed % 2**32)


def random_state() -> dict[str, Any]:
    """The state of every random stream: python, numpy, torch (CPU and every CUDA device), numba."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state(),
                             "numba": _helperlib.rnd_get_state(_helperlib.rnd_get_np_state_ptr())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any]) -> None:
    """Restore what random_state() returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    index, words = state["numba"]
    _helperlib.rnd_set_state(_helperlib.rnd_get_np_state_ptr(), (int(index), [int(w) for w in words]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Run a block without moving any random stream: every stream is restored afterwards."""
    state = random_state()
    try:
        yield
    finally:
        set_random_state(state)
