"""LAMOST's MRS general catalogue -> rrnet rows: pairing, names, RV priority, status rows.

The oracle for names is the real file itself (its primary header's LMJD, PLANID, SPID,
FIBERID and its extension names, read with fitsio); the catalogues are written by hand
in the official layout, one row per band per exposure or coadd.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import fitsio
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import (
    EXPOSURES,
    REAL_FILE,
    RV_COLUMNS,
    SPECTRA,
    official_catalogue,
    official_row,
    real_header,
)
from rrnet.io.catalog import CatalogError
from rrnet.io.lamost_catalog import (
    RV_PRIORITY,
    SPECTRA_CHOICES,
    from_lamost,
    join_rv,
    lamost_filename,
    pair_bands,
    read_lamost_table,
    read_rv_table,
    scan_folder,
)
from rrnet.io.locate import index_files, locate_files


def test_file_name_and_extensions_are_those_of_the_real_file():
    h = real_header()
    assert lamost_filename(h["LMJD"], h["PLANID"], h["SPID"], h["FIBERID"]) == REAL_FILE.name
    out = pair_bands(official_catalogue(), spectra="all")
    assert out["filename"].to_list() == [REAL_FILE.name] * 5
    pairs = list(zip(out["extname_blue"], out["extname_red"], strict=True))
    assert pairs == SPECTRA
    with fitsio.FITS(str(REAL_FILE)) as f:
        names = {hdu.get_extname() for hdu in f}
    assert {e for pair in pairs for e in pair} <= names
    assert out["rv"].to_list() == [-20.0, -21.0, -22.0, -23.0, -24.0]
    assert out["rv_source"].to_list() == ["rv_br1"] * 5
    assert out["rv_err"].to_list() == [0.8] * 5
    assert out["catalog_status"].to_list() == ["ok"] * 5
    assert out["obsid"].to_list() == [h["OBSID"]] * 5
    assert out["designation"][0] == h["DESIG"]
    assert out["gp_id"].to_list() == ["123"] * 5


@pytest.mark.parametrize(("spectra", "want"), [("coadd", SPECTRA[:1]), ("exposures", SPECTRA[1:])])
def test_spectra_choice(spectra, want):
    out = pair_bands(official_catalogue(), spectra=spectra)
    assert list(zip(out["extname_blue"], out["extname_red"], strict=True)) == want


def test_auto_takes_each_files_coadd_else_its_exposures():
    """LAMOST lists coadds for the non-time-domain survey and only single exposures for
    the time-domain one: ``auto`` keeps one kind per file, so neither survey is lost."""
    both = official_catalogue()
    time_domain = both.filter(pl.col("coadd") == 0).with_columns(fiberid=pl.lit(7, pl.Int64))
    out = pair_bands(pl.concat([both, time_domain]), spectra="auto")
    assert out["fiberid"].to_list() == [both["fiberid"][0]] + [7] * len(EXPOSURES)
    pairs = list(zip(out["extname_blue"], out["extname_red"], strict=True))
    assert pairs == SPECTRA[:1] + SPECTRA[1:]  # the file with a coadd: the coadd alone
    unidentified = both.with_columns(lmjd=pl.lit(None, pl.Int64))  # no file: still rows
    kept = pair_bands(unidentified, spectra="auto")
    assert kept.height == len(SPECTRA) and set(kept["catalog_status"]) == {"bad_ids"}


def test_unidentified_star_ids_are_null_not_one_star():
    table = official_catalogue().with_columns(gp_id=pl.lit(-9999), designation=pl.lit("-9999"))
    out = pair_bands(table, spectra="all")
    assert out["gp_id"].null_count() == out.height
    assert out["designation"].null_count() == out.height


def test_comment_lines_before_the_header_are_skipped(tmp_path):
    path = tmp_path / "mrs.csv"
    text = official_catalogue().write_csv(separator="|")
    path.write_text("# LAMOST DR9 v2.0 MRS general catalogue\n# generated 2023\n" + text)
    assert from_lamost(path, spectra="all").equals(pair_bands(official_catalogue(), spectra="all"))


def test_a_damaged_gzip_catalogue_is_a_catalog_error(tmp_path):
    path = tmp_path / "mrs.csv.gz"
    path.write_bytes(gzip.compress(official_catalogue().write_csv().encode())[:200])
    with pytest.raises(CatalogError, match="cannot read"):
        read_lamost_table(path)
    blob = bytearray(gzip.compress(official_catalogue().write_csv().encode()))
    blob[40:60] = bytes(20)  # corrupted in the middle
    path.write_bytes(bytes(blob))
    with pytest.raises(CatalogError, match="cannot read"):
        read_lamost_table(path)


def test_a_catalogue_this_user_cannot_read_is_said_so(tmp_path, monkeypatch):
    """It read "cannot read X: [Errno 13] Permission denied: 'X'" (the reading is patched:
    root reads anything)."""
    import errno

    import rrnet.io.lamost_catalog as lamost_catalog

    path = tmp_path / "mrs.csv"
    official_catalogue().write_csv(path)

    def denied(path, *args):  # type: ignore[no-untyped-def]
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(lamost_catalog, "_scan_csv", denied)
    with pytest.raises(CatalogError) as err:
        read_lamost_table(path)
    assert str(err.value) == f"cannot read {path}: not readable by this user (permission denied)"


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".fits", ".fits.gz", ".parquet"])
def test_every_distributed_format_reads_the_same(tmp_path, suffix):
    table = official_catalogue()
    path = tmp_path / f"mrs{suffix}"
    if suffix == ".parquet":
        table.write_parquet(path)
    elif suffix.startswith(".fits"):
        arrays = [
            np.array(table[c].to_list(), dtype="S40" if table[c].dtype == pl.Utf8 else None)
            for c in table.columns
        ]
        plain = tmp_path / "mrs.fits"
        fitsio.write(str(plain), arrays, names=[c.upper() for c in table.columns])
        if suffix == ".fits.gz":
            path.write_bytes(gzip.compress(plain.read_bytes()))
    else:
        text = table.write_csv(separator="|").encode()  # LAMOST's CSV files use '|'
        path.write_bytes(gzip.compress(text) if suffix.endswith(".gz") else text)
    out = from_lamost(path, spectra="all")
    assert out.select("filename", "extname_blue", "extname_red", "rv").equals(
        pair_bands(table, spectra="all").select("filename", "extname_blue", "extname_red", "rv")
    )


def test_missing_flagged_and_null_rvs_fall_back_then_become_status_rows():
    e = EXPOSURES
    table = official_catalogue(
        **{
            e[0]: {"rv_br1": -9999.0},  # -> rv_br0
            e[1]: {"rv_br_flag": 1},  # both rv_br* flagged -> rv_lasp1
            e[2]: {c: -9999.0 for c in RV_COLUMNS},  # nothing usable
            e[3]: {c: None for c in RV_COLUMNS},
        }
    )
    out = pair_bands(table, spectra="all")
    assert out["rv_source"].to_list() == ["rv_br1", "rv_br0", "rv_lasp1", None, None]
    assert out["rv"].to_list()[:3] == [-20.0, pytest.approx(-21.0 + 0.3), -22.0]
    assert out["catalog_status"].to_list() == ["ok", "ok", "ok", "no_rv", "no_rv"]
    assert "-9999" in out["catalog_reason"][3]
    assert out["filename"].null_count() == 0  # kept, with names, never dropped


def test_the_rv_comes_with_its_own_columns_error_or_none():
    """rv_br1 with an rv_br1_err of -9999 had come with rv_br0's error (a coalesce of
    the errors went on to the next column's); found by a user."""
    e = EXPOSURES
    table = official_catalogue(
        **{e[0]: {"rv_br1_err": -9999.0, "rv_br0_err": 1.0}, e[1]: {"rv_br1_err": 2.5}}
    )
    out = pair_bands(table, spectra="all")
    assert out["rv_source"].to_list()[:3] == ["rv_br1"] * 3
    assert out["rv_err"].to_list()[:3] == [0.8, None, 2.5]


