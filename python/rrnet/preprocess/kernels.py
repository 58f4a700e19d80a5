"""Python gateway to the Rust kernels in ``rrnet._core``.

Each function checks and converts its arguments (dtype, contiguity, shape) so
the Rust side can borrow them without copying, then calls one ``_core``
function. Inputs already float32/float64 and C-contiguous are not copied. Batch
calls release the GIL and run on a rayon pool of ``threads`` threads (default:
``RRNET_NUM_THREADS``, else all cores); do not mutate their inputs meanwhile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rrnet import _core
from rrnet.grid import BLUE_GRID, C_KMS, N_PIX, RED_GRID
from rrnet.preprocess.ragged import to_ragged
from rrnet.preprocess.results import NormalizeResult, ResampleResult
from rrnet.preprocess.status import PreprocessError, Status
from rrnet.utils.cores import kernel_threads

DEFAULT_MAX_ITER: int = _core.DEFAULT_MAX_ITER

Ragged = Sequence[np.ndarray] | np.ndarray


def _f64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _vector(a: np.ndarray, name: str, convert) -> np.ndarray:
    a = convert(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _threads(threads: int | None) -> int:
    if threads is not None and (int(threads) != threads or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return kernel_threads(threads)


def rv_correct(loglam: np.ndarray, rv_kms: float) -> np.ndarray:
    """Rest-frame wavelength [Angstrom] = ``10**loglam / (1 + rv/c)``, float64.

    ``loglam`` is log10 of the observed wavelength in Angstrom, ``rv_kms`` in km/s.
    """
    return _core.rv_correct(_vector(loglam, "loglam", _f64), float(rv_kms))


def resample(wave: np.ndarray, flux: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``flux`` at ascending ``grid`` (numpy.interp semantics), float32.

    ``wave`` [Angstrom] may ascend or descend. Raises PreprocessError (a
    ValueError with a ``status``) if the grid leaves the observed range or the
    wavelengths are non-finite, non-monotonic or fewer than 2.
    """
    return _core.resample(
        _vector(wave, "wave", _f64), _vector(flux, "flux", _f32), _vector(grid, "grid", _f64)
    )


def rv_hint(rv_kms: float) -> str:
    """Why an RV may push the grid off the spectrum: m/s for km/s, or a placeholder."""
    if not math.isfinite(rv_kms):
        return "the RV is not a number"
    if rv_kms <= -999 and float(rv_kms).is_integer():
        return f"the RV {rv_kms:g} looks like a placeholder for 'no RV' (e.g. -9999)"
    if abs(rv_kms) > 1000:
        return f"the RV {rv_kms:g} km/s looks like m/s (stars move < 1000 km/s)"
    return ""


