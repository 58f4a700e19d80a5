"""Catalogue writers (Parquet, CSV, FITS) and the matching reader.

Everything is written under a temporary name and renamed into place, so a
catalogue file either is complete or does not exist. Part files are merged with
bounded memory: Parquet and CSV through Polars' streaming sinks, FITS by
appending one part at a time to the table HDU. FITS text columns are ASCII:
other characters are written as ``?`` (LAMOST identifiers are ASCII).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import fitsio
import numpy as np
import polars as pl

from rrnet.inference.columns import COLUMNS_BY_NAME
from rrnet.inference.provenance import FITS_COMMENTS, FITS_KEYWORDS
from rrnet.utils.atomic import atomic_path

FORMATS: tuple[str, ...] = ("parquet", "csv", "fits")
SUFFIXES: dict[str, str] = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
SUFFIXES |= {".fits": "fits", ".fit": "fits"}
FITS_INT_NULL: int = -1
"""TNULL of signed integer (and boolean, stored as int16) FITS columns."""
FITS_EXTNAME: str = "CATALOGUE"

ColumnMeta = Callable[[str], tuple[str, str]]
"""Column name -> (unit, description)."""


def catalogue_meta(name: str) -> tuple[str, str]:
    """Unit and description of a catalogue column ('' for carried input columns)."""
    column = COLUMNS_BY_NAME.get(name)
    return (column.unit, column.description) if column else ("", "input catalogue column")


def resolve_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The output format: ``fmt`` if given, else from the suffix, else Parquet."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        return fmt
    return SUFFIXES.get(Path(path).suffix.lower(), "parquet")


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The provenance JSON next to a CSV catalogue (``cat.csv`` -> ``cat.csv.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def atomic_target(path: str | os.PathLike[str]) -> AbstractContextManager[Path]:
    """:func:`rrnet.utils.atomic.atomic_path` with fsync: catalogue parts must survive a crash."""
    return atomic_path(path, fsync=True)


def write_part(frame: pl.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write one part file (Parquet) atomically."""
    with atomic_target(path) as tmp:
        frame.write_parquet(tmp, statistics=False)


def merge_parts(
    parts: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    fmt: str,
    provenance: dict[str, str],
    *,
    schema: dict[str, pl.DataType],
    meta: ColumnMeta = catalogue_meta,
) -> Path:
    """Concatenate part files in order into one catalogue (bounded memory)."""
    frames = [pl.scan_parquet(p) for p in parts] or [pl.LazyFrame(schema=schema)]
    lazy = pl.concat(frames, how="vertical")
    return _write(lazy, Path(out), fmt, provenance, meta, parts=[Path(p) for p in parts])


def write_catalogue(
    frame: pl.DataFrame,
    out: str | os.PathLike[str],
    fmt: str,
    provenance: dict[str, str],
    *,
    meta: ColumnMeta = catalogue_meta,
) -> Path:
    """Write an in-memory table (e.g. the per-star table) in ``fmt`` with provenance."""
    return _write(frame.lazy(), Path(out), fmt, provenance, meta, frame=frame)


def _write(
    lazy: pl.LazyFrame,
    out: Path,
    fmt: str,
    provenance: dict[str, str],
    meta: ColumnMeta,
    *,
    parts: list[Path] | None = None,
    frame: pl.DataFrame | None = None,
) -> Path:
    if fmt == "parquet":
        with atomic_target(out) as tmp:
            lazy.sink_parquet(tmp, metadata=provenance, statistics=False)
    elif fmt == "csv":
        columns = [
            {"name": n, "unit": meta(n)[0], "description": meta(n)[1]}
            for n in lazy.collect_schema().names()
        ]
        with atomic_target(sidecar_path(out)) as tmp:
            tmp.write_text(json.dumps({"provenance": provenance, "columns": columns}, indent=1))
        with atomic_target(out) as tmp:
            lazy.sink_csv(tmp)
    elif fmt == "fits":
        if parts is not None:
            chunks: Iterator[pl.DataFrame] = (pl.read_parquet(p) for p in parts)
        else:
            chunks = iter([frame] if frame is not None else [])
        with atomic_target(out) as tmp:
            _write_fits(lazy, chunks, tmp, provenance, meta)
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return out


