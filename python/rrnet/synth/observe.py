"""LAMOST MRS instrument model: a rest-frame model spectrum observed as LAMOST would see it.

Why a model of the instrument: RRNet is trained and tested on real LAMOST files, so a
synthetic data set is only useful if it carries the same traps: vacuum wavelengths,
R ~ 7500, a per-star radial velocity, a humped instrumental continuum, the log-uniform
coadd grids and the (non-uniform, red-descending) single-exposure grids, Poisson + read
noise with a consistent IVAR, cosmic rays and bad pixels. ``docs/synth.md`` ("Observation
model") gives the full description; the numbers below were measured on the real file
``med-58025-HIP9645901_sp02-051.fits.gz`` by :func:`derive_template` and are checked
against it by the tests.

Units: wavelengths in Angstrom (vacuum unless stated), RV in km/s, flux in ADU per pixel
per exposure, variance in ADU^2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import fitsio
import numpy as np
from numpy.polynomial import chebyshev

from rrnet.grid import BLUE_GRID, C_KMS, RED_GRID

ARMS: tuple[str, str] = ("B", "R")
"""Arm letters as in the LAMOST extension names (``COADD_B``, ``R-<lmjm>``)."""

RRNET_WINDOWS: dict[str, tuple[float, float]] = {
    "B": (float(BLUE_GRID[0]), float(BLUE_GRID[-1])),
    "R": (float(RED_GRID[0]), float(RED_GRID[-1])),
}
"""Rest-frame vacuum range [Angstrom] of the RRNet grid of each arm."""

FWHM_PER_SIGMA: float = 2.0 * np.sqrt(2.0 * np.log(2.0))

# Mask bits (int16). LAMOST does not document its MRS mask bits; these are rrnet-synth's.
MASK_BADPIX: int = 1 << 0
"""Bad CCD pixel: FLUX 0, IVAR 0 (single exposures; propagated to the coadd masks)."""
MASK_NODATA: int = 1 << 1
"""Coadd pixel outside every exposure's coverage: FLUX 0, IVAR 0 (as in the real file)."""
MASK_COMBINEREJ: int = 1 << 2
"""Coadd pixel where at least one exposure was rejected (cosmic ray) in the combination."""


@dataclass(frozen=True)
class ArmTemplate:
    """What one LAMOST MRS arm looks like, measured on the real DR7 file."""

    exposure_loglam_cheb: tuple[float, ...]
    """Chebyshev series of log10(wavelength/Angstrom) in x = 2 i / (n - 1) - 1, where i is
    the pixel index in *storage* order (the red single-exposure arm descends)."""
    n_exposure_pix: int
    coadd_loglam_start: float
    coadd_loglam_step: float
    n_coadd_pix: int
    continuum_cheb: tuple[float, ...]
    """Relative instrumental continuum (median 1) as a Chebyshev series in
    x = 2 (loglam - lo) / (hi - lo) - 1 over the single-exposure LOGLAM range."""
    gain: float
    """Signal variance per ADU of signal [ADU] (the slope of 1/IVAR against FLUX)."""
    read_var: float
    """Signal-independent variance, read noise plus sky [ADU^2]."""

    def exposure_loglam(self) -> np.ndarray:
        """Single-exposure LOGLAM in storage order, float32 as written in the files."""
        x = np.linspace(-1.0, 1.0, self.n_exposure_pix)
        return chebyshev.chebval(x, self.exposure_loglam_cheb).astype(np.float32)

    def coadd_loglam(self) -> np.ndarray:
        """Coadd LOGLAM, log-uniform and ascending, float32 as written in the files."""
        i = np.arange(self.n_coadd_pix, dtype=np.float64)
        return (self.coadd_loglam_start + self.coadd_loglam_step * i).astype(np.float32)

    def continuum(self, loglam: np.ndarray) -> np.ndarray:
        """Relative instrumental continuum at ``loglam`` (clamped outside the exposure range)."""
        ends = chebyshev.chebval(np.array([-1.0, 1.0]), self.exposure_loglam_cheb)
        lo, hi = float(ends.min()), float(ends.max())
        x = np.clip(2.0 * (np.asarray(loglam, np.float64) - lo) / (hi - lo) - 1.0, -1.0, 1.0)
        return chebyshev.chebval(x, self.continuum_cheb)


