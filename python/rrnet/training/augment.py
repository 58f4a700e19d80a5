"""Training-time augmentation: pixel noise (the paper) and RV perturbation (RRNet-cp).

Both draw from an explicit ``torch.Generator`` so that a run is reproducible from its
seed alone (resuming after a kill gives the same numbers as an uninterrupted run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rrnet.grid import BLUE_GRID, C_KMS, RED_GRID

GRID_STEP = 0.1
"""Pixel size of both arms in Angstrom."""


def add_pixel_noise(
    x: torch.Tensor, fraction: float, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """Add N(0, sigma) to each element of ``x`` independently with probability ``fraction``.

    ``x`` is standardised flux; the paper uses fraction 0.25 and sigma 1 in that space.
    """
    if fraction <= 0 or sigma <= 0:
        return x
    return x + pixel_noise(x, fraction, sigma, generator)


def pixel_noise(
    x: torch.Tensor, fraction: float, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """The noise :func:`add_pixel_noise` adds to ``x`` (same draws, same values)."""
    hit = torch.rand(x.shape, generator=generator, device=x.device) < fraction
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return hit.to(x.dtype) * noise * sigma


@dataclass(frozen=True)
class MemberNoise:
    """Pixel noise for stacked member batches ``[M, B, P]``, one generator per member.

    Each member's noise comes from its own stream, so the members can be augmented
    on different threads (the random draws are serial: ~0.1 s per 6 x 256 batch on
    one core) and the values do not depend on how the members are split.
    """

    fraction: float
    sigma: float
    generators: Sequence[torch.Generator]

    def apply(self, x: torch.Tensor, lo: int = 0) -> torch.Tensor:
        """``x`` (members ``lo:lo + len(x)`` of the stack, ``[m, B, P]``) plus their noise,
        as a new tensor: ``x`` is never written, since other threads' autograd graphs may
        hold views of the same storage."""
        if self.fraction <= 0 or self.sigma <= 0:
            return x
        out = torch.empty_like(x)
        for j in range(x.shape[0]):
            noise = pixel_noise(x[j], self.fraction, self.sigma, self.generators[lo + j])
            torch.add(x[j], noise, out=out[j])
        return out


def _arm_offsets() -> list[tuple[int, np.ndarray]]:
    """(first pixel, wavelengths) of each arm in the concatenated 7200-pixel vector."""
    return [(0, BLUE_GRID), (BLUE_GRID.size, RED_GRID)]


def doppler_shift(flux: torch.Tensor, velocity_kms: torch.Tensor) -> torch.Tensor:
    """Shift normalised rest-frame flux ``[..., 7200]`` by ``velocity_kms`` ``[...]``.

    The shifted spectrum at wavelength l is the original at ``l / (1 + v/c)`` (a
    positive velocity moves lines redward), linearly interpolated on each arm's grid;
    beyond an arm's end the edge pixel is repeated. Arms are shifted independently.
    """
    beta = (velocity_kms.to(torch.float64) / C_KMS)[..., None]
    out = torch.empty_like(flux)
    for start, grid in _arm_offsets():
        lam = torch.as_tensor(grid, dtype=torch.float64, device=flux.device)
        n = lam.numel()
        # source position in pixels: i + (l / (1 + beta) - l) / step
        pos = torch.arange(n, device=flux.device, dtype=torch.float64) - lam * beta / (
            (1.0 + beta) * GRID_STEP
        )
        pos = pos.clamp(0, n - 1)
        left = pos.floor().long().clamp(max=n - 2)
        w = (pos - left).to(flux.dtype)
        arm = flux[..., start : start + n]
        lo = torch.gather(arm, -1, left.expand(arm.shape))
        hi = torch.gather(arm, -1, (left + 1).expand(arm.shape))
        out[..., start : start + n] = lo + w * (hi - lo)
    return out


def random_velocities(
    shape: tuple[int, ...], max_kms: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Velocities drawn uniformly from [-max_kms, max_kms] km/s."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return (2.0 * u - 1.0) * max_kms
