"""Rust preprocessing kernels against the NumPy reference: real LAMOST file, bad input, API."""

from __future__ import annotations

import fitsio
import numpy as np
import pytest

import rrnet.preprocess as fast
from helpers import REAL_FILE, SPECTRA, needs_shared
from rrnet import _core
from rrnet.grid import BLUE_GRID, N_PIX, N_PIX_ARM, RED_GRID
from rrnet.preprocess import PreprocessError, Status
from rrnet.preprocess import reference as ref

pytestmark = needs_shared

RV_KMS = -20.0
TIE = 1e-9  # reference margins below this are threshold ties roundoff may flip


@pytest.fixture(scope="module")
def real_arms() -> list[tuple[np.ndarray, ...]]:
    """(loglam_b, flux_b, ivar_b, loglam_r, flux_r, ivar_r) for the 5 spectra of the file."""
    with fitsio.FITS(str(REAL_FILE)) as fits:
        out = []
        for blue, red in SPECTRA:
            b, r = fits[blue].read(), fits[red].read()
            out.append(tuple(t[c] for t in (b, r) for c in ("LOGLAM", "FLUX", "IVAR")))
    return out


@pytest.fixture(scope="module")
def real_resampled(real_arms) -> np.ndarray:
    rows = [ref.resample_spectrum(lb, fb, lr, fr, RV_KMS) for lb, fb, _, lr, fr, _ in real_arms]
    return np.stack(rows)


def test_status_codes_match_rust():
    assert _core.status_codes() == [(s.value, s.name) for s in Status]


def test_grids_are_bitwise_numpy_arange():
    assert np.array_equal(_core.grid("blue"), BLUE_GRID)
    assert np.array_equal(_core.grid("red"), RED_GRID)
    with pytest.raises(ValueError, match="arm must be"):
        _core.grid("green")


def test_real_file_red_exposures_descend(real_arms):
    # The trap the resampler must handle: single-exposure red arms are descending.
    assert np.all(np.diff(real_arms[0][3]) > 0)
    assert all(np.all(np.diff(arms[3]) < 0) for arms in real_arms[1:])


def test_real_file_resample_matches_reference(real_arms, real_resampled):
    for (lb, fb, _, lr, fr, _), want in zip(real_arms, real_resampled, strict=True):
        got = fast.resample_spectrum(lb, fb, lr, fr, RV_KMS)
        assert got.dtype == np.float32 and got.shape == (N_PIX,)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)


def test_real_file_normalize_matches_reference(real_resampled):
    want = ref.normalize_detailed(real_resampled)
    got = fast.normalize_detailed(real_resampled)
    assert np.all(want.min_margin > TIE)
    assert np.all(got.status == Status.OK)
    np.testing.assert_array_equal(got.iterations, want.iterations)
    assert np.all(got.iterations >= 5)  # the loop really iterates on real data
    np.testing.assert_array_equal(got.n_outliers, want.n_outliers)
    np.testing.assert_array_equal(got.max_outlier_run, want.max_outlier_run)
    np.testing.assert_array_equal(got.cap_hit, want.cap_hit)
    np.testing.assert_allclose(got.flux, want.flux, rtol=1e-5, atol=0)
    assert 0.9 < np.median(got.flux) < 1.1


def test_real_file_batch_resample_and_snr(real_arms, real_resampled):
    cols = list(zip(*real_arms, strict=True))
    kwargs = {"blue_ivar": cols[2], "red_ivar": cols[5]}
    got = fast.resample_batch(cols[0], cols[1], cols[3], cols[4], RV_KMS, **kwargs)
    want = ref.resample_batch(cols[0], cols[1], cols[3], cols[4], RV_KMS, **kwargs)
    assert np.all(got.status == Status.OK)
    np.testing.assert_allclose(got.flux, real_resampled, rtol=1e-5, atol=0)
    np.testing.assert_allclose(got.snr_blue, want.snr_blue, rtol=1e-12)
    np.testing.assert_allclose(got.snr_red, want.snr_red, rtol=1e-12)
    # Per-pixel S/N of the coadd exceeds that of each exposure.
    assert got.snr_blue[0] > got.snr_blue[1:].max() and got.snr_red[0] > got.snr_red[1:].max()