def range_detail(
    loglam_blue: np.ndarray, loglam_red: np.ndarray, rv_kms: float, correct_rv: bool = True
) -> str:
    """Which arm's grid leaves its observed range, both ranges, and an RV hint if any."""
    rv = float(rv_kms) if correct_rv else 0.0
    parts = []
    for arm, loglam, grid in (("blue", loglam_blue, BLUE_GRID), ("red", loglam_red, RED_GRID)):
        finite = np.asarray(loglam, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if finite.size < 2:
            parts.append(f"{arm} arm: fewer than 2 finite wavelengths")
            continue
        wave = 10.0**finite / (1.0 + rv / C_KMS)
        lo, hi = float(wave.min()), float(wave.max())
        if grid[0] < lo or grid[-1] > hi:
            parts.append(
                f"{arm} arm: grid {grid[0]:.1f}-{grid[-1]:.1f} A, observed (RV-corrected) "
                f"{lo:.1f}-{hi:.1f} A"
            )
    hint = rv_hint(rv) if correct_rv else ""
    return "; ".join(parts + ([hint] if hint else []))


EXTREME_FLUX = 1.0e15
"""A flux pixel beyond this is named when the continuum fit fails (one pixel of 1e30 made
the fitted continuum non-positive; no star's flux is near it in any unit)."""


def arm_detail(code: int, blue: tuple, red: tuple) -> str:
    """Which raw arm (``(loglam, flux, ...)``) a failed status comes from and what in it:
    the reason said only "flux contains NaN or inf on the grid", even for 3 NaN pixels
    of one arm."""
    parts = []
    for arm, (loglam, flux) in (("blue", blue[:2]), ("red", red[:2])):
        loglam, flux = np.asarray(loglam, np.float64), np.asarray(flux, np.float64)
        if code == Status.NON_FINITE_FLUX and (bad := int((~np.isfinite(flux)).sum())):
            parts.append(f"{arm} arm: {bad} of {flux.size} flux pixels NaN or inf")
        elif code == Status.BAD_WAVELENGTH:
            finite = loglam[np.isfinite(loglam)]
            if finite.size < loglam.size:
                bad = loglam.size - finite.size
                parts.append(f"{arm} arm: {bad} non-finite wavelengths (LOGLAM)")
            elif finite.size > 1 and not (
                np.all(np.diff(finite) > 0) or np.all(np.diff(finite) < 0)
            ):
                parts.append(f"{arm} arm: LOGLAM not strictly monotonic")
            if finite.size and float(np.max(finite)) > 10:
                parts.append(f"{arm} arm: LOGLAM up to {float(np.max(finite)):g}, not log10 of A?")
        elif code == Status.DEGENERATE_ARM and flux.size and np.nanstd(flux) == 0:
            parts.append(f"{arm} arm: flux constant ({flux[0]:g})")
        elif code == Status.NONPOSITIVE_CONTINUUM and np.isfinite(flux).any():
            extreme = float(np.max(np.abs(flux[np.isfinite(flux)])))
            if extreme > EXTREME_FLUX:
                parts.append(f"{arm} arm: an extreme flux pixel ({extreme:g})")
    return "; ".join(parts)


def resample_spectrum(
    loglam_blue: np.ndarray,
    flux_blue: np.ndarray,
    loglam_red: np.ndarray,
    flux_red: np.ndarray,
    rv_kms: float,
    correct_rv: bool = True,
) -> np.ndarray:
    """One spectrum on the fixed grids: float32 [7200], blue then red.

    Raises PreprocessError for unusable input; use :func:`resample_batch` to get
    a status instead.
    """
    rv = float(rv_kms) if correct_rv else 0.0
    try:
        blue = resample(rv_correct(loglam_blue, rv), flux_blue, BLUE_GRID)
        red = resample(rv_correct(loglam_red, rv), flux_red, RED_GRID)
    except PreprocessError as exc:
        detail = range_detail(loglam_blue, loglam_red, rv_kms, correct_rv)
        if getattr(exc, "status", None) != Status.GRID_OUT_OF_RANGE or not detail:
            raise
        raise PreprocessError(f"{exc} ({detail})", exc.status) from exc
    return np.concatenate([blue, red])


def snr_ivar(
    loglam: np.ndarray, flux: np.ndarray, ivar: np.ndarray, rv_kms: float, grid: np.ndarray
) -> float:
    """Median per-pixel S/N ``flux * sqrt(ivar)`` over pixels inside ``grid``'s window.

    Pixels count if their RV-corrected wavelength is in ``[grid[0], grid[-1]]``
    and flux and ``ivar > 0`` are finite; NaN if none does.
    """
    wave = rv_correct(loglam, rv_kms)
    return _core.snr_ivar(
        wave,
        _vector(flux, "flux", _f32),
        _vector(ivar, "ivar", _f32),
        float(grid[0]),
        float(grid[-1]),
    )


def _arrays(arrays: Ragged, dtype: type) -> list[np.ndarray]:
    """1-D C-contiguous arrays of ``dtype``; one that already is one is not copied.

    Converts as :func:`~rrnet.preprocess.ragged.to_ragged` does (same-kind casts,
    big-endian FITS columns to native order), so the kernel sees the same values.
    """
    want = np.dtype(dtype)
    out = []
    for a in arrays:
        if not (
            isinstance(a, np.ndarray) and a.ndim == 1 and a.dtype == want and a.flags.c_contiguous
        ):
            a = np.ravel(a).astype(want, casting="same_kind", copy=False)
            a = np.ascontiguousarray(a)
        out.append(a)
    return out


def _same_count(counts: list[int]) -> int:
    """The number of spectra every input holds (ValueError if they differ)."""
    if any(c != counts[0] for c in counts):
        raise ValueError(f"every input must hold the same number of spectra, got {counts}")
    return counts[0]


def resample_batch(
    blue_loglam: Ragged,
    blue_flux: Ragged,
    red_loglam: Ragged,
    red_flux: Ragged,
    rv_kms: np.ndarray | float,
    *,
    blue_ivar: Ragged | None = None,
    red_ivar: Ragged | None = None,
    blue_offsets: np.ndarray | None = None,
    red_offsets: np.ndarray | None = None,
    correct_rv: bool = True,
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> ResampleResult:
    """Resample many spectra onto the fixed grids in parallel (GIL released).

    Each arm's inputs are ragged: sequences of 1-D arrays (``*_offsets=None``) or
    flat arrays plus ``n + 1`` int64 offsets (see :mod:`rrnet.preprocess.ragged`).
    ``rv_kms`` is one velocity per spectrum (or a scalar for all). Bad spectra get
    a status and an all-NaN row; S/N per arm (from ivar, if given) is measured
    regardless. Sequences of native float64/float32 arrays (the Rust reader's)
    are borrowed as they are, without the concatenation copy. ``out``: a
    C-contiguous float32 ``[n, 7200]`` array (e.g. rows of a shard being built)
    the flux is written into instead of a new array; it is the result's ``flux``.
    """
    inputs = (
        (blue_loglam, blue_flux, blue_ivar, blue_offsets),
        (red_loglam, red_flux, red_ivar, red_offsets),
    )
    if blue_offsets is None and red_offsets is None:
        lists = [
            (
                _arrays(arm_loglam, np.float64),
                _arrays(arm_flux, np.float32),
                None if arm_ivar is None else _arrays(arm_ivar, np.float32),
            )
            for arm_loglam, arm_flux, arm_ivar, _ in inputs
        ]
        n = _same_count([len(a) for arm in lists for a in arm if a is not None])
        rv = np.ascontiguousarray(np.broadcast_to(np.asarray(rv_kms, dtype=np.float64), (n,)))
        flux, status, snr_blue, snr_red = _core.resample_arrays(
            lists[0], lists[1], rv, correct_rv=bool(correct_rv), threads=_threads(threads), out=out
        )
        return ResampleResult(flux=flux, status=status, snr_blue=snr_blue, snr_red=snr_red)
    arms = []
    for arm_loglam, arm_flux, arm_ivar, offsets in inputs:
        ivar_pair = (None, None) if arm_ivar is None else to_ragged(arm_ivar, offsets, np.float32)
        arms.append(
            (
                *to_ragged(arm_loglam, offsets, np.float64),
                *to_ragged(arm_flux, offsets, np.float32),
                *ivar_pair,
            )
        )
    n = _same_count([off.size - 1 for arm in arms for off in arm[1::2] if off is not None])
    rv = np.ascontiguousarray(np.broadcast_to(np.asarray(rv_kms, dtype=np.float64), (n,)))
    flux, status, snr_blue, snr_red = _core.resample_batch(
        arms[0], arms[1], rv, correct_rv=bool(correct_rv), threads=_threads(threads), out=out
    )
    return ResampleResult(flux=flux, status=status, snr_blue=snr_blue, snr_red=snr_red)


def normalize_detailed(
    flux: np.ndarray,
    max_iter: int = DEFAULT_MAX_ITER,
    *,
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> NormalizeResult:
    """Continuum-normalise float32 [n, 7200] fluxes (blue then red) with diagnostics.

    Never raises for bad data: such rows get a status and NaN flux. Raises
    TypeError/ValueError for a wrong dtype, shape or ``max_iter``, or an ``out``
    (C-contiguous float32 ``[n, 7200]``, written instead of a new array; not
    overlapping ``flux``) that does not fit.
    """
    flux = as_float32(flux)
    if flux.ndim != 2 or flux.shape[1] != N_PIX:
        raise ValueError(f"flux must have shape (n, {N_PIX}), got {flux.shape}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if out is not None and getattr(out, "dtype", None) != np.float32:  # was "cannot be cast"
        got = getattr(out, "dtype", type(out).__name__)
        raise TypeError(f"out must be a float32 array of shape {flux.shape}, got {got}")
    out, iterations, cap_hit, n_outliers, max_run, status = _core.normalize_batch(
        np.ascontiguousarray(flux), int(max_iter), threads=_threads(threads), out=out
    )
    return NormalizeResult(out, iterations, cap_hit, n_outliers, max_run, status)


def as_float32(flux: np.ndarray) -> np.ndarray:
    """``flux`` as native float32: a big-endian float32 array (a FITS column) holds the same
    values and is converted; any other dtype is a TypeError (float64 would be rounded)."""
    flux = np.asarray(flux)
    if flux.dtype.kind != "f" or flux.dtype.itemsize != 4:
        raise TypeError(f"flux must be float32, got {flux.dtype} (convert with .astype)")
    return flux.astype(np.float32, copy=False)


def running_median(values: np.ndarray, width: int, *, threads: int | None = None) -> np.ndarray:
    """Running median of each row of a 2-D array over ``width`` (odd) samples, float64.

    Edges are extended with the end value, as ``scipy.ndimage.median_filter(values,
    size=(1, width), mode="nearest")`` (the oracle of its tests) but ~6x faster: a
    sorted window updated by one removal and one insertion per sample. Rows should be
    finite (NaN is ordered above +inf, unlike scipy).
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D, got shape {values.shape}")
    if int(width) != width or width < 1 or width % 2 == 0:
        raise ValueError(f"width must be a positive odd integer, got {width!r}")
    return _core.running_median_rows(_f64(values), int(width), threads=_threads(threads))


def despike(
    values: np.ndarray, width: int, factor: float, *, threads: int | None = None
) -> np.ndarray:
    """Each row of a 2-D array with its spikes replaced by the running median over
    ``width`` (odd) samples: a value above ``factor * max(median, 1)`` takes the median.

    Equals ``np.where(v > factor * np.maximum(m, 1), m, v)`` with ``m`` the running median
    (:func:`running_median`, the oracle of its tests), but the median is selected only
    at values above ``factor`` (>= 0), the only ones that can be spikes: ~0.3 % of a
    chi-square residual at 9 (the OOD residuals of the demo: ~6x faster than the
    running median of every sample).
    Rows should be finite, as for :func:`running_median`.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D, got shape {values.shape}")
    if int(width) != width or width < 1 or width % 2 == 0:
        raise ValueError(f"width must be a positive odd integer, got {width!r}")
    if not float(factor) >= 0:
        raise ValueError(f"factor must be >= 0, got {factor!r}")
    return _core.despike_rows(_f64(values), int(width), float(factor), threads=_threads(threads))


def normalize(
    flux: np.ndarray, max_iter: int = DEFAULT_MAX_ITER, *, threads: int | None = None
) -> np.ndarray:
    """Continuum-normalised float32 [n, 7200]; rows that fail are all NaN."""
    return normalize_detailed(flux, max_iter, threads=threads).flux


__all__ = [
    "BLUE_GRID",
    "RED_GRID",
    "normalize",
    "normalize_detailed",
    "resample",
    "resample_batch",
    "resample_spectrum",
    "rv_correct",
    "snr_ivar",
]
