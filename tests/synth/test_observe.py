"""The LAMOST instrument model against independent oracles: the real DR7 file, NIST
wavelengths, and analytic Gaussian-line spectra whose convolution is known in closed form."""

from __future__ import annotations

import functools

import fitsio
import numpy as np
import pytest

from helpers import REAL_FILE as REAL
from rrnet.grid import BLUE_GRID, C_KMS, RED_GRID
from rrnet.preprocess import resample, rv_correct
from rrnet.synth.observe import (
    FWHM_PER_SIGMA,
    LAMOST_TEMPLATE,
    MASK_BADPIX,
    MASK_COMBINEREJ,
    MASK_NODATA,
    ObservationSettings,
    air_to_vacuum,
    derive_template,
    observe,
    vacuum_to_air,
)

needs_real = pytest.mark.skipif(not REAL.exists(), reason="real LAMOST file not available")

SIGMA_LINE = 0.06  # Angstrom, intrinsic Gaussian width of the analytic lines
DEPTH = 0.5
CLEAN = ObservationSettings(noise=False, cosmic_rate=0.0, bad_pixel_rate=0.0)


def norm(spec) -> np.ndarray:
    """Noiseless spectrum divided by its continuum (1 where there is no data)."""
    return spec.model / np.where(spec.continuum > 0, spec.continuum, np.inf) + (spec.continuum <= 0)


def lines_for(lo: float, hi: float, spacing: float = 4.7) -> np.ndarray:
    return np.arange(lo + 2.0, hi - 2.0, spacing)


LINES = np.concatenate([lines_for(4890.0, 5410.0), lines_for(6260.0, 6920.0)])


def analytic(wave: np.ndarray, centres: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    """1 - sum of Gaussian lines of equivalent width DEPTH * SIGMA_LINE * sqrt(2 pi)."""
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), centres.shape)
    out = np.ones_like(wave)
    for c, s in zip(centres, sigma, strict=True):
        near = np.abs(wave - c) < 10 * s
        out[near] -= DEPTH * SIGMA_LINE / s * np.exp(-0.5 * ((wave[near] - c) / s) ** 2)
    return out


@functools.cache
def _source() -> tuple[np.ndarray, np.ndarray]:
    wave = np.arange(4850.0, 6950.0, 0.005)
    return wave, analytic(wave, LINES, SIGMA_LINE)


def source_spectrum() -> tuple[np.ndarray, np.ndarray]:
    """Rest-frame vacuum wavelength [A] and normalised flux with Gaussian lines (copies)."""
    wave, flux = _source()
    return wave.copy(), flux.copy()


def lsf_convolved(wave: np.ndarray, resolution: float = 7500.0) -> np.ndarray:
    """The analytic spectrum after a Gaussian LSF of FWHM = lambda / R (closed form)."""
    sigma_tot = np.sqrt(SIGMA_LINE**2 + (LINES / (FWHM_PER_SIGMA * resolution)) ** 2)
    return analytic(wave, LINES, sigma_tot)


# --- the template measured on the real file ----------------------------------------------------


@needs_real
def test_template_matches_the_real_file():
    derived = derive_template(REAL)
    with fitsio.FITS(str(REAL)) as fits:
        for arm in ("B", "R"):
            ours = LAMOST_TEMPLATE[arm]
            exposure = fits[f"{arm}-83555758"].read()
            coadd = fits[f"COADD_{arm}"].read()
            # the wavelength grids reproduce the real LOGLAM to float32 precision
            assert ours.exposure_loglam().size == exposure.size
            np.testing.assert_allclose(ours.exposure_loglam(), exposure["LOGLAM"], atol=3e-7)
            np.testing.assert_allclose(ours.coadd_loglam(), coadd["LOGLAM"], atol=2.5e-7)
            # the continuum and noise constants are what derive_template measures
            x = np.linspace(-1, 1, 50)
            ref = np.polynomial.chebyshev.chebval(x, derived[arm].continuum_cheb)
            got = np.polynomial.chebyshev.chebval(x, ours.continuum_cheb)
            np.testing.assert_allclose(got, ref, rtol=1e-4)
            assert ours.gain == pytest.approx(derived[arm].gain, rel=1e-3)
            assert ours.read_var == pytest.approx(derived[arm].read_var, rel=1e-3)


