"""Negative-sampler registry: negative.sampler in conf/LightGCN.yaml -> class (with its Params)."""
from __future__ import annotations

from module.samplers.adar import ADARSampler
from module.samplers.ahns import AHNSSampler
from module.samplers.base import NegativeSampler
from module.samplers.cnsdiff import CNSDiffSampler
from module.samplers.dens import DENSSampler
from module.samplers.dns import DNSSampler
from module.samplers.dns_mn import DNSMNSampler
from module.samplers.mixgcf import MixGCFSampler
from module.samplers.pns import PNSSampler
from module.samplers.rns import RNSSampler
from util.typing_coerce import ConfigError, suggest

SAMPLERS: dict[str, type[NegativeSampler]] = {
    RNSSampler.name: RNSSampler,
    PNSSampler.name: PNSSampler,
    DNSSampler.name: DNSSampler,
    DNSMNSampler.name: DNSMNSampler,
    MixGCFSampler.name: MixGCFSampler,
    DENSSampler.name: DENSSampler,
    AHNSSampler.name: AHNSSampler,
    ADARSampler.name: ADARSampler,
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
