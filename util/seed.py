"""One seed for python, numpy, torch and numba (numba keeps its own random stream), and the state of
all four streams as one object (to set aside and restore: the FHN probe, checkpoints).

What each library accepts as a seed: python's random any integer (negative ones as their absolute value);
numpy's global RNG and numba's only 0 to 2^32 - 1; torch.manual_seed -2^63 to 2^64 - 1, but its CPU generator
(mt19937) keeps only the low 32 bits (seeds 0 and 2^32 give the same stream); the FHN probe's
numpy.random.default_rng no negative integer. So a run's seed is 0 to 2^32 - 1 (SEED_MAX): within that range
every library takes it as it is and two different seeds are two different runs."""
from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator, Optional

import numba
import numpy as np
import torch
from numba import _helperlib

from util.typing_coerce import ConfigError

SEED_MAX = 2**32 - 1  # the largest seed every library takes whole (see the module docstring)


@numba.njit(cache=True)
def _seed_numba(seed: int) -> None:
    np.random.seed(seed)


def check_seed(seed: int) -> int:
    """The seed as an int; ConfigError naming `seed` and the allowed range when it is outside 0..SEED_MAX."""
    seed = int(seed)
    if not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed: {seed} is outside the allowed range 0 to {SEED_MAX} (numpy's and numba's seeds and "
                          f"torch's CPU generator are 32-bit)")
    return seed


def seed_everything(seed: int) -> None:
    """Seed python's random, numpy's global RNG, torch (all devices) and numba's RNG (seed: 0 to SEED_MAX)."""
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    _seed_numba(seed)


def random_state(device: Optional[torch.device] = None) -> dict[str, Any]:
    """The state of every random stream a run on `device` uses: python, numpy, torch's CPU generator, numba, and
    the generator of the run's own CUDA device when it runs on one (never the other GPUs': a resume on a machine
    with fewer of them must work). Every tensor in it is a CPU tensor."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state(),
                             "numba": _helperlib.rnd_get_state(_helperlib.rnd_get_np_state_ptr())}
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device).cpu()
    return state


def set_random_state(state: dict[str, Any], device: Optional[torch.device] = None) -> None:
    """Restore what random_state() returned (its tensors moved back to the CPU first, wherever a checkpoint was
    loaded to); the CUDA generator onto the run's `device`, where it runs on one."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(torch.as_tensor(state["torch"]).cpu())
    index, words = state["numba"]
    _helperlib.rnd_set_state(_helperlib.rnd_get_np_state_ptr(), (int(index), [int(w) for w in words]))
    cuda = state.get("cuda")
    if isinstance(cuda, (list, tuple)):  # checkpoints before the run's own device only: every GPU's, in order
        index = (torch.device(device).index or 0) if device is not None else 0
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None and device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(torch.as_tensor(cuda).cpu(), device)


@contextlib.contextmanager
def preserved_random_state(device: Optional[torch.device] = None) -> Iterator[None]:
    """Run a block without moving any random stream a run on `device` uses: all are restored afterwards."""
    state = random_state(device)
    try:
        yield
    finally:
        set_random_state(state, device)