# Measured on med-58025-HIP9645901_sp02-051.fits.gz by derive_template() (see test_observe).
LAMOST_TEMPLATE: dict[str, ArmTemplate] = {
    "B": ArmTemplate(
        exposure_loglam_cheb=(
            3.71210816e00,
            1.88453486e-02,
            -7.38506393e-04,
            -5.94019200e-05,
            6.78306499e-06,
            -9.44508909e-08,
        ),
        n_exposure_pix=4136,
        coadd_loglam_start=3.6926,
        coadd_loglam_step=1.0e-5,
        n_coadd_pix=3771,
        continuum_cheb=(
            0.84729147,
            0.06345521,
            -0.32040552,
            -0.02378664,
            0.03027670,
            0.02170109,
            0.01473720,
            0.00700727,
            -0.01112989,
            -0.00095518,
            0.00966725,
        ),
        gain=0.962,
        read_var=483.4,
    ),
    "R": ArmTemplate(
        exposure_loglam_cheb=(
            3.81904025e00,
            -1.90328673e-02,
            -7.18154880e-04,
            5.60096956e-05,
            2.82256964e-06,
            6.31884194e-07,
        ),
        n_exposure_pix=4136,
        coadd_loglam_start=3.79935,
        coadd_loglam_step=1.0e-5,
        n_coadd_pix=3806,
        continuum_cheb=(
            0.87859178,
            0.16570063,
            -0.23435684,
            -0.02708809,
            0.01106235,
            0.00700161,
            -0.00144071,
            -0.00193435,
            -0.00280567,
            0.00132696,
            -0.00398055,
        ),
        gain=1.005,
        read_var=1150.9,
    ),
}


def derive_template(path: str | Path, continuum_degree: int = 10) -> dict[str, ArmTemplate]:
    """Measure :class:`ArmTemplate` of both arms on a real LAMOST MRS file.

    Wavelength solution: degree-5 Chebyshev fit of the first exposure's LOGLAM against
    pixel index. Continuum: mean of the exposures (each scaled to median 1), fitted with a
    Chebyshev series while rejecting pixels 1.5 sigma below (absorption lines) or 3 sigma
    above (cosmic rays), then scaled to median 1. Noise: straight-line fit of 1/IVAR
    against FLUX per exposure, averaged.
    """
    out: dict[str, ArmTemplate] = {}
    with fitsio.FITS(str(path)) as fits:
        extnames = [str(h.get_extname()) for h in fits[1:]]
        for arm in ARMS:
            exposures = [fits[e].read() for e in extnames if e.startswith(f"{arm}-")]
            coadd = fits[f"COADD_{arm}"].read()
            loglam = exposures[0]["LOGLAM"].astype(np.float64)
            x_pix = np.linspace(-1.0, 1.0, loglam.size)
            wave_cheb = chebyshev.chebfit(x_pix, loglam, 5)
            flux = np.mean([e["FLUX"] / np.median(e["FLUX"]) for e in exposures], axis=0)
            x = 2.0 * (loglam - loglam.min()) / (loglam.max() - loglam.min()) - 1.0
            keep = np.ones(x.size, dtype=bool)
            for _ in range(30):
                cont = chebyshev.chebfit(x[keep], flux[keep], continuum_degree)
                resid = flux - chebyshev.chebval(x, cont)
                sigma = np.std(resid[keep])
                keep = (resid > -1.5 * sigma) & (resid < 3.0 * sigma)
            cont = cont / np.median(chebyshev.chebval(x, cont))
            fits_noise = []
            for e in exposures:
                good = e["IVAR"] > 0
                fits_noise.append(np.polyfit(e["FLUX"][good], 1.0 / e["IVAR"][good], 1))
            gain, read_var = np.mean(fits_noise, axis=0)
            coadd_loglam = coadd["LOGLAM"].astype(np.float64)
            out[arm] = ArmTemplate(
                exposure_loglam_cheb=tuple(float(c) for c in wave_cheb),
                n_exposure_pix=int(loglam.size),
                coadd_loglam_start=round(float(coadd_loglam[0]), 5),
                coadd_loglam_step=round(float(np.mean(np.diff(coadd_loglam))), 8),
                n_coadd_pix=int(coadd_loglam.size),
                continuum_cheb=tuple(float(c) for c in cont),
                gain=float(gain),
                read_var=float(read_var),
            )
    return out


