"""The fixed wavelength grids RRNet works on, and physical constants.

The grids are built exactly as the original code builds them (``numpy.arange``
with a 0.1 Angstrom step), so that resampled fluxes line up pixel for pixel with
the published ``flux_mean``/``flux_std`` normalisation.
"""

from __future__ import annotations

import numpy as np

C_KMS: float = 299792.458
"""Speed of light in km/s."""

BLUE_GRID: np.ndarray = np.arange(4968, 5328, 0.1)
"""Blue-arm grid in Angstrom (vacuum, rest frame), 3600 pixels."""

RED_GRID: np.ndarray = np.arange(6339, 6699, 0.1)
"""Red-arm grid in Angstrom (vacuum, rest frame), 3600 pixels."""

N_PIX_ARM: int = BLUE_GRID.size
N_PIX: int = BLUE_GRID.size + RED_GRID.size
"""Pixels of one preprocessed spectrum: blue then red."""

GRID: np.ndarray = np.concatenate([BLUE_GRID, RED_GRID])

assert N_PIX_ARM == 3600 and RED_GRID.size == 3600
