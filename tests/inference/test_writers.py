"""Parquet, CSV and FITS catalogues hold the same table and the same provenance."""

from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
import polars as pl
import pytest

from rrnet.inference.columns import CATALOGUE_COLUMNS, SPEC_LABELS, schema
from rrnet.inference.writers import (
    FITS_EXTNAME,
    merge_parts,
    read_catalogue,
    sidecar_path,
    write_catalogue,
    write_part,
)

PROVENANCE = {
    "rrnet.version": "9.9.9",
    "rrnet.created": "2024-01-01T00:00:00",
    "rrnet.input": "some/store/with/a/rather/long/path/" + "x" * 80,
    "rrnet.checkpoint_hashes": "abc,def",
}


def _table(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict = {}
    for column in CATALOGUE_COLUMNS:
        if column.dtype.is_float():
            values = rng.normal(size=n)
            values[rng.random(n) < 0.2] = np.nan
            data[column.name] = pl.Series(values).fill_nan(None).cast(column.dtype)
        elif column.dtype == pl.Boolean:
            data[column.name] = pl.Series([True, False, None] * n)[:n]
        elif column.dtype == pl.Utf8:
            words = ["ok", "a much longer string value", None, "x"]
            data[column.name] = pl.Series([words[i % 4] for i in range(n)], dtype=pl.Utf8)
        else:
            values = rng.integers(0, 200, n)
            series = pl.Series(values).cast(column.dtype)
            if column.dtype.is_signed_integer() and column.name != "quality_bits":
                series = pl.Series([None if i % 5 == 0 else v for i, v in enumerate(values)])
            data[column.name] = series.cast(column.dtype)
    data["star_id"] = [f"star{i % 3}" for i in range(n)]
    return pl.DataFrame(data)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "fits"])
def test_merged_parts_round_trip(tmp_path: Path, fmt: str) -> None:
    tables = [_table(7, 0), _table(5, 1), _table(9, 2)]
    parts = []
    for i, table in enumerate(tables):
        parts.append(tmp_path / f"part-{i}.parquet")
        write_part(table, parts[-1])
    out = merge_parts(parts, tmp_path / f"cat.{fmt}", fmt, PROVENANCE, schema=schema())
    back, provenance = read_catalogue(out)
    expected = pl.concat(tables)
    assert back.columns == expected.columns
    assert back.schema == expected.schema
    assert back.equals(expected)
    assert provenance == PROVENANCE
    assert not list(tmp_path.glob(".*.tmp"))


def test_fits_header_has_units_descriptions_and_provenance(tmp_path: Path) -> None:
    out = write_catalogue(
        _table(4, 3), tmp_path / "cat.fits", "fits", PROVENANCE, column_style="paper"
    )
    header = fitsio.read_header(str(out), ext=FITS_EXTNAME)
    names = [header[f"TTYPE{i}"] for i in range(1, header["TFIELDS"] + 1)]
    assert names[: len(CATALOGUE_COLUMNS)] == [c.name for c in CATALOGUE_COLUMNS]
    index = {name: i + 1 for i, name in enumerate(names)}
    assert header[f"TUNIT{index['Teff[K]']}"] == "K"
    # FITS has no spelling of dex: no TUNIT, the unit leads the TTYPE comment instead
    assert f"TUNIT{index['FeH_err']}" not in header
    assert header.get_comment(f"TTYPE{index['FeH_err']}").startswith("[dex] ")
    assert header[f"TUNIT{index['ra']}"] == "deg"
    assert header[f"TCOMM{index['quality_bits']}"].startswith("bitmask of reasons for flag = 0")
    assert header["RRNETVER"] == "9.9.9"
    assert header["INPUT"] == PROVENANCE["rrnet.input"]


def test_fits_header_keeps_every_character_of_a_non_ascii_path(tmp_path: Path) -> None:
    """FITS headers are printable ASCII: cfitsio dropped the other characters of an input
    path ('sp ace/st  re'); they are written as Python escapes instead."""
    provenance = PROVENANCE | {"rrnet.input": "/data/cätalogue ☃/store\tx"}
    out = write_catalogue(_table(2, 1), tmp_path / "cat.fits", "fits", provenance)
    header = fitsio.read_header(str(out), ext=1)
    assert header["INPUT"] == "/data/c\\xe4talogue \\u2603/store\\tx"
    assert header["INPUT"].encode().decode("unicode_escape") == provenance["rrnet.input"]


def test_csv_sidecar_lists_units(tmp_path: Path) -> None:
    import json

    out = write_catalogue(
        _table(3, 4), tmp_path / "cat.csv", "csv", PROVENANCE, column_style="paper"
    )
    side = json.loads(sidecar_path(out).read_text())
    units = {c["name"]: c["unit"] for c in side["columns"]}
    assert all(units[label] in ("K", "dex") for label in SPEC_LABELS)
    assert side["provenance"] == PROVENANCE


def test_empty_catalogue(tmp_path: Path) -> None:
    for fmt in ("parquet", "csv", "fits", "ecsv", "votable"):
        out = merge_parts([], tmp_path / f"empty.{fmt}", fmt, PROVENANCE, schema=schema())
        back, _ = read_catalogue(out)
        assert back.height == 0
        assert back.columns == list(schema())


def test_fits_text_is_ascii(tmp_path: Path) -> None:
    table = pl.DataFrame({"filename": ["Ωmega.fits", "plain.fits"]})
    out = write_catalogue(table, tmp_path / "cat.fits", "fits", PROVENANCE)
    back, _ = read_catalogue(out)
    assert back["filename"].to_list() == ["?mega.fits", "plain.fits"]