def test_rv_option_sets_the_priority():
    out = pair_bands(official_catalogue(), spectra="coadd", rv_columns=("rv_b0", "rv_br1"))
    assert out["rv_source"].to_list() == ["rv_b0"]
    assert out["rv"][0] == pytest.approx(-19.7)


def test_single_band_spectra_are_kept_in_input_order():
    table = official_catalogue()
    # drop the blue row of the second exposure and the red row of the coadd
    keep = ~(
        ((pl.col("band") == "B") & (pl.col("lmjm") == int(EXPOSURES[1])) & (pl.col("coadd") == 0))
        | ((pl.col("band") == "R") & (pl.col("coadd") == 1))
    )
    out = pair_bands(table.filter(keep), spectra="all")
    assert out["catalog_status"].to_list() == ["single_band", "ok", "single_band", "ok", "ok"]
    assert out["extname_red"][0] is None and out["extname_blue"][0] == "COADD_B"
    assert out["extname_blue"][2] is None and out["extname_red"][2] == f"R-{EXPOSURES[1]}"
    assert "no red" in out["catalog_reason"][0] and "no blue" in out["catalog_reason"][2]


def test_input_order_is_kept_across_files():
    rows = []
    for fiber in (7, 3, 250, 1):
        rows += [official_row(b, None, fiberid=fiber, rv=float(fiber)) for b in "RB"]
    out = pair_bands(pl.DataFrame(rows))
    assert out["fiberid"].to_list() == [7, 3, 250, 1]
    assert out["rv"].to_list() == [7.0, 3.0, 250.0, 1.0]
    assert out["filename"][2].endswith("_sp02-250.fits.gz")


