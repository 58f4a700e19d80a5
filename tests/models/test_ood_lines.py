"""The matched-filter line and band statistics of the OOD test against direct computations.

Oracles: explicit sums over each pixel's neighbourhood (the filter), the analytic matched
filter of a Gaussian line (``m**2`` peak ``(A / s)**2 sqrt(pi) sigma``), white noise
(``m ~ N(0, 1)``), and the toy family ``helpers.ood_toy`` with LSF-wide lines injected.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import ood_clean_flag_rates
from helpers import ood_toy as toy
from rrnet.grid import N_PIX, N_PIX_ARM
from rrnet.models import ood_lines, ood_shape
from rrnet.models import ood_subspace as oos


@pytest.fixture(scope="module")
def fitted() -> tuple[oos.Subspace, oos.Subspace]:
    """(six-statistic test, four-statistic test) of one training and validation set."""
    snr = np.exp(np.random.default_rng(21).uniform(np.log(5), np.log(300), 1500))
    valid = toy(1500, snr, 22)
    train = toy(300, np.exp(np.random.default_rng(1).uniform(np.log(5), np.log(300), 300)), 1)
    mean, comps = oos.fit_subspace(train[0], np.fmin(train[1], train[2]), 12)
    return (
        oos.calibrate(mean, comps, *valid),
        oos.calibrate(mean, comps, *valid, lines=False),
    )


def test_filtered_residual_is_the_weighted_amplitude_over_its_error() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(size=(2, N_PIX))
    w = rng.uniform(0.5, 2.0, r.shape)
    w[:, 1000:1010] = 0.0
    got = ood_lines.filtered(r, w)
    s = ood_lines.SIGMA_PX
    half = int(np.ceil(ood_lines.TRUNCATE * s))
    for i in range(2):
        for p in (0, 5, 1004, 2000, N_PIX_ARM - 1, N_PIX_ARM, N_PIX_ARM + 7, N_PIX - 3):
            a = (p // N_PIX_ARM) * N_PIX_ARM  # neighbours within the pixel's arm only
            j = np.arange(max(p - half, a), min(p + half + 1, a + N_PIX_ARM))
            g = np.exp(-0.5 * ((j - p) / s) ** 2)
            want = np.sum(g * w[i, j] * r[i, j]) / np.sqrt(np.sum(g * g * w[i, j]))
            assert got[i, p] == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_a_gaussian_line_gives_the_analytic_matched_filter_peak() -> None:
    s, amp, noise = ood_lines.SIGMA_PX, 0.02, 0.01
    x = np.arange(N_PIX, dtype=np.float64)
    r = amp * np.exp(-0.5 * ((x - 5000.3) / s) ** 2)[None]
    m = ood_lines.filtered(r, np.full(r.shape, noise**-2))
    # sum of g**2 over pixels -> integral sqrt(pi) sigma for a well-sampled Gaussian; at
    # an offset d from the line the filtered amplitude falls as exp(-d**2 / (4 sigma**2))
    want = (amp / noise) ** 2 * np.sqrt(np.pi) * s * np.exp(-(0.3**2) / (2 * s**2))
    assert ood_lines.line_statistic(m)[0] == pytest.approx(want, rel=1e-4)
    assert abs(int(np.argmax(m[0])) - 5000) <= 1


def test_white_noise_filters_to_unit_normal_pixels() -> None:
    rng = np.random.default_rng(1)
    sigma = rng.uniform(0.01, 0.05, (200, 1))
    weight = np.broadcast_to(sigma**-2, (200, N_PIX))
    m = ood_lines.filtered(rng.normal(size=(200, N_PIX)) * sigma, weight)
    assert np.mean(m**2) == pytest.approx(1.0, abs=0.02)
    assert np.mean(m) == pytest.approx(0.0, abs=0.02)


def test_band_statistic_is_the_largest_half_overlapping_window_mean_per_arm() -> None:
    m = np.random.default_rng(2).normal(size=(3, N_PIX))
    w = ood_lines.BAND_WINDOW
    got = ood_lines.band_statistic(m)
    for i in range(3):
        means = [np.mean(m[i, a + k : a + k + w] ** 2)
                 for a in (0, N_PIX_ARM) for k in range(0, N_PIX_ARM - w + 1, w // 2)]  # fmt: skip
        assert got[i] == pytest.approx(max(means), rel=1e-10)


def test_clean_held_out_spectra_are_flagged_rarely_in_every_snr_bin(fitted) -> None:
    for snr_bin, rate in ood_clean_flag_rates(fitted[0], seed=200).items():
        assert rate <= 0.03, (snr_bin, rate)


def _with_band(depth: float, snr: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Toy spectra times a band of 40 absorption lines as wide as the red arm's LSF."""
    flux, snr_b, snr_r = toy(40, snr, seed)
    x = np.arange(N_PIX)
    band = np.zeros(N_PIX)
    for c in np.random.default_rng(seed).uniform(N_PIX_ARM + 1500, N_PIX_ARM + 2800, 40):
        band += depth * np.exp(-0.5 * ((x - c) / 3.7) ** 2)
    return flux * (1.0 - band), snr_b, snr_r


