"""The subspace OOD test (issue 17) against independent computations on a toy family.

The toy spectra (``helpers.ood_toy``) are exactly ``base + sum_j a_j B_j`` (8 smooth
directions) plus Gaussian noise of sigma ``1/snr`` per arm: the analytic case where a
clean spectrum's residual is pure noise, so its mean ``z**2`` must be ~1 at any S/N.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from helpers import OOD_BASE as BASE
from helpers import OOD_BASIS as BASIS
from helpers import ood_artefacts_by_hand as _artefacts_by_hand
from helpers import ood_clean_flag_rates
from helpers import ood_toy as toy
from rrnet.grid import N_PIX, N_PIX_ARM
from rrnet.models import ood_subspace as oos


@pytest.fixture(scope="module")
def fitted() -> oos.Subspace:
    train = toy(300, np.exp(np.random.default_rng(1).uniform(np.log(5), np.log(300), 300)), 1)
    valid = toy(600, np.exp(np.random.default_rng(2).uniform(np.log(5), np.log(300), 600)), 2)
    # the two-statistic test (what checkpoints before the shape statistics store);
    # tests/models/test_ood_shape.py checks the four-statistic one
    return oos.fit(train[0], train[1:], valid[0], valid[1:], n_components=12, shape=False)


def test_residual_is_the_least_squares_residual_off_the_span(fitted) -> None:
    flux, _, _ = toy(5, 40.0, 3)
    d = np.clip(flux, -0.5, 2.5) - fitted.mean
    coef, *_ = np.linalg.lstsq(fitted.components.T, d.T, rcond=None)
    expected = d - (fitted.components.T @ coef).T
    np.testing.assert_allclose(oos.residual(fitted.mean, fitted.components, flux), expected,
                               atol=1e-10)  # fmt: skip
    # the fitted span contains the toy family: the noise-free residual is only the
    # noise of the fitted mean (~ 1/30/sqrt(130) per pixel)
    clean = BASE + np.random.default_rng(4).normal(0.0, 1.0, (3, 8)) @ BASIS
    assert np.sqrt(np.mean(oos.residual(fitted.mean, fitted.components, clean) ** 2)) < 4e-3


def test_statistics_match_a_direct_computation(fitted) -> None:
    """The plain-projection formula (older checkpoints, ``robust=False``)."""
    from scipy.signal import medfilt

    flux, snr_b, snr_r = toy(4, 25.0, 6)
    flux[0, 1000:1004] += 1.0  # a cosmic ray: 4 pixels with sharp edges
    got = oos.statistics(replace(fitted, robust=False), flux, snr_b, snr_r)
    edge = np.r_[0:10, 3590:3610, 7190:7200]
    for i in range(4):
        r = oos.residual(fitted.mean, fitted.components, flux[i : i + 1])[0]
        var = np.r_[np.full(N_PIX_ARM, snr_b[i] ** -2), np.full(N_PIX_ARM, snr_r[i] ** -2)]
        var = var + fitted.floor2
        z2 = r**2 / var
        padded = np.r_[np.full(12, z2[0]), z2, np.full(12, z2[-1])]
        med = medfilt(padded, 25)[12:-12]
        spike = z2 > 9 * np.maximum(med, 1.0)
        z2 = np.where(spike, med, z2)
        z2[edge] = np.median(np.delete(z2, edge))
        windows = [z2[s : s + oos.WINDOW].mean() for s in range(0, N_PIX - oos.WINDOW + 1, 25)]
        assert got[i, 0] == pytest.approx(z2.mean(), rel=1e-10)
        assert got[i, 1] == pytest.approx(max(windows), rel=1e-10)
        assert spike[1000:1004].all() == (i == 0)
    assert got[0, 1] < 3.0  # the cosmic ray is not an OOD feature


def test_each_row_is_scored_alone_whatever_block_or_thread_it_lands_in(fitted) -> None:
    """Rows are scored in blocks on several threads: a batch of three blocks (with a
    dead-pixel row, a NaN row and an unknown S/N) gives each row what it gets alone and in
    a shuffled batch (to BLAS roundoff), and an empty batch gives no rows."""
    n = 2 * oos.ROW_BLOCK + 7
    flux, snr_b, snr_r = toy(n, np.linspace(6.0, 250.0, n), 12)
    flux[3, 2000] = 0.0
    flux[70, 100] = np.nan
    snr_r[100] = np.nan
    got = oos.statistics(fitted, flux, snr_b, snr_r)
    order = np.random.default_rng(0).permutation(n)
    shuffled = oos.statistics(fitted, flux[order], snr_b[order], snr_r[order])
    np.testing.assert_allclose(shuffled, got[order], rtol=1e-12)
    for i in (0, 3, 64, 70, 100, n - 1):
        alone = oos.statistics(fitted, flux[i : i + 1], snr_b[i : i + 1], snr_r[i : i + 1])
        np.testing.assert_allclose(alone[0], got[i], rtol=1e-12)
    assert np.isnan(got[[70, 100]]).all() and np.isfinite(np.delete(got, [70, 100], 0)).all()
    assert oos.statistics(fitted, flux[:0], snr_b[:0], snr_r[:0]).shape == (0, 2)


def test_scores_do_not_depend_on_the_thread_count(fitted, monkeypatch) -> None:
    """Blocks are fixed and BLAS runs one thread inside each: the same bits on one
    thread as on three (RRNET_NUM_THREADS, as for the Rust kernels)."""
    flux, snr_b, snr_r = toy(2 * oos.ROW_BLOCK + 3, 40.0, 13)
    flux[5, 3000:3003] += 1.0  # a cosmic ray: the robust refit runs too
    got = {}
    for threads in ("1", "3"):
        monkeypatch.setenv("RRNET_NUM_THREADS", threads)
        got[threads] = oos.statistics(fitted, flux, snr_b, snr_r)
    np.testing.assert_array_equal(got["1"], got["3"])


def test_scorings_in_parallel_threads_leave_blas_as_they_found_it(fitted) -> None:
    """Each scoring limits BLAS to one thread while its blocks run; the limit is the
    process's, so overlapping scorings (a pipeline's thread pool) each restoring "their"
    original left BLAS at one thread for good, the user's numpy included."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    if not before or max(before) < 2:
        pytest.skip("no BLAS here that runs two threads")
    flux, snr_b, snr_r = toy(5 * oos.ROW_BLOCK, 40.0, 14)  # long enough to overlap
    alone = oos.statistics(fitted, flux, snr_b, snr_r)
    try:
        for _ in range(3):
            with ThreadPoolExecutor(2) as pool:
                for together in pool.map(
                    lambda _: oos.statistics(fitted, flux, snr_b, snr_r), range(4)
                ):
                    np.testing.assert_array_equal(together, alone)
            assert blas_threads() == before
    finally:
        threadpool_limits(limits=max(before), user_api="blas")  # for the next tests


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")  # fork, 3.12+
def test_a_child_forked_mid_scoring_has_blas_as_before(fitted) -> None:
    """The shared BLAS limit counts the scorings under way: a child forked during one
    inherited the count, so its own scorings never set or lifted the limit (and with a
    BLAS that keeps its thread count across fork, one thread for good)."""
    import multiprocessing
    import sys
    import threading

    from threadpoolctl import threadpool_info

    if sys.platform != "linux":
        pytest.skip("fork start method is Linux's")
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not before or max(before) < 2:
        pytest.skip("no BLAS here that runs two threads")
    flux, snr_b, snr_r = toy(4 * oos.ROW_BLOCK, 40.0, 15)
    inside, go_on = threading.Event(), threading.Event()
    real = oos._block_statistics

    def held(*args):  # type: ignore[no-untyped-def]
        inside.set()
        go_on.wait(60)
        return real(*args)

    oos._block_statistics = held  # a scoring under way in another thread
    try:
        scoring = threading.Thread(target=oos.statistics, args=(fitted, flux, snr_b, snr_r))
        scoring.start()
        assert inside.wait(60)
        with multiprocessing.get_context("fork").Pool(1) as child:
            got = child.apply_async(_blas_after_a_scoring, (fitted,)).get(timeout=120)
    finally:
        go_on.set()
        oos._block_statistics = real
        scoring.join()
    assert got == (0, before)


