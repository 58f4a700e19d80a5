"""Every catalogue format read back by the field's own readers: astropy, pandas,
Polars, fitsio, pyarrow, and (where installed) fitsverify and STILTS.

The catalogue holds nulls in every column type. pytest turns warnings into errors,
so each astropy read here is also a no-warning check.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import fitsio
import numpy as np
import polars as pl
import pytest

from rrnet.inference.columns import CATALOGUE_COLUMNS, column_meta
from rrnet.inference.writers import FITS_EXTNAME, read_catalogue, write_catalogue
from rrnet.labels import IDENTIFIER_NAMES, internal_name, styled_columns, styled_name

astropy_table = pytest.importorskip("astropy.table")
units = pytest.importorskip("astropy.units")

PROVENANCE = {
    "rrnet.version": "9.9.9",
    "rrnet.created": "2024-01-01T00:00:00",
    "rrnet.input": "some/store/with/a/rather/long/path/" + "x" * 80,
    "rrnet.checkpoint_hashes": "abc,def",
}
SUFFIX = {"parquet": "parquet", "fits": "fits", "votable": "vot", "ecsv": "ecsv"}


def _table(n: int = 8) -> pl.DataFrame:
    """Every catalogue column, a null in each (row 2 of floats, 3 of ints/text/bools)."""
    rng = np.random.default_rng(5)
    data: dict = {}
    for column in CATALOGUE_COLUMNS:
        if column.dtype.is_float():
            values: list = list(rng.normal(4000.0, 500.0, n))
            values[2] = None
        elif column.dtype == pl.Boolean:
            values = [i % 2 == 0 for i in range(n)]
            values[3] = None
        elif column.dtype == pl.Utf8:
            values = [f"{column.name}-{i}" * (1 + i % 3) for i in range(n)]
            values[3] = None
        else:
            values = [int(v) for v in rng.integers(0, 100, n)]
            values[3] = None
        data[column.name] = pl.Series(values, dtype=column.dtype)
    data["star_id"] = [None if i == 4 else f"star{i % 3}" for i in range(n)]
    return pl.DataFrame(data)


def _write(tmp_path: Path, fmt: str, style: str = "identifier") -> tuple[pl.DataFrame, Path]:
    table = _table()
    path = tmp_path / f"cat.{SUFFIX[fmt]}"
    return table, write_catalogue(table, path, fmt, PROVENANCE, column_style=style)


def _expected_unit(internal: str):
    column = column_meta(internal)
    return units.Unit(column.unit) if column is not None and column.unit else None


def test_name_table() -> None:
    assert len(IDENTIFIER_NAMES) == 17 and len(set(IDENTIFIER_NAMES.values())) == 17
    names = [c.name for c in CATALOGUE_COLUMNS]
    styled = [styled_name(n, "identifier") for n in names]
    assert all(n.isidentifier() and n == n.lower() for n in styled)
    assert styled[8:12] == ["teff", "teff_err", "logg", "logg_err"]
    assert {"c_h", "c_h_err", "fe_h", "fe_h_err", "cu_h", "cu_h_err"} <= set(styled)
    assert [styled_name(n, "paper") for n in names] == names
    assert [internal_name(n) for n in styled] == names
    with pytest.raises(ValueError, match="both be named 'teff'"):
        styled_columns([*names, "teff"], "identifier")


@pytest.mark.parametrize("fmt", ["parquet", "fits", "votable", "ecsv", "csv"])
@pytest.mark.parametrize("style", ["identifier", "paper"])
def test_round_trip_every_format(tmp_path: Path, fmt: str, style: str) -> None:
    table = _table()
    path = tmp_path / f"cat.{SUFFIX.get(fmt, fmt)}"
    write_catalogue(table, path, fmt, PROVENANCE, column_style=style)
    back, provenance = read_catalogue(path)
    assert back.schema == table.schema
    assert back.equals(table)
    assert provenance == PROVENANCE
    styled, _ = read_catalogue(path, column_style=style)
    assert styled.columns == [styled_name(c, style) for c in table.columns]


def test_csv_gives_back_carried_columns_with_their_dtypes_even_when_empty(tmp_path: Path) -> None:
    """Carried input columns (a scan's rv, snr_b) that are empty in every row read back
    as text from CSV alone; the sidecar records their dtypes."""
    table = _table().with_columns(
        pl.lit(None, pl.Float64).alias("snr_b"),
        pl.lit(None, pl.Int64).alias("lmjm"),
        pl.Series("night", [i % 2 == 0 for i in range(8)], dtype=pl.Boolean),
        pl.lit(None, pl.String).alias("note"),
    )
    path = write_catalogue(table, tmp_path / "cat.csv", "csv", PROVENANCE)
    back, _ = read_catalogue(path)
    assert back.schema == table.schema and back.equals(table)


@pytest.mark.parametrize("fmt", ["parquet", "fits", "votable", "ecsv"])
def test_astropy_reads_values_units_descriptions(tmp_path: Path, fmt: str) -> None:
    table, path = _write(tmp_path, fmt)
    got = astropy_table.Table.read(path)  # a warning here fails the test
    assert got.colnames == [styled_name(c, "identifier") for c in table.columns]
    for name in table.columns:
        column = got[styled_name(name, "identifier")]
        want = _expected_unit(name)
        assert (column.unit is None) if want is None else (column.unit == want), name
        meta = column_meta(name)
        if meta is not None:
            # the VOTable writer wraps long DESCRIPTION text
            assert " ".join(column.description.split()) == meta.description, name
        values = table[name]
        if values.dtype.is_float():
            data = np.ma.filled(np.ma.asarray(column, dtype=float), np.nan)
            np.testing.assert_allclose(data, values.fill_null(np.nan).to_numpy(), rtol=1e-6)
        elif values.dtype == pl.Utf8:
            ok = values.is_not_null().to_numpy()
            text = np.asarray(column)[ok]
            text = np.char.decode(text, "ascii") if text.dtype.kind == "S" else text
            assert list(text) == values.drop_nulls().to_list(), name
    assert got["teff"].unit == units.K and got["fe_h"].unit == units.dex
    assert got["logg_err"].unit == units.dex and got["ra"].unit == units.deg


def test_astropy_quantities_from_fits(tmp_path: Path) -> None:
    _, path = _write(tmp_path, "fits")
    got = astropy_table.QTable.read(path)
    assert got["fe_h"].unit == units.dex and got["teff"].unit == units.K


def test_parquet_field_metadata_and_other_readers(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    pd = pytest.importorskip("pandas")
    table, path = _write(tmp_path, "parquet")
    schema = pq.read_schema(path)
    teff = schema.field("teff").metadata
    assert teff[b"unit"] == b"K" and teff[b"ucd"] == b"phys.temperature.effective"
    assert schema.field("fe_h_err").metadata[b"ucd"] == b"stat.error;phys.abund.Fe"
    assert schema.metadata[b"rrnet.version"] == b"9.9.9"
    assert b"table_meta_yaml" in schema.metadata
    assert pl.read_parquet_metadata(path)["rrnet.input"] == PROVENANCE["rrnet.input"]
    frame = pd.read_parquet(path)
    assert frame["filename"].isna().tolist() == table["filename"].is_null().to_list()
    assert frame["teff"].isna().tolist() == table["Teff[K]"].is_null().to_list()
    assert (
        pl.read_parquet(path)
        .rename(dict(zip(frame.columns, table.columns, strict=True)))
        .equals(table)
    )


def test_fits_header_for_other_readers(tmp_path: Path) -> None:
    table, path = _write(tmp_path, "fits")
    header = fitsio.read_header(str(path), ext=FITS_EXTNAME)
    names = [header[f"TTYPE{i}"] for i in range(1, header["TFIELDS"] + 1)]
    assert names == [styled_name(c, "identifier") for c in table.columns]
    index = {name: i + 1 for i, name in enumerate(names)}
    assert header[f"TUNIT{index['teff']}"] == "K"
    assert header[f"TUNIT{index['ra']}"] == "deg"
    assert header.get_comment(f"TTYPE{index['fe_h']}").startswith("[dex] ")
    assert header[f"TCOMM{index['fe_h']}"] == column_meta("FeH").description
    assert header["DATE"] == "2024-01-01T00:00:00" and header["LONGSTRN"] == "OGIP 1.0"
    data = fitsio.read(str(path), ext=FITS_EXTNAME)
    np.testing.assert_allclose(data["teff"], table["Teff[K]"].fill_null(np.nan), rtol=1e-6)


def test_votable_ucds(tmp_path: Path) -> None:
    from astropy.io.votable import parse

    _, path = _write(tmp_path, "votable")
    element = parse(str(path)).get_first_table()
    ucds = {field.name: field.ucd for field in element.fields}
    assert ucds["teff"] == "phys.temperature.effective"
    assert ucds["logg"] == "phys.gravity"
    assert ucds["fe_h"] == "phys.abund.Fe"
    assert ucds["c_h_err"] == "stat.error;phys.abund"
    assert ucds["obsid"] == "meta.id;meta.main" and ucds["ra"] == "pos.eq.ra;meta.main"
    assert {info.name: info.value for info in element.infos} == PROVENANCE


def test_fits_timestamp_with_offset_is_written_as_utc(tmp_path: Path) -> None:
    provenance = dict(PROVENANCE, **{"rrnet.created": "2024-01-01T02:00:00+02:00"})
    path = write_catalogue(_table(), tmp_path / "cat.fits", "fits", provenance)
    assert fitsio.read_header(str(path), ext=FITS_EXTNAME)["DATE"] == "2024-01-01T00:00:00"


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.skipif(
    shutil.which("fitsverify") is None,
    reason="fitsverify not installed (Debian/Ubuntu: apt-get install fitsverify)",
)
def test_fitsverify_no_error_no_warning(tmp_path: Path) -> None:
    for style in ("identifier", "paper"):
        (tmp_path / style).mkdir()
        _, path = _write(tmp_path / style, "fits", style)
        result = _run(["fitsverify", str(path)])
        summary = "Verification found 0 warning(s) and 0 error(s)"
        if style == "paper":  # Table 3's names hold '[' and ']', which FITS warns about
            summary = "Verification found 4 warning(s) and 0 error(s)"
        assert summary in result.stdout, result.stdout


@pytest.mark.skipif(
    shutil.which("stilts") is None,
    reason="STILTS not installed (Debian/Ubuntu: apt-get install stilts)",
)
@pytest.mark.parametrize("fmt", ["votable", "fits", "parquet"])
def test_stilts_expressions_on_identifier_names(tmp_path: Path, fmt: str) -> None:
    table, path = _write(tmp_path, fmt)
    result = _run(
        [
            "stilts", "tpipe", f"in={path}", 'cmd=select "teff > 4000 && fe_h < 5000"',
            "cmd=keepcols \"obsid teff fe_h\"", "ofmt=csv", "omode=out",
        ]
    )  # fmt: skip
    if fmt == "parquet" and "parquet" in result.stderr.lower() and result.returncode:
        pytest.skip(f"this STILTS cannot read Parquet: {result.stderr.strip()[:120]}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "obsid,teff,fe_h"
    teff, feh = table["Teff[K]"], table["FeH"]
    want = ((teff > 4000) & (feh < 5000)).fill_null(False).sum()
    assert len(lines) - 1 == want


def test_votable_booleans_can_hold_nulls(tmp_path: Path) -> None:
    """A null cap_hit was written as an empty ``bit`` cell, which has no null: STILTS
    votlint reported an error for every catalogue with one failed row."""
    from astropy.io.votable import parse_single_table

    table, path = _write(tmp_path, "votable")
    fields = {f.name: f.datatype for f in parse_single_table(str(path)).fields}
    assert fields["cap_hit"] == "boolean"
    back, _ = read_catalogue(path)
    assert back["cap_hit"].to_list() == table["cap_hit"].to_list()  # null at row 3 too
    if shutil.which("stilts"):
        lint = _run(["stilts", "votlint", str(path)])
        assert "ERROR" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr


def docs_column_table() -> str:
    """The column table of docs/catalogue.md, from the code (regenerate it from here)."""
    rows = [
        "| name (default) | `--column-style paper` | dtype | unit | UCD | description |",
        "|---|---|---|---|---|---|",
    ]
    for c in CATALOGUE_COLUMNS:
        ident = styled_name(c.name, "identifier")
        cells = [f"`{ident}`", f"`{c.name}`", str(c.dtype), c.unit or "-", c.ucd or "-"]
        rows.append("| " + " | ".join([*cells, c.description]) + " |")
    return "\n".join(rows) + "\n"


def test_docs_column_table_matches_the_code() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "catalogue.md"
    assert docs_column_table() in docs.read_text(encoding="utf-8")


def test_astropy_reads_parquet_null_text_as_none_not_cut(tmp_path: Path) -> None:
    """astropy's Parquet reader gives null text as ``None`` (docs/catalogue.md); the width
    rrnet declares for it must hold those 4 characters, or an all-null column reads as
    ``N`` and a short one as ``No``: what look like values."""
    table = _table(4).with_columns(
        pl.lit(None, dtype=pl.Utf8).alias("gp_id"),
        pl.Series("rv_source", ["ok", None, "ok", None], dtype=pl.Utf8),
    )
    path = write_catalogue(table, tmp_path / "cat.parquet", "parquet", PROVENANCE)
    got = astropy_table.Table.read(path)
    assert [str(v) for v in got["gp_id"]] == ["None"] * 4
    assert [str(v) for v in got["rv_source"]] == ["ok", "None", "ok", "None"]


def test_fits_says_which_text_lost_its_non_ascii_characters(tmp_path: Path, caplog) -> None:
    """FITS text is ASCII: a non-ASCII file name is written with '?' and the writer says
    so (it did silently; the row then no longer matches its file)."""
    table = _table(4).with_columns(
        pl.Series("filename", ["a.fits.gz", "b ü 星.fits.gz", None, "c.fits.gz"], dtype=pl.Utf8)
    )
    with caplog.at_level("WARNING"):
        write_catalogue(table, tmp_path / "cat.fits", "fits", PROVENANCE)
    assert "other characters written as '?' in filename (1 rows)" in caplog.text
    back, _ = read_catalogue(tmp_path / "cat.fits")
    assert back["filename"].to_list() == ["a.fits.gz", "b ? ?.fits.gz", None, "c.fits.gz"]
    caplog.clear()
    with caplog.at_level("WARNING"):
        write_catalogue(table, tmp_path / "cat.parquet", "parquet", PROVENANCE)
    assert "characters written as" not in caplog.text
    assert read_catalogue(tmp_path / "cat.parquet")[0]["filename"][1] == "b ü 星.fits.gz"


def _carried_edge_columns() -> pl.DataFrame:
    """Carried input columns whose values hit a writer's conventions: a real -1 and a
    real 255 (the FITS TNULLs), unsigned 32-bit ints (no VOTable type), a tab."""
    return _table(4).with_columns(
        pl.Series("flag_in", [-1, 0, None, 5], dtype=pl.Int32),
        pl.Series("byte_in", [255, 0, None, 7], dtype=pl.UInt8),
        pl.Series("count_in", [4_000_000_000, 1, None, 2], dtype=pl.UInt32),
        pl.Series("note_in", ["a\tb", "c", None, "d"], dtype=pl.Utf8),
        pl.Series("tiny_in", [-1, 0, None, 3], dtype=pl.Int8),
    )


@pytest.mark.parametrize("fmt", ["fits", "votable", "ecsv", "parquet"])
def test_carried_values_that_look_like_null_markers_survive(tmp_path: Path, fmt: str) -> None:
    """A real -1 or 255 read back as null from FITS (TNULL), uint32 stopped VOTable after
    the whole run, a tab in a text column made fitsverify report an error."""
    table = _carried_edge_columns()
    path = write_catalogue(table, tmp_path / f"cat.{SUFFIX[fmt]}", fmt, PROVENANCE)
    back, _ = read_catalogue(path)
    assert back["flag_in"].to_list() == [-1, 0, None, 5]
    assert back["byte_in"].to_list() == [255, 0, None, 7]
    assert back["count_in"].to_list() == [4_000_000_000, 1, None, 2]
    assert back["tiny_in"].to_list() == [-1, 0, None, 3]
    note = "a?b" if fmt == "fits" else "a\tb"  # FITS text is printable ASCII
    assert back["note_in"].to_list()[0] == note
    if fmt == "fits" and shutil.which("fitsverify"):
        result = _run(["fitsverify", str(path)])
        assert "0 warning(s) and 0 error(s)" in result.stdout, result.stdout


@pytest.mark.parametrize("fmt", ["fits", "votable", "ecsv", "parquet"])
def test_a_carried_uint64_beyond_int64_is_kept_exactly(tmp_path: Path, fmt: str) -> None:
    """A carried UInt64 above 2**63 - 1 stopped FITS, VOTable and ECSV after the whole run
    ("conversion from u64 to i64 failed"); formats without uint64 now write it as text."""
    big = [2**63 + 5, 1, None, 2**64 - 1]
    table = _table(4).with_columns(pl.Series("u64_in", big, dtype=pl.UInt64))
    path = write_catalogue(table, tmp_path / f"cat.{SUFFIX[fmt]}", fmt, PROVENANCE)
    back, _ = read_catalogue(path)
    assert [None if v is None else int(v) for v in back["u64_in"].to_list()] == big
    if fmt == "fits" and shutil.which("fitsverify"):
        assert "0 warning(s) and 0 error(s)" in _run(["fitsverify", str(path)]).stdout


def test_the_header_designation_column_says_where_it_comes_from(tmp_path: Path) -> None:
    """--catalog adds desig from the files' headers: it was called an input column."""
    table = _table(4).with_columns(pl.Series("desig", ["J1", None, "J3", "J4"]))
    path = write_catalogue(table, tmp_path / "cat.parquet", "parquet", PROVENANCE)
    field = pytest.importorskip("pyarrow.parquet").read_schema(path).field("desig")
    assert b"DESIG of the file's header" in field.metadata[b"description"]


@pytest.mark.parametrize("fmt", ["parquet", "fits", "votable", "ecsv"])
def test_the_carried_input_rv_and_its_error_read_back_in_km_per_s(tmp_path: Path, fmt: str) -> None:
    """rrnet reads the input's rv column in km/s; carried into the catalogue it had no unit."""
    table = _table(4).with_columns(rv=pl.lit(-20.5), rv_err=pl.lit(1.5), other=pl.lit(3.0))
    path = write_catalogue(table, tmp_path / f"cat.{SUFFIX[fmt]}", fmt, PROVENANCE)
    got = astropy_table.Table.read(path)
    assert got["rv"].unit == got["rv_err"].unit == units.km / units.s
    assert got["other"].unit is None  # a column rrnet knows nothing about stays unitless


def test_a_format_that_contradicts_the_suffix_is_refused_when_writing() -> None:
    """--out x.parquet --format csv wrote CSV under a Parquet name (and a --resume then
    mixed formats); a name without a catalogue suffix takes any format."""
    from rrnet.inference.writers import resolve_format

    with pytest.raises(ValueError, match="names a parquet file, not csv"):
        resolve_format("x.parquet", "csv")
    assert resolve_format("x.parquet", "parquet") == "parquet"
    assert resolve_format("results", "fits") == resolve_format("x.dat", "fits") == "fits"
    assert resolve_format("x.parquet", "csv", writing=False) == "csv"  # reading: as asked


def test_a_fits_file_that_is_no_catalogue_is_said_so(tmp_path) -> None:
    """read_catalogue on a spectrum file (a LAMOST .fits.gz) raised fitsio's bare
    "extension not found: catalogue"; it now names what the file holds."""
    import fitsio
    import numpy as np

    from rrnet.inference.writers import read_catalogue

    path = tmp_path / "spectrum.fits"
    with fitsio.FITS(str(path), "rw") as fits:
        fits.write(np.zeros(3, dtype=[("FLUX", "f4")]), extname="COADD_B")
    with pytest.raises(ValueError, match=r"spectrum.fits has no CATALOGUE table, so it is no "
                       r"rrnet catalogue \(its HDUs: HDU 0, COADD_B\)"):  # fmt: skip
        read_catalogue(path)
