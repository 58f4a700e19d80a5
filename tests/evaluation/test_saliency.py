"""Saliency maps of hand-made models whose outputs depend on known pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rrnet.evaluation.saliency import average_gradient, ensemble_forward, select_by_teff
from rrnet.plots.saliency import air_to_vacuum


def _known_pixels(x: torch.Tensor) -> torch.Tensor:
    """y0 = 3 x[10] - x[7000]; y1 = x[500]^2."""
    return torch.stack([3.0 * x[:, 10] - x[:, 7000], x[:, 500] ** 2], dim=1)


def test_saliency_peaks_at_the_pixels_the_output_depends_on() -> None:
    rng = np.random.default_rng(0)
    flux = rng.uniform(0.5, 1.5, (37, 7200)).astype(np.float32)
    sal = average_gradient(_known_pixels, flux, batch_size=8)
    assert sal.shape == (2, 7200)
    assert int(np.argmax(np.abs(sal[0]))) == 10
    assert sal[0, 10] == pytest.approx(3.0) and sal[0, 7000] == pytest.approx(-1.0)
    assert np.count_nonzero(sal[0]) == 2
    assert int(np.argmax(np.abs(sal[1]))) == 500
    assert sal[1, 500] == pytest.approx(2.0 * flux[:, 500].astype(np.float64).mean(), rel=1e-5)
    assert np.count_nonzero(sal[1]) == 1


def test_non_finite_rows_are_skipped_and_empty_input_rejected() -> None:
    flux = np.ones((3, 7200), dtype=np.float32)
    flux[1, 500] = 3.0
    flux[2, 0] = np.nan
    sal = average_gradient(_known_pixels, flux)
    assert sal[1, 500] == pytest.approx((2.0 + 6.0) / 2)  # rows 0 and 1 only
    with pytest.raises(ValueError, match="no spectrum"):
        average_gradient(_known_pixels, flux[2:])


class _PixelModel(torch.nn.Module):
    """A Gaussian-net-like model: mu = w . x (one label), var = 1."""

    def __init__(self, pixel: int, weight: float) -> None:
        super().__init__()
        self.w = torch.zeros(7200)
        self.w[pixel] = weight

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = (x * self.w).sum(dim=1, keepdim=True)
        return mu, torch.ones_like(mu)


def test_ensemble_forward_chain_rule_through_standardisation_and_clip() -> None:
    members = [_PixelModel(100, 2.0), _PixelModel(6000, 4.0)]
    flux_std = np.full(7200, 0.5, dtype=np.float32)
    forward = ensemble_forward(
        members,
        flux_mean=np.ones(7200),
        flux_std=flux_std,
        label_mean=np.array([5000.0]),
        label_std=np.array([300.0]),
    )
    flux = np.ones((4, 7200), dtype=np.float32)
    flux[:2, 6000] = 3.0  # clipped at 2.5 in half of the spectra: no gradient there
    sal = average_gradient(forward, flux)
    # d/dx100 = mean over members (2 / 2) / 0.5 * 300
    assert sal[0, 100] == pytest.approx(0.5 * 2.0 / 0.5 * 300.0)
    assert sal[0, 6000] == pytest.approx(0.5 * (0.5 * 4.0 / 0.5 * 300.0))
    assert set(np.flatnonzero(sal[0])) == {100, 6000}


def test_select_by_teff_range_and_cap() -> None:
    teff = np.array([3990.0, 4000.0, 4299.0, 4300.0, 6100.0, 4100.0])
    assert select_by_teff(teff, 4000, 4300).tolist() == [1, 2, 5]
    capped = select_by_teff(teff, 4000, 4300, max_spectra=2, seed=1)
    assert len(capped) == 2 and set(capped) <= {1, 2, 5}


def test_air_to_vacuum_known_lines() -> None:
    # H-alpha 6562.80 A (air) is 6564.61 A in vacuum; Mg b2 5172.68 -> 5174.12
    assert float(air_to_vacuum(6562.80)) == pytest.approx(6564.61, abs=0.01)
    assert float(air_to_vacuum(5172.68)) == pytest.approx(5174.12, abs=0.01)