@needs_real
def test_exposure_red_loglam_descends_like_the_real_file():
    with fitsio.FITS(str(REAL)) as fits:
        real_red = fits["R-83555758"].read()["LOGLAM"]
    wave, flux = source_spectrum()
    visit = observe(
        wave,
        flux,
        rv_kms=0.0,
        snr={"B": 50, "R": 50},
        n_exposures=2,
        rng=np.random.default_rng(0),
        settings=CLEAN,
    )
    for exposure in visit.exposures:
        assert np.all(np.diff(exposure["B"].loglam) > 0)
        assert np.all(np.diff(exposure["R"].loglam) < 0)
        assert np.all(np.diff(real_red) < 0)
    for arm in ("B", "R"):
        assert np.all(np.diff(visit.coadd[arm].loglam) > 0)


@needs_real
def test_continuum_shape_follows_the_real_spectrum():
    """The smooth template tracks the real exposures' pseudo-continuum within a few %."""
    with fitsio.FITS(str(REAL)) as fits:
        for arm in ("B", "R"):
            data = fits[f"{arm}-83555758"].read()
            flux = data["FLUX"] / np.median(data["FLUX"])
            cont = LAMOST_TEMPLATE[arm].continuum(data["LOGLAM"])
            # upper envelope of (flux / continuum) in 200-px blocks is ~flat
            ratio = (flux / cont)[100:-100]
            tops = [np.percentile(b, 90) for b in np.array_split(ratio, 19)]
            assert np.std(tops) / np.mean(tops) < 0.04


# --- wavelength media --------------------------------------------------------------------------


def test_air_vacuum_against_nist():
    # NIST ASD: H-alpha 6562.79 air / 6564.61 vacuum; Mg I b2 5172.684 air / 5174.125 vacuum
    assert air_to_vacuum(6562.79) == pytest.approx(6564.61, abs=0.01)
    assert air_to_vacuum(5172.684) == pytest.approx(5174.125, abs=0.005)
    assert vacuum_to_air(5174.125) == pytest.approx(5172.684, abs=0.005)
    wave = np.linspace(4900.0, 6900.0, 101)
    np.testing.assert_allclose(vacuum_to_air(air_to_vacuum(wave)), wave, atol=1e-8)


def test_air_source_lands_at_vacuum_wavelengths():
    """A rest-frame spectrum tabulated in air is shifted to vacuum (LAMOST's medium)."""
    wave_vac, flux = source_spectrum()
    visit_vac = observe(
        wave_vac,
        flux,
        rv_kms=0.0,
        snr={"B": 50, "R": 50},
        n_exposures=1,
        rng=np.random.default_rng(1),
        settings=CLEAN,
    )
    air = ObservationSettings(noise=False, cosmic_rate=0.0, bad_pixel_rate=0.0, medium="air")
    visit_air = observe(
        vacuum_to_air(wave_vac),
        flux,
        rv_kms=0.0,
        snr={"B": 50, "R": 50},
        n_exposures=1,
        rng=np.random.default_rng(1),
        settings=air,
    )
    for arm in ("B", "R"):
        a, b = visit_vac.coadd[arm], visit_air.coadd[arm]
        good = a.ivar > 0
        np.testing.assert_allclose(norm(b)[good], norm(a)[good], atol=2e-4)
    # and without the conversion the lines would sit ~1.4 A too blue
    wrong = observe(
        vacuum_to_air(wave_vac),
        flux,
        rv_kms=0.0,
        snr={"B": 50, "R": 50},
        n_exposures=1,
        rng=np.random.default_rng(1),
        settings=CLEAN,
    )
    c, d = visit_vac.coadd["B"], wrong.coadd["B"]
    good = c.ivar > 0
    assert np.max(np.abs((norm(c) - norm(d))[good])) > 0.1


# --- resolution and radial velocity ------------------------------------------------------------


