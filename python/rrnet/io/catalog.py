"""Input catalogues (what to preprocess) and output tables, with Polars.

An input catalogue names one spectrum per row: ``filename`` (relative to a data
directory), ``extname_blue``, ``extname_red`` and the radial velocity ``rv``
[km/s] (the column name is configurable). ``obsid``, ``ra``, ``dec`` and any
other columns are carried through to every output unchanged.

Bad values in a row (an empty filename, a non-numeric rv) are *not* errors
here: they are cast to null and the pipeline gives that row a status. Only a
catalogue that cannot be used at all (unreadable, missing a required column)
raises :class:`CatalogError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rrnet.io.astro import read_astropy_table, text_widths
from rrnet.utils.atomic import atomic_path

REQUIRED_COLUMNS: tuple[str, ...] = ("filename", "extname_blue", "extname_red")
"""Required besides the RV column."""

TABLE_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".fits": "fits",
    ".fit": "fits",
    ".ecsv": "ecsv",
    ".vot": "votable",
    ".votable": "votable",
}
"""File suffix -> table format understood by :func:`read_table` and :func:`write_table`."""


class CatalogError(ValueError):
    """A catalogue or table that cannot be used at all (the message is one line)."""


def table_format(path: str | os.PathLike[str]) -> str:
    """``"csv"``, ``"parquet"``, ``"fits"``, ``"ecsv"`` or ``"votable"`` from the suffix.

    CatalogError for any other suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        known = ", ".join(sorted(TABLE_FORMATS))
        raise CatalogError(
            f"unknown table format {suffix or '(no suffix)'!r} of {path}: use {known}"
        )
    return TABLE_FORMATS[suffix]


READABLE_COMPRESSED: tuple[str, ...] = ("csv", "fits")
"""Formats :func:`read_table` also reads gzipped (``.csv.gz``, ``.fits.gz``), as surveys
distribute their catalogues."""


def input_format(path: str | os.PathLike[str]) -> str:
    """The format of a table to read: :func:`table_format`, or that of the name under a
    ``.gz`` suffix for CSV and FITS (``dr7_mrs.csv.gz``, ``allStar.fits.gz``)."""
    path = Path(path)
    if path.suffix.lower() == ".gz":
        inner = TABLE_FORMATS.get(Path(path.stem).suffix.lower())
        if inner in READABLE_COMPRESSED:
            return inner
        raise CatalogError(
            f"cannot read {path}: gzipped tables are read as .csv.gz or .fits.gz; "
            "decompress it, or name it by its format"
        )
    return table_format(path)


def key_columns(key: str | Sequence[str]) -> tuple[str, ...]:
    """Join-key column names from ``"obsid,extname_blue"`` or a sequence (a plain string is
    one comma list, never its characters)."""
    names = key.split(",") if isinstance(key, str) else [str(k) for k in key]
    return tuple(n.strip() for n in names if n.strip())


def key_renames(columns: Sequence[str], key: Sequence[str]) -> dict[str, str]:
    """Renames of join-key columns a table has in another case only (``OBSID`` for the key
    ``obsid``, as surveys write them); none where the match is missing or ambiguous."""
    rename = {}
    for k in key:
        if k not in columns:
            same = [c for c in columns if c.lower() == k.lower()]
            if len(same) == 1:
                rename[same[0]] = k
    return rename


