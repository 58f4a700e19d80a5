"""Result objects of the batch kernels (same for the Rust path and the reference)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rrnet.preprocess.status import Status, reasons


@dataclass(frozen=True)
class NormalizeResult:
    """Continuum-normalised fluxes plus per-spectrum diagnostics.

    Attributes
    ----------
    flux : float32 [n, 7200]
        ``f / continuum``, blue then red; all-NaN rows where ``status != 0``.
    iterations : uint32 [n, 2]
        Polynomial fits performed in the clipping loop, per arm (blue, red).
    cap_hit : bool [n]
        True if some arm stopped at ``max_iter`` with points still outside the
        bounds (the status stays OK: the last fit is used).
    n_outliers : uint32 [n]
        Pixels replaced by the median-filter test, both arms together.
    max_outlier_run : uint32 [n]
        Longest run of consecutive replaced pixels within one arm.
    status : uint8 [n]
        :class:`~rrnet.preprocess.status.Status` code per spectrum.
    min_margin : float64 [n] or None
        Reference only: the smallest distance, in units of the scatter, of any
        clipping decision from its threshold. Values below ~1e-9 mark a
        threshold tie that roundoff may flip in another implementation.
    """

    flux: np.ndarray
    iterations: np.ndarray
    cap_hit: np.ndarray
    n_outliers: np.ndarray
    max_outlier_run: np.ndarray
    status: np.ndarray
    min_margin: np.ndarray | None = None

    def reasons(self) -> list[str]:
        """One human-readable reason per spectrum."""
        return reasons(self.status)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of usable spectra."""
        return self.status == Status.OK


@dataclass(frozen=True)
class ResampleResult:
    """Fluxes of many spectra on the fixed grid, with status and S/N per spectrum.

    Attributes
    ----------
    flux : float32 [n, 7200]
        Blue then red on :data:`rrnet.grid.GRID`; all-NaN rows where ``status != 0``.
    status : uint8 [n]
        :class:`~rrnet.preprocess.status.Status` code per spectrum.
    snr_blue, snr_red : float64 [n]
        Median of ``flux * sqrt(ivar)`` over the arm's grid window (NaN without
        ivar or without a valid pixel), see :func:`rrnet.preprocess.snr_ivar`.
    """

    flux: np.ndarray
    status: np.ndarray
    snr_blue: np.ndarray
    snr_red: np.ndarray

    def reasons(self) -> list[str]:
        """One human-readable reason per spectrum."""
        return reasons(self.status)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of usable spectra."""
        return self.status == Status.OK