@pytest.mark.parametrize("rv", [-150.0, 0.0, 37.5, 150.0])
def test_rv_injected_then_removed_returns_the_rest_frame_spectrum(rv):
    wave, flux = source_spectrum()
    visit = observe(
        wave,
        flux,
        rv_kms=rv,
        snr={"B": 80, "R": 80},
        n_exposures=2,
        rng=np.random.default_rng(2),
        settings=CLEAN,
    )
    for arm, grid in (("B", BLUE_GRID), ("R", RED_GRID)):
        for spec in (visit.coadd[arm], visit.exposures[1][arm]):
            normalised = norm(spec)
            good = spec.ivar > 0
            rest = rv_correct(spec.loglam[good], rv)
            got = resample(rest, normalised[good], grid)
            # linear interpolation (twice for the coadd) of ~6 px FWHM lines: < 0.6 % of depth
            np.testing.assert_allclose(got, lsf_convolved(grid), atol=6e-3)
            assert np.sqrt(np.mean((got - lsf_convolved(grid)) ** 2)) < 1.5e-3


def centroid(wave: np.ndarray, flux: np.ndarray, centre: float, half: float = 1.5) -> float:
    near = np.abs(wave - centre) < half
    w = 1.0 - flux[near]
    return float(np.sum(w * wave[near]) / np.sum(w))


def test_lines_at_the_doppler_shifted_vacuum_wavelengths():
    rv = 97.0
    wave, flux = source_spectrum()
    visit = observe(
        wave,
        flux,
        rv_kms=rv,
        snr={"B": 80, "R": 80},
        n_exposures=1,
        rng=np.random.default_rng(3),
        settings=CLEAN,
    )
    for arm, (lo, hi) in (("B", (4950, 5350)), ("R", (6320, 6860))):
        spec = visit.exposures[0][arm]
        obs_wave = 10.0 ** spec.loglam.astype(np.float64)
        order = np.argsort(obs_wave)
        obs_wave, flux_n = obs_wave[order], norm(spec)[order]
        centres = LINES.copy()
        for line in centres[(centres > lo) & (centres < hi)][::10]:
            expected = line * (1.0 + rv / C_KMS)
            assert centroid(obs_wave, flux_n, expected) == pytest.approx(expected, abs=0.004)


def test_resolution_is_r7500():
    """Measured line FWHM equals sqrt(intrinsic^2 + (lambda/R)^2)."""
    wave, flux = source_spectrum()
    visit = observe(
        wave,
        flux,
        rv_kms=0.0,
        snr={"B": 80, "R": 80},
        n_exposures=1,
        rng=np.random.default_rng(4),
        settings=CLEAN,
    )
    spec = visit.exposures[0]["B"]
    obs_wave = 10.0 ** spec.loglam.astype(np.float64)
    depth = 1.0 - norm(spec)
    line = LINES[np.argmin(np.abs(LINES - 5150.0))]
    near = np.abs(obs_wave - line) < 1.5
    # second moment of the absorption profile = sigma^2 of the convolved Gaussian
    var = np.sum(depth[near] * (obs_wave[near] - line) ** 2) / np.sum(depth[near])
    expected = SIGMA_LINE**2 + (line / (FWHM_PER_SIGMA * 7500.0)) ** 2
    assert var == pytest.approx(expected, rel=0.03)


def test_pre_broadened_source_gives_the_same_spectrum():
    wave, flux = source_spectrum()
    sigma_src = LINES / (FWHM_PER_SIGMA * 25000.0)
    pre = analytic(wave, LINES, np.sqrt(SIGMA_LINE**2 + sigma_src**2))
    settings = ObservationSettings(
        noise=False, cosmic_rate=0, bad_pixel_rate=0, source_resolution=25000.0
    )
    a = observe(
        wave,
        flux,
        rv_kms=10.0,
        snr={"B": 50, "R": 50},
        n_exposures=1,
        rng=np.random.default_rng(5),
        settings=CLEAN,
    )
    b = observe(
        wave,
        pre,
        rv_kms=10.0,
        snr={"B": 50, "R": 50},
        n_exposures=1,
        rng=np.random.default_rng(5),
        settings=settings,
    )
    for arm in ("B", "R"):
        x, y = a.exposures[0][arm], b.exposures[0][arm]
        np.testing.assert_allclose(norm(y), norm(x), atol=2e-3)
    with pytest.raises(ValueError, match="already below"):
        observe(
            wave,
            flux,
            rv_kms=0.0,
            snr={"B": 50, "R": 50},
            n_exposures=1,
            rng=np.random.default_rng(5),
            settings=ObservationSettings(source_resolution=5000),
        )


