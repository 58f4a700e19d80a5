"""The one rule for turning a device name into a torch device (training and inference)."""

from __future__ import annotations

import torch

from rrnet.models.config import PRECISIONS


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


def device_problem(device: str | torch.device) -> str | None:
    """One line when ``--device`` cannot be used here (a bogus name, a missing GPU), for
    the commands to refuse it before any work; None when it can."""
    if str(device) in ("auto", "cpu"):
        return None
    try:
        resolve_device(device)
    except (ValueError, RuntimeError) as exc:
        return f"--device: {exc}"
    return None


FLOAT32_MODES = ("fp32", "tf32")
"""How float32 products run on a GPU: exact IEEE fp32, or TensorFloat-32 (10-bit mantissa)."""


def set_float32_mode(mode: str) -> None:
    """Make every float32 matrix product and cuDNN convolution ``fp32`` or ``tf32``.

    Both switches at once: torch's matmul precision alone leaves cuDNN convolutions in
    TF32 (its default), so "fp32" would not be fp32 on an Ampere or newer GPU.
    """
    if mode not in FLOAT32_MODES:
        raise ValueError(f"float32 mode must be one of {FLOAT32_MODES}, got {mode!r}")
    torch.set_float32_matmul_precision("highest" if mode == "fp32" else "high")
    torch.backends.cudnn.allow_tf32 = mode == "tf32"


def use_precision(precision: str, device: torch.device) -> bool:
    """Set torch up for ``precision`` on ``device``; True where bf16 autocast is wanted.

    On a GPU, fp32 and bf16 make every float32 product exact fp32 (bf16 autocast covers
    the rest) and tf32 allows TensorFloat-32, through torch's process-wide switches
    (:func:`set_float32_mode`). A CPU has no TF32: tf32 runs as fp32 there.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type == "cuda":
        set_float32_mode("tf32" if precision == "tf32" else "fp32")
    return precision == "bf16"
