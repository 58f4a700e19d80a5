"""Property tests: Rust kernels vs the NumPy reference on generated spectra.

Agreement is required to 1e-5 relative, with identical iteration counts and
outlier statistics, except where the reference reports a threshold tie (a
clipping decision within ``TIE`` sigma of its bound, which roundoff may flip);
then only the statuses must agree.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rrnet.preprocess as fast
from rrnet.grid import BLUE_GRID, C_KMS, N_PIX_ARM, RED_GRID
from rrnet.preprocess import PreprocessError, Status
from rrnet.preprocess import reference as ref

TIE = 1e-9
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def arm_flux(draw, grid: np.ndarray) -> np.ndarray:
    """One arm: a continuum of some shape, absorption lines, noise and defects."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = (grid - grid.mean()) / (grid[-1] - grid[0])  # -0.5 .. 0.5
    level = draw(st.floats(1e-2, 1e5))
    shape = draw(st.sampled_from(["poly", "exp", "planck", "sine", "flat"]))
    if shape == "poly":
        coef = rng.uniform(-0.6, 0.6, 4)
        cont = 1 + coef[0] * t + coef[1] * t**2 + coef[2] * t**3 + coef[3] * t**5
    elif shape == "exp":
        cont = np.exp(rng.uniform(-2, 2) * t)
    elif shape == "planck":
        temp_k = rng.uniform(3000, 30000)
        lam_m = grid * 1e-10
        cont = 1 / (lam_m**5 * np.expm1(1.4388e-2 / (lam_m * temp_k)))
        cont /= cont.mean()
    elif shape == "sine":
        cont = 1 + 0.2 * np.sin(rng.uniform(1, 40) * t + rng.uniform(0, 6))
    else:
        cont = np.ones_like(t)
    flux = level * cont
    for _ in range(draw(st.integers(0, 60))):  # absorption lines
        centre, sigma = rng.uniform(grid[0], grid[-1]), rng.uniform(0.05, 2.0)
        flux *= 1 - rng.uniform(0, 0.9) * np.exp(-0.5 * ((grid - centre) / sigma) ** 2)
    snr = draw(st.floats(3, 1000))
    flux += rng.normal(0, level / snr, grid.size)
    for _ in range(draw(st.integers(0, 20))):  # cosmic-ray spikes
        i = rng.integers(0, grid.size)
        flux[i : i + rng.integers(1, 4)] += level * rng.uniform(1, 50)
    for _ in range(draw(st.integers(0, 3))):  # dead pixels
        i = rng.integers(0, grid.size)
        flux[i : i + rng.integers(1, 40)] = 0.0
    for _ in range(draw(st.integers(0, 2))):  # flat segments
        i = rng.integers(0, grid.size)
        flux[i : i + rng.integers(10, 300)] = flux[i]
    return flux.astype(np.float32)


@st.composite
def spectra(draw) -> np.ndarray:
    return np.concatenate([draw(arm_flux(BLUE_GRID)), draw(arm_flux(RED_GRID))])[None]


@st.composite
def damaged(draw, flux: np.ndarray) -> np.ndarray:
    """``flux`` (one row) as bad data makes it: NaN or inf pixels, a constant or all-zero
    arm, a negative level, one enormous pixel; or unchanged."""
    flux = flux.copy()
    arm = draw(st.sampled_from([slice(0, N_PIX_ARM), slice(N_PIX_ARM, 2 * N_PIX_ARM)]))
    kind = draw(st.sampled_from(["none", "nan", "inf", "constant", "zero", "negative", "huge"]))
    at = draw(st.integers(0, N_PIX_ARM - 1)) + arm.start
    if kind == "nan":
        flux[at : at + draw(st.integers(1, 5))] = np.nan
    elif kind == "inf":
        flux[at] = np.inf
    elif kind == "constant":
        flux[arm] = flux[arm][0]
    elif kind == "zero":
        flux[arm] = 0.0
    elif kind == "negative":
        flux[arm] = -np.abs(flux[arm])
    elif kind == "huge":
        flux[at] = 1e30
    return flux