def test_unknown_schema_is_refused_in_one_line():
    table = official_catalogue().drop("band", "lmjm", *RV_COLUMNS)
    with pytest.raises(CatalogError) as info:
        pair_bands(table)
    message = str(info.value)
    assert "\n" not in message
    assert "band" in message and "lmjm" in message and "rv_br1" in message
    assert "obsid" not in message.split("missing column(s)")[1].split(",")[0]


def test_upper_case_columns_and_text_values(tmp_path):
    table = official_catalogue()
    table = table.rename({c: c.upper() for c in table.columns}).with_columns(
        pl.col("COADD").cast(pl.Utf8).replace({"1": "T", "0": "F"})
    )
    path = tmp_path / "mrs.csv"
    table.write_csv(path)
    out = from_lamost(path, spectra="all")
    assert list(zip(out["extname_blue"], out["extname_red"], strict=True)) == SPECTRA


def test_scan_finds_every_spectrum_of_the_real_file(tmp_path):
    (tmp_path / "night" / "plan").mkdir(parents=True)
    (tmp_path / "night" / "plan" / REAL_FILE.name).write_bytes(REAL_FILE.read_bytes())
    (tmp_path / "notes.txt").write_text("not a spectrum")
    scanned = scan_folder(tmp_path)
    assert scanned["filename"].to_list() == [f"night/plan/{REAL_FILE.name}"] * 5
    assert list(zip(scanned["extname_blue"], scanned["extname_red"], strict=True)) == SPECTRA
    h = real_header()
    assert scanned["obsid"].unique().to_list() == [h["OBSID"]]
    assert scanned["lmjm"].to_list() == [None, *map(int, EXPOSURES)]
    assert scanned["planid"].unique().to_list() == [h["PLANID"]]
    by_obsid = join_rv(scanned, pl.DataFrame({"obsid": [h["OBSID"]], "rv": [-7.5]}))
    assert by_obsid["rv"].to_list() == [-7.5] * 5
    assert by_obsid["catalog_status"].to_list() == ["ok"] * 5
    assert by_obsid["rv_source"].to_list() == ["rv"] * 5
    missing = join_rv(scanned, pl.DataFrame({"obsid": [h["OBSID"]], "rv": [-9999.0]}))
    assert missing["catalog_status"].to_list() == ["no_rv"] * 5
    assert missing["rv_source"].null_count() == 5  # no RV: it came from no column
    official = join_rv(scanned, official_catalogue())
    assert official["rv"].to_list() == [-20.0, -21.0, -22.0, -23.0, -24.0]
    # as rrnet-catalog scan --rv-from reads it: the catalogue paired first (it also has
    # obsid and rv, shared by the five spectra: matching on obsid gave all of them -20)
    path = tmp_path / "mrs.csv"
    official_catalogue().write_csv(path, separator="|")
    from_file = join_rv(scanned, read_rv_table(path))
    assert from_file["rv"].to_list() == [-20.0, -21.0, -22.0, -23.0, -24.0]
    assert from_file["rv_source"].to_list() == ["rv_br1"] * 5
    # the file stored uncompressed and upper case is still the catalogue's file
    renamed = scanned.with_columns(pl.col("filename").str.replace(r"\.fits\.gz$", ".FITS"))
    assert join_rv(renamed, read_rv_table(path))["rv"].to_list() == from_file["rv"].to_list()
    assert join_rv(scanned, None)["catalog_status"].to_list() == ["no_rv"] * 5


def test_scan_keeps_an_unreadable_file_as_a_status_row(tmp_path):
    (tmp_path / "med-58025-X_sp01-001.fits.gz").write_bytes(b"not fits at all")
    out = join_rv(scan_folder(tmp_path), None)
    assert out["catalog_status"].to_list() == ["bad_fits"]


