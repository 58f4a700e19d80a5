"""The shipped emulator against held-out Turbospectrum stars of the shipped library."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rrnet.synth import LABEL_NAMES, load_emulator, load_library
from rrnet.synth.emulator import split


@pytest.fixture(scope="module")
def lib():
    return load_library()


@pytest.fixture(scope="module")
def emu():
    return load_emulator()


@pytest.fixture(scope="module")
def held_out(lib, emu):
    """The stars the emulator never saw (same deterministic split as in training)."""
    _, test_idx = split(lib.labels.height, 0.1, 0)
    assert emu.accuracy["n_test"] == len(test_idx)
    labels = lib.labels.select(LABEL_NAMES).to_numpy()[test_idx]
    return labels, lib.flux[test_idx], np.delete(lib.flux, test_idx, axis=0)


def test_grid_and_names_match_library(lib, emu):
    assert emu.label_names == LABEL_NAMES
    np.testing.assert_array_equal(emu.wavelength, lib.wavelength)
    assert set(emu.bounds) == set(LABEL_NAMES)


def test_beats_mean_spectrum_by_wide_margin(emu, held_out):
    labels, flux, train_flux = held_out
    err = np.abs(emu.spectra(labels, check=False) - flux)
    baseline = np.abs(train_flux.mean(axis=0) - flux)
    assert np.median(err) < 0.25 * np.median(baseline)
    assert np.percentile(err, 99) < 0.5 * np.percentile(baseline, 99)


def test_reported_accuracy_is_what_it_achieves(emu, held_out):
    labels, flux, _ = held_out
    err = np.abs(emu.spectra(labels, check=False) - flux)
    # the shipped weights are float16 copies of the trained float32 ones
    assert np.median(err) == pytest.approx(emu.accuracy["median_abs_err"], rel=0.05, abs=2e-4)
    assert np.percentile(err, 99) == pytest.approx(emu.accuracy["p99_abs_err"], rel=0.05, abs=1e-3)


def test_single_spectrum_is_fast_and_batch_consistent(lib, emu):
    row = lib.labels.row(0, named=True)
    labels = {k: row[k] for k in LABEL_NAMES}
    emu.spectrum(labels)  # warm-up
    t0 = time.perf_counter()
    for _ in range(20):
        one = emu.spectrum(labels)
    per_call = (time.perf_counter() - t0) / 20
    assert per_call < 0.05  # milliseconds in practice; generous for a loaded CI machine
    assert one.dtype == np.float32 and one.shape == lib.wavelength.shape
    batch = emu.spectra(np.array([[labels[k] for k in LABEL_NAMES]] * 3))
    np.testing.assert_allclose(batch, np.broadcast_to(one, batch.shape), atol=1e-6)


def test_refuses_labels_outside_training_range(emu):
    labels = {k: 0.5 * (lo + hi) for k, (lo, hi) in emu.bounds.items()}
    emu.spectrum(labels)
    with pytest.raises(ValueError, match="Teff"):
        emu.spectrum({**labels, "Teff[K]": 9000.0})


def test_magnesium_lines_deepen_with_magnesium_only(emu):
    """Raising [Mg/H] alone deepens Mg b; raising it does not touch a clean Fe I line much."""
    base = {k: 0.5 * (lo + hi) for k, (lo, hi) in emu.bounds.items()}
    base.update({"Teff[K]": 5000.0, "Logg": 3.0, "FeH": -0.3, "MgH": -0.3})
    rich = {**base, "MgH": base["MgH"] + 0.25}
    w = emu.wavelength

    def ew(spec, centre, half):
        sel = np.abs(w - centre) <= half
        return float((1 - spec[sel]).sum() * np.median(np.diff(w)))

    s0, s1 = emu.spectrum(base), emu.spectrum(rich)
    mg_gain = ew(s1, 5174.13, 1.0) - ew(s0, 5174.13, 1.0)
    fe_change = abs(ew(s1, 5234.40, 0.4) - ew(s0, 5234.40, 0.4))
    assert mg_gain > 0.01  # Angstrom
    assert fe_change < 0.3 * mg_gain


def test_flux_is_never_negative(emu):
    """Anywhere in the label box (the coolest giants included, where the fit undershot to
    -0.16, and to -2.1 in the box's corners) the emulated flux is >= 0, like the library's."""
    rng = np.random.default_rng(5)
    lo = np.array([emu.bounds[k][0] for k in emu.label_names])
    hi = np.array([emu.bounds[k][1] for k in emu.label_names])
    labels = rng.uniform(lo, hi, size=(400, lo.size))
    labels[:200, 0] = rng.uniform(lo[0], lo[0] + 300.0, 200)  # the coolest stars
    labels[:200, 1] = rng.uniform(lo[1], lo[1] + 0.5, 200)  # giants
    flux = emu.spectra(labels)
    assert flux.min() >= 0.0
    assert np.isfinite(flux).all() and (flux > 0).mean() > 0.99