# --- wavelength media ---------------------------------------------------------------------


def vacuum_to_air(wave_vac: np.ndarray | float) -> np.ndarray:
    """Air wavelength [Angstrom] from vacuum (Morton 2000 / Ciddor 1996, the IAU standard
    used by SDSS and VALD; valid above 2000 Angstrom)."""
    wave_vac = np.asarray(wave_vac, dtype=np.float64)
    s2 = (1.0e4 / wave_vac) ** 2
    n = 1.0 + 0.0000834254 + 0.02406147 / (130.0 - s2) + 0.00015998 / (38.9 - s2)
    return wave_vac / n


def air_to_vacuum(wave_air: np.ndarray | float) -> np.ndarray:
    """Vacuum wavelength [Angstrom] from air (the inverse of :func:`vacuum_to_air`,
    solved by fixed-point iteration to < 1e-9 Angstrom)."""
    wave_air = np.asarray(wave_air, dtype=np.float64)
    wave_vac = wave_air.copy()
    for _ in range(6):
        wave_vac = wave_vac + (wave_air - vacuum_to_air(wave_vac))
    return wave_vac


# --- the model spectrum -----------------------------------------------------------------------


@dataclass(frozen=True)
class ObservationSettings:
    """Knobs of the instrument model (defaults: LAMOST MRS as measured on the real file)."""

    resolution: float = 7500.0
    """Resolving power R = lambda / FWHM of the Gaussian line-spread function."""
    source_resolution: float | None = None
    """Resolving power the rest-frame spectra already have (None: unbroadened)."""
    medium: Literal["vacuum", "air"] = "vacuum"
    """Medium of the rest-frame wavelengths; air is converted to vacuum (LAMOST is vacuum)."""
    noise: bool = True
    """False gives the noiseless model in FLUX (IVAR still from the noise model)."""
    cosmic_rate: float = 3.0
    """Mean number of cosmic-ray hits per exposure and arm (Poisson), 1-3 px each."""
    bad_pixel_rate: float = 2.0e-4
    """Fraction of bad CCD pixels per exposure and arm (FLUX 0, IVAR 0, MASK_BADPIX)."""
    continuum_scatter: float = 0.05
    """RMS of each of the 3 lowest Chebyshev terms of log(continuum) added per visit."""
    throughput_scatter: float = 0.05
    """RMS of the log throughput of each exposure (seeing, transparency)."""
    rv_jitter_kms: float = 0.0
    """RMS exposure-to-exposure RV change [km/s] (0: a single RV per visit)."""


@dataclass
class ArmSpectrum:
    """One arm of one exposure or coadd, in file pixel order."""

    loglam: np.ndarray
    """log10(observed vacuum wavelength / Angstrom), float32 as written."""
    flux: np.ndarray
    """FLUX [ADU], float32."""
    ivar: np.ndarray
    """IVAR [ADU^-2], float32; 0 at bad pixels."""
    mask: np.ndarray
    """PIXMASK (exposures) or ANDMASK (coadds), int16."""
    model: np.ndarray
    """Noiseless FLUX [ADU], float64 (the truth the noise was added to)."""
    continuum: np.ndarray
    """Noiseless continuum [ADU]: ``model / continuum`` is the broadened, shifted spectrum."""
    snr_true: float
    """Expected S/N: median over IVAR > 0 pixels of model / sigma."""
    snr_true_window: float
    """The same over pixels whose rest wavelength lies inside the RRNet grid of the arm."""
    ormask: np.ndarray | None = None
    """ORMASK (coadds only), int16."""
    cosmics: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Pixel indices hit by cosmic rays (exposures only)."""

    def snr_measured(self) -> float:
        """Median of FLUX * sqrt(IVAR) over IVAR > 0 pixels: how the pipeline's SNR is made."""
        good = self.ivar > 0
        return float(np.median(self.flux[good] * np.sqrt(self.ivar[good]))) if good.any() else 0.0


@dataclass
class Visit:
    """One star-visit: several exposures (each a dict arm -> spectrum) and their coadd."""

    rv_kms: float
    exposure_rv_kms: list[float]
    exposures: list[dict[str, ArmSpectrum]]
    coadd: dict[str, ArmSpectrum]