def test_scan_gives_every_file_it_sees_a_row(tmp_path):
    """Files whose extension names differ in case, that hold no spectrum extension, and
    dangling links were left out of a scan without a word."""
    from helpers import write_lamost_copy

    lower = write_lamost_copy(tmp_path / "lower.fits", order=["COADD_B", "COADD_R"])
    content = lower.read_bytes().replace(b"EXTNAME = 'COADD_B", b"EXTNAME = 'coadd_b")
    lower.write_bytes(content.replace(b"EXTNAME = 'COADD_R", b"EXTNAME = 'coadd_r"))
    none = write_lamost_copy(tmp_path / "none.fits", order=["COADD_B"])
    none.write_bytes(none.read_bytes().replace(b"EXTNAME = 'COADD_B", b"EXTNAME = 'OTHER__"))
    (tmp_path / "dangling.fits.gz").symlink_to(tmp_path / "gone.fits.gz")
    out = scan_folder(tmp_path)
    rows = {(r["filename"], r["catalog_status"]) for r in out.iter_rows(named=True)}
    assert ("dangling.fits.gz", "missing_file") in rows
    assert ("none.fits", "missing_extension") in rows
    assert (lower.name, None) in rows  # its coadd, under the file's own names
    pair = out.filter(pl.col("filename") == lower.name).row(0, named=True)
    assert (pair["extname_blue"], pair["extname_red"]) == ("coadd_b", "coadd_r")


def test_scan_names_the_first_file_left_out_for_a_name_that_is_not_utf8(tmp_path, caplog):
    """No table can hold such a name, so the file is left out; the warning names it."""
    import os

    (tmp_path / "good.fits.gz").write_bytes(b"x")
    for name in (b"bad\xffname.fits.gz", b"bad\xfename.fits.gz"):
        with open(os.path.join(os.fsencode(tmp_path), name), "wb") as handle:
            handle.write(b"x")
    with caplog.at_level("WARNING"):
        out = scan_folder(tmp_path)
    assert out["filename"].to_list() == ["good.fits.gz"]
    assert "2 file(s)" in caplog.text and "not UTF-8" in caplog.text
    assert "bad\\udcfename.fits.gz" in caplog.text  # the first in sorted order, escaped


def test_index_is_built_once_and_finds_names_without_gz(tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.fits.gz").write_bytes(b"")
    (tmp_path / "y.fits.gz").write_bytes(b"")
    assert index_files(tmp_path) == {"x.fits.gz": "a/b/x.fits.gz", "y.fits.gz": "y.fits.gz"}
    import rrnet.io.locate as locate

    calls = []
    real_walk = locate.os.walk
    monkeypatch.setattr(locate.os, "walk", lambda *a, **k: calls.append(a) or real_walk(*a, **k))
    catalog = pl.DataFrame({"filename": ["x.fits", "y.fits.gz", "other/x.fits.gz", "z.fits"] * 50})
    located, changed = locate_files(catalog, tmp_path)
    assert len(calls) == 1
    assert located["filename"].to_list()[:4] == [
        "a/b/x.fits.gz",
        "y.fits.gz",
        "a/b/x.fits.gz",
        "z.fits",
    ]
    assert changed == 2  # distinct names found elsewhere (x.fits, other/x.fits.gz), not rows


def test_default_priority_is_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "lamost.md").read_text()
    assert " > ".join(f"`{c}`" for c in RV_PRIORITY) in doc


