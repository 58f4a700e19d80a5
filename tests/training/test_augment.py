"""Augmentation: the paper's pixel noise and the RRNet-cp Doppler shift."""

from __future__ import annotations

import numpy as np
import torch

from rrnet.grid import BLUE_GRID, C_KMS, GRID, RED_GRID
from rrnet.training.augment import add_pixel_noise, doppler_shift


def test_pixel_noise_hits_a_quarter_of_pixels_with_unit_gaussian() -> None:
    x = torch.zeros(200, 7200)
    y = add_pixel_noise(x, 0.25, 1.0, torch.Generator().manual_seed(0))
    hit = y != 0
    assert abs(hit.float().mean().item() - 0.25) < 0.005
    values = y[hit].double()
    assert abs(values.mean().item()) < 0.01
    assert abs(values.std().item() - 1.0) < 0.01


def test_pixel_noise_is_reproducible_from_the_generator() -> None:
    x = torch.randn(4, 100)
    a = add_pixel_noise(x, 0.25, 1.0, torch.Generator().manual_seed(5))
    b = add_pixel_noise(x, 0.25, 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def _line_spectrum(centres: list[float], sigma: float = 0.3) -> np.ndarray:
    """Gaussian absorption lines (Angstrom) on the rest-frame grid."""
    flux = np.ones_like(GRID)
    for c in centres:
        flux -= 0.5 * np.exp(-0.5 * ((GRID - c) / sigma) ** 2)
    return flux


def _centroid(flux: np.ndarray, grid: np.ndarray, centre: float) -> float:
    near = np.abs(grid - centre) < 2.0
    depth = 1.0 - flux[near]
    return float(np.sum(grid[near] * depth) / np.sum(depth))


def test_doppler_shift_moves_lines_by_lambda_v_over_c() -> None:
    blue_line, red_line = 5150.0, 6500.0
    flux = torch.as_tensor(_line_spectrum([blue_line, red_line]))
    for v in (-5.0, 3.0, 12.0):
        shifted = doppler_shift(flux[None], torch.tensor([v]))[0].numpy()
        for grid, start, line in ((BLUE_GRID, 0, blue_line), (RED_GRID, 3600, red_line)):
            arm = shifted[start : start + 3600]
            moved = _centroid(arm, grid, line) - _centroid(
                flux.numpy()[start : start + 3600], grid, line
            )
            assert abs(moved - line * v / C_KMS) < 0.003  # Angstrom; 1 km/s = 0.017-0.022 A


def test_zero_shift_is_identity_and_shifts_compose_back() -> None:
    flux = torch.as_tensor(_line_spectrum([5000.0, 5200.0, 6400.0, 6600.0]))[None].repeat(2, 1)
    assert torch.allclose(doppler_shift(flux, torch.zeros(2)), flux, atol=1e-12)
    v = torch.tensor([4.0, -7.0])
    back = doppler_shift(doppler_shift(flux, v), -v)
    interior = np.r_[50:3550, 3650:7150]
    # linear interpolation smooths slightly: the round trip is close, not exact
    assert torch.max(torch.abs(back - flux)[:, interior]) < 0.02