def test_batch_resample_offsets_equal_lists(real_arms):
    cols = list(zip(*real_arms, strict=True))
    as_lists = fast.resample_batch(cols[0], cols[1], cols[3], cols[4], RV_KMS)
    off_b = np.concatenate([[0], np.cumsum([a.size for a in cols[0]])])
    off_r = np.concatenate([[0], np.cumsum([a.size for a in cols[3]])])
    flat = fast.resample_batch(
        np.concatenate(cols[0]),
        np.concatenate(cols[1]),
        np.concatenate(cols[3]),
        np.concatenate(cols[4]),
        np.full(5, RV_KMS),
        blue_offsets=off_b,
        red_offsets=off_r,
        threads=1,
    )
    np.testing.assert_array_equal(flat.flux, as_lists.flux)
    assert np.all(np.isnan(flat.snr_blue))  # no ivar given


def test_iteration_cap_is_reported_and_matches_reference(real_resampled):
    got = fast.normalize_detailed(real_resampled, max_iter=3)
    want = ref.normalize_detailed(real_resampled, max_iter=3)
    assert np.all(got.iterations == 3) and np.all(got.cap_hit)
    assert np.all(got.status == Status.OK)
    np.testing.assert_allclose(got.flux, want.flux, rtol=1e-5, atol=0)


