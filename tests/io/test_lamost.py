"""rrnet.io.lamost against the real DR7 file (astropy as the independent reader) and
broken copies of it made in tmp_path.

``write_lamost_copy`` and its editors live in ``helpers``, shared with the pipeline and CLI tests.
"""

from __future__ import annotations

import errno
import gzip
import math
import tempfile
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits as afits
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import (
    EXPOSURES,
    REAL_FILE,
    SPECTRA,
    as_vector_row,
    as_wavelength_row,
    drop_column,
    needs_shared,
    write_lamost_copy,
)
from rrnet.io.lamost import (
    BadColumnsError,
    BadFitsError,
    LamostReadError,
    MissingExtensionError,
    MissingFileError,
    _card_value,
    _parse_cards,
    read_arm,
    read_arms,
    read_lamost,
)

pytestmark = needs_shared


# --------------------------------------------------------------------------- real file


def test_header_information_of_the_real_file():
    info = read_lamost(REAL_FILE)
    with afits.open(REAL_FILE) as hdul:
        primary = hdul[0].header
        extnames = tuple(h.name for h in hdul[1:])
    assert info.obsid == primary["OBSID"] == 589002051
    assert info.ra == pytest.approx(primary["RA"])
    assert info.dec == pytest.approx(primary["DEC"])
    assert info.desig == primary["DESIG"]
    assert info.filename == primary["FILENAME"]
    assert info.extnames == extnames
    assert len(info.extnames) == 10


@pytest.mark.parametrize(("blue", "red"), SPECTRA)
def test_arms_match_astropy(blue, red):
    _, arms = read_arms(REAL_FILE, [blue, red])
    with afits.open(REAL_FILE) as hdul:
        for extname in (blue, red):
            arm, table = arms[extname], hdul[extname]
            data = table.data
            np.testing.assert_array_equal(arm.loglam, data["LOGLAM"].astype(np.float64))
            np.testing.assert_array_equal(arm.flux, data["FLUX"])
            np.testing.assert_array_equal(arm.ivar, data["IVAR"])
            mask = "ANDMASK" if extname.startswith("COADD") else "PIXMASK"
            np.testing.assert_array_equal(arm.mask, data[mask])
            assert arm.snr == pytest.approx(table.header["SNR"])
            assert arm.loglam.dtype == np.float64 and arm.flux.dtype == np.float32
            assert arm.flux.dtype.isnative and arm.ivar.dtype.isnative
            if extname.startswith("COADD"):
                np.testing.assert_array_equal(arm.ormask, data["ORMASK"])
                assert arm.lmjm is None and arm.exptime is None
            else:
                assert arm.ormask is None
                assert arm.lmjm == int(table.header["LMJM"])
                assert arm.exptime == pytest.approx(table.header["EXPTIME"])


def test_pixel_order_is_kept_descending_red_exposures():
    coadd = read_arm(REAL_FILE, "COADD_R")
    exposure = read_arm(REAL_FILE, "R-83555758")
    assert np.all(np.diff(coadd.loglam) > 0)
    assert np.all(np.diff(exposure.loglam) < 0)
    # Both arms cover the red grid 6339-6699 A (observed frame).
    for arm in (coadd, exposure):
        wave = 10**arm.loglam
        assert wave.min() < 6339 and wave.max() > 6699


def test_any_hdu_order_and_plain_fits_give_the_same_arms(tmp_path):
    order = list(reversed(read_lamost(REAL_FILE).extnames))
    shuffled = write_lamost_copy(tmp_path / "shuffled.fits", order=order)
    gz = write_lamost_copy(tmp_path / "shuffled.fits.gz", order=order, compress=True)
    assert read_lamost(shuffled).extnames == tuple(order)
    names = [e for pair in SPECTRA for e in pair]
    _, want = read_arms(REAL_FILE, names)
    for path in (shuffled, gz):
        _, got = read_arms(path, names)
        for name in names:
            np.testing.assert_array_equal(got[name].flux, want[name].flux)
            np.testing.assert_array_equal(got[name].loglam, want[name].loglam)
            assert got[name].snr == want[name].snr


def test_one_row_vector_layout_is_read_like_the_pixel_rows(tmp_path):
    path = write_lamost_copy(tmp_path / "vector.fits", edit={"COADD_B": as_vector_row()})
    got, want = read_arm(path, "COADD_B"), read_arm(REAL_FILE, "COADD_B")
    np.testing.assert_array_equal(got.flux, want.flux)
    np.testing.assert_array_equal(got.loglam, want.loglam)


