"""A bad value in one file never stops the run, and untrustworthy quality inputs are not
trusted: a corpus of damaged headers and IVAR arrays, each in its own file of one run."""

from __future__ import annotations

import fitsio
import numpy as np
import polars as pl
import pytest

from helpers import needs_shared, set_values, write_lamost_copy
from rrnet.preprocess.pipeline import preprocess_catalog, snr_rule

pytestmark = needs_shared

# (name, primary-header edits, COADD_B header edits): each value unconvertible for its column
HEADERS = [
    ("obsid_1e30", {"OBSID": 1e30}, {}),
    ("obsid_huge_int", {"OBSID": 2**70}, {}),
    ("obsid_text", {"OBSID": "abc"}, {}),
    ("obsid_negative_float", {"OBSID": -3.5}, {}),
    ("ra_nan", {"RA": float("nan")}, {}),
    ("ra_inf", {"RA": "inf"}, {}),
    ("dec_sexagesimal", {"DEC": "+12:34:56"}, {}),
    ("desig_bool", {"DESIG": True}, {}),
    ("nexten_negative", {"N_EXTEN": -4}, {}),
    ("snr_nan", {}, {"SNR": float("nan")}),
    ("snr_text", {}, {"SNR": "high"}),
    ("lmjm_1e30", {}, {"LMJM": 1e30}),
]


def _edit_header(path, primary, arm):
    with fitsio.FITS(str(path), "rw") as f:
        for hdu, edits in ((f[0], primary), (f["COADD_B"], arm)):
            for key, value in edits.items():
                if (isinstance(value, float) and not np.isfinite(value)) or value == 2**70:
                    hdu.write_key(key, "X")  # placeholder, the raw card is patched below
                else:
                    hdu.write_key(key, value)
    raw = bytearray(path.read_bytes())
    for edits in (primary, arm):
        for key, value in edits.items():
            if (isinstance(value, float) and not np.isfinite(value)) or value == 2**70:
                text = "NaN" if value != value else str(value)
                start = raw.index(f"{key:<8}= 'X".encode())
                card = f"{key:<8}= {text:>20}".ljust(80).encode()
                raw[start : start + 80] = card
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rows = [("good.fits", "COADD_B", "COADD_R", -20.0)]
    write_lamost_copy(root / "good.fits")
    for name, primary, arm in HEADERS:
        _edit_header(write_lamost_copy(root / f"{name}.fits"), primary, arm)
        rows.append((f"{name}.fits", "COADD_B", "COADD_R", -20.0))
    ivars = {
        "ivar_zero": lambda v: np.zeros_like(v),
        "ivar_negative": lambda v: -np.abs(v) - 1,
        "ivar_nan": lambda v: np.full_like(v, np.nan),
    }
    for name, fn in ivars.items():
        write_lamost_copy(root / f"{name}.fits", edit={"COADD_B": set_values("IVAR", fn)})
        rows.append((f"{name}.fits", "COADD_B", "COADD_R", -20.0))
    catalog = pl.DataFrame(
        rows, schema=["filename", "extname_blue", "extname_red", "rv"], orient="row"
    )
    store = preprocess_catalog(catalog, root, root / "store", workers=0, progress=False)
    return store.manifest


def test_every_row_is_accounted_for(corpus):
    assert corpus.height == 1 + len(HEADERS) + 3
    assert corpus["status"].to_list() == ["ok"] * corpus.height


@pytest.mark.parametrize(("name", "primary", "arm"), HEADERS)
def test_unconvertible_header_value_is_null_with_a_reason(corpus, name, primary, arm):
    row = corpus.filter(pl.col("filename") == f"{name}.fits").row(0, named=True)
    good = corpus.filter(pl.col("filename") == "good.fits").row(0, named=True)
    key = next(iter(primary or arm))
    if key in ("OBSID", "RA", "DEC", "DESIG"):
        assert row[key.lower()] is None
    if key == "N_EXTEN":
        return  # a negative count is ignored, the file is read in full
    assert f"header {key}=" in row["reason"] and "\n" not in row["reason"]
    if key == "SNR":  # the FLUX/IVAR estimate stands in
        assert row["snr_blue"] == pytest.approx(good["snr_blue_ivar"])


@pytest.mark.parametrize("name", ["ivar_zero", "ivar_negative", "ivar_nan"])
def test_unusable_ivar_is_not_trusted(corpus, name):
    row = corpus.filter(pl.col("filename") == f"{name}.fits").row(0, named=True)
    assert row["snr_blue"] is None and row["quality_ok"] is False
    assert "no usable S/N" in row["quality_reason"]


def test_snr_rule():
    """Per row (NaN stands for a missing value): header if usable, else the estimate;
    no estimate (IVAR unusable) -> no S/N whatever the header says."""
    header = np.array([50.0, np.nan, np.nan, -1.0, 50.0, np.inf])
    estimate = np.array([40.0, 40.0, 40.0, 40.0, np.nan, 40.0])
    got = snr_rule(header, estimate)  # rows 1 and 2: header absent, header NaN
    np.testing.assert_array_equal(got, [50.0, 40.0, 40.0, 40.0, np.nan, 40.0])
    # a header more than twice the data's S/N (or under half of it): the lower is used
    header = np.array([92.8, 92.8, 20.0, 92.8])
    estimate = np.array([9.8, 50.0, 41.0, 46.4])
    np.testing.assert_array_equal(snr_rule(header, estimate), [9.8, 92.8, 20.0, 92.8])


def test_a_header_snr_of_other_data_gives_way_to_the_datas(tmp_path):
    """A file re-noised (or its IVAR rescaled) with its header SNR kept: the catalogue
    quoted S/N 92.8 for data at S/N ~10, and errors and cuts followed the header (found
    by metamorphic tests on the real file). Now the lower is used, and the row says so."""
    from helpers import REAL_FILE, write_lamost_copy

    if not REAL_FILE.is_file():
        pytest.skip("needs ../shared")

    def noisier(table):
        table = table.copy()
        table["IVAR"] = table["IVAR"] / 100.0  # the data's S/N a tenth of the header's
        return table

    write_lamost_copy(tmp_path / "x.fits", edit={"COADD_B": noisier})
    catalog = pl.DataFrame({"filename": ["x.fits"], "extname_blue": ["COADD_B"],
                            "extname_red": ["COADD_R"], "rv": [-20.0]})  # fmt: skip
    row = preprocess_catalog(catalog, tmp_path, tmp_path / "s", workers=0, progress=False,
                             rv_mode="catalog").manifest.row(0, named=True)  # fmt: skip
    assert row["snr_blue"] == pytest.approx(row["snr_blue_ivar"]) and row["snr_blue"] < 10.5
    assert row["snr_red"] == pytest.approx(162.45, abs=0.01)  # the red arm is untouched
    assert "blue arm: header SNR 92.8 and the FLUX/IVAR estimate" in row["reason"]
    assert row["quality_ok"] is (row["snr_blue"] >= 10)
