"""Whether the members' training state fits the device, asked before it is allocated: all
members train at once, so ``--members 100000`` asked for terabytes and the kernel's
out-of-memory killer ended the run without a word."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from rrnet.models.config import ModelConfig
from rrnet.utils.sizes import size_text

WEIGHT_BYTES = 4
"""A float32 weight; a trained one also has a gradient and Adam's two moments (x4)."""


def member_state_bytes(config: ModelConfig, frozen: Callable[[str], bool] | None = None) -> int:
    """Bytes of one member's weights, gradients and optimiser state, a lower bound of what
    training holds (activations not counted); ``frozen`` names the parameters not trained.
    Counted on a model built on the meta device (no memory)."""
    from rrnet.models.registry import build_model

    with torch.device("meta"):
        model = build_model(config)
    return sum(
        WEIGHT_BYTES * p.numel() * (1 if frozen is not None and frozen(name) else 4)
        for name, p in model.named_parameters()
    )


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can still get on ``device``; None where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    limits = [_meminfo_available(), _cgroup_room()]
    known = [x for x in limits if x is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """What a cgroup v2 memory limit (a container, a batch job) leaves, if there is one."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((root / "memory.current").read_text()), 0)
    except (OSError, ValueError):
        return None


def check_member_memory(
    config: ModelConfig,
    members: int,
    device: torch.device,
    frozen: Callable[[str], bool] | None = None,
) -> None:
    """ValueError, one line, when ``members`` members' weights and optimiser state alone
    exceed what ``device`` has available (the run could never finish)."""
    have = available_bytes(device)
    if have is None:
        return
    per_member = member_state_bytes(config, frozen)
    need = per_member * members
    if need > have:
        fit = max(have // per_member, 0)
        raise ValueError(
            f"{members:,} members need at least {size_text(need)} for their weights and optimiser "
            f"state ({size_text(per_member)} each) but {device} has {size_text(have)} available: "
            f"train at most {fit:,} members here (fewer: the batches need memory too)"
        )
