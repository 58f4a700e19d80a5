"""'The wavelength grid leaves the observed range' names the arm, both ranges and the RV's
likely mistake (m/s instead of km/s, or a -9999 placeholder)."""

from __future__ import annotations

import numpy as np
import pytest

from rrnet.preprocess.kernels import range_detail, resample_spectrum, rv_hint
from rrnet.preprocess.status import PreprocessError

BLUE = np.log10(np.linspace(4900.0, 5400.0, 3000))
RED = np.log10(np.linspace(6300.0, 6850.0, 3000))
FLUX = np.ones(3000, np.float32)


def test_hints() -> None:
    assert "placeholder" in rv_hint(-9999.0)
    assert "m/s" in rv_hint(25_000.0)
    assert rv_hint(-35.2) == ""


def test_names_the_arm_and_both_ranges() -> None:
    # +300 km/s shifts the red arm's rest-frame start past the red grid's start only
    shift = 1.0 + 3000.0 / 299_792.458
    detail = range_detail(BLUE, np.log10(np.linspace(6345.0 * shift, 6850.0, 3000)), 3000.0)
    assert detail.startswith("red arm: grid 6339.0-6698.9 A, observed (RV-corrected) 6345.0-")
    assert "blue arm" not in detail and "m/s" in detail


def test_single_spectrum_error_carries_the_detail() -> None:
    assert resample_spectrum(BLUE, FLUX, RED, FLUX, 10.0).shape == (7200,)
    with pytest.raises(PreprocessError, match=r"blue arm: grid .* observed .*placeholder"):
        resample_spectrum(BLUE, FLUX, RED, FLUX, -9999.0)


def _damaged(table, column: str, how):
    table = table.copy()
    table[column] = how(np.array(table[column]))
    return table


@pytest.mark.parametrize("rv_mode", ["catalog", "auto"])
@pytest.mark.parametrize(("column", "how", "said"), [
    ("FLUX", lambda f: np.where(np.arange(f.size) % 1000 == 7, np.nan, f), "blue arm: 4 of"),
    ("LOGLAM", lambda x: 10.0**x, "blue arm: LOGLAM up to"),
    ("LOGLAM", lambda x: x[np.argsort(np.sin(np.arange(x.size)))], "LOGLAM not strictly"),
    ("FLUX", lambda f: np.zeros_like(f), "blue arm: flux constant (0)"),
    ("FLUX", lambda f: np.where(np.arange(f.size) == 1500, 1e30, f), "extreme flux pixel (1e+30)"),
])  # fmt: skip
def test_a_failed_spectrum_says_which_arm_and_what(tmp_path, rv_mode, column, how, said):
    """ "flux contains NaN or inf on the grid" for 4 NaN pixels of one arm: the reason
    now names the arm and what in it (in both RV modes: the measuring path fails in its
    unshifted resampling first). Checked against the damage made here."""
    import polars as pl

    from helpers import REAL_FILE, needs_shared, write_lamost_copy  # noqa: F401
    from rrnet.preprocess.pipeline import preprocess_catalog

    if not REAL_FILE.is_file():
        pytest.skip("needs ../shared")
    write_lamost_copy(tmp_path / "x.fits", edit={"COADD_B": lambda t: _damaged(t, column, how)})
    catalog = pl.DataFrame({"filename": ["x.fits"], "extname_blue": ["COADD_B"],
                            "extname_red": ["COADD_R"], "rv": [10.0]})  # fmt: skip
    store = preprocess_catalog(catalog, tmp_path, tmp_path / "store", workers=0,
                               progress=False, rv_mode=rv_mode)  # fmt: skip
    manifest = store.manifest
    assert manifest["status"][0] != "ok"
    assert said in manifest["reason"][0] and "red arm" not in manifest["reason"][0]
    assert manifest["reason"][0].startswith(("resampling", "normalisation"))  # not "unshifted"
    if rv_mode == "auto":  # it read "masked" (under 20 % usable pixels) for 4 NaN pixels
        assert manifest["rv_measured_status"][0] is None


def test_a_spectrum_failing_before_its_rv_keeps_its_snr(tmp_path):
    """With no catalogue RV, a NaN flux pixel fails the spectrum at the RV measurement's
    resampling, before the shifted one that computes the S/N: its snr columns were null
    although the arms' header SNR and IVAR are there. Checked against the headers and
    against the same damage with a catalogue RV (which reaches the shifted resampling)."""
    import fitsio
    import polars as pl

    from helpers import REAL_FILE, write_lamost_copy
    from rrnet.preprocess.pipeline import preprocess_catalog

    if not REAL_FILE.is_file():
        pytest.skip("needs ../shared")

    def one_nan(table):
        flux = table["FLUX"].copy()
        flux[np.searchsorted(10.0 ** table["LOGLAM"].astype(float), 5150.0)] = np.nan
        table = table.copy()
        table["FLUX"] = flux
        return table

    write_lamost_copy(tmp_path / "x.fits", edit={"COADD_B": one_nan})
    rows = {}
    for rv in (None, -20.0):
        catalog = pl.DataFrame(
            {"filename": ["x.fits"], "extname_blue": ["COADD_B"], "extname_red": ["COADD_R"],
             "rv": [rv]}, schema_overrides={"rv": pl.Float64},
        )  # fmt: skip
        store = preprocess_catalog(catalog, tmp_path, tmp_path / f"store{rv}", workers=0,
                                   progress=False, rv_mode="auto")  # fmt: skip
        rows[rv] = store.manifest.row(0, named=True)
    got, reached = rows[None], rows[-20.0]
    assert got["status"] == reached["status"] == "bad_flux"
    assert got["reason"].startswith("resampling (observed frame, to measure the RV)")
    for arm, name in (("B", "snr_blue"), ("R", "snr_red")):
        header = fitsio.read_header(str(REAL_FILE), f"COADD_{arm}")["SNR"]
        assert got[name] == pytest.approx(header, rel=1e-6)
        assert got[f"{name}_ivar"] == pytest.approx(reached[f"{name}_ivar"], rel=1e-3)
