"""Preprocessing settings and their fingerprint.

A model only works on fluxes preprocessed exactly as its training set was. The
fingerprint names every choice that changes the flux (grids, median-filter
kernel, polynomial degree, clipping bounds, iteration cap, RV correction, the
preprocessing version) and hashes them, so a store and a checkpoint can be
compared with one string. Choices that do not change the flux (workers, shard
size, which catalogue column holds the RV) are deliberately left out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rrnet.grid import BLUE_GRID, RED_GRID

PREPROCESS_VERSION: int = 1
"""Bump whenever the flux produced for the same input and settings changes."""

# The constants below restate what the kernels implement (importing the NumPy reference
# here would pull scipy.signal into every CLI start); tests/test_store.py checks they agree.
MEDFILT_KERNEL: int = 3
"""Median-filter width [pixels] of the outlier test (scipy semantics, zero padding)."""

POLY_DEGREE: int = 5
"""Degree of the continuum polynomial (in standardised log10 wavelength)."""

DEFAULT_MAX_ITER: int = 100
"""Default cap on continuum-fit iterations per arm."""

OUTLIER_CLIP: tuple[float, float] = (-4.0, 3.0)
"""Kept pixels satisfy ``lo * s < m - f < hi * s`` (median-filter test, s = std)."""

CONTINUUM_CLIP: tuple[float, float] = (-4.0, 3.0)
"""Kept points satisfy ``lo * g < p - fs < hi * g`` (continuum fit, g = std of residuals)."""

MAX_ITER_LIMIT: int = 100_000
"""Largest continuum-fit iteration cap accepted (the fit converges in tens)."""


@dataclass(frozen=True)
class PreprocessSettings:
    """The user-adjustable choices that change the preprocessed flux.

    Parameters
    ----------
    correct_rv : bool
        Shift to the rest frame with ``wave = 10**LOGLAM / (1 + rv / c)`` before
        resampling (the original method always does).
    max_iter : int
        Cap on continuum-fit iterations per arm (the original has none; spectra
        that reach the cap are reported with ``cap_hit``).
    """

    correct_rv: bool = True
    max_iter: int = DEFAULT_MAX_ITER

    def __post_init__(self) -> None:
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")

    def describe(self) -> dict[str, Any]:
        """Every flux-changing choice as plain JSON values (grids by start, step, size)."""
        return {
            "preprocess_version": PREPROCESS_VERSION,
            "blue_grid": _grid_summary(BLUE_GRID),
            "red_grid": _grid_summary(RED_GRID),
            "medfilt_kernel": MEDFILT_KERNEL,
            "poly_degree": POLY_DEGREE,
            "outlier_clip": list(OUTLIER_CLIP),
            "continuum_clip": list(CONTINUUM_CLIP),
            **asdict(self),
        }

    def fingerprint(self) -> dict[str, Any]:
        """:meth:`describe` plus ``hash``: 16 hex digits of a sha256 over the description
        and the exact grid values (so a grid built differently never matches)."""
        description = self.describe()
        digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode())
        for grid in (BLUE_GRID, RED_GRID):
            digest.update(np.ascontiguousarray(grid, dtype="<f8").tobytes())
        return {**description, "hash": digest.hexdigest()[:16]}


def _grid_summary(grid: np.ndarray) -> dict[str, float | int]:
    return {
        "start_angstrom": float(grid[0]),
        "step_angstrom": round(float(np.median(np.diff(grid))), 9),
        "n_pix": int(grid.size),
    }