@st.composite
def batches(draw) -> np.ndarray:
    """1-8 rows, clean or damaged, so that rows must stay independent of each other."""
    rows = [draw(damaged(draw(spectra())[0])) for _ in range(draw(st.integers(1, 8)))]
    return np.stack(rows)


def _assert_same_normalization(flux: np.ndarray, max_iter: int, threads: int = 1) -> None:
    want = ref.normalize_detailed(flux, max_iter)
    got = fast.normalize_detailed(flux, max_iter, threads=threads)
    np.testing.assert_array_equal(got.status, want.status)
    clear = want.min_margin >= TIE  # a documented threshold tie: decisions may differ
    np.testing.assert_array_equal(got.iterations[clear], want.iterations[clear])
    np.testing.assert_array_equal(got.cap_hit[clear], want.cap_hit[clear])
    np.testing.assert_array_equal(got.n_outliers[clear], want.n_outliers[clear])
    np.testing.assert_array_equal(got.max_outlier_run[clear], want.max_outlier_run[clear])
    np.testing.assert_allclose(got.flux[clear], want.flux[clear], rtol=1e-5, atol=1e-7)


@SETTINGS
@given(spectra())
def test_normalize_matches_reference(flux):
    _assert_same_normalization(flux, 100)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spectra(), st.integers(1, 4))
def test_normalize_with_small_cap_matches_reference(flux, max_iter):
    _assert_same_normalization(flux, max_iter)


@SETTINGS
@given(batches(), st.sampled_from([1, 2]), st.sampled_from([3, 100]))
def test_normalize_batches_with_damaged_rows_match_reference(flux, threads, max_iter):
    """Failure statuses, rows independent of each other and the thread split, against
    the reference: the test above only ever drew single good rows."""
    _assert_same_normalization(flux, max_iter, threads)


@st.composite
def observed_arm(draw, grid: np.ndarray):
    """(loglam, flux, rv_kms) of an arm whose RV-corrected range covers ``grid``."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rv = draw(st.floats(-3000, 3000))
    shift = 1 + rv / C_KMS
    lo = grid[0] * shift - draw(st.floats(0.01, 40))
    hi = grid[-1] * shift + draw(st.floats(0.01, 40))
    n = draw(st.integers(2, 6000))
    inner = np.sort(rng.uniform(lo, hi, n))
    dtype = draw(st.sampled_from([np.float64, np.float32]))  # LAMOST LOGLAM is float32
    loglam = np.unique(np.log10(np.concatenate([[lo], inner, [hi]])).astype(dtype))
    flux = rng.normal(100, 30, loglam.size).astype(np.float32)
    if draw(st.booleans()):
        loglam, flux = loglam[::-1].copy(), flux[::-1].copy()
    return loglam, flux, rv


@SETTINGS
@given(observed_arm(BLUE_GRID), st.sampled_from([BLUE_GRID, RED_GRID]))
def test_resample_matches_reference(arm, grid):
    loglam, flux, rv = arm
    np.testing.assert_allclose(fast.rv_correct(loglam, rv), ref.rv_correct(loglam, rv), rtol=1e-15)
    wave = ref.rv_correct(loglam, rv)
    try:
        want = ref.resample(wave, flux, grid)
    except PreprocessError as err:  # the red grid is out of range of a blue arm
        assert err.status == Status.GRID_OUT_OF_RANGE
        try:
            fast.resample(wave, flux, grid)
        except PreprocessError as fast_err:
            assert fast_err.status == err.status
        else:
            raise AssertionError("Rust resampled where the reference refused") from None
        return
    got = fast.resample(wave, flux, grid)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@st.composite
def inverse_variances(draw, size: int) -> np.ndarray:
    """IVAR as files hold it: mostly positive, with zeros (dead pixels), and as damage
    makes it: negative, NaN and inf values."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ivar = rng.uniform(0.01, 10.0, size).astype(np.float32)
    for value in (0.0, -1.0, np.nan, np.inf):
        ivar[rng.integers(0, size, draw(st.integers(0, 20)))] = value
    return ivar


