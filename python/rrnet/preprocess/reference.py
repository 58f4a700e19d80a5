"""Pure NumPy/SciPy reference of every preprocessing kernel: the oracle for the Rust path.

Written for clarity, not speed: it follows method §2 line by line (the
original RRNet code), plus the documented additions (iteration cap, outlier
statistics, status codes). ``docs/preprocessing.md`` describes the algorithm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.signal

from rrnet.grid import BLUE_GRID, C_KMS, N_PIX, N_PIX_ARM, RED_GRID
from rrnet.preprocess.ragged import split_ragged, to_ragged
from rrnet.preprocess.results import NormalizeResult, ResampleResult
from rrnet.preprocess.status import PreprocessError, Status

POLY_DEGREE = 5
MEDIAN_UPPER_SIGMA, MEDIAN_LOWER_SIGMA = 3.0, 4.0
"""Median test keeps a pixel if ``-4 s < m - f < 3 s``."""
FIT_UPPER_SIGMA, FIT_LOWER_SIGMA = 3.0, 4.0
"""Clipping loop keeps a point if ``-4 g < p - fs < 3 g``."""
DEFAULT_MAX_ITER = 100


def rv_correct(loglam: np.ndarray, rv_kms: float) -> np.ndarray:
    """Rest-frame wavelength [Angstrom] from log10 observed wavelength and RV [km/s] (float64)."""
    return 10.0 ** np.asarray(loglam, dtype=np.float64) / (1.0 + float(rv_kms) / C_KMS)


def _check_wavelength(wave: np.ndarray, flux: np.ndarray) -> bool:
    """Validate one arm; return True if ``wave`` ascends. Raises PreprocessError."""
    if wave.ndim != 1 or flux.ndim != 1 or wave.size != flux.size:
        raise PreprocessError(
            f"wavelength and flux must be 1-D of equal length, got {wave.shape} and {flux.shape}",
            Status.LENGTH_MISMATCH,
        )
    if wave.size < 2:
        raise PreprocessError(f"need at least 2 pixels, got {wave.size}", Status.TOO_FEW_POINTS)
    if not np.all(np.isfinite(wave)):
        raise PreprocessError("wavelengths contain NaN or inf", Status.BAD_WAVELENGTH)
    step = np.diff(wave)
    if np.all(step > 0):
        return True
    if np.all(step < 0):
        return False
    raise PreprocessError("wavelengths are not strictly monotonic", Status.BAD_WAVELENGTH)


def resample(wave: np.ndarray, flux: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``flux`` onto ``grid`` (numpy.interp semantics), float32.

    ``wave`` may ascend or descend. A grid pixel whose two bracketing input pixels
    are not both finite is NaN. Raises PreprocessError (a ValueError) if the grid
    leaves the observed range or the wavelengths are unusable.
    """
    wave = np.asarray(wave, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float32).astype(np.float64)
    grid = np.asarray(grid, dtype=np.float64)
    if not _check_wavelength(wave, flux):
        wave, flux = wave[::-1], flux[::-1]
    if grid[0] < wave[0] or grid[-1] > wave[-1]:
        raise PreprocessError(
            f"grid {grid[0]:.3f}-{grid[-1]:.3f} A leaves the observed range "
            f"{wave[0]:.3f}-{wave[-1]:.3f} A",
            Status.GRID_OUT_OF_RANGE,
        )
    out = np.interp(grid, wave, flux)
    # A grid pixel depends on input pixels j and j+1 with wave[j] <= x < wave[j+1]
    # (only j when x == wave[j]); it is NaN unless those are finite.
    bad = ~np.isfinite(flux)
    if bad.any():
        j = np.clip(np.searchsorted(wave, grid, side="right") - 1, 0, wave.size - 1)
        on_point = wave[j] == grid
        upper = np.minimum(j + 1, wave.size - 1)
        out[bad[j] | (~on_point & bad[upper])] = np.nan
    return out.astype(np.float32)


def resample_spectrum(
    loglam_blue: np.ndarray,
    flux_blue: np.ndarray,
    loglam_red: np.ndarray,
    flux_red: np.ndarray,
    rv_kms: float,
    correct_rv: bool = True,
) -> np.ndarray:
    """One spectrum on the fixed grids: float32 [7200], blue then red (method §2.1-2.2, 2.4)."""
    rv = float(rv_kms) if correct_rv else 0.0
    blue = resample(rv_correct(loglam_blue, rv), flux_blue, BLUE_GRID)
    red = resample(rv_correct(loglam_red, rv), flux_red, RED_GRID)
    return np.concatenate([blue, red])


