"""Model registry: model.name in conf/LightGCN.yaml -> recommender class."""
from __future__ import annotations

from typing import Any

from base.closed_form_recommender import ClosedFormRecommender
from model.graph.LightGCN import LightGCN
from model.graph.MF import MF
from model.simple.EASE import EASE
from model.simple.ItemKNN import ItemKNN
from model.simple.MostPop import MostPop
from util.typing_coerce import ConfigError, suggest

MODELS: dict[str, type] = {"LightGCN": LightGCN, "MF": MF, "MostPop": MostPop, "ItemKNN": ItemKNN, "EASE": EASE}


def get_model_class(name: str) -> type:
    """Look up a recommender class by name; an unknown name lists the valid ones."""
    if name not in MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}{suggest(name, MODELS)}; valid: {', '.join(MODELS)}")
    return MODELS[name]


def is_closed_form(name: Any) -> bool:
    """Whether model.name `name` is fitted once in closed form (MostPop, ItemKNN, EASE: no sampler, no epochs)."""
    return issubclass(MODELS.get(str(name), object), ClosedFormRecommender)
