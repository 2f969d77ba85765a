"""Ranking-loss registry: loss.name in conf/LightGCN.yaml -> class (with its Params in conf/params.py LOSS_PARAMS)."""
from __future__ import annotations

from module.losses.advinfonce import AdvInfoNCELoss
from module.losses.base import RankingLoss
from module.losses.bpr import BPRLoss
from module.losses.bsl import BSLLoss
from module.losses.psl import PSLLoss
from module.losses.softmax import SoftmaxLoss
from util.typing_coerce import ConfigError, suggest

LOSSES: dict[str, type[RankingLoss]] = {
    BPRLoss.name: BPRLoss,
    SoftmaxLoss.name: SoftmaxLoss,
    BSLLoss.name: BSLLoss,
    PSLLoss.name: PSLLoss,
    AdvInfoNCELoss.name: AdvInfoNCELoss,
}


def get_loss_class(name: str) -> type[RankingLoss]:
    """Look up a loss class; an unknown name lists the valid ones."""
    if name not in LOSSES:
        raise ConfigError(f"loss.name: unknown loss {name!r}{suggest(name, LOSSES)}; valid: {', '.join(LOSSES)}")
    return LOSSES[name]