def test_read_lamost_table_lowercases_and_sniffs_the_separator(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("OBSID\tBAND\n1\tB\n")
    assert read_lamost_table(path).columns == ["obsid", "band"]


def test_locating_survives_unreadable_folders_and_undecodable_names(tmp_path, monkeypatch):
    """A folder the user cannot search stopped the whole run (PermissionError from
    is_file), and a name that is not UTF-8 crashed polars (UnicodeEncodeError)."""
    import os

    (tmp_path / "night").mkdir()
    (tmp_path / "night" / "a.fits.gz").write_bytes(b"x")
    odd = os.path.join(os.fsencode(tmp_path), b"sub\xff")
    os.mkdir(odd)
    with open(os.path.join(odd, b"b.fits.gz"), "wb") as handle:
        handle.write(b"x")
    catalog = pl.DataFrame({"filename": ["a.fits.gz", "locked/c.fits.gz", "b.fits.gz"]})
    real_is_file = Path.is_file

    def is_file(path):
        if "locked" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_is_file(path)

    monkeypatch.setattr(Path, "is_file", is_file)
    located_table, moved = locate_files(catalog, tmp_path)
    names = located_table["filename"].to_list()  # not found: left as they are
    assert names == ["night/a.fits.gz", "locked/c.fits.gz", "b.fits.gz"] and moved == 1


def test_folders_that_cannot_be_listed_are_said_not_skipped_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A sub-folder this user may not list (mode 700 of another user): `scan` dropped its
    files and --find-files called their rows "file not found" without a word; an
    unlistable root gave "no spectra found". (os.scandir is patched: root lists anything.)"""
    import errno
    import os
    import shutil

    for sub in ("open", "hidden"):
        (tmp_path / "root" / sub).mkdir(parents=True)
        shutil.copy(REAL_FILE, tmp_path / "root" / sub / f"{sub}-{REAL_FILE.name}")
    hidden = tmp_path / "root" / "hidden"
    real_scandir = os.scandir

    def scandir(path=".", *args):  # type: ignore[no-untyped-def]
        if Path(os.fsdecode(path)) == hidden:
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_scandir(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    with caplog.at_level("WARNING"):
        table = scan_folder(tmp_path / "root")
        index = index_files(tmp_path / "root")
    assert set(table["filename"].str.split("/").list.first()) == {"open"}
    assert list(index) == [f"open-{REAL_FILE.name}"]
    warned = [r.getMessage() for r in caplog.records if "could not be listed" in r.getMessage()]
    assert len(warned) == 2 and all(str(hidden) in m for m in warned)
    assert "not in the scan" in warned[0] and "not found" in warned[1]
    monkeypatch.setattr(os, "listdir", lambda p: scandir(p))  # the root itself
    with pytest.raises(PermissionError):
        scan_folder(hidden)


# --- a survey-sized catalogue is paired a few nights at a time


@st.composite
def survey_catalogues(draw) -> pl.DataFrame:
    """Band rows of several nights in any order: coadds and exposures, a band missing or
    doubled, rows without lmjd, RVs missing; what pairing must treat alike in parts."""
    rows = []
    for fiber in range(draw(st.integers(1, 12))):
        lmjd = draw(st.sampled_from([58025, 58026, 58030, 58031, None]))
        kinds = [None] * draw(st.booleans()) + draw(
            st.lists(st.sampled_from(EXPOSURES), min_size=1, max_size=3, unique=True)
        )
        for lmjm in kinds:
            for band in draw(st.sampled_from(["BR", "RB", "B", "R", "BBR"])):
                rv = draw(st.sampled_from([-20.0, 3.5, -9999.0]))
                rows.append(official_row(band, lmjm, rv=rv, fiberid=fiber + 1, lmjd=lmjd))
    order = draw(st.permutations(range(len(rows))))
    return pl.DataFrame([rows[i] for i in order], infer_schema_length=None)


@settings(max_examples=30, deadline=None)
@given(
    table=survey_catalogues(),
    part_rows=st.integers(1, 40),
    spectra=st.sampled_from(SPECTRA_CHOICES),
)
def test_pairing_in_parts_equals_pairing_the_whole_table(
    tmp_path_factory, table, part_rows, spectra
):
    """from_lamost pairs whole nights about ``part_rows`` band rows at a time (bounded
    memory for DR7's ~29 million rows); the oracle is pairing the whole table at once."""
    path = tmp_path_factory.mktemp("parts") / "mrs.csv"
    table.write_csv(path, separator="|")
    whole = pair_bands(table, spectra=spectra)
    assert from_lamost(path, spectra=spectra, part_rows=part_rows).equals(whole)


def test_a_fits_catalogue_is_read_in_chunks(tmp_path, monkeypatch):
    """A FITS catalogue is copied to Parquet a few rows at a time (fitsio would hold all
    of DR7's columns at once); the result equals the CSV's, also for an empty table."""
    import rrnet.io.lamost_catalog as lamost_catalog

    table = official_catalogue()
    path = tmp_path / "mrs.fits"
    arrays = [
        np.array(table[c].to_list(), dtype="S40" if table[c].dtype == pl.Utf8 else None)
        for c in table.columns
    ]
    fitsio.write(str(path), arrays, names=[c.upper() for c in table.columns])
    monkeypatch.setattr(lamost_catalog, "FITS_CHUNK_ROWS", 3)
    with lamost_catalog.scanned_lamost_table(path) as lazy:
        assert lazy.collect().height == table.height
    assert from_lamost(path, spectra="all").equals(pair_bands(table, spectra="all"))
    empty = tmp_path / "empty.fits"
    fitsio.write(str(empty), [a[:0] for a in arrays], names=[c.upper() for c in table.columns])
    out = from_lamost(empty, spectra="all")
    assert out.height == 0 and out.columns == list(lamost_catalog.OUTPUT_COLUMNS)
    image = tmp_path / "image.fits"
    fitsio.write(str(image), np.zeros((3, 3)))
    fitsio.write(str(image), np.zeros((3, 3)))
    with pytest.raises(CatalogError, match="not a table"):
        from_lamost(image)


def test_scan_reads_headers_in_rust_as_fitsio_does(tmp_path, monkeypatch):
    """scan reads the headers with the Rust reader, many files per parallel call; fitsio
    (cfitsio) is the oracle: the same rows and statuses for good and damaged files."""
    import rrnet.io.lamost_catalog as lamost_catalog
    from helpers import write_lamost_copy

    blob = REAL_FILE.read_bytes()
    for i in range(5):
        (tmp_path / f"med-5802{i}-P_sp01-00{i}.fits.gz").write_bytes(blob)
    (tmp_path / "cut.fits.gz").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "junk.fits").write_bytes(b"not fits at all")
    (tmp_path / "dir.fits.gz").mkdir()
    (tmp_path / "dangling.fits.gz").symlink_to(tmp_path / "gone.fits.gz")
    plain = write_lamost_copy(tmp_path / "plain.fits", order=["COADD_R", "B-83555758"])
    plain.write_bytes(plain.read_bytes()[:-2880])  # its last HDU's data cut off
    monkeypatch.setattr(lamost_catalog, "SCAN_BATCH", 3)  # several calls
    rust = scan_folder(tmp_path, reader="rust")
    fitsio_rows = scan_folder(tmp_path, reader="fitsio")
    assert rust.height == fitsio_rows.height == 5 * 5 + 5
    assert rust.drop("catalog_reason").equals(fitsio_rows.drop("catalog_reason"))
    assert scan_folder(tmp_path).drop("catalog_reason").equals(rust.drop("catalog_reason"))
    bad = dict(
        rust.filter(pl.col("catalog_status").is_not_null())
        .select("filename", "catalog_status")
        .iter_rows()
    )
    assert bad == {
        "cut.fits.gz": "bad_fits",
        "junk.fits": "bad_fits",
        "dir.fits.gz": "missing_file",
        "dangling.fits.gz": "missing_file",
        "plain.fits": "bad_fits",
    }


@pytest.mark.parametrize("gz", [False, True])
def test_a_csv_catalogue_cut_inside_a_row_is_refused(tmp_path, gz):
    """A plain CSV cut mid-row (an interrupted download) passed with its last row as a
    bad_ids spectrum and exit 0; it is now a one-line CatalogError. A file that merely
    lacks the final newline is whole and reads as before."""
    text = official_catalogue().write_csv(separator="|")
    path = tmp_path / ("mrs.csv.gz" if gz else "mrs.csv")

    def write(content: str) -> None:
        data = content.encode()
        path.write_bytes(gzip.compress(data) if gz else data)

    write(text[: len(text) - 40])  # inside the last row
    with pytest.raises(CatalogError, match="ends inside a row"):
        from_lamost(path)
    write(text.rstrip("\n"))  # whole, no final newline
    assert from_lamost(path, spectra="all").equals(pair_bands(official_catalogue(), spectra="all"))


@pytest.mark.parametrize("spectra", ["all", "auto", "coadd", "exposures"])
@pytest.mark.parametrize(("column", "value", "shown"), [
    ("coadd", "2", "coadd is '2'"), ("coadd", None, "coadd is empty"),
    ("band", "X", "band is 'X'"),
])  # fmt: skip
def test_a_row_whose_band_or_coadd_names_no_spectrum_stays_a_row(spectra, column, value, shown):
    """``coadd = 2`` was read as an exposure (merged with the real exposure of the same
    lmjm, which was then called a duplicate) and ``band = 'X'`` vanished: every such
    row is now a row of its own, ``bad_ids`` with the value, in every --spectra choice,
    and the other spectra keep their statuses."""
    table = official_catalogue().with_columns(pl.col(c).cast(pl.Utf8) for c in ("coadd", "band"))
    hit = 0  # the coadd's blue row
    assert table["coadd"][hit] in ("1", "1.0", "true") and table["band"][hit] == "B"
    changed = table.with_columns(
        pl.when(pl.int_range(pl.len()) == hit).then(pl.lit(value)).otherwise(pl.col(column))
        .alias(column)
    )  # fmt: skip
    good = pair_bands(table, spectra=spectra)
    out = pair_bands(changed, spectra=spectra)
    bad = out.filter(pl.col("catalog_reason").str.starts_with(shown).fill_null(False))
    assert bad.height == 1 and bad["catalog_status"][0] == "bad_ids"
    others = out.filter(~pl.col("catalog_reason").str.starts_with(shown).fill_null(False))
    if spectra != "coadd":  # the exposures are untouched
        exposures = others.filter(~pl.col("coadd"))
        assert exposures.equals(good.filter(~pl.col("coadd")))
        assert set(exposures["catalog_status"]) == set(
            good.filter(~pl.col("coadd"))["catalog_status"]
        )
    if spectra in ("all", "coadd"):  # the coadd lost its blue row and says so
        coadd = others.filter(pl.col("coadd"))
        assert coadd["catalog_status"].to_list() == ["single_band"]


def test_columns_that_differ_only_in_case_are_one_catalog_error(tmp_path):
    """``obsid`` and ``OBSID`` in one catalogue: "unexpected DuplicateError" (exit 1)."""
    table = official_catalogue()
    path = tmp_path / "cat.csv"
    table.with_columns(pl.col("obsid").alias("OBSID")).write_csv(path)
    with pytest.raises(CatalogError, match="columns obsid, OBSID differ only in case"):
        from_lamost(path)


def test_a_found_name_in_several_folders_is_warned_with_the_one_taken(tmp_path, caplog):
    """--find-files took the first of two same-named files in sorted path order without
    a word (the other could be the one meant); names in one folder only stay quiet."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "med-x.fits.gz").write_bytes(b"")
    (tmp_path / "b" / "med-y.fits.gz").write_bytes(b"")
    catalog = pl.DataFrame({"filename": ["med-x.fits.gz", "med-y.fits.gz"]})
    with caplog.at_level("WARNING", logger="rrnet.io.locate"):
        located, _ = locate_files(catalog, tmp_path)
    assert located["filename"].to_list() == ["a/med-x.fits.gz", "b/med-y.fits.gz"]
    assert (
        "1 file name(s)" in caplog.text and "a/med-x.fits.gz (also b/med-x.fits.gz)" in caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="rrnet.io.locate"):
        locate_files(catalog.filter(pl.col("filename") == "med-y.fits.gz"), tmp_path)
    assert "several folders" not in caplog.text


def test_an_obsid_rv_table_that_resolves_silently_is_warned(tmp_path, caplog):
    """Two RVs for one obsid (the first is used) and obsids that are no integer (they
    match nothing) passed without a word; the RVs used are unchanged."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / REAL_FILE.name).write_bytes(REAL_FILE.read_bytes())
    scanned = scan_folder(tmp_path / "d")
    obsid = real_header()["OBSID"]
    table = pl.DataFrame({"obsid": [str(obsid), str(obsid), "abc"], "rv": [-20.0, -25.0, 3.0]})
    with caplog.at_level("WARNING", logger="rrnet.io.lamost_catalog"):
        joined = join_rv(scanned, table)
    assert joined["rv"].to_list() == [-20.0] * 5
    assert (
        "1 obsid(s) have different RVs" in caplog.text and f"obsid {obsid}: -20, -25" in caplog.text
    )
    assert (
        "1 row(s) of the --rv-from table have an obsid that is no integer (e.g. 'abc')"
        in caplog.text
    )
    # an obsid names the file: its coadd and four exposures all got the one RV
    assert "1 file(s) hold several spectra (coadd and exposures) under one obsid" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="rrnet.io.lamost_catalog"):
        join_rv(scanned, pl.DataFrame({"obsid": [obsid, obsid], "rv": [-20.0, -20.0]}))
    assert "different RVs" not in caplog.text  # the same RV twice: nothing to say of it
    caplog.clear()
    with caplog.at_level("WARNING", logger="rrnet.io.lamost_catalog"):
        join_rv(scanned.head(1), pl.DataFrame({"obsid": [obsid], "rv": [-20.0]}))
    assert caplog.text == ""  # the coadd alone: one spectrum, one RV