def _write_fits(
    lazy: pl.LazyFrame,
    chunks: Iterator[pl.DataFrame],
    path: Path,
    provenance: dict[str, str],
    meta: ColumnMeta,
) -> None:
    schema = lazy.collect_schema()
    text = [n for n, t in schema.items() if t in (pl.Utf8, pl.Categorical)]
    lengths = lazy.select(pl.col(text).cast(pl.Utf8).str.len_chars().max()).collect()
    widths = {n: max(1, int(lengths[n][0] or 0)) for n in text}
    names = list(schema.names())
    with fitsio.FITS(str(path), "rw", clobber=True) as fits:
        first = True
        for chunk in chunks:
            data = _fits_array(chunk, schema, widths)
            if first:
                units = [meta(n)[0] for n in names]
                fits.write(data, units=units, extname=FITS_EXTNAME)
                first = False
            else:
                fits[-1].append(data)
        if first:  # no rows at all
            data = _fits_array(pl.DataFrame(schema=schema), schema, widths)
            fits.write(data, units=[meta(n)[0] for n in names], extname=FITS_EXTNAME)
        hdu = fits[-1]
        for i, name in enumerate(names, start=1):
            description = meta(name)[1]
            hdu.write_key(f"TTYPE{i}", name, comment=description[:47])
            hdu.write_key(f"TCOMM{i}", description)
            if _fits_int_null(schema[name]):
                hdu.write_key(f"TNULL{i}", FITS_INT_NULL)
        for key, value in provenance.items():
            keyword = FITS_KEYWORDS.get(key)
            if keyword:
                hdu.write_key(keyword, value, comment=FITS_COMMENTS.get(keyword, ""))


def _fits_int_null(dtype: pl.DataType) -> bool:
    return dtype == pl.Boolean or (dtype.is_integer() and dtype.is_signed_integer())


def _fits_array(frame: pl.DataFrame, schema: pl.Schema, widths: dict[str, int]) -> np.ndarray:
    fields, values = [], []
    for name, dtype in schema.items():
        column = frame.get_column(name)
        if dtype.is_float():
            array = column.fill_null(float("nan")).to_numpy()
        elif dtype == pl.Boolean:
            array = column.cast(pl.Int16).fill_null(FITS_INT_NULL).to_numpy()
        elif dtype.is_integer():
            fill = FITS_INT_NULL if dtype.is_signed_integer() else 0
            array = column.fill_null(fill).to_numpy()
        else:
            strings = column.cast(pl.Utf8).fill_null("").to_list()
            encoded = [s.encode("ascii", "replace") for s in strings]  # FITS text is ASCII
            array = np.array(encoded, dtype=f"S{widths[name]}")
        fields.append((name, array.dtype))
        values.append(array)
    out = np.empty(frame.height, dtype=fields)
    for (name, _), array in zip(fields, values, strict=True):
        out[name] = array
    return out


def read_catalogue(
    path: str | os.PathLike[str], fmt: str | None = None
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Read a catalogue written here back as ``(table, provenance)``, catalogue dtypes restored.

    FITS nulls (NaN floats, TNULL integers, empty strings) become nulls again.
    """
    path = Path(path)
    fmt = resolve_format(path, fmt)
    if fmt == "parquet":
        provenance = {
            k: v for k, v in pl.read_parquet_metadata(path).items() if k.startswith("rrnet.")
        }
        return pl.read_parquet(path), provenance
    if fmt == "csv":
        sidecar = json.loads(sidecar_path(path).read_text())
        overrides = {
            n: COLUMNS_BY_NAME[n].dtype
            for n in pl.read_csv(path, n_rows=0).columns
            if n in COLUMNS_BY_NAME
        }
        return pl.read_csv(path, schema_overrides=overrides), sidecar["provenance"]
    return _read_fits(path)


def _read_fits(path: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    data, header = fitsio.read(str(path), ext=FITS_EXTNAME, header=True)
    columns = {}
    for name in data.dtype.names:
        values = data[name]
        if values.dtype.kind in "US":
            series = pl.Series(name, values.astype(str)).str.strip_chars_end().replace("", None)
        else:
            series = pl.Series(name, values.astype(values.dtype.newbyteorder("=")))
            if values.dtype.kind == "f":
                series = series.fill_nan(None)
            elif values.dtype.kind == "i":
                series = pl.when(series == FITS_INT_NULL).then(None).otherwise(series)
                series = pl.select(series.alias(name)).to_series()
        known = COLUMNS_BY_NAME.get(name)
        if known is not None:
            series = series.cast(known.dtype)
        columns[name] = series
    by_keyword = {v: k for k, v in FITS_KEYWORDS.items()}
    provenance = {by_keyword[k]: str(header[k]) for k in by_keyword if k in header}
    return pl.DataFrame(columns), provenance