def test_dr9_wavelength_layout_is_read_as_log10_of_its_angstroms(tmp_path):
    # DR9 v1.0 on: WAVELENGTH [A] instead of LOGLAM; log10(10**x) = x to roundoff
    names = ["COADD_B", f"R-{EXPOSURES[0]}"]
    path = write_lamost_copy(tmp_path / "dr9.fits", edit=dict.fromkeys(names, as_wavelength_row))
    for name in names:
        got, want = read_arm(path, name), read_arm(REAL_FILE, name)
        np.testing.assert_array_equal(got.flux, want.flux)
        np.testing.assert_array_equal(got.mask, want.mask)
        np.testing.assert_allclose(got.loglam, want.loglam, rtol=0, atol=1e-14)


def test_neither_loglam_nor_wavelength_names_both(tmp_path):
    path = write_lamost_copy(tmp_path / "none.fits", edit={"COADD_B": drop_column("LOGLAM")})
    with pytest.raises(BadColumnsError, match=r"LOGLAM \(or WAVELENGTH\)"):
        read_arm(path, "COADD_B")


# --------------------------------------------------------------------------- broken files


def _truncated(tmp_path: Path, fraction: float) -> Path:
    raw = REAL_FILE.read_bytes()
    path = tmp_path / f"truncated-{fraction}.fits.gz"
    path.write_bytes(raw[: int(len(raw) * fraction)])
    return path


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="not found") as err:
        read_lamost(tmp_path / "absent.fits.gz")
    assert err.value.status == "missing_file"


def test_a_directory_is_not_a_file(tmp_path):
    with pytest.raises(MissingFileError):
        read_arms(tmp_path, ["COADD_B"])


@pytest.mark.parametrize("content", [b"", b"SIMPLE  = nonsense" * 10, b"\x1f\x8b" + b"x" * 100])
def test_not_fits(tmp_path, content):
    path = tmp_path / "junk.fits.gz"
    path.write_bytes(content)
    with pytest.raises(BadFitsError) as err:
        read_arms(path, ["COADD_B"])
    assert err.value.status == "bad_fits"
    assert "junk.fits.gz" in str(err.value)


@pytest.mark.parametrize("fraction", [0.005, 0.3, 0.6, 0.97])
def test_truncated_gzip_is_bad_fits_never_silently_partial(tmp_path, fraction):
    path = _truncated(tmp_path, fraction)
    # Every requested arm must fail: cfitsio opens a truncated .gz with its first
    # HDUs only, and the reader must notice (N_EXTEN) instead of reading them.
    with pytest.raises(BadFitsError):
        read_arms(path, ["COADD_B", "COADD_R"])


def test_truncated_plain_fits(tmp_path):
    raw = gzip.decompress(REAL_FILE.read_bytes())
    path = tmp_path / "cut.fits"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BadFitsError, match="truncated"):
        read_lamost(path)


def test_missing_extension_is_per_arm(tmp_path):
    path = write_lamost_copy(tmp_path / "no-red.fits", drop=("COADD_R",))
    info, arms = read_arms(path, ["COADD_B", "COADD_R"])
    assert info.obsid == 589002051
    assert not isinstance(arms["COADD_B"], LamostReadError)
    assert isinstance(arms["COADD_R"], MissingExtensionError)
    assert arms["COADD_R"].status == "missing_extension"
    with pytest.raises(MissingExtensionError, match="COADD_R"):
        read_arm(path, "COADD_R")


@pytest.mark.parametrize("column", ["LOGLAM", "FLUX", "IVAR"])
def test_missing_column(tmp_path, column):
    path = write_lamost_copy(tmp_path / "cols.fits", edit={"COADD_B": drop_column(column)})
    with pytest.raises(BadColumnsError, match=column) as err:
        read_arm(path, "COADD_B")
    assert err.value.status == "bad_columns"


def test_mismatched_column_lengths(tmp_path):
    edit = {"COADD_B": as_vector_row({"LOGLAM": 3000})}
    path = write_lamost_copy(tmp_path / "lengths.fits", edit=edit)
    with pytest.raises(BadColumnsError, match="lengths differ"):
        read_arm(path, "COADD_B")


def test_extension_that_is_not_a_table(tmp_path):
    path = tmp_path / "image.fits"
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(None, header=[{"name": "OBSID", "value": 1}])
        f.write(np.zeros((3, 3), dtype=np.float32), extname="COADD_B")
    with pytest.raises(BadColumnsError, match="not a table"):
        read_arm(path, "COADD_B")