def snr_ivar(
    loglam: np.ndarray, flux: np.ndarray, ivar: np.ndarray, rv_kms: float, grid: np.ndarray
) -> float:
    """Median per-pixel S/N, ``flux * sqrt(ivar)``, over pixels inside the grid window.

    Only pixels with finite flux, finite ``ivar > 0`` and RV-corrected wavelength in
    ``[grid[0], grid[-1]]`` count. NaN if there is none.
    """
    wave = rv_correct(loglam, rv_kms)
    flux = np.asarray(flux, dtype=np.float32).astype(np.float64)
    ivar = np.asarray(ivar, dtype=np.float32).astype(np.float64)
    if not (wave.shape == flux.shape == ivar.shape):
        raise PreprocessError("loglam, flux and ivar differ in length", Status.LENGTH_MISMATCH)
    use = (
        (wave >= grid[0]) & (wave <= grid[-1]) & np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    )
    if not use.any():
        return float("nan")
    return float(np.median(flux[use] * np.sqrt(ivar[use])))


def resample_batch(
    blue_loglam: Sequence[np.ndarray] | np.ndarray,
    blue_flux: Sequence[np.ndarray] | np.ndarray,
    red_loglam: Sequence[np.ndarray] | np.ndarray,
    red_flux: Sequence[np.ndarray] | np.ndarray,
    rv_kms: np.ndarray,
    *,
    blue_ivar: Sequence[np.ndarray] | np.ndarray | None = None,
    red_ivar: Sequence[np.ndarray] | np.ndarray | None = None,
    blue_offsets: np.ndarray | None = None,
    red_offsets: np.ndarray | None = None,
    correct_rv: bool = True,
    threads: int | None = None,
) -> ResampleResult:
    """Resample many spectra; bad ones get a status and an all-NaN row, never an exception.

    Inputs are ragged (see :mod:`rrnet.preprocess.ragged`): either sequences of
    1-D arrays (offsets None) or flat arrays plus ``n + 1`` offsets. ``threads`` is
    accepted for signature compatibility and ignored.
    """
    del threads
    arms = []
    for loglam, flux, ivar, offsets in (
        (blue_loglam, blue_flux, blue_ivar, blue_offsets),
        (red_loglam, red_flux, red_ivar, red_offsets),
    ):
        ll, off = to_ragged(loglam, offsets, np.float64)
        fl, off_f = to_ragged(flux, offsets, np.float32)
        iv = None if ivar is None else split_ragged(*to_ragged(ivar, offsets, np.float32))
        arms.append((split_ragged(ll, off), split_ragged(fl, off_f), iv))
    n = len(arms[0][0])
    rv = np.broadcast_to(np.asarray(rv_kms, dtype=np.float64), (n,))
    if len(arms[1][0]) != n:
        raise ValueError(f"blue has {n} spectra but red has {len(arms[1][0])}")
    out = np.full((n, N_PIX), np.nan, dtype=np.float32)
    status = np.zeros(n, dtype=np.uint8)
    snr = np.full((2, n), np.nan)
    for i in range(n):
        rv_i = rv[i] if correct_rv else 0.0
        for a, ((ll, fl, iv), grid) in enumerate(zip(arms, (BLUE_GRID, RED_GRID), strict=True)):
            if iv is not None and iv[i].size == fl[i].size == ll[i].size:
                # S/N is measured whether or not resampling succeeds.
                snr[a, i] = snr_ivar(ll[i], fl[i], iv[i], rv_i, grid)
            if status[i] != Status.OK:
                continue
            try:
                if iv is not None and iv[i].size != fl[i].size:
                    raise PreprocessError("ivar and flux differ in length", Status.LENGTH_MISMATCH)
                row = resample(rv_correct(ll[i], rv_i), fl[i], grid)
                if not np.all(np.isfinite(row)):
                    raise PreprocessError("non-finite flux on the grid", Status.NON_FINITE_FLUX)
                out[i, a * N_PIX_ARM : (a + 1) * N_PIX_ARM] = row
            except PreprocessError as err:
                status[i] = err.status
        if status[i] != Status.OK:
            out[i] = np.nan
    return ResampleResult(flux=out, status=status, snr_blue=snr[0], snr_red=snr[1])