def _blas_after_a_scoring(fitted) -> tuple[int, list[int]]:  # type: ignore[no-untyped-def]
    """In the child: the scorings under way after one of its own, and BLAS's threads."""
    from threadpoolctl import threadpool_info

    oos._block_statistics = _REAL_BLOCK_STATISTICS  # the child's own, unpatched
    flux, snr_b, snr_r = toy(oos.ROW_BLOCK, 40.0, 16)
    oos.statistics(fitted, flux, snr_b, snr_r)
    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    return oos._single_threaded_blas._users, blas


_REAL_BLOCK_STATISTICS = oos._block_statistics


@pytest.mark.parametrize("snr", [8.0, 30.0, 200.0])
def test_a_spectrum_in_the_span_scores_the_noise_level_at_any_snr(fitted, snr) -> None:
    flux, snr_b, snr_r = toy(50, snr, 7)
    stats = oos.statistics(fitted, flux, snr_b, snr_r)
    assert np.median(stats[:, 0]) == pytest.approx(1.0, abs=0.2)


def test_clean_held_out_spectra_are_flagged_rarely_in_every_snr_bin(fitted) -> None:
    for snr_bin, rate in ood_clean_flag_rates(fitted, seed=100).items():
        assert rate <= 0.03, (snr_bin, rate)


