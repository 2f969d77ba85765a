"""One seed for python, numpy, torch and numba (numba keeps its own random stream)."""
from __future__ import annotations

import random

import numba
import numpy as np
import torch


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