def medfilt3(f: np.ndarray) -> np.ndarray:
    """3-point running median with zero padding at both ends (scipy.signal.medfilt semantics)."""
    return scipy.signal.medfilt(f, 3)


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D boolean array."""
    best = run = 0
    for value in mask:
        run = run + 1 if value else 0
        best = max(best, run)
    return best


def _normalize_arm(flux: np.ndarray, x: np.ndarray, max_iter: int) -> dict:
    """Normalise one arm (method §2.3); returns flux, status and diagnostics."""
    f = flux.astype(np.float64)
    result = {"iterations": 0, "cap_hit": False, "n_outliers": 0, "max_run": 0, "margin": np.inf}
    if not np.all(np.isfinite(f)):
        return {**result, "status": Status.NON_FINITE_FLUX}

    # 2.3.1: median-filter test, replaced in place.
    m = medfilt3(f)
    d = m - f
    s = d.std()
    if s > 0:
        keep = (d < MEDIAN_UPPER_SIGMA * s) & (d > -MEDIAN_LOWER_SIGMA * s)
        spike = d <= -MEDIAN_LOWER_SIGMA * s
    else:
        keep = np.ones_like(f, dtype=bool)
        spike = np.zeros_like(f, dtype=bool)
    # Outliers (bad pixels): positive spikes of the median test, and dead pixels.
    bad_pixel = spike | (f <= 0)
    result["n_outliers"] = int(bad_pixel.sum())
    result["max_run"] = _longest_run(bad_pixel)
    if s > 0:
        f[~keep] = m[~keep]
        margin = np.minimum(np.abs(d - MEDIAN_UPPER_SIGMA * s), np.abs(d + MEDIAN_LOWER_SIGMA * s))
        result["margin"] = float(margin.min() / s)
    # With s == 0 every d is 0, so m == f: the original's replacement changes nothing.

    # 2.3.2: standardise.
    f_mean, f_std = f.mean(), f.std()
    # Constant (to roundoff: below 1e-10 of the mean) flux leaves nothing to fit.
    if not (f_std > 1e-10 * abs(f_mean) and f_std > 0 and np.isfinite(f_std)):
        return {**result, "status": Status.DEGENERATE_ARM}
    fs = (f - f_mean) / f_std
    xs = (x - x.mean()) / x.std()

    # 2.3.3: iterative clipped polynomial fit, capped at max_iter fits.
    for iteration in range(1, max_iter + 1):
        p = np.polyval(np.polyfit(xs, fs, POLY_DEGREE), xs)
        r = p - fs
        g = r.std()
        result["iterations"] = iteration
        if not g > 0:  # an exact fit: nothing can be outside
            break
        margin = np.minimum(np.abs(r - FIT_UPPER_SIGMA * g), np.abs(r + FIT_LOWER_SIGMA * g))
        result["margin"] = min(result["margin"], float(margin.min() / g))
        out = ~((r > -FIT_LOWER_SIGMA * g) & (r < FIT_UPPER_SIGMA * g))
        if not out.any():
            break
        if iteration == max_iter:
            result["cap_hit"] = True
            break
        fs[out] = p[out]

    # 2.3.4: continuum and output.
    continuum = p * f_std + f_mean
    if not np.all(continuum > 0):
        return {**result, "status": Status.NONPOSITIVE_CONTINUUM}
    return {**result, "status": Status.OK, "flux": (f / continuum).astype(np.float32)}


def _arm_x(grid: np.ndarray) -> np.ndarray:
    return np.log10(grid)


def normalize_detailed(flux: np.ndarray, max_iter: int = DEFAULT_MAX_ITER) -> NormalizeResult:
    """Continuum-normalise float32 [n, 7200] resampled fluxes, with per-spectrum diagnostics."""
    flux = np.asarray(flux)
    if flux.ndim != 2 or flux.shape[1] != N_PIX:
        raise ValueError(f"flux must have shape (n, {N_PIX}), got {flux.shape}")
    if flux.dtype.kind != "f" or flux.dtype.itemsize != 4:
        raise TypeError(f"flux must be float32, got {flux.dtype}")
    flux = flux.astype(np.float32, copy=False)  # a big-endian column: the same values
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    n = flux.shape[0]
    out = np.full((n, N_PIX), np.nan, dtype=np.float32)
    iterations = np.zeros((n, 2), dtype=np.uint32)
    cap_hit = np.zeros(n, dtype=bool)
    n_outliers = np.zeros(n, dtype=np.uint32)
    max_run = np.zeros(n, dtype=np.uint32)
    status = np.zeros(n, dtype=np.uint8)
    margin = np.full(n, np.inf)
    xs = (_arm_x(BLUE_GRID), _arm_x(RED_GRID))
    for i in range(n):
        arms = [
            _normalize_arm(flux[i, a * N_PIX_ARM : (a + 1) * N_PIX_ARM], xs[a], max_iter)
            for a in range(2)
        ]
        for a, arm in enumerate(arms):
            iterations[i, a] = arm["iterations"]
        cap_hit[i] = any(arm["cap_hit"] for arm in arms)
        n_outliers[i] = sum(arm["n_outliers"] for arm in arms)
        max_run[i] = max(arm["max_run"] for arm in arms)
        margin[i] = min(arm["margin"] for arm in arms)
        failed = [arm["status"] for arm in arms if arm["status"] != Status.OK]
        status[i] = failed[0] if failed else Status.OK
        if not failed:
            out[i] = np.concatenate([arms[0]["flux"], arms[1]["flux"]])
    return NormalizeResult(out, iterations, cap_hit, n_outliers, max_run, status, margin)


def normalize(flux: np.ndarray, max_iter: int = DEFAULT_MAX_ITER) -> np.ndarray:
    """Continuum-normalised float32 [n, 7200]; rows that fail are all NaN."""
    return normalize_detailed(flux, max_iter).flux
