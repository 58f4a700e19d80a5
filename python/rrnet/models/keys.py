"""The state_dict layout a configuration implies, and a check that names every mismatch."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from rrnet.models.config import ModelConfig
from rrnet.models.registry import build_model


class StateDictMismatch(ValueError):
    """A state_dict does not fit the architecture; the message lists the offending keys."""


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state_dict of ``build_model(config)`` (built on the meta device)."""

    with torch.device("meta"):
        model = build_model(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: ModelConfig, source: str = "state_dict"
) -> None:
    """Raise :class:`StateDictMismatch` naming missing, unexpected and mis-shaped keys."""
    expected = expected_shapes(config)
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    misshaped = [
        f"{key} {tuple(state_dict[key].shape)} (expected {expected[key]})"
        for key in expected
        if key in state_dict and tuple(state_dict[key].shape) != expected[key]
    ]
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    if misshaped:
        problems.append("mis-shaped keys: " + ", ".join(misshaped))
    if problems:
        raise StateDictMismatch(
            f"{source} does not fit {config.net} {config.mode} with {config.num_labels} "
            f"labels: " + "; ".join(problems)
        )
    not_float = [key for key, value in state_dict.items() if not value.is_floating_point()]
    if not_float:
        raise StateDictMismatch(f"{source}: non-floating-point tensors: {', '.join(not_float)}")