@SETTINGS
@given(observed_arm(BLUE_GRID), observed_arm(RED_GRID), st.integers(0, 5), st.booleans(), st.data())
def test_resample_batch_matches_reference(blue, red, n_nan, flat, data):
    """Both ways into the kernel (lists of arrays, and flat arrays plus offsets, as the
    store writer hands them over) against the reference; IVAR with dead, negative and
    non-finite pixels for the S/N."""
    loglam_b, flux_b, rv = blue
    loglam_r, flux_r, _ = red
    flux_b = flux_b.copy()
    flux_b[np.random.default_rng(n_nan).integers(0, flux_b.size, n_nan)] = np.nan
    # The red arm was generated for its own RV: apply the blue one and it may not cover.
    args = ([loglam_b], [flux_b], [loglam_r], [flux_r], [rv])
    ivar_b = data.draw(inverse_variances(flux_b.size))
    ivar_r = data.draw(inverse_variances(flux_r.size))
    ivar = {"blue_ivar": [ivar_b], "red_ivar": [ivar_r]}
    want = ref.resample_batch(*args, **ivar)
    if flat:
        offsets = {
            "blue_offsets": np.array([0, flux_b.size]),
            "red_offsets": np.array([0, flux_r.size]),
        }
        got = fast.resample_batch(
            loglam_b, flux_b, loglam_r, flux_r, [rv], blue_ivar=ivar_b, red_ivar=ivar_r,
            **offsets,
        )  # fmt: skip
    else:
        got = fast.resample_batch(*args, **ivar)
    np.testing.assert_array_equal(got.status, want.status)
    np.testing.assert_allclose(got.flux, want.flux, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.snr_blue, want.snr_blue, rtol=1e-12)
    np.testing.assert_allclose(got.snr_red, want.snr_red, rtol=1e-12)
    assert got.flux[:, :N_PIX_ARM].shape == (1, N_PIX_ARM)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.booleans())
def test_resample_on_grid_points_with_bad_neighbours_matches_reference(seed, n_bad, descending):
    """Input pixels exactly on grid points (LAMOST's grids are not the fixed ones, but a
    synthesised or resampled file's are): such a grid pixel depends on that input pixel
    only, so a NaN next to it must not spread. Random wavelengths never hit a grid
    point, so the rule was never compared with the reference."""
    rng = np.random.default_rng(seed)
    extra = rng.uniform(BLUE_GRID[0] - 5, BLUE_GRID[-1] + 5, 2000)
    on_grid = BLUE_GRID[rng.choice(BLUE_GRID.size, 1500, replace=False)]
    wave = np.unique(np.concatenate([[BLUE_GRID[0] - 5, BLUE_GRID[-1] + 5], extra, on_grid]))
    flux = rng.normal(100, 30, wave.size).astype(np.float32)
    flux[rng.integers(0, wave.size, n_bad)] = np.nan
    if descending:
        wave, flux = wave[::-1].copy(), flux[::-1].copy()
    want = ref.resample(wave, flux, BLUE_GRID)
    got = fast.resample(wave, flux, BLUE_GRID)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