# --- noise, S/N and artefacts ------------------------------------------------------------------


@pytest.mark.parametrize(("snr", "n_exp"), [(12.0, 1), (40.0, 3), (150.0, 4)])
def test_noise_matches_ivar_and_hits_the_target_snr(snr, n_exp):
    wave, flux = source_spectrum()
    visit = observe(
        wave,
        flux,
        rv_kms=-20.0,
        snr={"B": snr, "R": 1.3 * snr},
        n_exposures=n_exp,
        rng=np.random.default_rng(6),
    )
    for arm, target in (("B", snr), ("R", 1.3 * snr)):
        coadd = visit.coadd[arm]
        assert coadd.snr_true == pytest.approx(target, rel=1e-4)
        assert coadd.snr_measured() == pytest.approx(target, rel=0.1)
        for spec in (coadd, *(e[arm] for e in visit.exposures)):
            use = spec.ivar > 0
            if spec.cosmics.size:
                use[spec.cosmics] = False
            if n_exp == 1 and spec is coadd:  # a lone exposure keeps its cosmics
                use &= np.abs(spec.flux - spec.model) * np.sqrt(spec.ivar) < 8
            pull = (spec.flux - spec.model)[use] * np.sqrt(spec.ivar[use])
            assert np.std(pull) == pytest.approx(1.0, abs=0.04)
            assert abs(np.mean(pull)) < 0.05
            # S/N from scatter against the noiseless model agrees with the truth
            scatter_snr = np.median(spec.model[use] / np.std((spec.flux - spec.model)[use]))
            assert scatter_snr == pytest.approx(spec.snr_true, rel=0.1)


def test_cosmic_rays_bad_pixels_and_masks():
    wave, flux = source_spectrum()
    settings = ObservationSettings(cosmic_rate=8.0, bad_pixel_rate=2e-3)
    visit = observe(
        wave,
        flux,
        rv_kms=5.0,
        snr={"B": 60, "R": 60},
        n_exposures=3,
        rng=np.random.default_rng(7),
        settings=settings,
    )
    n_cosmics = 0
    for exposure in visit.exposures:
        for spec in exposure.values():
            bad = spec.ivar == 0
            assert bad.sum() > 0
            np.testing.assert_array_equal(bad, (spec.mask & MASK_BADPIX) > 0)
            assert np.all(spec.flux[bad] == 0)
            hit = np.setdiff1d(spec.cosmics, np.flatnonzero(bad))
            n_cosmics += hit.size
            # spikes are positive and far above the noise; IVAR does not flag them
            pull = (spec.flux[hit] - spec.model[hit]) * np.sqrt(spec.ivar[hit])
            if hit.size:
                assert np.median(pull) > 3.0 and np.max(pull) > 10.0
            assert np.all(spec.ivar[hit] > 0)
    assert n_cosmics > 20
    for spec in visit.coadd.values():
        # cosmic rays are rejected from the coadd (3 exposures) and flagged in ORMASK
        good = spec.ivar > 0
        pull = (spec.flux - spec.model)[good] * np.sqrt(spec.ivar[good])
        assert np.max(pull) < 6.0
        assert np.any(spec.ormask & MASK_COMBINEREJ)
        # the coadd grid runs past the exposures at the red end, as in the real file
        nodata = (spec.mask & MASK_NODATA) > 0
        assert 5 <= nodata.sum() <= 20 and nodata[-1] and not nodata[0]
        assert np.all(spec.ivar[nodata] == 0) and np.all(spec.flux[nodata] == 0)


def test_same_rng_same_visit_and_bad_arguments():
    wave, flux = source_spectrum()

    def run(seed):
        return observe(
            wave,
            flux,
            rv_kms=1.0,
            snr={"B": 30, "R": 30},
            n_exposures=2,
            rng=np.random.default_rng(seed),
        )

    a, b, c = run(8), run(8), run(9)
    np.testing.assert_array_equal(a.exposures[1]["R"].flux, b.exposures[1]["R"].flux)
    assert not np.array_equal(a.exposures[1]["R"].flux, c.exposures[1]["R"].flux)
    with pytest.raises(ValueError, match="n_exposures"):
        observe(
            wave,
            flux,
            rv_kms=0,
            snr={"B": 30, "R": 30},
            n_exposures=0,
            rng=np.random.default_rng(0),
        )
    with pytest.raises(ValueError, match="S/N"):
        observe(
            wave,
            flux,
            rv_kms=0,
            snr={"B": -1, "R": 30},
            n_exposures=1,
            rng=np.random.default_rng(0),
        )


