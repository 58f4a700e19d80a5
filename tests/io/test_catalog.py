"""rrnet.io.catalog: reading, validating and atomically writing tables."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from rrnet.io.catalog import (
    CatalogError,
    read_catalog,
    read_table,
    table_format,
    validate_catalog,
    write_table,
)


def _catalog() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "filename": ["a.fits.gz", "b.fits.gz", "c.fits.gz"],
            "extname_blue": ["COADD_B", "B-1", "B-2"],
            "extname_red": ["COADD_R", "R-1", "R-2"],
            "rv": [-20.5, 0.0, 13.25],
            "obsid": [589002051, 2, 3],
            "ra": [293.343833, None, 1.5],
            "teff_ref": [4800.0, 5100.0, math.nan],
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits"])
def test_round_trip_keeps_values_and_types(tmp_path, suffix):
    table = _catalog()
    path = write_table(table, tmp_path / f"cat{suffix}")
    back = read_table(path)
    assert back.columns == table.columns
    assert back["filename"].to_list() == table["filename"].to_list()
    assert back["obsid"].to_list() == table["obsid"].to_list()
    np.testing.assert_array_equal(back["rv"].to_numpy(), table["rv"].to_numpy())
    # FITS has no null: documented as NaN for floats.
    ra = back["ra"].to_numpy().astype(float)
    assert ra[0] == table["ra"][0] and np.isnan(ra[1])


def test_validate_normalises_types_and_keeps_bad_values_as_nulls():
    raw = pl.DataFrame(
        {
            "filename": [" a.fits ", "", None, "d.fits"],
            "extname_blue": ["COADD_B", "B", " ", "B"],
            "extname_red": ["COADD_R", "R", "R", "R"],
            "rv": ["-20", "abc", "", " 3.5 "],
            "extra": [1, 2, 3, 4],
        }
    )
    cat = validate_catalog(raw)
    assert cat["filename"].to_list() == ["a.fits", None, None, "d.fits"]
    assert cat["extname_blue"].to_list() == ["COADD_B", "B", None, "B"]
    assert cat["rv"].dtype == pl.Float64
    assert cat["rv"].to_list() == [-20.0, None, None, 3.5]
    assert cat["extra"].to_list() == [1, 2, 3, 4]


def test_rv_error_column_read_as_number_from_an_empty_csv_column(tmp_path):
    """An all-empty ``rv_err`` (a catalogue built from files alone) is read by Polars as
    text; the catalogue hands it on as Float64 nulls, and a filled one as numbers."""
    path = tmp_path / "cat.csv"
    path.write_text(
        "filename,extname_blue,extname_red,rv,rv_err,note\na.fits,B,R,,,\nb.fits,B,R,,,\n"
    )
    cat = read_catalog(path, require_rv=False)
    assert pl.read_csv(path)["rv_err"].dtype == pl.Utf8  # the case being handled
    assert cat["rv_err"].dtype == pl.Float64 and cat["rv_err"].null_count() == 2
    assert cat["note"].dtype == pl.Utf8  # other columns untouched
    filled = validate_catalog(_catalog().with_columns(rv_err=pl.lit(" 1.5 ")))
    assert filled["rv_err"].to_list() == [1.5] * filled.height


def test_missing_required_columns_are_named_in_one_line():
    with pytest.raises(CatalogError) as err:
        validate_catalog(_catalog().drop("extname_red", "rv"))
    message = str(err.value)
    assert "extname_red" in message and "rv" in message and "\n" not in message


def test_lamosts_own_catalogue_is_pointed_to_rrnet_catalog(tmp_path):
    """Given LAMOST's general catalogue as it is ('|'-separated too), say how to make
    rrnet's input from it (the error only listed the missing columns)."""
    from helpers import official_catalogue

    for separator in (",", "|"):
        path = tmp_path / "mrs.csv"
        official_catalogue().write_csv(path, separator=separator)
        with pytest.raises(CatalogError, match="rrnet-catalog from-lamost"):
            validate_catalog(read_table(path))
    with pytest.raises(CatalogError) as err:
        validate_catalog(_catalog().drop("extname_red"))
    assert "from-lamost" not in str(err.value)


def test_custom_rv_column():
    cat = _catalog().rename({"rv": "rv_lasp"})
    with pytest.raises(CatalogError, match="rv"):
        validate_catalog(cat)
    assert validate_catalog(cat, rv_column="rv_lasp")["rv_lasp"].to_list()[0] == -20.5


def test_reserved_columns_clash():
    with pytest.raises(CatalogError, match="status"):
        validate_catalog(_catalog().with_columns(status=pl.lit("x")), reserved=("status",))


@pytest.mark.parametrize("suffix", [".csv", ".fits"])
def test_gzipped_csv_and_fits_read_as_the_plain_file(tmp_path, suffix):
    """Surveys distribute catalogues gzipped (LAMOST's .csv.gz, .fits.gz label tables):
    they were refused as "unknown table format '.gz'"."""
    import gzip

    plain = write_table(_catalog(), tmp_path / f"cat{suffix}")
    packed = tmp_path / f"cat{suffix}.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_table(packed, text_columns=("obsid",)).equals(read_table(plain, ("obsid",)))
    assert read_catalog(packed).equals(read_catalog(plain))
    other = tmp_path / "cat.parquet.gz"
    other.write_bytes(gzip.compress(b"x"))
    with pytest.raises(CatalogError, match=r"read as \.csv\.gz or \.fits\.gz"):
        read_table(other)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(CatalogError, match="unknown table format"):
        table_format(tmp_path / "cat.xlsx")
    with pytest.raises(CatalogError, match="not found"):
        read_catalog(tmp_path / "absent.csv")