def test_thread_counts_give_identical_results(real_resampled, monkeypatch):
    rows = np.repeat(real_resampled, 7, axis=0)
    one = fast.normalize(rows, threads=1)
    two = fast.normalize(rows, threads=2)
    monkeypatch.setenv("RRNET_NUM_THREADS", "2")
    env = fast.normalize(rows)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, env)
    monkeypatch.setenv("RRNET_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="RRNET_NUM_THREADS"):
        fast.normalize(rows)


def _arm(row: np.ndarray, arm: int) -> np.ndarray:
    return row[arm * N_PIX_ARM : (arm + 1) * N_PIX_ARM]


def test_bad_rows_get_status_not_exception(real_resampled):
    good = real_resampled[0]
    rows = np.stack([good.copy() for _ in range(6)])
    rows[0, 10] = np.nan
    rows[1, N_PIX_ARM + 5] = np.inf
    _arm(rows[2], 0)[:] = 0.0  # all-zero blue arm
    _arm(rows[3], 1)[:] = 7.5  # constant red arm
    _arm(rows[4], 1)[:] *= -1.0  # negative flux: continuum below zero
    for impl in (fast, ref):
        res = impl.normalize_detailed(rows)
        assert res.status.tolist() == [
            Status.NON_FINITE_FLUX,
            Status.NON_FINITE_FLUX,
            Status.DEGENERATE_ARM,
            Status.DEGENERATE_ARM,
            Status.NONPOSITIVE_CONTINUUM,
            Status.OK,
        ]
        assert np.all(np.isnan(res.flux[:5])) and np.all(np.isfinite(res.flux[5]))
        assert res.reasons()[2] == "an arm has zero flux scatter (constant or all-zero)"
        assert res.ok.tolist() == [False] * 5 + [True]


def test_normalize_rejects_wrong_dtype_and_shape(real_resampled):
    with pytest.raises(TypeError, match="float32"):
        fast.normalize(real_resampled.astype(np.float64))
    with pytest.raises(ValueError, match=r"shape \(n, 7200\)"):
        fast.normalize(real_resampled[:, :7000])
    with pytest.raises(ValueError, match=r"shape \(n, 7200\)"):
        fast.normalize(real_resampled[0])
    with pytest.raises(ValueError, match="max_iter"):
        fast.normalize(real_resampled, max_iter=0)
    with pytest.raises(ValueError, match="threads"):
        fast.normalize(real_resampled, threads=0)


def test_big_endian_float32_is_the_same_flux(real_resampled):
    """A FITS column comes big-endian: the same float32 values, the same result (it was
    "must be float32, got >f4"), in the kernel and in the NumPy reference."""
    from rrnet.preprocess import reference

    rows = real_resampled[:2].astype(np.float32)
    big = rows.astype(">f4")
    np.testing.assert_array_equal(fast.normalize(big), fast.normalize(rows))
    np.testing.assert_array_equal(
        reference.normalize_detailed(big).flux, reference.normalize_detailed(rows).flux
    )
    with pytest.raises(TypeError, match="float32"):
        fast.normalize(rows.astype(np.float16))


def test_normalize_empty_and_non_contiguous(real_resampled):
    empty = fast.normalize_detailed(np.empty((0, N_PIX), np.float32))
    assert empty.flux.shape == (0, N_PIX) and empty.status.shape == (0,)
    fortran = np.asfortranarray(real_resampled)
    np.testing.assert_array_equal(fast.normalize(fortran), fast.normalize(real_resampled))


@pytest.mark.parametrize("impl", [fast, ref], ids=["rust", "reference"])
def test_resample_bad_wavelengths_raise_clear_errors(impl):
    grid = np.array([5.0, 6.0])
    cases = [
        (np.array([5.0]), np.array([1.0]), Status.TOO_FEW_POINTS, "at least 2"),
        (np.array([4.0, np.nan, 7.0]), np.ones(3), Status.BAD_WAVELENGTH, "NaN or inf"),
        (np.array([4.0, 6.5, 5.0, 7.0]), np.ones(4), Status.BAD_WAVELENGTH, "monotonic"),
        (np.array([4.0, 5.0, 5.0, 7.0]), np.ones(4), Status.BAD_WAVELENGTH, "monotonic"),
        (np.array([5.5, 7.0]), np.ones(2), Status.GRID_OUT_OF_RANGE, "5.500-7.000"),
        (np.array([4.0, 7.0]), np.ones(3), Status.LENGTH_MISMATCH, "length"),
    ]
    for wave, flux, status, message in cases:
        with pytest.raises(PreprocessError, match=message) as info:
            impl.resample(wave, flux, grid)
        assert info.value.status == status


def test_resample_batch_bad_spectra_get_status(real_arms):
    lb, fb, _, lr, fr, _ = real_arms[1]
    blue_l = [lb, lb, lb[:1], lb, lb]
    blue_f = [fb, fb, fb[:1], fb, fb[:-1]]
    red_l = [lr, lr[::-1].copy(), lr[:1], lr, lr]
    red_f = [fr, fr, fr[:1], fr, fr]
    rv = np.array([RV_KMS, RV_KMS, RV_KMS, 30000.0, RV_KMS])
    for impl in (fast, ref):
        res = impl.resample_batch(blue_l, blue_f, red_l, red_f, rv)
        assert res.status.tolist() == [
            Status.OK,
            Status.OK,  # reversing only the wavelengths is still monotonic
            Status.TOO_FEW_POINTS,
            Status.GRID_OUT_OF_RANGE,
            Status.LENGTH_MISMATCH,
        ]
        assert np.all(np.isnan(res.flux[2:]))


def test_resample_batch_nan_flux_and_bad_offsets(real_arms):
    lb, fb, ib, lr, fr, ir = real_arms[0]
    bad = fb.copy()
    bad[2000] = np.nan
    res = fast.resample_batch([lb], [bad], [lr], [fr], RV_KMS, blue_ivar=[ib], red_ivar=[ir])
    assert res.status.tolist() == [Status.NON_FINITE_FLUX]
    assert np.isfinite(res.snr_blue[0])  # S/N is measured regardless
    with pytest.raises(ValueError, match="offsets"):
        fast.resample_batch(
            lb, fb, lr, fr, [RV_KMS], blue_offsets=[0, lb.size + 1], red_offsets=[0, lr.size]
        )
    with pytest.raises(ValueError, match="same number of spectra"):
        fast.resample_batch([lb, lb], [fb, fb], [lr], [fr], RV_KMS)


def test_resample_batch_arrays_equal_the_ragged_path(real_arms):
    """Per-spectrum arrays (borrowed by Rust) give the concatenated path's result bit for bit,
    whatever their byte order, stride or dtype, bad spectra and missing ivar included."""
    lb, fb, ib, lr, fr, ir = real_arms[2]
    blue_l = [lb, lb.astype(">f8"), lb[::-1].copy(), lb, lb]
    blue_f = [fb, fb.astype(">f4"), fb[::-1].copy(), fb.astype(np.float64), fb]
    blue_i = [ib, ib.astype(">f4"), ib[::-1].copy(), ib, ib]
    red_l = [lr, lr, np.repeat(lr, 2)[::2], lr, lr]
    red_f = [fr, fr, np.repeat(fr, 2)[::2], fr, fr]
    red_i = [ir, ir, ir, ir, ir]
    rv = np.array([RV_KMS, 15.0, -3.0, 30000.0, RV_KMS])
    for blue_ivar, red_ivar in ((blue_i, red_i), (None, None)):
        got = fast.resample_batch(
            blue_l, blue_f, red_l, red_f, rv, blue_ivar=blue_ivar, red_ivar=red_ivar
        )
        ragged = {}
        for name, arrays, dtype in (
            ("blue_loglam", blue_l, np.float64),
            ("blue_flux", blue_f, np.float32),
            ("red_loglam", red_l, np.float64),
            ("red_flux", red_f, np.float32),
            ("blue_ivar", blue_ivar, np.float32),
            ("red_ivar", red_ivar, np.float32),
        ):
            if arrays is not None:
                ragged[name] = np.concatenate(arrays, dtype=dtype)
        offsets = {
            f"{arm}_offsets": np.cumsum([0] + [a.size for a in loglam])
            for arm, loglam in (("blue", blue_l), ("red", red_l))
        }
        want = fast.resample_batch(
            ragged.pop("blue_loglam"),
            ragged.pop("blue_flux"),
            ragged.pop("red_loglam"),
            ragged.pop("red_flux"),
            rv,
            **ragged,
            **offsets,
        )
        for field in ("flux", "status", "snr_blue", "snr_red"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    blue_i[4] = ib[:-1]  # a short ivar: a status, not a misalignment
    got = fast.resample_batch(blue_l, blue_f, red_l, red_f, rv, blue_ivar=blue_i, red_ivar=red_i)
    assert got.status.tolist() == [
        Status.OK,
        Status.OK,
        Status.OK,
        Status.GRID_OUT_OF_RANGE,
        Status.LENGTH_MISMATCH,  # the short blue ivar
    ]
    oracle = ref.resample_batch(blue_l, blue_f, red_l, red_f, rv, blue_ivar=blue_i, red_ivar=red_i)
    np.testing.assert_array_equal(got.status, oracle.status)
    np.testing.assert_allclose(got.flux, oracle.flux, rtol=1e-6, atol=0)


def test_rv_correct_matches_reference():
    loglam = np.linspace(3.69, 3.84, 1001)
    for rv in (-500.0, 0.0, 123.4):
        np.testing.assert_allclose(
            fast.rv_correct(loglam, rv), ref.rv_correct(loglam, rv), rtol=1e-15
        )
    assert fast.rv_correct(np.array([4.0], np.float32), 0.0)[0] == 10000.0


def test_out_rows_are_written_in_place_and_equal_fresh_outputs(real_arms):
    """``out=`` (rows of a shard being built): every pixel overwritten, same bits as
    a fresh output, failing rows NaN, the given array returned."""
    cols = list(zip(*real_arms, strict=True))
    rv = np.array([RV_KMS, 1e5, RV_KMS, RV_KMS, RV_KMS])  # row 1: grid out of range
    fresh = fast.resample_batch(cols[0], cols[1], cols[3], cols[4], rv)
    shard = np.full((8, N_PIX), 7.0, dtype=np.float32)  # stale content to overwrite
    got = fast.resample_batch(cols[0], cols[1], cols[3], cols[4], rv, out=shard[2:7])
    assert np.shares_memory(got.flux, shard) and got.flux.base is not None
    np.testing.assert_array_equal(got.status, fresh.status)
    np.testing.assert_array_equal(shard[2:7], fresh.flux)  # NaN rows equal too
    assert np.all(shard[[0, 1, 7]] == 7.0)  # rows outside `out` untouched
    ok = fresh.flux[fresh.status == Status.OK]
    norm = np.full((3, ok.shape[0], N_PIX), -1.0, dtype=np.float32)
    want = fast.normalize_detailed(ok)
    into = fast.normalize_detailed(ok, out=norm[1])
    assert np.shares_memory(into.flux, norm)
    np.testing.assert_array_equal(norm[1], want.flux)
    np.testing.assert_array_equal(into.iterations, want.iterations)
    assert np.all(norm[[0, 2]] == -1.0)


def test_out_that_does_not_fit_is_refused(real_resampled):
    rows = real_resampled.astype(np.float32)
    n = rows.shape[0]
    for bad in (
        np.empty((n + 1, N_PIX), np.float32),  # wrong shape
        np.empty((n, 2 * N_PIX), np.float32)[:, ::2],  # not contiguous
    ):
        with pytest.raises(ValueError, match="out must be"):
            fast.normalize_detailed(rows, out=bad)
    readonly = np.empty((n, N_PIX), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(TypeError, match="not writeable"):
        fast.normalize_detailed(rows, out=readonly)
    with pytest.raises(TypeError, match="already borrowed"):  # in place over its own input
        fast.normalize_detailed(rows, out=rows)
    with pytest.raises(TypeError, match=r"out must be a float32 array .* got float64"):
        fast.normalize_detailed(rows, out=np.empty((n, N_PIX), np.float64))