@SETTINGS
@given(observed_arm(BLUE_GRID), st.data())
def test_snr_ivar_matches_reference(arm, data):
    """The S/N from FLUX and IVAR: only finite pixels with IVAR > 0 inside the window
    count (dropping the IVAR > 0 test in the reference had passed every test)."""
    loglam, flux, rv = arm
    ivar = data.draw(inverse_variances(flux.size))
    flux = flux.copy()
    flux[data.draw(st.integers(0, flux.size - 1))] = np.nan
    want = ref.snr_ivar(loglam, flux, ivar, rv, BLUE_GRID)
    got = fast.snr_ivar(loglam, flux, ivar, rv, BLUE_GRID)
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(1, 4),
    n_cols=st.integers(1, 300),
    width=st.sampled_from([1, 3, 5, 25, 51]),
    ties=st.booleans(),
)
def test_running_median_equals_scipy_median_filter(seed, n_rows, n_cols, width, ties):
    """The Rust running median (the OOD test's despiking) is scipy's nearest-mode median
    filter exactly, also with repeated values, windows wider than the row and spikes."""
    from scipy.ndimage import median_filter

    rng = np.random.default_rng(seed)
    values = rng.chisquare(1, (n_rows, n_cols))
    if ties:
        values = np.round(values, 1)
    values[rng.random(values.shape) < 0.02] = 1e6  # spikes
    want = median_filter(values, size=(1, width), mode="nearest")
    np.testing.assert_array_equal(fast.kernels.running_median(values, width), want)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(1, 4),
    n_cols=st.integers(1, 400),
    width=st.sampled_from([1, 3, 25, 51]),
    spike_rate=st.sampled_from([0.0, 0.003, 0.05, 0.4, 0.9]),
    factor=st.sampled_from([0.0, 1.0, 9.0]),
)
def test_despike_equals_the_running_median_rule(seed, n_rows, n_cols, width, spike_rate, factor):
    """The Rust despike (medians only where a value exceeds the factor) equals the
    whole-array rule on scipy's median filter, bit for bit, from spike-free rows to rows
    that are mostly spikes (its whole-row path), with ties and a zero factor."""
    from scipy.ndimage import median_filter

    rng = np.random.default_rng(seed)
    values = rng.chisquare(1, (n_rows, n_cols))
    spikes = rng.random(values.shape) < spike_rate
    values[spikes] = rng.uniform(10, 1e4, spikes.sum())
    values[:, ::7] = np.round(values[:, ::7], 1)  # ties
    med = median_filter(values, size=(1, width), mode="nearest")
    want = np.where(values > factor * np.maximum(med, 1.0), med, values)
    np.testing.assert_array_equal(fast.kernels.despike(values, width, factor), want)


def test_despike_rejects_a_negative_factor_or_an_even_width():
    with np.testing.assert_raises_regex(ValueError, "factor"):
        fast.kernels.despike(np.zeros((2, 5)), 3, -1.0)
    with np.testing.assert_raises_regex(ValueError, "odd"):
        fast.kernels.despike(np.zeros((2, 5)), 4, 9.0)


def test_a_window_far_wider_than_the_row_is_the_same_as_twice_the_row():
    """A width of 2**31 + 1 was kept in memory whole (the process was killed); every window
    of half-width >= n - 1 gives scipy's medians of width 2n - 1 (proof in the kernel)."""
    from scipy.ndimage import median_filter

    values = np.random.default_rng(3).chisquare(1, (3, 20))
    want = median_filter(values, size=(1, 39), mode="nearest")
    np.testing.assert_array_equal(median_filter(values, size=(1, 61), mode="nearest"), want)
    np.testing.assert_array_equal(fast.kernels.running_median(values, 2**31 + 1), want)
    spiky = values.copy()
    spiky[:, ::5] = 50.0
    med = median_filter(spiky, size=(1, 39), mode="nearest")
    np.testing.assert_array_equal(
        fast.kernels.despike(spiky, 2**31 + 1, 9.0),
        np.where(spiky > 9.0 * np.maximum(med, 1.0), med, spiky),
    )


def test_running_median_rejects_even_or_non_2d_input():
    with np.testing.assert_raises_regex(ValueError, "odd"):
        fast.kernels.running_median(np.zeros((2, 5)), 4)
    with np.testing.assert_raises_regex(ValueError, "2-D"):
        fast.kernels.running_median(np.zeros(5), 3)
