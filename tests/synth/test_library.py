"""The shipped Turbospectrum reference library: structure, line positions, abundance response.

Oracles are independent of the synthesis code: laboratory AIR wavelengths (NIST ASD)
converted to vacuum with Edlen's (1966) dispersion formula written out here (the library
uses Morton's 2000 formula), and the physical expectation that a line's equivalent width
grows with its element's abundance at fixed Teff, log g and [Fe/H].
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from rrnet.synth import LABEL_NAMES, load_library
from rrnet.synth.library import draw_labels, logg_floor

SPEC_ABUNDANCES = ["CH", "NH", "OH", "MgH", "AlH", "SiH", "SH", "KH", "CaH", "TiH", "CrH", "MnH",
                   "FeH", "NiH", "CuH"]  # fmt: skip


def edlen_air_to_vacuum(air: float) -> float:
    """Edlen (1966) standard-air refractive index, solved by fixed-point iteration."""
    vac = air
    for _ in range(5):
        s2 = (1e4 / vac) ** 2
        n = 1 + 1e-8 * (8342.13 + 2406030.0 / (130.0 - s2) + 15997.0 / (38.9 - s2))
        vac = air * n
    return vac


@pytest.fixture(scope="module")
def lib():
    return load_library()


def test_structure(lib):
    assert lib.labels.columns == ["star_id", *LABEL_NAMES]
    assert list(LABEL_NAMES) == ["Teff[K]", "Logg", *SPEC_ABUNDANCES, "vmic"]
    assert lib.labels["star_id"].n_unique() == lib.labels.height == lib.flux.shape[0]
    assert lib.flux.dtype == np.float32 and lib.wavelength.dtype == np.float64
    assert lib.flux.shape[1] == lib.wavelength.size
    assert np.all(np.diff(lib.wavelength) > 0)
    # both RRNet grids (vacuum) are covered with a margin for radial velocities
    for lo, hi in ((4968.0, 5328.0), (6339.0, 6699.0)):
        inside = (lib.wavelength >= lo - 9) & (lib.wavelength <= hi + 9)
        assert np.round(np.ptp(lib.wavelength[inside])) >= hi - lo + 18
    assert np.isfinite(lib.flux).all()
    assert lib.flux.min() > 0.0 and lib.flux.max() < 1.01  # normalised absorption spectra


def test_labels_inside_documented_prior(lib):
    lab = lib.labels
    assert lab["Teff[K]"].is_between(4000, 6500).all()
    assert lab["Logg"].is_between(0, 5).all()
    assert lab["FeH"].is_between(-1.5, 0.5).all()
    floor = np.array([logg_floor(t) for t in lab["Teff[K]"]])
    assert (lab["Logg"].to_numpy() >= floor - 1e-4).all()
    xfe = lab.select([pl.col(n) - pl.col("FeH") for n in SPEC_ABUNDANCES if n != "FeH"])
    assert xfe.to_numpy().min() >= -0.31 and xfe.to_numpy().max() <= 0.71
    assert lab["vmic"].is_between(0.5, 2.8).all()


def test_labels_reproducible_from_seed(lib):
    seed = lib.meta["seed"]
    for row in lib.labels.head(5).iter_rows(named=True):
        expected = draw_labels(row["star_id"], seed)
        assert all(row[k] == pytest.approx(v, abs=1e-9) for k, v in expected.items())


def _line_centre(wave: np.ndarray, flux: np.ndarray, guess: float, half: float = 0.3) -> float:
    """Minimum of the profile within +-half A, refined by a parabola through 3 pixels."""
    sel = np.nonzero((wave > guess - half) & (wave < guess + half))[0]
    i = sel[np.argmin(flux[sel])]
    y0, y1, y2 = flux[i - 1], flux[i], flux[i + 1]
    shift = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    return float(wave[i] + shift * (wave[i + 1] - wave[i]))


# Laboratory air wavelengths (NIST ASD) of strong, unblended lines in the RRNet windows.
AIR_LINES = {
    "Mg I b2": 5172.684,
    "Mg I b1": 5183.604,
    "H-alpha": 6562.797,
    "Fe I 5233": 5232.940,
    "Fe I 5270": 5269.537,
    "Fe I 5328": 5328.039,
    "Fe I 6394": 6393.601,
    "Fe I 6495": 6494.980,
    "Ca I 6439": 6439.075,
}


@pytest.mark.parametrize("name", AIR_LINES)
def test_lines_at_vacuum_positions(lib, name):
    median = np.median(lib.flux, axis=0)
    expected = edlen_air_to_vacuum(AIR_LINES[name])
    assert median[np.argmin(np.abs(lib.wavelength - expected))] < 0.9  # a real line
    assert _line_centre(lib.wavelength, median, expected) == pytest.approx(expected, abs=0.03)


def test_mg_b_and_h_alpha_vacuum_values():
    """The issue's vacuum positions follow from the air ones (oracle sanity)."""
    for air, vac in ((5167.321, 5168.76), (5172.684, 5174.13), (5183.604, 5185.05),
                     (6562.797, 6564.61)):  # fmt: skip
        assert edlen_air_to_vacuum(air) == pytest.approx(vac, abs=0.01)


def _equivalent_width(lib, centre_vac: float, half: float) -> np.ndarray:
    sel = np.abs(lib.wavelength - centre_vac) <= half
    step = np.median(np.diff(lib.wavelength))
    return (1.0 - lib.flux[:, sel]).sum(axis=1) * step


# element label, line (air), half width of the EW window (A)
ABUNDANCE_LINES = [
    ("MgH", 5172.684, 1.0),
    ("FeH", 5232.940, 0.4),
    ("CaH", 6439.075, 0.4),
    ("NiH", 6643.630, 0.3),
    ("TiH", 5210.385, 0.3),
    ("AlH", 6696.023, 0.3),
    ("CrH", 5206.040, 0.4),
    ("CuH", 5105.537, 0.3),
    ("CH", 5052.167, 0.3),  # C I, high excitation
    ("OH", 6363.776, 0.2),  # [O I], weak
]


@pytest.mark.parametrize(("label", "air", "half"), ABUNDANCE_LINES)
def test_line_strength_grows_with_abundance(lib, label, air, half):
    """Across the library, at fixed Teff/log g/[Fe/H] (regressed out), EW rises with [X/H]."""
    lab = lib.labels
    t = (lab["Teff[K]"].to_numpy() - 5250.0) / 1000.0
    g = lab["Logg"].to_numpy() - 2.5
    columns = [np.ones_like(t), t, t**2, t**3, g, g**2, t * g, lab["FeH"].to_numpy()]
    if label != "FeH":
        columns.append(lab[label].to_numpy())
    design = np.column_stack(columns)
    ew = _equivalent_width(lib, edlen_air_to_vacuum(air), half)
    coef, *_ = np.linalg.lstsq(design, ew, rcond=None)
    resid = ew - design @ coef
    dof = len(ew) - design.shape[1]
    cov = np.linalg.inv(design.T @ design) * (resid @ resid) / dof
    t_stat = coef[-1] / np.sqrt(cov[-1, -1])
    assert coef[-1] > 0 and t_stat > 3, (coef[-1], t_stat)