def test_a_weak_lsf_wide_band_is_seen_by_the_band_statistic(fitted) -> None:
    """Lines 2 % deep at S/N 30 (red 39): below the noise one by one, mostly missed by the
    mean z**2 and shape statistics (<= 30 % flagged), >= 75 % by the band statistic."""
    lines, shape = fitted
    flux, snr_b, snr_r = _with_band(0.02, 30.0, 24)
    stats = oos.statistics(lines, flux, snr_b, snr_r)
    limits = lines.limits(np.fmin(snr_b, snr_r), 0.99)
    assert np.mean(stats[:, 5] > limits[:, 5]) >= 0.75
    assert np.mean(oos.score(shape, flux, snr_b, snr_r) > 1.0) <= 0.3
    # global, local and line width as in the four-statistic test (its step is the
    # 120-pixel window difference; this one's is the whole-arm step)
    np.testing.assert_allclose(stats[:, :3], oos.statistics(shape, flux, snr_b, snr_r)[:, :3],
                               rtol=1e-6)  # fmt: skip


def test_file_round_trip_and_layout_check(fitted, tmp_path) -> None:
    lines, _ = fitted
    oos.write(tmp_path, lines)
    back = oos.read(tmp_path)
    assert back is not None and back.lines and back.arm_step and back.n_statistics == 6
    assert oos.describe(back)["score"] == oos.ARM_STEP_SCORE_NAME
    np.testing.assert_array_equal(back.thresholds, lines.thresholds)
    flux = toy(3, 40.0, 30)
    np.testing.assert_array_equal(oos.score(back, *flux), oos.score(lines, *flux))
    # a test stored with another filter width is refused, not silently mis-scored
    from safetensors.numpy import load_file, save_file

    path = tmp_path / oos.SUBSPACE_FILE
    with open(path, "rb") as fh:
        header = fh.read()
    tensors = load_file(str(path))
    assert b'"line_sigma"' in header
    meta = {"score": oos.ARM_STEP_SCORE_NAME, "window": "50",
            "step_width": f"arm:{ood_shape.ARM_STEP_MARGIN}:{ood_shape.CONTINUUM_DEGREE}",
            "step_stride": str(ood_shape.ARM_STEP_STRIDE),
            "line_sigma": "3.0", "band_window": str(ood_lines.BAND_WINDOW)}  # fmt: skip
    save_file(tensors, str(path), meta)
    with pytest.raises(ValueError, match="another filter"):
        oos.read(tmp_path)