def test_an_emission_line_at_snr_50_is_flagged(fitted) -> None:
    flux, snr_b, snr_r = toy(40, 50.0, 8)
    centres = np.random.default_rng(9).integers(100, N_PIX - 100, 40)
    pix = np.arange(N_PIX)
    # sigma 4.5 pixels: a 0.3 A wide line seen at R = 7500
    line = 0.3 * np.exp(-0.5 * ((pix[None] - centres[:, None]) / 4.5) ** 2)
    assert np.all(oos.score(fitted, flux, snr_b, snr_r) <= 3.0)  # the clean ones
    assert np.all(oos.score(fitted, flux + line, snr_b, snr_r) > 1.0)


def test_a_spectrum_off_the_family_is_flagged_and_unknown_snr_gives_nan(fitted) -> None:
    flux, snr_b, snr_r = toy(20, 30.0, 10)
    shifted = np.roll(flux, 3, axis=1)  # a wrong RV of 3 pixels
    assert np.all(oos.score(fitted, shifted, snr_b, snr_r) > 1.0)
    s = oos.score(fitted, flux[:2], np.array([np.nan, 30.0]), np.array([30.0, 0.0]))
    assert np.isnan(s).all()


def test_thresholds_are_validation_quantiles_per_snr_node(fitted) -> None:
    valid = toy(600, np.exp(np.random.default_rng(2).uniform(np.log(5), np.log(300), 600)), 2)
    stats = oos.statistics(fitted, *valid)
    snr = np.fmin(valid[1], valid[2])
    near = np.abs(np.log(snr / 40.0)) <= np.log(2.0)
    j = oos.SNR_NODES.index(40.0)
    assert fitted.thresholds[0, j, 2] == pytest.approx(np.quantile(stats[near, 0], 0.99))
    # quantile q cuts each of the two statistics at 1 - (1 - q) / 2
    assert fitted.limits(np.array([40.0]), 0.99)[0, 1] == pytest.approx(
        np.quantile(stats[near, 1], 0.995)
    )
    with pytest.raises(ValueError, match="outside the stored range"):
        fitted.limits(np.array([40.0]), 0.5)


def test_round_trip_through_the_file(fitted, tmp_path) -> None:
    oos.write(tmp_path, fitted)
    back = oos.read(tmp_path)
    assert back is not None
    for name in ("mean", "components", "floor2", "thresholds", "snr_nodes", "levels"):
        np.testing.assert_array_equal(getattr(back, name), getattr(fitted, name))
    assert back.window == fitted.window
    assert oos.read(tmp_path / "nothing-here") is None


def test_robust_residual_is_the_least_squares_fit_without_the_artefacts(fitted) -> None:
    flux, snr_b, snr_r = toy(3, 60.0, 11)
    flux[0, 2000] = 0.0  # a dead pixel
    flux[1, 5000:5003] += 2.0  # a cosmic ray
    var = oos.pixel_variance(snr_b, snr_r, N_PIX) + fitted.floor2
    got = oos.robust_residual(fitted.mean, fitted.components, flux, var)
    d = np.clip(flux, -0.5, 2.5) - fitted.mean
    plain = oos.residual(fitted.mean, fitted.components, flux)
    for i in range(3):
        keep = ~_artefacts_by_hand(plain[i] ** 2 / var[i])
        coef, *_ = np.linalg.lstsq(fitted.components[:, keep].T, d[i, keep], rcond=None)
        np.testing.assert_allclose(got[i], d[i] - coef @ fitted.components, atol=1e-10)
    assert _artefacts_by_hand(plain[0] ** 2 / var[0])[2000]


def test_a_dead_pixel_is_left_out_of_the_fit_and_stays_unflagged(fitted) -> None:
    flux, snr_b, snr_r = toy(30, 150.0, 12)
    var = oos.pixel_variance(snr_b, snr_r, N_PIX) + fitted.floor2
    before = oos.robust_residual(fitted.mean, fitted.components, flux, var)
    broken = flux.copy()
    broken[:, 3000] = 0.0  # a dead pixel in every spectrum
    after = oos.robust_residual(fitted.mean, fitted.components, broken, var)
    away = np.r_[0:2990, 3010:N_PIX]
    # the fit without the pixel (and its neighbours) moves the rest by far less than noise
    assert np.max(np.abs(after[:, away] - before[:, away]) / np.sqrt(var[:, away])) < 0.2
    assert np.all(oos.score(fitted, broken, snr_b, snr_r) <= 1.0)


def test_an_older_file_reads_as_the_plain_formula(fitted, tmp_path) -> None:
    oos.write(tmp_path, replace(fitted, robust=False))
    back = oos.read(tmp_path)
    assert back is not None and back.robust is False
    oos.write(tmp_path, fitted)
    again = oos.read(tmp_path)
    assert again is not None and again.robust is True