@pytest.mark.parametrize(("column", "value", "shown"), [
    ("fiberid", "-1", "fiberid is '-1', not a whole number >= 0"),
    ("lmjm", "83555758.5", "lmjm is '83555758.5', not a whole number >= 0"),
    ("planid", "HIP/../../etc", "planid 'HIP/../../etc' is a path, not a plan name"),
    ("spid", "x2", "spid is 'x2', not a whole number >= 0"),
])  # fmt: skip
def test_identifiers_that_make_no_file_name_are_bad_ids(column, value, shown):
    """fiberid -1 made ``..._sp02--01.fits.gz``, an LMJM of 83555758.5 was truncated and
    a plan id holding a path named a file elsewhere, each with status ok."""
    table = official_catalogue().with_columns(pl.col(column).cast(pl.Utf8))
    exposure_rows = (pl.col("coadd").cast(pl.Int64) == 0) & (
        pl.col("lmjm").cast(pl.Utf8) == EXPOSURES[0]
    )
    if column == "lmjm":
        table = table.with_columns(
            pl.when(exposure_rows).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
        )
    else:
        table = table.with_columns(pl.lit(value).alias(column))
    out = pair_bands(table, spectra="all")
    bad = out.filter(pl.col("catalog_reason") == shown)
    assert bad.height == (1 if column == "lmjm" else out.height)
    assert set(bad["catalog_status"]) == {"bad_ids"} and bad["filename"].null_count() == bad.height
    assert out.height == pair_bands(official_catalogue(), spectra="all").height  # none lost