def test_lsf_like_tells_a_line_from_a_cosmic_ray_by_its_width() -> None:
    """A Gaussian of the red arm's LSF (3.7 px) or a broadened line (4.6 px) is LSF-like at
    its centre and flanks; a flat-topped 5-pixel spike (a resampled cosmic ray), a 2-pixel
    one and a 9-pixel plateau (a cosmic ray cut by the flux clip at low S/N) are not;
    white noise mostly not."""
    x = np.arange(N_PIX, dtype=np.float64)
    r = np.random.default_rng(3).normal(size=(5, N_PIX))
    for i, s in enumerate((3.7, 4.6)):
        r[i] += 30.0 * np.exp(-0.5 * ((x - 1000.0) / s) ** 2)
    r[2, 998:1003] += 30.0
    r[3, 1000:1002] += 30.0
    r[4, 996:1005] += 20.0  # a 9-pixel plateau: as wide as the LSF, but flat-topped
    like = ood_lines.lsf_like(r, np.ones_like(r))
    assert like[0, 994:1007].all() and like[1, 994:1007].all()
    assert not like[2:, 990:1011].any()
    assert np.mean(like[:, 2000:]) < 0.05


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), density=st.sampled_from([0.0005, 0.005, 0.05]))
def test_lsf_terms_at_some_pixels_equal_the_whole_answer_there(seed: int, density: float) -> None:
    """``lsf_terms(..., at=mask)`` answers each wanted pixel from a window around it: the
    same terms and ``lsf_like`` booleans, bit for bit, as over whole arms, for
    lines, cosmic-ray spikes, dead (zero-weight) pixels and wanted pixels at and near
    the arm ends."""
    rng = np.random.default_rng(seed)
    x = np.arange(N_PIX, dtype=np.float64)
    r = rng.normal(size=(4, N_PIX))
    for row in r:
        for centre in rng.integers(0, N_PIX, 6):
            row += rng.uniform(3, 30) * np.exp(-0.5 * ((x - centre) / rng.uniform(1, 6)) ** 2)
        start = int(rng.integers(0, N_PIX - 8))
        row[start : start + int(rng.integers(1, 8))] += rng.uniform(5, 40)
    weight = rng.uniform(0.5, 2.0, r.shape)
    weight[rng.random(r.shape) < 0.01] = 0.0
    at = rng.random(r.shape) < density
    ends = [0, 5, 19, 20, 21, N_PIX_ARM - 1, N_PIX_ARM, N_PIX_ARM + 20, N_PIX - 21, N_PIX - 1]
    at[rng.integers(0, 4), ends] = True
    wanted, full = ood_lines.lsf_terms(r, weight, at=at), ood_lines.lsf_terms(r, weight)
    for got, all_pixels in zip(wanted, full, strict=True):
        assert np.array_equal(got, np.where(at, all_pixels, 0.0))
    whole = ood_lines.lsf_like(r, weight)
    assert np.array_equal(ood_lines.lsf_like(r, weight, at=at), whole & at)
    assert whole.any()  # lines make LSF-like pixels: True answers are compared too


def test_a_strong_emission_line_keeps_its_core_and_a_cosmic_ray_does_not(fitted) -> None:
    """At S/N 200 an emission line of the red arm's LSF width (3.7 px) peaks at z ~ 25-30
    (noise plus the subspace's floor): its core z**2 is ~14x the 25-pixel running median,
    so the running-median clip alone would replace it; the six-statistic test keeps it
    (line statistic near the analytic matched filter), while a 5-pixel flat spike of the
    same height stays an artefact that flags nothing."""
    lines, _ = fitted
    flux, snr_b, snr_r = toy(10, 200.0, 31)
    x = np.arange(N_PIX, dtype=np.float64)
    amp, s = 30.0 / 200.0, 3.7
    line = flux + amp * np.exp(-0.5 * ((x - 1500.0) / s) ** 2)
    stats = oos.statistics(lines, line, snr_b, snr_r)
    # (z amplitude)**2 sqrt(pi) sigma_line * 2 s S / (s**2 + S**2): a filter of sigma S
    # keeps that fraction of a line of sigma s
    big_s = ood_lines.SIGMA_PX
    z_amp2 = amp**2 / (200.0**-2 + np.mean(lines.floor2[1490:1511]))  # the test's variance
    want = z_amp2 * np.sqrt(np.pi) * s * 2 * s * big_s / (s**2 + big_s**2)
    np.testing.assert_allclose(stats[:, 4], want, rtol=0.15)
    assert np.all(oos.score(lines, line, snr_b, snr_r) > 1.0)
    spike = flux.copy()
    spike[:, 1498:1503] += amp
    assert np.mean(oos.score(lines, spike, snr_b, snr_r) > 1.0) <= 0.1