def _lsf_sigma_ln(resolution: float, source_resolution: float | None) -> float:
    """Gaussian sigma in ln(wavelength) still to apply to reach ``resolution``."""
    target = 1.0 / (FWHM_PER_SIGMA * resolution)
    if source_resolution is None:
        return target
    have = 1.0 / (FWHM_PER_SIGMA * source_resolution)
    if have >= target:
        raise ValueError(
            f"source resolution R={source_resolution:g} is already below R={resolution:g}"
        )
    return float(np.sqrt(target**2 - have**2))


def broaden(
    wavelength: np.ndarray,
    flux: np.ndarray,
    ln_range: tuple[float, float],
    sigma_ln: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rest-frame spectrum convolved with a Gaussian of ``sigma_ln`` in ln(wavelength).

    The spectrum is sampled on a uniform ln-wavelength grid covering ``ln_range`` (plus
    8 sigma each side) with 8+ samples per sigma; outside the source's coverage the flux
    is the continuum, 1. Returns (ln wavelength, broadened flux), float64.
    """
    wavelength = np.asarray(wavelength, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    order = np.argsort(wavelength)
    ln_src, flux = np.log(wavelength[order]), flux[order]
    step = sigma_ln / 8.0
    src_step = float(np.median(np.diff(ln_src))) if ln_src.size > 1 else step
    step = max(min(step, src_step), sigma_ln / 40.0)
    lo, hi = ln_range[0] - 8.0 * sigma_ln, ln_range[1] + 8.0 * sigma_ln
    ln_fine = lo + step * np.arange(int(np.ceil((hi - lo) / step)) + 1)
    fine = np.interp(ln_fine, ln_src, flux, left=1.0, right=1.0)
    # gaps in the source (e.g. between two synthesised windows) are continuum too
    gap = np.flatnonzero(np.diff(ln_src) > 50.0 * src_step)
    for g in gap:
        fine[(ln_fine > ln_src[g]) & (ln_fine < ln_src[g + 1])] = 1.0
    return ln_fine, _gaussian_smooth(fine, sigma_ln / step)


def _gaussian_smooth(values: np.ndarray, sigma_px: float, truncate: float = 6.0) -> np.ndarray:
    """Convolution with a normalised Gaussian of ``sigma_px`` pixels (edges held constant)."""
    half = int(np.ceil(truncate * sigma_px))
    x = np.arange(-half, half + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma_px) ** 2)
    padded = np.pad(values, half, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def _bisect_increasing(func, lo: float, hi: float, tol: float = 1e-7) -> float:
    """Root of an increasing function on [lo, hi] by bisection (robust, no derivative)."""
    if not func(lo) < 0 < func(hi):
        raise ValueError("target S/N cannot be reached with this spectrum")
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if func(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def check_coverage(wavelength: np.ndarray, margin_ln: float) -> None:
    """Raise ValueError unless the rest-frame source is finite and covers both RRNet grids
    with ``margin_ln`` (in ln wavelength) to spare: outside its coverage the observed
    spectrum is bare continuum, which is harmless only outside the RRNet grids."""
    wave = np.asarray(wavelength, np.float64)
    if wave.ndim != 1 or wave.size < 2 or not np.all(np.isfinite(wave)):
        raise ValueError("source wavelengths must be a finite 1-D array")
    ordered = np.sort(wave)
    step = np.median(np.diff(ordered))
    for arm, (lo, hi) in RRNET_WINDOWS.items():
        need_lo, need_hi = lo * np.exp(-margin_ln), hi * np.exp(margin_ln)
        inside = ordered[(ordered >= need_lo) & (ordered <= need_hi)]
        edges = np.concatenate([[need_lo], inside, [need_hi]])
        if inside.size == 0 or np.max(np.diff(edges)) > 50.0 * step:
            raise ValueError(
                f"source spectrum must cover {need_lo:.1f}-{need_hi:.1f} A (vacuum, rest) "
                f"for the RRNet {arm} grid"
            )


def _doppler_sample(ln_fine: np.ndarray, fine: np.ndarray, loglam: np.ndarray, rv_kms: float):
    """Broadened rest-frame flux seen at observed pixels ``loglam`` for a star at ``rv_kms``:
    lambda_obs = lambda_rest (1 + v/c), the convention the preprocessor inverts."""
    ln_rest = np.asarray(loglam, np.float64) * np.log(10.0) - np.log1p(rv_kms / C_KMS)
    return np.interp(ln_rest, ln_fine, fine)


# --- noise, artefacts and combination -------------------------------------------------------


def _cosmic_rays(rng: np.random.Generator, n_pix: int, rate: float) -> list[tuple[int, np.ndarray]]:
    """Cosmic-ray hits: (first pixel, relative profile); peak height drawn later in sigma."""
    hits = []
    for _ in range(rng.poisson(rate)):
        width = int(rng.integers(1, 4))
        start = int(rng.integers(0, n_pix - width + 1))
        profile = rng.uniform(0.1, 0.6, size=width)
        profile[int(rng.integers(0, width))] = 1.0
        hits.append((start, profile))
    return hits


def _interp_weights(src_loglam: np.ndarray, dst_loglam: np.ndarray):
    """Linear-interpolation indices/weights from ``src`` (any order) to ascending ``dst``.

    Returns (lower index, upper index, upper weight, inside) with indices into ``src``.
    """
    src = np.asarray(src_loglam, np.float64)
    order = np.argsort(src)
    s = src[order]
    dst = np.asarray(dst_loglam, np.float64)
    j = np.clip(np.searchsorted(s, dst, side="right") - 1, 0, s.size - 2)
    t = np.clip((dst - s[j]) / (s[j + 1] - s[j]), 0.0, 1.0)
    inside = (dst >= s[0]) & (dst <= s[-1])
    return order[j], order[j + 1], t, inside


def _to_coadd(values: np.ndarray, lo, hi, t) -> np.ndarray:
    return (1.0 - t) * values[lo] + t * values[hi]


def _to_coadd_var(var: np.ndarray, lo, hi, t) -> np.ndarray:
    """Variance of the linearly interpolated value (independent pixels)."""
    return (1.0 - t) ** 2 * var[lo] + t**2 * var[hi]


def _median_snr(model: np.ndarray, var: np.ndarray, use: np.ndarray) -> float:
    return float(np.median(model[use] / np.sqrt(var[use]))) if use.any() else 0.0


def _window(loglam: np.ndarray, rv_kms: float, arm: str) -> np.ndarray:
    rest = 10.0 ** np.asarray(loglam, np.float64) / (1.0 + rv_kms / C_KMS)
    lo, hi = RRNET_WINDOWS[arm]
    return (rest >= lo) & (rest <= hi)


@dataclass
class _ArmPlan:
    """Everything about one arm of a visit that does not depend on the flux level."""

    loglam: np.ndarray  # exposure LOGLAM, float32
    coadd_loglam: np.ndarray
    unit: list[np.ndarray]  # per exposure: relative noiseless flux (continuum x spectrum)
    shape: list[np.ndarray]  # per exposure: relative continuum
    bad: list[np.ndarray]  # per exposure: bad-pixel boolean mask
    cosmic_hits: list[list[tuple[int, np.ndarray]]]
    interp: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    template: ArmTemplate

    def coadd_use(self, reject_cosmics: bool) -> list[np.ndarray]:
        """Per exposure, coadd pixels it contributes to (inside, not bad, not a rejected CR)."""
        lo, hi, t, inside = self.interp
        out = []
        for bad, hits in zip(self.bad, self.cosmic_hits, strict=True):
            skip = bad.copy()
            if reject_cosmics:
                for start, profile in hits:
                    skip[start : start + profile.size] = True
            out.append(inside & ~((skip[lo] & (t < 1.0)) | (skip[hi] & (t > 0.0))))
        return out

    def coadd_snr(self, level: float, use: list[np.ndarray]) -> float:
        lo, hi, t, _ = self.interp
        g, r = self.template.gain, self.template.read_var
        wsum = np.zeros(t.size)
        msum = np.zeros(t.size)
        for unit, u in zip(self.unit, use, strict=True):
            var = _to_coadd_var(level * unit * g + r, lo, hi, t)
            w = np.where(u, 1.0 / var, 0.0)
            wsum += w
            msum += w * _to_coadd(level * unit, lo, hi, t)
        good = wsum > 0
        return _median_snr(msum[good] / wsum[good], 1.0 / wsum[good], np.ones(good.sum(), bool))


def observe(
    wavelength: np.ndarray,
    flux: np.ndarray,
    *,
    rv_kms: float,
    snr: Mapping[str, float],
    n_exposures: int,
    rng: np.random.Generator,
    settings: ObservationSettings | None = None,
    template: Mapping[str, ArmTemplate] | None = None,
    transmission: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> Visit:
    """Observe a normalised rest-frame spectrum with LAMOST MRS: one visit, both arms.

    Parameters
    ----------
    wavelength, flux
        Rest-frame model: wavelength [Angstrom] (``settings.medium``) and normalised flux.
    rv_kms
        Radial velocity of the star [km/s] (heliocentric; the files are RV-uncorrected).
    snr
        Target coadd S/N per arm, ``{"B": ..., "R": ...}``, defined like LAMOST's header SNR:
        the median over good pixels of the noiseless flux over its noise sigma.
    n_exposures
        Number of single exposures (>= 1) combined into the coadd.
    rng
        Source of all randomness (continuum, throughput, noise, artefacts).
    transmission
        Optional per-arm function of the exposure LOGLAM giving a multiplicative factor in
        the observed frame, applied to the noiseless flux before the noise (what the
        Earth's atmosphere or a throughput defect does: telluric lines, a broken
        response). It must already have the instrument's line-spread function: the
        stellar spectrum is convolved before the Doppler shift, this factor is not.
    """
    settings = settings or ObservationSettings()
    template = template or LAMOST_TEMPLATE
    if n_exposures < 1:
        raise ValueError(f"n_exposures must be >= 1, got {n_exposures}")
    wavelength = np.asarray(wavelength, np.float64)
    if settings.medium == "air":
        wavelength = air_to_vacuum(wavelength)
    sigma_ln = _lsf_sigma_ln(settings.resolution, settings.source_resolution)
    check_coverage(wavelength, 6.0 / (FWHM_PER_SIGMA * settings.resolution))
    jitter = rng.normal(0.0, settings.rv_jitter_kms, n_exposures) if settings.rv_jitter_kms else 0
    exposure_rv = list(np.full(n_exposures, float(rv_kms)) + jitter)
    visit = Visit(rv_kms=float(rv_kms), exposure_rv_kms=[float(v) for v in exposure_rv],
                  exposures=[{} for _ in range(n_exposures)], coadd={})  # fmt: skip
    for arm in ARMS:
        tmpl = template[arm]
        plan = _plan_arm(wavelength, flux, tmpl, exposure_rv, sigma_ln, rng, settings)
        if transmission is not None and arm in transmission:
            factor = np.asarray(transmission[arm](plan.loglam), np.float64)
            plan.unit = [u * factor for u in plan.unit]
        _realise_arm(visit, arm, plan, float(snr[arm]), rng, settings)
    return visit


def _plan_arm(wavelength, flux, tmpl: ArmTemplate, exposure_rv, sigma_ln, rng, settings):
    loglam = tmpl.exposure_loglam()
    coadd_loglam = tmpl.coadd_loglam()
    ln_pix = np.log(10.0) * loglam.astype(np.float64)
    ln_range = (
        float(ln_pix.min() - np.log1p(max(exposure_rv) / C_KMS)),
        float(ln_pix.max() - np.log1p(min(exposure_rv) / C_KMS)),
    )
    ln_fine, fine = broaden(wavelength, flux, ln_range, sigma_ln)
    x = 2.0 * (ln_pix - ln_pix.min()) / (ln_pix.max() - ln_pix.min()) - 1.0
    visit_shape = tmpl.continuum(loglam) * np.exp(
        chebyshev.chebval(x, np.r_[0.0, rng.normal(0.0, settings.continuum_scatter, 3)])
    )
    unit, shape, bad, hits = [], [], [], []
    for rv in exposure_rv:
        throughput = np.exp(rng.normal(0.0, settings.throughput_scatter))
        s = visit_shape * throughput * (1.0 + rng.normal(0.0, 0.01) * x)
        shape.append(s)
        unit.append(s * _doppler_sample(ln_fine, fine, loglam, rv))
        b = np.zeros(loglam.size, dtype=bool)
        b[rng.integers(0, loglam.size, rng.poisson(settings.bad_pixel_rate * loglam.size))] = True
        bad.append(b)
        hits.append(_cosmic_rays(rng, loglam.size, settings.cosmic_rate))
    interp = _interp_weights(loglam, coadd_loglam)
    return _ArmPlan(loglam, coadd_loglam, unit, shape, bad, hits, interp, tmpl)


def _realise_arm(visit: Visit, arm: str, plan: _ArmPlan, target_snr: float, rng, settings):
    """Scale to the target coadd S/N, add noise and artefacts, build the coadd."""
    tmpl = plan.template
    n_exp = len(plan.unit)
    reject = n_exp >= 2  # one exposure cannot tell a cosmic ray from the star
    use = plan.coadd_use(reject)
    if not target_snr > 0:
        raise ValueError(f"target S/N must be positive, got {target_snr}")
    level = np.exp(
        _bisect_increasing(lambda ln_a: plan.coadd_snr(np.exp(ln_a), use) - target_snr, -20, 30)
    )
    lo, hi, t, inside = plan.interp
    wsum = np.zeros(t.size)
    fsum = np.zeros(t.size)
    msum = np.zeros(t.size)
    csum = np.zeros(t.size)
    andmask = np.full(t.size, -1, dtype=np.int16)
    ormask = np.zeros(t.size, dtype=np.int16)
    for i in range(n_exp):
        model = level * plan.unit[i]
        var = model * tmpl.gain + tmpl.read_var
        sigma = np.sqrt(var)
        if settings.noise:
            counts = rng.poisson(np.maximum(model, 0.0) / tmpl.gain) * tmpl.gain
            obs = counts + rng.normal(0.0, np.sqrt(tmpl.read_var), model.size)
        else:
            obs = model.copy()
        cosmic_px = []
        for start, profile in plan.cosmic_hits[i]:
            height = sigma[start] * np.exp(rng.uniform(np.log(10.0), np.log(300.0)))
            obs[start : start + profile.size] += height * profile
            cosmic_px.extend(range(start, start + profile.size))
        mask = np.where(plan.bad[i], MASK_BADPIX, 0).astype(np.int16)
        obs[plan.bad[i]] = 0.0
        ivar = np.where(plan.bad[i], 0.0, 1.0 / var)
        good = ivar > 0
        visit.exposures[i][arm] = ArmSpectrum(
            loglam=plan.loglam,
            flux=obs.astype(np.float32),
            ivar=ivar.astype(np.float32),
            mask=mask,
            model=model,
            continuum=level * plan.shape[i],
            snr_true=_median_snr(model, var, good),
            snr_true_window=_median_snr(
                model, var, good & _window(plan.loglam, visit.exposure_rv_kms[i], arm)
            ),
            cosmics=np.asarray(cosmic_px, dtype=np.int64),
        )
        # ivar-weighted combination on the ascending coadd grid
        var_c = _to_coadd_var(var, lo, hi, t)
        w = np.where(use[i], 1.0 / var_c, 0.0)
        wsum += w
        fsum += w * _to_coadd(obs, lo, hi, t)
        msum += w * _to_coadd(model, lo, hi, t)
        csum += w * _to_coadd(level * plan.shape[i], lo, hi, t)
        m_c = (mask[lo] | mask[hi]) | np.where(inside, 0, MASK_NODATA).astype(np.int16)
        m_c = m_c | np.where(inside & ~use[i], MASK_COMBINEREJ, 0).astype(np.int16)
        m_c = np.where(plan.bad[i][lo] | plan.bad[i][hi], m_c & ~MASK_COMBINEREJ, m_c)
        andmask &= m_c.astype(np.int16)
        ormask |= m_c.astype(np.int16)
    good = wsum > 0
    safe = np.where(good, wsum, 1.0)
    model_c = np.where(good, msum / safe, 0.0)
    ivar_c = np.where(good, wsum, 0.0)
    var_c = np.where(good, 1.0 / safe, np.inf)
    visit.coadd[arm] = ArmSpectrum(
        loglam=plan.coadd_loglam,
        flux=np.where(good, fsum / safe, 0.0).astype(np.float32),
        ivar=ivar_c.astype(np.float32),
        mask=andmask,
        ormask=ormask,
        model=model_c,
        continuum=np.where(good, csum / safe, 0.0),
        snr_true=_median_snr(model_c, var_c, good),
        snr_true_window=_median_snr(
            model_c, var_c, good & _window(plan.coadd_loglam, visit.rv_kms, arm)
        ),
    )