def test_an_obsid_that_is_no_integer_is_said_in_the_reason():
    """An obsid of 'abc' was left empty with status ok and no reason: the row is still
    usable (files are named by the other ids), but the lost id is now said."""
    table = official_catalogue().with_columns(pl.col("obsid").cast(pl.Utf8))
    first = pl.col("lmjm").cast(pl.Utf8) == EXPOSURES[0]
    bad = table.with_columns(pl.when(first).then(pl.lit("abc")).otherwise("obsid").alias("obsid"))
    want, got = pair_bands(table, spectra="all"), pair_bands(bad, spectra="all")
    noted = got.filter(pl.col("catalog_reason") == "obsid 'abc' is no integer: left empty")
    assert noted.height >= 1 and set(noted["catalog_status"]) == {"ok"}
    assert noted["obsid"].null_count() == noted.height
    assert got.drop("obsid", "catalog_reason").equals(want.drop("obsid", "catalog_reason"))
    assert want["catalog_reason"].null_count() == want.height  # clean rows: no reason
    blue_only = first & (pl.col("band").str.to_uppercase().str.starts_with("B"))
    one = table.with_columns(
        pl.when(blue_only).then(pl.lit("abc")).otherwise("obsid").alias("obsid")
    )
    got = pair_bands(one, spectra="all")  # the red row's obsid stands: nothing to say
    assert got.equals(want)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's VmHWM")