def read_table(path: str | os.PathLike[str], text_columns: Sequence[str] = ()) -> pl.DataFrame:
    """Read a CSV, Parquet, FITS, ECSV or VOTable table, CSV and FITS also gzipped
    (CatalogError if unreadable).

    ``text_columns`` (any case): CSV columns read as text as written, not as numbers (ids
    such as '00235' that a text key must match: read as 235 they matched nothing)."""
    path = Path(path)
    fmt = input_format(path)
    if not path.is_file():
        raise CatalogError(f"catalogue not found: {path}")
    try:
        if fmt == "csv":
            # types from every row: a survey table's first 'n/a' or text id after row
            # 10,000 refused the whole file ("could not parse `n/a` as dtype f64")
            wanted = {c.lower() for c in text_columns}
            header = pl.read_csv(path, n_rows=0).columns if wanted else []
            text = {c: pl.Utf8 for c in header if c.strip().lower() in wanted}
            table = pl.read_csv(path, infer_schema_length=None, schema_overrides=text or None)
            return _no_repeated_names(table, path)
        if fmt == "parquet":
            return pl.read_parquet(path)
        if fmt in ("ecsv", "votable"):
            return read_astropy_table(path, fmt)
        return _read_fits_table(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CatalogError(f"cannot read {fmt} table {path}: {first_line}") from exc


def _no_repeated_names(table: pl.DataFrame, path: Path) -> pl.DataFrame:
    """The table, or CatalogError when its CSV header names a column twice: polars
    renames the second ``rv`` to ``rv_duplicated_0`` and the first was used unasked."""
    for name in table.columns:
        match = re.fullmatch(r"(.+)_duplicated_\d+", name)
        if match and match.group(1) in table.columns:
            raise CatalogError(
                f"{path}: column {match.group(1)!r} appears more than once in the header: "
                "rename or drop one"
            )
    return table


def _read_fits_table(path: Path) -> pl.DataFrame:
    import fitsio

    with fitsio.FITS(str(path)) as fits:
        hdu = fits[1]
        return fits_rows_frame(hdu.read(), fits_nulls(hdu))


def fits_nulls(hdu: Any) -> dict[str, int]:
    """Column name -> its TNULL value, for the integer columns of a fitsio table HDU that
    declare one: fitsio returns those cells as the number itself."""
    header = hdu.read_header()
    out = {}
    for i, name in enumerate(hdu.get_colnames(), start=1):
        value = header.get(f"TNULL{i}")
        if isinstance(value, int) and not isinstance(value, bool):
            out[name] = value
    return out


def fits_rows_frame(data: np.ndarray, nulls: dict[str, int] | None = None) -> pl.DataFrame:
    """Rows of a FITS binary table (fitsio's structured array) as a DataFrame: text
    decoded and right-stripped, numbers in native byte order, and integer cells equal
    to their column's TNULL (``nulls``) null: they had been read as labels (Teff of
    999999 K) and as star ids."""
    columns: dict[str, Any] = {}
    for name in data.dtype.names or ():
        values = data[name]
        if values.dtype.kind == "S":
            values = np.char.rstrip(np.char.decode(values, "ascii"))
        values = values.astype(values.dtype.newbyteorder("="))
        null = (nulls or {}).get(name)
        if null is not None and values.dtype.kind in "iu" and values.ndim == 1:
            columns[name] = pl.Series(name, values).set(pl.Series(values == null), None)
        else:
            columns[name] = values
    return pl.DataFrame(columns)


def validate_catalog(
    catalog: pl.DataFrame,
    *,
    rv_column: str = "rv",
    require_rv: bool = True,
    reserved: tuple[str, ...] = (),
) -> pl.DataFrame:
    """Check the required columns and normalise their types.

    ``filename`` and the extension names become strings (empty -> null), the RV
    column and its error column ``<rv_column>_err`` become Float64 (unparsable ->
    null). Other columns are untouched. With ``require_rv=False`` (no RV
    correction) the RV column may be absent.

    Raises
    ------
    CatalogError
        A required column is missing, or a column clashes with ``reserved`` (the
        output columns the pipeline adds).
    """
    required = (*REQUIRED_COLUMNS, rv_column) if require_rv else REQUIRED_COLUMNS
    missing = [c for c in required if c not in catalog.columns]
    if missing:
        raise CatalogError(
            f"catalogue lacks required column(s) {', '.join(missing)} "
            f"(has: {', '.join(catalog.columns) or 'none'}){_lamost_hint(catalog.columns)}"
        )
    clashes = [c for c in catalog.columns if c in reserved]
    if clashes:
        raise CatalogError(
            f"catalogue column(s) {', '.join(clashes)} clash with output columns; rename them"
        )
    text = [
        pl.col(c).cast(pl.Utf8, strict=False).str.strip_chars().replace("", None).alias(c)
        for c in REQUIRED_COLUMNS
    ]
    if rv_column not in catalog.columns:  # allowed only without RV correction
        return catalog.with_columns(text)
    if rv_column in REQUIRED_COLUMNS:  # it would be parsed twice, as text and as a number
        raise CatalogError(f"the RV column cannot be {rv_column!r}: name the catalogue's RV column")
    # The RV and its error (``<rv>_err``) as numbers, also when a CSV column is all
    # empty (which Polars reads as text): the manifest must not carry a text RV error.
    numeric = [c for c in (rv_column, f"{rv_column}_err") if c in catalog.columns]
    return catalog.with_columns([*text, *(_as_float(catalog, c) for c in numeric)])


LAMOST_FIELDS = frozenset({"obsid", "lmjd", "planid", "spid", "fiberid", "band"})
"""Columns of LAMOST's MRS general catalogue that an rrnet catalogue does not need."""


def _lamost_hint(columns: list[str]) -> str:
    """Where the table is LAMOST's own catalogue (one row per band), say how to make
    rrnet's (one row per spectrum): a '|'-separated CSV reads as one joined column."""
    names = {part.strip().lower() for c in columns for part in c.split("|")}
    if names >= LAMOST_FIELDS:
        return (
            "; this is LAMOST's MRS general catalogue (one row per band): make rrnet's "
            "input from it with 'rrnet-catalog from-lamost'"
        )
    return ""


def _as_float(catalog: pl.DataFrame, column: str) -> pl.Expr:
    """``column`` as Float64 (text stripped first; unparsable -> null)."""
    value = pl.col(column)
    if catalog.schema[column] == pl.Utf8:
        value = value.str.strip_chars()
    return value.cast(pl.Float64, strict=False).alias(column)


def read_catalog(
    path: str | os.PathLike[str],
    *,
    rv_column: str = "rv",
    require_rv: bool = True,
    reserved: tuple[str, ...] = (),
) -> pl.DataFrame:
    """:func:`read_table` then :func:`validate_catalog`."""
    return validate_catalog(
        read_table(path), rv_column=rv_column, require_rv=require_rv, reserved=reserved
    )


def write_table(
    table: pl.DataFrame,
    path: str | os.PathLike[str],
    units: Mapping[str, str] | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> Path:
    """Write CSV, Parquet or FITS (by suffix) atomically: a temporary name, then os.replace.

    FITS tables store nulls as NaN (floats), a declared ``TNULLn`` (integers: -1, or
    the type's minimum when a value is -1; booleans with nulls become 1/0 integers) or
    empty strings; ``units`` and ``descriptions`` (column -> text) become its ``TUNITn``
    and the ``TTYPEn`` comments.
    """
    path = Path(path)
    fmt = table_format(path)
    with atomic_path(path) as tmp:
        if fmt == "csv":
            table.write_csv(tmp)
        elif fmt == "parquet" and pl.Object in table.dtypes:  # polars' own error for it
            table.write_parquet(tmp, statistics=False)
        elif fmt == "parquet":  # with the string widths astropy needs to read nulls
            schema = pl.DataFrame(schema=table.schema).to_arrow().schema
            widths = text_widths(table.lazy())
            table.lazy().sink_parquet(
                tmp, metadata=widths, arrow_schema=schema.with_metadata(widths), statistics=False
            )
        elif fmt == "fits":
            _write_fits_table(table, tmp, units or {}, descriptions or {})
        else:
            raise CatalogError(f"write_table writes CSV, Parquet or FITS, not {fmt}: {path}")
    return path


def _write_fits_table(
    table: pl.DataFrame, path: Path, units: Mapping[str, str], descriptions: Mapping[str, str]
) -> None:
    import fitsio

    names, arrays, nulls = [], [], {}
    for name, dtype in table.schema.items():
        column = table.get_column(name)
        if dtype == pl.Boolean and column.null_count():  # FITS logicals: no null in fitsio
            column = column.cast(pl.Int64)  # 1, 0 and the TNULL below
            dtype = column.dtype
        if dtype.is_float():
            values = column.fill_null(float("nan")).to_numpy().astype(np.float64)
        elif dtype.is_integer():
            column = column.cast(pl.Int64) if dtype.is_unsigned_integer() else column
            if column.null_count():  # -1 read as a real lmjm by astropy and STILTS
                nulls[name] = -1 if not (column == -1).any() else int(np.iinfo(np.int64).min)
                column = column.cast(pl.Int64)
            values = column.fill_null(nulls.get(name, 0)).to_numpy()
        elif dtype == pl.Boolean:
            values = column.to_numpy()
        else:
            values = np.array(column.cast(pl.Utf8).fill_null("").to_list(), dtype=str)
            width = max(1, max((len(v.encode()) for v in values), default=1))
            values = np.char.encode(values, "utf-8").astype(f"S{width}")
        names.append(name)
        arrays.append(values)
    path.unlink(missing_ok=True)  # mkstemp created it; fitsio refuses to clobber silently
    with fitsio.FITS(str(path), "rw", clobber=True) as fits:
        fits.write(arrays, names=names, units=[units.get(n, "") for n in names])
        hdu = fits[-1]
        for i, name in enumerate(names, start=1):
            if name in nulls:
                hdu.write_key(f"TNULL{i}", nulls[name], comment="null value")
            if name in descriptions:  # TCOMM: what TOPCAT/STILTS show as the description
                hdu.write_key(f"TTYPE{i}", name, comment=descriptions[name][:47])
                hdu.write_key(f"TCOMM{i}", descriptions[name])
