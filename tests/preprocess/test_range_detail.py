"""'The wavelength grid leaves the observed range' names the arm, both ranges and the RV's
likely mistake (m/s instead of km/s, or a -9999 placeholder)."""

from __future__ import annotations

import numpy as np
import pytest

from rrnet.preprocess.kernels import range_detail, resample_spectrum, rv_hint
from rrnet.preprocess.status import PreprocessError

BLUE = np.log10(np.linspace(4900.0, 5400.0, 3000))
RED = np.log10(np.linspace(6300.0, 6850.0, 3000))
FLUX = np.ones(3000, np.float32)


def test_hints() -> None:
    assert "placeholder" in rv_hint(-9999.0)
    assert "m/s" in rv_hint(25_000.0)
    assert rv_hint(-35.2) == ""


def test_names_the_arm_and_both_ranges() -> None:
    # +300 km/s shifts the red arm's rest-frame start past the red grid's start only
    shift = 1.0 + 3000.0 / 299_792.458
    detail = range_detail(BLUE, np.log10(np.linspace(6345.0 * shift, 6850.0, 3000)), 3000.0)
    assert detail.startswith("red arm: grid 6339.0-6698.9 A, observed (RV-corrected) 6345.0-")
    assert "blue arm" not in detail and "m/s" in detail


def test_single_spectrum_error_carries_the_detail() -> None:
    assert resample_spectrum(BLUE, FLUX, RED, FLUX, 10.0).shape == (7200,)
    with pytest.raises(PreprocessError, match=r"blue arm: grid .* observed .*placeholder"):
        resample_spectrum(BLUE, FLUX, RED, FLUX, -9999.0)