def test_a_gzipped_fits_catalogue_is_read_in_bounded_memory(tmp_path):
    """cfitsio inflates a ``.fits.gz`` whole into memory: a 3-million-row DR11-layout
    catalogue took 2.7 GB where its plain ``.fits`` took 1.5 GB. It is now inflated to
    disk first, so both peak alike (each read in a fresh process, in 20,000-row chunks)."""
    import subprocess
    import sys

    n = 400_000  # 80 columns of float64: 256 MB uncompressed, ~0.3 MB gzipped
    plain = tmp_path / "big.fits"
    fitsio.write(str(plain), [np.zeros(n) for _ in range(80)], names=[f"C{i}" for i in range(80)])
    packed = tmp_path / "big.fits.gz"
    with open(plain, "rb") as source, gzip.open(packed, "wb", compresslevel=1) as target:
        target.write(source.read())
    script = (
        "import re, sys\n"
        "import rrnet.io.lamost_catalog as lc\n"
        "lc.FITS_CHUNK_ROWS = 20_000\n"
        "with lc.scanned_lamost_table(sys.argv[1]) as lazy:\n"
        "    assert lazy.select('c0').collect().height == int(sys.argv[2])\n"
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])\n"
    )
    peak = {}
    for path in (plain, packed):
        run = subprocess.run(
            [sys.executable, "-c", script, str(path), str(n)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        peak[path.name] = int(run.stdout.split()[-1]) / 1024  # MiB (not ru_maxrss: a
        # child's starts at its parent's, here pytest's)
    assert peak["big.fits.gz"] < peak["big.fits"] + 100, peak  # not + the 256 MB table