def test_windowed_source_like_the_library():
    """A source covering only the RRNet grids +- 10 A (two windows, as the reference library
    ships) observes cleanly: bare continuum outside and in the gap, lines inside."""
    wave_all, flux_all = source_spectrum()
    keep = ((wave_all > 4958) & (wave_all < 5338)) | ((wave_all > 6329) & (wave_all < 6709))
    visit = observe(
        wave_all[keep],
        flux_all[keep],
        rv_kms=60.0,
        snr={"B": 50, "R": 50},
        n_exposures=1,
        rng=np.random.default_rng(10),
        settings=CLEAN,
    )
    full = observe(
        wave_all,
        flux_all,
        rv_kms=60.0,
        snr={"B": 50, "R": 50},
        n_exposures=1,
        rng=np.random.default_rng(10),
        settings=CLEAN,
    )
    for arm, (lo, hi) in (("B", (4958, 5338)), ("R", (6329, 6709))):
        spec = visit.exposures[0][arm]
        rest = rv_correct(spec.loglam, 60.0)
        outside = (rest < lo - 3) | (rest > hi + 3)
        np.testing.assert_allclose(norm(spec)[outside], 1.0, atol=1e-12)
        inside = (rest > lo + 3) & (rest < hi - 3)
        np.testing.assert_allclose(norm(spec)[inside], norm(full.exposures[0][arm])[inside])
        assert norm(spec)[inside].min() < 0.95
    with pytest.raises(ValueError, match="must cover"):
        narrow = (wave_all > 4970) & (wave_all < 6700)
        observe(
            wave_all[narrow],
            flux_all[narrow],
            rv_kms=0.0,
            snr={"B": 50, "R": 50},
            n_exposures=1,
            rng=np.random.default_rng(10),
        )


def test_transmission_multiplies_the_noiseless_flux_in_the_observed_frame_before_the_noise():
    """A telluric-like dip fixed in the observed frame: each exposure's noiseless flux is
    the flux without it times the factor at its observed wavelength (times one constant,
    the S/N rescaling), the other arm is untouched, and the noise (IVAR) follows the
    dimmed flux."""
    wave, flux = source_spectrum()

    def dip(loglam: np.ndarray) -> np.ndarray:
        lam = 10.0 ** np.asarray(loglam, np.float64)
        return 1.0 - 0.4 * np.exp(-0.5 * ((lam - 6500.0) / 0.4) ** 2)

    kwargs = dict(rv_kms=80.0, snr={"B": 50.0, "R": 60.0}, n_exposures=2)
    plain = observe(wave, flux, rng=np.random.default_rng(9), settings=CLEAN, **kwargs)
    dimmed = observe(wave, flux, rng=np.random.default_rng(9), settings=CLEAN,
                     transmission={"R": dip}, **kwargs)  # fmt: skip
    for e_plain, e_dim in zip(plain.exposures, dimmed.exposures, strict=True):
        ratio = e_dim["R"].model / e_plain["R"].model / dip(e_dim["R"].loglam)
        np.testing.assert_allclose(ratio, np.median(ratio), rtol=1e-9)
        assert abs(np.median(ratio) - 1.0) < 0.01  # the median S/N barely changes
        np.testing.assert_array_equal(e_dim["B"].model, e_plain["B"].model)
    noisy = observe(wave, flux, rng=np.random.default_rng(9), transmission={"R": dip}, **kwargs)
    spec = noisy.exposures[0]["R"]
    good = spec.ivar > 0
    tmpl = LAMOST_TEMPLATE["R"]
    np.testing.assert_allclose(
        spec.ivar[good], 1.0 / (spec.model[good] * tmpl.gain + tmpl.read_var), rtol=1e-6
    )
