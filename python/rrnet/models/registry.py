"""The model registry: a configuration's ``net`` name -> the network class that builds it."""

from __future__ import annotations

from rrnet.models.config import ModelConfig
from rrnet.models.heads import GaussianNet
from rrnet.models.rrnet import RRNet
from rrnet.models.starnet import StarNet

_REGISTRY: dict[str, type[GaussianNet]] = {"rrnet": RRNet, "starnet": StarNet}


def build_model(config: ModelConfig) -> GaussianNet:
    """Build a freshly initialised network (PyTorch default init) from its config."""
    return _REGISTRY[config.net](config)