def test_unreadable_file_is_a_catalog_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(CatalogError, match="cannot read parquet"):
        read_table(path)


def test_write_is_atomic_and_replaces(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old content\n")
    write_table(_catalog(), path)
    assert read_table(path).height == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # no temporary left


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "out.parquet"
    write_table(_catalog(), path)
    before = path.read_bytes()
    bad = pl.DataFrame({"obj": pl.Series([object()], dtype=pl.Object)})
    with pytest.raises(Exception):  # noqa: B017 - polars' error type is not our concern here
        write_table(bad, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path):
    """``rv,rv``: polars renamed the second to ``rv_duplicated_0`` and the first was used
    without a word; now one CatalogError naming the column."""
    path = tmp_path / "cat.csv"
    path.write_text("filename,extname_blue,extname_red,rv,rv\nx.fits,B,R,10,20\n")
    with pytest.raises(CatalogError, match="column 'rv' appears more than once"):
        read_table(path)
    path.write_text("filename,extname_blue,extname_red,rv,rv_err\nx.fits,B,R,10,2\n")
    assert read_table(path).columns[-2:] == ["rv", "rv_err"]


def test_integer_fits_cells_equal_to_tnull_are_null(tmp_path):
    """astropy writes a masked integer column with TNULL: fitsio returns those cells as
    the number (999999), which trained as Teff = 999,999 K and joined as a star id."""
    from astropy.table import Table

    t = Table(masked=True)
    t["star_id"] = np.ma.array(np.arange(10), mask=[i == 3 for i in range(10)])
    t["teff"] = np.ma.array(
        np.arange(4000, 4010, dtype=np.int32), mask=[i % 5 == 0 for i in range(10)]
    )
    t["logg"] = np.linspace(1.0, 2.0, 10)
    path = tmp_path / "labels.fits"
    t.write(path)
    got = read_table(path)
    want = Table.read(path)  # astropy applies TNULL: the independent reader
    assert got["teff"].to_list() == [
        None if m else int(v) for v, m in zip(want["teff"], want["teff"].mask, strict=True)
    ]
    assert got["star_id"].null_count() == 1 and got["star_id"][3] is None
    assert got["logg"].to_list() == list(want["logg"])


def test_a_csv_is_typed_from_every_row_and_ids_can_stay_text(tmp_path):
    """Types were inferred from the first 10,000 rows: a survey table's 'n/a' or text id
    further down refused the whole file. And '00003' was read as 3, so it never matched
    a store's text id; ``text_columns`` keeps such columns as written."""
    n = 12_700
    teff = [str(4000 + i % 1000) for i in range(n)]
    teff[11_000] = "n/a"
    ids = [f"{i:05d}" for i in range(n)]
    path = tmp_path / "labels.csv"
    pl.DataFrame({"star_id": ids, "Teff[K]": teff}).write_csv(path)
    table = read_table(path)
    assert table.height == n and table["Teff[K]"][11_000] == "n/a"
    assert table["star_id"][3] == 3  # numbers, when nothing asks otherwise
    kept = read_table(path, text_columns=["STAR_ID"])
    assert kept["star_id"][3] == "00003" and kept["star_id"].to_list() == ids


def test_fits_nulls_are_declared_and_units_written(tmp_path):
    """rrnet-catalog's FITS wrote a null lmjm as -1 with no TNULL (astropy and STILTS read
    a real -1) and no units; a real -1 must stay a value, a null boolean a null."""
    import fitsio
    from astropy.table import Table

    table = pl.DataFrame(
        {
            "lmjm": [None, 83555758, 83555772],
            "spid": [-1, None, 2],  # a real -1: the null value moves out of its way
            "coadd": [True, None, False],
            "ra": [293.3, None, 1.5],
        }
    )
    path = write_table(table, tmp_path / "c.fits", units={"ra": "deg"}, descriptions={"ra": "RA"})
    header = fitsio.read_header(str(path), 1)
    assert header["TNULL1"] == -1 and header["TNULL2"] == np.iinfo(np.int64).min
    assert header["TUNIT4"] == "deg" and header["TCOMM4"] == "RA"
    seen = Table.read(path)  # an outside reader
    assert seen["lmjm"].mask.tolist() == [True, False, False]
    assert seen["spid"].mask.tolist() == [False, True, False] and seen["spid"][0] == -1
    assert seen["coadd"].mask.tolist() == [False, True, False]
    assert str(seen["ra"].unit) == "deg"
    back = read_table(path)
    assert back["lmjm"].to_list() == [None, 83555758, 83555772]
    assert back["spid"].to_list() == [-1, None, 2]
    assert back["coadd"].to_list() == [1, None, 0]
