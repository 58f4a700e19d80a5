"""Radial velocities measured from the spectra (issue 16): templates, Rust kernel, reference.

Why: a spectrum whose catalogue RV is missing or wrong is lost or mis-labelled. The
measurement is a least-squares template fit in ln(wavelength) (see the Rust module
``rv_measure``): per arm ``f = a + s * (T(v) - 1)`` with IVAR weights; a coarse binned
cross-correlation over +-600 km/s, the best of a small template set, then a chi2 scan in
steps of 3 whole template samples (3 km/s) with a parabola through its minimum; the error
is the chi2 curvature's, inflated by the reduced chi2 when above 1. The best template's
labels come with the result (a coarse hot/cool, dwarf/giant class).

Inputs are continuum-normalised rows on the fixed 7200-pixel grids read as *observed*
wavelengths (resample with ``correct_rv=False``, then normalise), with their IVAR on
the same scale (:func:`prepare`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from rrnet import _core
from rrnet.grid import BLUE_GRID, C_KMS, N_PIX, N_PIX_ARM, RED_GRID
from rrnet.utils.cores import kernel_threads

ARMS_DISAGREE = 5
"""Combined status set by :func:`measure_spectra` when both arms were measured and their
velocities differ by more than ``3 hypot(err_blue, err_red) +`` :data:`ARM_FLOOR_KMS`."""
ARM_FLOOR_KMS = 10.0
"""What the arms' errors do not describe: LAMOST MRS calibrates each arm's wavelengths
on its own, and their RV zero points move from exposure to exposure by a few km/s
(Zhang et al. 2021, ApJS 256, 14; the real file's arms differ by ~1.9 km/s). The test
is for gross failures (a bad pixel had put one arm 36 km/s off); no clean synthesised
coadd or exposure of ``benchmarks/rv_accuracy.py`` (600 + 1,499) fails it, nor at 5."""
RV_STATUS: dict[int, str] = dict(_core.rv_status_codes()) | {ARMS_DISAGREE: "ARMS_DISAGREE"}
"""RV status code -> name (0 OK, 1 MASKED, 2 FLAT, 3 NO_PEAK, 4 WINDOW_EDGE, 5
ARMS_DISAGREE)."""

MIN_GOOD_FRACTION = 0.2
MIN_DELTA_CHI2 = 25.0
MAX_WALK = 64
TEMPLATE_STRIDE = 8
BLOCK = 64
GRID_ERR_SCALE = 1.4
"""Factor on the formal error of spectra resampled onto the fixed grid (measure_spectra).

The formal (curvature) error is calibrated for independent pixels (z-score std ~1.05 on
shifted templates with white noise, tests/test_rv_measure.py); linear resampling onto the
0.1 A grid correlates neighbouring pixels and the templates do not match real stars
exactly, so on synthesised LAMOST visits the z-score std was 1.34-1.68 (robust 1.2-1.4)
per S/N bin (benchmarks/rv_accuracy.py, seed 16); 1.4 brings it to ~1."""
TEMPLATE_RESOLUTION = 7500.0
TEMPLATE_STEP_KMS = 1.0
TEMPLATE_RANGES = ((4940.0, 5350.0), (6310.0, 6720.0))
"""Rest ranges [Angstrom] of the template arms: the grids plus +-600 km/s and margin."""
TEMPLATE_LABELS = tuple(
    (teff, logg, feh)
    for teff, logg in (
        (4300, 2.0),
        (4300, 4.6),
        (5000, 2.8),
        (5000, 4.5),
        (5700, 3.9),
        (5800, 4.4),
        (6300, 4.2),
    )
    for feh in (-1.0, 0.0)
)
"""(Teff, logg, [Fe/H]) targets; the nearest library star of each is a template."""


@dataclass(frozen=True)
class Templates:
    """Rest-frame templates ``flux[m, 2, len]`` at ln(wavelength) ``ln0[arm] + j * dln``."""

    flux: np.ndarray
    ln0: tuple[float, float]
    dln: float
    labels: np.ndarray
    """(Teff, logg, [Fe/H]) of each template, [m, 3]."""


@dataclass(frozen=True)
class RvMeasurement:
    """Per spectrum ``[n, 3]`` (blue, red, combined) values and the best template ``[n]``."""

    rv: np.ndarray
    err: np.ndarray
    chi2_red: np.ndarray
    status: np.ndarray
    template: np.ndarray
    template_labels: np.ndarray | None = None
    """(Teff, logg, [Fe/H]) of the best template ``[n, 3]`` (NaN where none was chosen): a
    by-product, the library star closest to the spectrum among the few templates (a coarse
    class, hot/cool and dwarf/giant, not a label measurement)."""
    data_status: np.ndarray | None = None
    """``[n]`` preprocessing status (``Status`` code) of the unshifted resampling and
    normalisation the measurement ran on: not OK means the spectrum itself is unusable
    (its RV is then MASKED), which says more than a failed measurement."""


@lru_cache(maxsize=1)
def default_templates() -> Templates:
    """Templates from the shipped synthetic library, broadened to R = 7500 (built once)."""
    from rrnet.synth.library import load_library
    from rrnet.synth.observe import _lsf_sigma_ln, broaden

    lib = load_library()
    teff = lib.labels["Teff[K]"].to_numpy()
    logg = lib.labels["Logg"].to_numpy()
    feh = lib.labels["FeH"].to_numpy()
    sigma_ln = _lsf_sigma_ln(TEMPLATE_RESOLUTION, float(lib.meta["resolution"]))
    dln = TEMPLATE_STEP_KMS / C_KMS
    ln0 = tuple(float(np.log(lo)) for lo, _ in TEMPLATE_RANGES)
    n_len = int(max(np.log(hi / lo) for lo, hi in TEMPLATE_RANGES) / dln) + 1
    rows, labels = [], []
    for t, g, f in TEMPLATE_LABELS:
        dist = ((teff - t) / 500.0) ** 2 + ((logg - g) / 0.5) ** 2 + ((feh - f) / 0.25) ** 2
        star = int(np.argmin(dist))
        labels.append((teff[star], logg[star], feh[star]))
        arms = []
        for ln_start in ln0:
            ln = ln_start + dln * np.arange(n_len)
            ln_fine, fine = broaden(lib.wavelength, lib.flux[star], (ln[0], ln[-1]), sigma_ln)
            arms.append(np.interp(ln, ln_fine, fine))
        rows.append(arms)
    flux = np.ascontiguousarray(np.asarray(rows, dtype=np.float32))
    return Templates(flux, (ln0[0], ln0[1]), dln, np.asarray(labels))


def measure(
    flux: np.ndarray,
    ivar: np.ndarray,
    templates: Templates | None = None,
    *,
    window_kms: float = 600.0,
    threads: int | None = None,
) -> RvMeasurement:
    """Measure RVs of normalised observed-frame rows ``[n, 7200]`` (Rust, GIL released)."""
    t = templates or default_templates()
    flux, ivar = _rows(flux, "flux"), _rows(ivar, "ivar")
    if flux.shape != ivar.shape:
        raise ValueError(f"flux {flux.shape} and ivar {ivar.shape} differ in shape")
    rv, err, chi2, status, tmpl = _core.rv_measure_batch(
        flux,
        ivar,
        t.flux,
        t.ln0,
        t.dln,
        window_kms=float(window_kms),
        threads=kernel_threads(threads),
    )
    return RvMeasurement(rv, err, chi2, status, tmpl, template_labels(t, tmpl))


def template_labels(t: Templates, index: np.ndarray) -> np.ndarray:
    """(Teff, logg, [Fe/H]) ``[n, 3]`` of templates ``index`` (-1: none, NaN labels)."""
    index = np.asarray(index)
    out = np.full((index.size, 3), np.nan)
    ok = (index >= 0) & (index < len(t.labels))
    out[ok] = np.asarray(t.labels, dtype=np.float64)[index[ok]]
    return out


def _rows(a: np.ndarray, name: str) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim != 2 or a.shape[1] != N_PIX:
        raise ValueError(f"{name} must have shape (n, {N_PIX}), got {a.shape}")
    return a


def prepare(
    arms: list[tuple[np.ndarray, np.ndarray, np.ndarray]], normalised: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """IVAR of one normalised observed-frame row from its raw arms.

    ``arms`` holds (loglam, flux, ivar) of blue then red; ``normalised`` is the row from
    ``resample_batch(correct_rv=False)`` then ``normalize``. The raw IVAR is interpolated
    onto the grid (0 next to a bad pixel) and scaled by the continuum squared; pixels the
    normaliser replaced get 0 (:func:`replaced_pixels`).
    """
    out = np.zeros(N_PIX, dtype=np.float32)
    for k, ((loglam, flux, ivar), grid) in enumerate(zip(arms, (BLUE_GRID, RED_GRID), strict=True)):
        wave = wavelength(loglam)
        flux, ivar = np.asarray(flux), np.asarray(ivar)
        if not np.all(wave[1:] > wave[:-1]):  # LAMOST arms come sorted: sort only if not
            order = np.argsort(wave)
            wave, flux, ivar = wave[order], flux[order], ivar[order]
        raw = np.interp(grid, wave, flux)
        var = np.interp(grid, wave, np.where(ivar > 0, 1.0 / np.maximum(ivar, 1e-30), np.inf))
        sl = slice(k * N_PIX_ARM, (k + 1) * N_PIX_ARM)
        # Bad pixels give inf variance and NaN normalised flux: both end as IVAR 0
        # below, so their divisions are expected (no RuntimeWarning in a user's run).
        with np.errstate(invalid="ignore", divide="ignore"):
            cont = raw / normalised[sl]
            iv = np.where(np.isfinite(var) & (var > 0), cont**2 / var, 0.0)
        # (beyond float32: a flux scaled without its IVAR, e.g. 1e34; masked, not inf)
        huge = np.abs(iv) > np.finfo(np.float32).max
        inside = (grid >= wave[0]) & (grid <= wave[-1])  # (np.interp holds the end values)
        replaced = replaced_pixels(np.where(inside, cont, np.nan))
        iv[~inside | ~np.isfinite(iv) | huge | replaced] = 0.0
        out[sl] = iv
    return np.nan_to_num(normalised.astype(np.float32), nan=1.0), out


REPLACED_TOLERANCE = 3e-3
"""Relative departure of a pixel's implied continuum from its neighbours' median beyond
which the normaliser replaced it. The fitted continuum moves ~2-6e-4 per grid pixel on
the real file's arms, and the median lies at most two pixels away (at an arm end, or
beside two replaced pixels). On the real file's ten arms this finds 638 of the 641
pixels the median test replaced and no other; the 3 it misses (a coadd's line cores)
changed the flux by 0.27-0.32 %, i.e. their weight by < 0.7 %."""


def replaced_pixels(cont: np.ndarray) -> np.ndarray:
    """Pixels of one arm whose flux the normaliser's median test replaced, from the
    implied continuum ``cont = raw / normalised``: smooth where the pixel was kept, off by
    the factor raw / replacement where it was not. Such a pixel's IVAR is not the
    replaced flux's: a dead pixel's neighbour at an arm end (median of dead, good and the
    zero padding) had got an IVAR 2e4 times the arm's and moved the RV by 78 km/s; the
    spikes of single exposures made their RV errors too small. So they get no weight.
    The test: off the median of the 5 pixels around it (clamped at the arm ends;
    non-finite as +inf) by more than :data:`REPLACED_TOLERANCE`."""
    key = np.where(np.isfinite(cont), cont, np.inf)
    n = key.size
    start = np.clip(np.arange(n) - 2, 0, max(n - 5, 0))
    med = np.sort(key[start[:, None] + np.arange(min(n, 5))], axis=1)[:, min(n, 5) // 2]
    with np.errstate(invalid="ignore"):
        return ~(np.abs(cont - med) <= REPLACED_TOLERANCE * np.abs(med))


ArmArrays = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(loglam, flux, ivar) of one raw arm, file pixel order."""


def wavelength(loglam: np.ndarray) -> np.ndarray:
    """Wavelength [Angstrom] of log10 wavelengths, float64: ``exp(x ln 10)`` (``10**x``
    was a third of :func:`prepare`'s time; same to ~1 ulp). One function for the NumPy
    reference and the Rust batch, so both see the same last bit."""
    with np.errstate(over="ignore"):  # a LOGLAM in Angstrom: inf, failed with its reason
        return np.exp(np.asarray(loglam, np.float64) * np.log(10.0))


def _arm_lists(
    arms: list[ArmArrays],
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """One arm of many spectra as the Rust kernels take it: (loglam float64, flux
    float32, ivar float32) lists of contiguous arrays (no copy where already so)."""
    return (
        [np.ascontiguousarray(a[0], np.float64) for a in arms],
        [np.ascontiguousarray(a[1], np.float32) for a in arms],
        [np.ascontiguousarray(a[2], np.float32) for a in arms],
    )


def rv_inputs(
    spectra: list[tuple[ArmArrays, ArmArrays]],
    normalised: np.ndarray,
    usable: np.ndarray,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`prepare` of every ``usable`` row at once, in Rust on all cores (GIL
    released); other rows get flux 1 and IVAR 0 (measured as all masked)."""
    blue, red = (_arm_lists([s[k] for s in spectra]) for k in (0, 1))
    return _core.rv_inputs(
        ([wavelength(x) for x in blue[0]], blue[1], blue[2]),
        ([wavelength(x) for x in red[0]], red[1], red[2]),
        np.ascontiguousarray(normalised, np.float32),
        np.ascontiguousarray(usable, dtype=bool),
        threads=kernel_threads(threads),
    )


def measure_spectra(
    spectra: list[tuple[ArmArrays, ArmArrays]],
    templates: Templates | None = None,
    *,
    window_kms: float = 600.0,
    threads: int | None = None,
) -> RvMeasurement:
    """Measure RVs of raw (blue, red) arms: resample unshifted, normalise, IVAR, fit."""
    from rrnet.preprocess.kernels import normalize_detailed, resample_batch
    from rrnet.preprocess.status import Status

    blue, red = _arm_lists([b for b, _ in spectra]), _arm_lists([r for _, r in spectra])
    res = resample_batch(*blue[:2], *red[:2], 0.0, correct_rv=False, threads=threads)
    norm = normalize_detailed(res.flux, threads=threads)
    data_status = np.where(res.status != Status.OK, res.status, norm.status)
    flux, ivar = rv_inputs(spectra, norm.flux, data_status == Status.OK, threads=threads)
    got = measure(flux, ivar, templates, window_kms=window_kms, threads=threads)
    got = dataclasses.replace(got, err=got.err * GRID_ERR_SCALE, data_status=data_status)
    return arms_checked(got)


def arms_checked(res: RvMeasurement) -> RvMeasurement:
    """The combined value kept only where both arms support it: an arm fitted but
    without a minimum (``NO_PEAK``, ``WINDOW_EDGE``) gives the combined value its status,
    and two measured arms that disagree give ``ARMS_DISAGREE``; the value is then NaN.

    Why: a star at -800 km/s (beyond the +-600 km/s search) came back OK at -580 +- 6
    km/s from the blue arm's false minimum while the red arm had none, and one bad pixel
    had put the blue arm 36 km/s off the red one with status OK. On clean synthesised
    spectra one arm fails alone only below S/N 8 (3 of 1,499 exposures)."""
    status, rv, err = res.status.copy(), res.rv.copy(), res.err.copy()
    chi2 = res.chi2_red.copy()
    code = {name: c for c, name in RV_STATUS.items()}
    ok = status[:, 2] == code["OK"]
    no_minimum = np.isin(status[:, :2], (code["NO_PEAK"], code["WINDOW_EDGE"]))  # MASKED,
    # FLAT: the arm was not fitted, and the combined value is the other arm's alone
    arm_failed = ok & no_minimum.any(axis=1)
    status[arm_failed, 2] = np.where(
        no_minimum[arm_failed, 0], status[arm_failed, 0], status[arm_failed, 1]
    )
    both = ok & (status[:, 0] == code["OK"]) & (status[:, 1] == code["OK"])
    with np.errstate(invalid="ignore"):
        apart = np.abs(rv[:, 0] - rv[:, 1]) > 3 * np.hypot(err[:, 0], err[:, 1]) + ARM_FLOOR_KMS
    status[both & apart, 2] = ARMS_DISAGREE
    failed = ok & (status[:, 2] != code["OK"])
    rv[failed, 2] = err[failed, 2] = chi2[failed, 2] = np.nan
    return dataclasses.replace(res, rv=rv, err=err, chi2_red=chi2, status=status)


# --------------------------------------------------------------------------------------
# NumPy reference of the same algorithm (for tests; slow)


def _line_at(row: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Template minus one at fractional samples ``p`` (linear, 0 outside)."""
    j = np.floor(p).astype(np.int64)
    ok = (p >= 0) & (j + 1 < row.size)
    jj = np.where(ok, j, 0)
    f = p - jj
    val = row[jj].astype(np.float64) * (1 - f) + row[jj + 1].astype(np.float64) * f - 1.0
    return np.where(ok, val, 0.0)


def _interp(arm: dict, s0: int) -> None:
    """Each pixel's template sample at shift ``s0``: ``j0 = floor(pos) - s0``, fraction
    ``f = pos - floor(pos)`` (kept in ``arm``; the fraction is the same at every shift)."""
    j = np.floor(arm["pos"])
    arm["j0"], arm["f"] = j.astype(np.int64) - s0, arm["pos"] - j


def _chi2(arm: dict, row: np.ndarray, off: int, stride: int = 1) -> tuple[float, float]:
    """Profiled and flat chi2 with the row read ``off`` samples before each pixel's ``j0``."""
    keep = (np.arange(arm["pos"].size) // BLOCK) % stride == 0
    j, f, d, w = arm["j0"][keep] - off, arm["f"][keep], arm["d"][keep], arm["w"][keep]
    ok = (j >= 0) & (j + 1 < row.size)
    jj = np.where(ok, j, 0)
    val = row[jj].astype(np.float64) * (1 - f) + row[jj + 1].astype(np.float64) * f - 1.0
    t = np.where(ok, val, 0.0)
    sw, sd, st = w.sum(), (w * d).sum(), (w * t).sum()
    var_d = (w * d * d).sum() - sd * sd / sw
    cov_tt = (w * t * t).sum() - st * st / sw
    cov_dt = (w * t * d).sum() - sd * st / sw
    if cov_tt > 0 and cov_dt > 0:
        return float(var_d - cov_dt**2 / cov_tt), float(var_d)
    return float(var_d), float(var_d)


def _arm(flux: np.ndarray, ivar: np.ndarray, k: int, t: Templates) -> dict | int:
    grid = (BLUE_GRID, RED_GRID)[k]
    f, iv = flux.astype(np.float64), ivar.astype(np.float64)
    ok = np.isfinite(f) & np.isfinite(iv) & (iv > 0)
    if ok.sum() < MIN_GOOD_FRACTION * grid.size:
        return 1
    d, w = f[ok] - 1.0, iv[ok]
    mean = (w * d).sum() / w.sum()
    if not ((d - mean) ** 2).mean() > 1e-12:
        return 2
    pos = (np.log(grid) - t.ln0[k]) / t.dln
    return {"pos": pos[ok], "d": d, "w": w, "k": k, "grid_pos": (pos[0], pos[-1])}


def _coarse(arms: list[dict], mean_t: np.ndarray, t: Templates, window: float, coarse: float):
    bin_ = np.log1p(coarse / C_KMS) / t.dln
    half = int(np.ceil(np.log1p(window / C_KMS) / t.dln / bin_))
    lags = np.arange(-half, half + 1)
    ccf = np.zeros(lags.size)
    for a in arms:
        p0, p_last = a["grid_pos"]  # bins counted from the arm's first grid pixel
        nb = int((p_last - p0) / bin_) + 1
        mean = (a["w"] * a["d"]).sum() / a["w"].sum()
        j = ((a["pos"] - p0) / bin_).astype(np.int64)
        bins = np.bincount(j, a["w"] * (a["d"] - mean), minlength=nb)[:nb].astype(np.float32)
        centres = p0 + (np.arange(nb)[None, :] - lags[:, None] + 0.5) * bin_
        ccf += (_line_at(mean_t[a["k"]], centres).astype(np.float32) @ bins).astype(np.float64)
    best = int(np.argmax(ccf))
    if best in (0, lags.size - 1):
        return C_KMS * np.expm1(lags[best] * bin_ * t.dln), True
    cm, c0, cp = ccf[best - 1 : best + 2]
    curv = cm + cp - 2 * c0
    dx = float(np.clip(0.5 * (cm - cp) / curv, -0.5, 0.5)) if curv < 0 else 0.0
    return C_KMS * np.expm1((lags[best] + dx) * bin_ * t.dln), False


def _locate(arms, rows, grid, k, sel, window: float, t: Templates, cache: dict):
    """Walk downhill from step ``k`` on the summed chi2 of arms ``sel``; parabola at the end.

    ``grid`` is (s0, step): step ``k`` shifts by ``s0 + k * step`` template samples.
    """
    s0, step = grid

    def at(k: int) -> np.ndarray:
        for i in sel:
            if (k, i) not in cache:
                cache[(k, i)] = np.array(_chi2(arms[i], rows[i], k * step))
        return np.sum([cache[(k, i)] for i in sel], axis=0)

    n_pix = sum(arms[i]["w"].size for i in sel)
    h = C_KMS * np.expm1(step * t.dln)
    max_k = int(2 * window / h) + 2
    for _ in range(MAX_WALK):
        cm, c0, cp = at(k - 1), at(k), at(k + 1)
        if cm[0] < c0[0] or cp[0] < c0[0]:
            k += -1 if cm[0] < cp[0] else 1
            if abs(k) > max_k:
                break
            continue
        b = 0.5 * (cm[0] + cp[0] - 2 * c0[0])
        if c0[0] + MIN_DELTA_CHI2 > c0[1] or not b > 0:
            return (np.nan, np.nan, np.nan, 3), k
        dx = (cm[0] - cp[0]) / (4 * b)
        chi2_red = (c0[0] - b * dx * dx) / max(n_pix - 3.0, 1.0)
        u = (s0 + (k + dx) * step) * t.dln
        rv = C_KMS * np.expm1(u)
        if abs(rv) > window:  # a peak beyond the window is not a measurement
            return (np.nan, np.nan, np.nan, 4), k
        err = np.sqrt(max(chi2_red, 1.0) / b) * C_KMS * np.exp(u) * step * t.dln
        return (rv, err, chi2_red, 0), k
    return (np.nan, np.nan, np.nan, 3), k


def measure_reference(
    flux: np.ndarray,
    ivar: np.ndarray,
    templates: Templates | None = None,
    *,
    window_kms: float = 600.0,
    coarse_kms: float = 15.0,
    fine_kms: float = 3.0,
) -> RvMeasurement:
    """The NumPy reference of :func:`measure` (same algorithm, one spectrum at a time)."""
    t = templates or default_templates()
    flux, ivar = _rows(flux, "flux"), _rows(ivar, "ivar")
    n = flux.shape[0]
    out = RvMeasurement(
        np.full((n, 3), np.nan),
        np.full((n, 3), np.nan),
        np.full((n, 3), np.nan),
        np.ones((n, 3), np.uint8),
        np.full(n, -1, np.int32),
    )
    mean_t = t.flux.mean(axis=0, dtype=np.float32)
    for i in range(n):
        _measure_row(flux[i], ivar[i], t, mean_t, (window_kms, coarse_kms, fine_kms), out, i)
    return dataclasses.replace(out, template_labels=template_labels(t, out.template))


def _measure_row(flux, ivar, t: Templates, mean_t, settings, out: RvMeasurement, i: int):
    window, coarse, fine = settings
    arms = []
    for k in range(2):
        sl = slice(k * N_PIX_ARM, (k + 1) * N_PIX_ARM)
        a = _arm(flux[sl], ivar[sl], k, t)
        if isinstance(a, int):
            out.status[i, k] = a
        else:
            arms.append(a)
    if not arms:
        out.status[i, 2] = out.status[i, 0]
        return
    v0, edge = _coarse(arms, mean_t, t, window, coarse)
    if edge:
        for a in arms:
            out.status[i, a["k"]] = 4
        out.status[i, 2] = 4
        return
    s0 = int(np.floor(np.log1p(v0 / C_KMS) / t.dln + 0.5))
    step = max(1, int(np.floor(np.log1p(fine / C_KMS) / t.dln + 0.5)))
    for a in arms:
        _interp(a, s0)
    chi2 = [
        sum(_chi2(a, t.flux[m, a["k"]], 0, TEMPLATE_STRIDE)[0] for a in arms)
        for m in range(len(t.flux))
    ]
    best = int(np.argmin(chi2))
    out.template[i] = best
    rows = [t.flux[best, a["k"]] for a in arms]
    cache: dict = {}
    sel = list(range(len(arms)))
    res, k = _locate(arms, rows, (s0, step), 0, sel, window, t, cache)
    out.rv[i, 2], out.err[i, 2], out.chi2_red[i, 2], out.status[i, 2] = res
    for j, a in enumerate(arms):
        res = _locate(arms, rows, (s0, step), k, [j], window, t, cache)[0]
        out.rv[i, a["k"]], out.err[i, a["k"]], out.chi2_red[i, a["k"]], out.status[i, a["k"]] = res


__all__ = [
    "ARMS_DISAGREE",
    "GRID_ERR_SCALE",
    "RV_STATUS",
    "RvMeasurement",
    "Templates",
    "arms_checked",
    "default_templates",
    "measure",
    "measure_reference",
    "measure_spectra",
    "prepare",
    "template_labels",
]