# --------------------------------------------------------------------------- header cards


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.integers(min_value=-(10**15), max_value=10**15),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        st.booleans(),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    )
)
def test_header_cards_parse_like_astropy(value):
    card = afits.Card("KEY", value, "a comment / with a slash")
    block = (str(card) + "END".ljust(80)).encode("ascii")
    parsed = _parse_cards(block, frozenset({"KEY"}))["KEY"]
    if isinstance(value, str):
        # The written value is the oracle for strings: astropy's reader cuts a string
        # at a doubled quote followed by a slash (see the test below).
        assert parsed == value.rstrip()
    else:
        expected = afits.Card.fromstring(str(card)).value
        assert type(parsed) is type(expected)
        assert parsed == expected


def test_doubled_quote_before_slash_stays_in_the_string():
    # astropy reads this value as "'"; by the FITS standard (and cfitsio) it is "'/".
    card = "KEY     = '''/     '           / comment".ljust(80)
    assert _parse_cards((card + "END".ljust(80)).encode(), frozenset({"KEY"}))["KEY"] == "'/"
    raw = fitsio.FITSRecord(card)["value"]  # cfitsio keeps the quotes doubled
    assert raw.rstrip().replace("''", "'") == "'/"


def test_reading_leaves_no_scratch_files(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    read_arms(REAL_FILE, ["COADD_B", "XX"])
    with pytest.raises(BadFitsError):
        read_arms(_truncated(tmp_path, 0.5), ["COADD_B"])
    bad = tmp_path / "bad.fits.gz"
    bad.write_bytes(gzip.compress(b"not fits" * 400))
    with pytest.raises(BadFitsError):
        read_arms(bad, ["COADD_B"])
    assert list(scratch.iterdir()) == []


def test_quoted_strings_and_blank_values():
    cards = [
        afits.Card("DESIG", "O'Brien's star", "quotes are doubled"),
        afits.Card("EMPTY", "", "blank"),
        afits.Card("LMJM", "83555758"),
    ]
    block = "".join(str(c) for c in cards).encode() + b"END".ljust(80)
    values = _parse_cards(block, frozenset({"DESIG", "EMPTY", "LMJM"}))
    assert values == {"DESIG": "O'Brien's star", "EMPTY": "", "LMJM": "83555758"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("'HIP9645901  '", "HIP9645901"),  # trailing blanks are not significant
        ("'O''Brien' / a name", "O'Brien"),  # '' is one quote; the comment is dropped
        ("''''", "'"),
        ("''", ""),
        ("'no closing quote  ", "no closing quote"),
        ("'a/b' / c", "a/b"),
        ("  42 / count", 42),
        ("1.5D3", 1500.0),
        ("T", True),
        ("junk", None),
    ],
)
def test_card_value_follows_the_fits_rules(field, value):
    got = _card_value(field)
    assert got == value and type(got) is type(value)


def _card_value_by_char(field: str) -> object:
    """The reader's first card parser (one character at a time): the oracle."""
    field = field.strip()
    if field.startswith("'"):
        text, i = [], 1
        while i < len(field):
            if field[i] == "'":
                if field[i + 1 : i + 2] == "'":
                    text.append("'")
                    i += 2
                    continue
                break
            text.append(field[i])
            i += 1
        return "".join(text).rstrip()
    token = field.split("/", 1)[0].strip()
    if token in ("T", "F"):
        return token == "T"
    for kind in (int, float):
        try:
            return kind(token.replace("D", "E") if kind is float else token)
        except ValueError:
            pass
    return None


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="' /.+-_0123456789eEdDTFinfa", max_size=24))
def test_card_value_equals_the_char_by_char_parser(field):
    got, want = _card_value(field), _card_value_by_char(field)
    same_nan = isinstance(got, float) and math.isnan(got) and math.isnan(want)
    assert same_nan or (got == want and type(got) is type(want))


@pytest.mark.parametrize("code", [errno.EFBIG, errno.EACCES, errno.ENOSPC])
def test_a_failing_scratch_copy_is_the_machines_fault(tmp_path, monkeypatch, code):
    """Writing the inflated copy to TMPDIR fails (a file-size limit, no permission, a full
    disk): the read stops as a machine fault; it is never the file's status (EFBIG under
    `ulimit -f` made every good file bad_fits and the run exit 0)."""
    import os

    from rrnet.io.lamost import ScratchError, is_environment_fault
    from rrnet.io.lamost_fast import read_many

    class Failing:
        def __init__(self, fd: int) -> None:
            os.close(fd)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

        def write(self, data: bytes) -> int:
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr("rrnet.io.lamost.os.fdopen", lambda fd, mode: Failing(fd))
    with pytest.raises(ScratchError) as caught:
        read_arms(REAL_FILE, ["COADD_B"])
    assert is_environment_fault(caught.value) and caught.value.errno == code
    with pytest.raises(ScratchError):
        read_many([(REAL_FILE, ["COADD_B"])], reader="fitsio")
