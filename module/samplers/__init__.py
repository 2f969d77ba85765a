"""Negative-sampler registry: negative.sampler in conf/LightGCN.yaml -> class (with its Params)."""
from __future__ import annotations

from module.samplers.base import NegativeSampler
from module.samplers.cnsdiff import CNSDiffSampler
from module.samplers.rns import RNSSampler
from util.typing_coerce import ConfigError, suggest

SAMPLERS: dict[str, type[NegativeSampler]] = {
    RNSSampler.name: RNSSampler,
    CNSDiffSampler.name: CNSDiffSampler,
}


def sampler_names() -> list[str]:
    """Registered sampler names."""
    return list(SAMPLERS)


def get_sampler_class(name: str) -> type[NegativeSampler]:
    """Look up a sampler class; an unknown name lists the valid ones."""
    if name not in SAMPLERS:
        raise ConfigError(f"negative.sampler: unknown sampler {name!r}{suggest(name, SAMPLERS)}; "
                          f"valid: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
