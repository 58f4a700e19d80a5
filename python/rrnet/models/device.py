"""The one rule for turning a device name into a torch device (training and inference)."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else the CPU; other names as torch reads them.

    Asking for a CUDA device on a machine without one is a ValueError here, at the
    start, rather than a torch error at the first tensor moved there.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
    return dev
