"""Per-spectrum status codes shared by the Rust kernels and the NumPy reference.

A batch never raises for bad data: each spectrum gets a status code (uint8) and,
through :func:`reason`, a human-readable reason. The codes are also defined in
``crates/rrnet-core/src/error.rs``; ``tests/preprocess/test_kernels.py`` checks that both
lists agree.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Status(IntEnum):
    """Outcome of preprocessing one spectrum (0 = usable)."""

    OK = 0
    NON_FINITE_FLUX = 1
    DEGENERATE_ARM = 2
    GRID_OUT_OF_RANGE = 3
    BAD_WAVELENGTH = 4
    TOO_FEW_POINTS = 5
    LENGTH_MISMATCH = 6
    NONPOSITIVE_CONTINUUM = 7


REASONS: dict[Status, str] = {
    Status.OK: "ok",
    Status.NON_FINITE_FLUX: "flux contains NaN or inf on the grid",
    Status.DEGENERATE_ARM: "an arm has zero flux scatter (constant or all-zero)",
    Status.GRID_OUT_OF_RANGE: "the wavelength grid leaves the observed (RV-corrected) range",
    Status.BAD_WAVELENGTH: "wavelengths are non-finite or not strictly monotonic",
    Status.TOO_FEW_POINTS: "an arm has fewer than 2 pixels",
    Status.LENGTH_MISMATCH: "flux, ivar and wavelength arrays of an arm differ in length",
    Status.NONPOSITIVE_CONTINUUM: "the fitted continuum is zero or negative somewhere",
}


def reason(code: int) -> str:
    """Human-readable reason for a status code (``"unknown status N"`` if undefined)."""
    try:
        return REASONS[Status(int(code))]
    except ValueError:
        return f"unknown status {int(code)}"


def reasons(status: np.ndarray) -> list[str]:
    """Reasons for an array of status codes, one string per spectrum."""
    return [reason(code) for code in np.asarray(status).ravel()]


class PreprocessError(ValueError):
    """Bad input to a single-spectrum kernel; ``status`` holds the :class:`Status` code."""

    def __init__(self, message: str, status: int = Status.BAD_WAVELENGTH) -> None:
        super().__init__(message)
        self.status = Status(status)
