"""Catalogue writers (Parquet, FITS, VOTable, ECSV, CSV) and the matching reader.

Everything is written under a temporary name and renamed into place, so a
catalogue file either is complete or does not exist. Part files are merged with
bounded memory: Parquet and CSV through Polars' streaming sinks, FITS by
appending one part at a time to the table HDU; VOTable and ECSV are written by
astropy from the whole table in memory. FITS text columns are ASCII: other
characters are written as ``?`` (LAMOST identifiers are ASCII).

Every format describes itself: units, descriptions and (VOTable, Parquet) UCDs
per column, and the provenance. Parquet carries pyarrow field metadata and
astropy's own ``table_meta_yaml``; FITS carries TUNIT (FITS-standard units),
TCOMM and astropy's serialized-column comments (``dex`` has no FITS spelling,
so astropy learns it there). Column names follow ``column_style``
(:data:`rrnet.labels.COLUMN_STYLES`): internal (paper) names are renamed on
writing and renamed back on reading.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

import fitsio
import numpy as np
import polars as pl

from rrnet.inference.columns import COLUMNS_BY_NAME, Column, column_meta, per_star_column
from rrnet.inference.provenance import FITS_COMMENTS, FITS_KEYWORDS
from rrnet.io.astro import ColumnInfo, fits_unit, from_astropy, text_widths, to_astropy
from rrnet.labels import DEFAULT_COLUMN_STYLE, internal_columns, styled_columns
from rrnet.utils.atomic import atomic_path

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("parquet", "fits", "votable", "ecsv", "csv")
SUFFIXES: dict[str, str] = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
SUFFIXES |= {".fits": "fits", ".fit": "fits", ".ecsv": "ecsv"}
SUFFIXES |= {".vot": "votable", ".votable": "votable", ".xml": "votable"}
FITS_INT_NULL: int = -1
"""TNULL of signed integer (and boolean, stored as int16) FITS columns."""
FITS_BYTE_NULL: int = 255
"""TNULL of unsigned byte columns (``flag`` is never null in a catalogue; ``variable`` neither)."""
FITS_EXTNAME: str = "CATALOGUE"
_NOT_FITS_TEXT = r"[^\x20-\x7E]"
"""FITS character columns hold printable ASCII (fitsverify flags control characters)."""
VOTABLE_VERSION: str = "1.3"
"""VOTable 1.3 spells units the CDS way, which has ``dex`` (``[-]``); 1.4's VOUnit has not."""

ColumnMeta = Callable[[str], ColumnInfo]
"""Internal column name -> unit, description, UCD."""


def _info(column: Column | None) -> ColumnInfo:
    """A known column's unit, description and UCD; a carried input column has none."""
    if column is None:
        return ColumnInfo(description="input catalogue column")
    return ColumnInfo(column.unit, column.description, column.ucd)


def catalogue_meta(name: str) -> ColumnInfo:
    """Unit, description and UCD of a catalogue column (none for carried input columns)."""
    return _info(column_meta(name))


def per_star_meta(name: str) -> ColumnInfo:
    """:func:`catalogue_meta` for the per-star table (combined exposures)."""
    return _info(per_star_column(name))


COMPRESSION_SUFFIXES: frozenset[str] = frozenset({".gz", ".bz2", ".xz", ".zst", ".zip", ".fz"})
"""Suffixes that promise a compressed file, which no writer here makes."""


def resolve_format(
    path: str | os.PathLike[str], fmt: str | None = None, *, writing: bool = True
) -> str:
    """The format: ``fmt`` if given, else from the suffix, else Parquet.

    ``writing``: a name ending in a compression suffix (``cat.fits.gz``) is refused (it
    got uncompressed Parquet); read back, a gzipped FITS catalogue is FITS (fitsio
    inflates it).
    """
    path = Path(path)
    suffixes = [suffix.lower() for suffix in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] in COMPRESSION_SUFFIXES
    if compressed and writing:
        plain = path.name[: -len(suffixes[-1])]
        raise ValueError(
            f"{path.name}: catalogues are written uncompressed (Parquet and FITS compress "
            f"their data themselves); write {plain or 'another name'} and compress it after"
        )
    named = SUFFIXES.get(path.suffix.lower())
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        if writing and named not in (None, fmt):  # CSV in x.parquet: no reader could open it
            raise ValueError(f"{path.name} names a {named} file, not {fmt}: match the suffix")
        return fmt
    if compressed and len(suffixes) > 1 and SUFFIXES.get(suffixes[-2]) == "fits":
        return "fits"
    return named or "parquet"  # another suffix (cat.txt): Parquet, as documented


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The provenance JSON next to a CSV catalogue (``cat.csv`` -> ``cat.csv.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def atomic_target(path: str | os.PathLike[str]) -> AbstractContextManager[Path]:
    """:func:`rrnet.utils.atomic.atomic_path` with fsync: catalogue parts must survive a crash."""
    return atomic_path(path, fsync=True)


def write_part(
    frame: pl.DataFrame, path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Write one part file (Parquet) atomically; ``metadata``: what made it (key-value)."""
    with atomic_target(path) as tmp:
        frame.write_parquet(tmp, statistics=False, metadata=metadata)


def merge_parts(
    parts: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    fmt: str,
    provenance: dict[str, str],
    *,
    schema: dict[str, pl.DataType],
    meta: ColumnMeta = catalogue_meta,
    column_style: str = DEFAULT_COLUMN_STYLE,
) -> Path:
    """Concatenate part files in order into one catalogue (bounded memory but VOTable/ECSV)."""
    frames = [pl.scan_parquet(p) for p in parts] or [pl.LazyFrame(schema=schema)]
    lazy = pl.concat(frames, how="vertical")
    paths = [Path(p) for p in parts]
    return _write(lazy, Path(out), fmt, provenance, meta, column_style, parts=paths)


def write_catalogue(
    frame: pl.DataFrame,
    out: str | os.PathLike[str],
    fmt: str,
    provenance: dict[str, str],
    *,
    meta: ColumnMeta = catalogue_meta,
    column_style: str = DEFAULT_COLUMN_STYLE,
) -> Path:
    """Write an in-memory table (e.g. the per-star table) in ``fmt`` with provenance."""
    return _write(frame.lazy(), Path(out), fmt, provenance, meta, column_style, frame=frame)


def _write(
    lazy: pl.LazyFrame,
    out: Path,
    fmt: str,
    provenance: dict[str, str],
    meta: ColumnMeta,
    column_style: str,
    *,
    parts: list[Path] | None = None,
    frame: pl.DataFrame | None = None,
) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    names = lazy.collect_schema().names()
    renames = styled_columns(names, column_style)
    info = {renames[n]: meta(n) for n in names}
    lazy = lazy.rename(renames)
    if parts is not None:
        chunks: Iterator[pl.DataFrame] = (pl.read_parquet(p).rename(renames) for p in parts)
    else:
        chunks = iter([frame.rename(renames)] if frame is not None else [])
    if fmt == "parquet":
        schema = _arrow_schema(lazy, info, provenance)
        with atomic_target(out) as tmp:
            lazy.sink_parquet(
                tmp, metadata=dict(_decoded(schema.metadata)), arrow_schema=schema, statistics=False
            )
    elif fmt == "csv":
        dtypes = lazy.collect_schema()
        columns = [
            {"name": n, "unit": i.unit, "description": i.description, "dtype": str(dtypes[n])}
            for n, i in info.items()
        ]
        with atomic_target(sidecar_path(out)) as tmp:
            tmp.write_text(json.dumps({"provenance": provenance, "columns": columns}, indent=1))
        with atomic_target(out) as tmp:
            lazy.sink_csv(tmp)
    elif fmt == "fits":
        lazy, chunks = _signed_wide_ints(lazy, chunks, also=(pl.Int8,))
        with atomic_target(out) as tmp:
            _write_fits(lazy, chunks, tmp, provenance, info, shown_name=out.name)
    else:
        lazy, _ = _signed_wide_ints(lazy, iter([]), also=(pl.Int8,))
        _write_astropy(lazy.collect(), out, fmt, provenance, info)
    return out


_WIDE_UNSIGNED = (pl.UInt16, pl.UInt32, pl.UInt64)


def _signed_wide_ints(
    lazy: pl.LazyFrame, chunks: Iterator[pl.DataFrame], also: tuple[type, ...] = ()
) -> tuple[pl.LazyFrame, Iterator[pl.DataFrame]]:
    """Unsigned integers wider than a byte as Int64: VOTable has no such type (astropy
    refuses uint32) and FITS stores them with an offset and no null value; ``also``
    (Int8: VOTable has no signed byte, FITS stores it with an offset that puts TNULL -1
    outside it) as Int16."""
    schema = lazy.collect_schema()
    wide = [n for n, t in schema.items() if t in _WIDE_UNSIGNED]
    small = [n for n, t in schema.items() if t in also]
    if not wide and not small:
        return lazy, chunks
    huge = _beyond_int64(lazy, [n for n in wide if schema[n] == pl.UInt64])
    casts = [pl.col(n).cast(pl.Utf8 if n in huge else pl.Int64) for n in wide]
    casts += [pl.col(n).cast(pl.Int16) for n in small]
    return lazy.with_columns(casts), (c.with_columns(casts) for c in chunks)


def _beyond_int64(lazy: pl.LazyFrame, names: list[str]) -> set[str]:
    """Carried UInt64 columns holding a value above 2**63 - 1, written as text (exact):
    the cast to Int64 failed after the whole run ("conversion from u64 to i64 failed")."""
    if not names:
        return set()
    top = lazy.select(pl.col(names).max()).collect().row(0)
    huge = {n for n, value in zip(names, top, strict=True) if value is not None and value >= 2**63}
    for name in sorted(huge):
        log.warning("column %s holds integers above 2**63 - 1: written as text", name)
    return huge


def _decoded(metadata: dict[bytes, bytes] | None) -> Iterator[tuple[str, str]]:
    for key, value in (metadata or {}).items():
        yield key.decode(), value.decode()


def _arrow_schema(lazy: pl.LazyFrame, info: dict[str, ColumnInfo], provenance: dict[str, str]):
    """The Parquet schema: field metadata (unit, description, ucd) and table metadata.

    The table metadata holds the provenance, astropy's ``table_meta_yaml`` (astropy
    reads units and descriptions from it) and its ``table::len::<name>`` string widths
    (:func:`rrnet.io.astro.text_widths`).
    """
    import pyarrow as pa
    from astropy.table import meta as astropy_meta

    polars_schema = lazy.collect_schema()
    empty = pl.DataFrame(schema=polars_schema)
    fields = []
    for field in empty.to_arrow().schema:
        column = info[field.name]
        items = {"unit": column.unit, "description": column.description, "ucd": column.ucd}
        fields.append(field.with_metadata({k: v for k, v in items.items() if v}))
    header = to_astropy(empty, info, provenance)
    metadata = dict(provenance)
    metadata["table_meta_yaml"] = "\n".join(astropy_meta.get_yaml_from_table(header))
    metadata.update(text_widths(lazy))
    return pa.schema(fields, metadata=metadata)


def _write_astropy(
    frame: pl.DataFrame,
    out: Path,
    fmt: str,
    provenance: dict[str, str],
    info: dict[str, ColumnInfo],
) -> None:
    """VOTable (astropy.io.votable, BINARY2, INFO provenance) or ECSV (astropy's writer)."""
    if fmt == "ecsv":
        table = to_astropy(frame, info, provenance)
        with atomic_target(out) as tmp:
            table.write(tmp, format="ascii.ecsv", delimiter=",", overwrite=True)
        return
    from astropy.io.votable import writeto
    from astropy.io.votable.exceptions import W03
    from astropy.io.votable.tree import Info, Resource, TableElement, VOTableFile

    table = to_astropy(frame, info, cds_units=True)
    votable = VOTableFile(version=VOTABLE_VERSION)
    resource = Resource()
    votable.resources.append(resource)
    with warnings.catch_warnings():  # paper names ('Teff[K]') get XML IDs 'Teff_K_'
        warnings.simplefilter("ignore", W03)
        element = TableElement.from_table(votable, table)
    for field in element.fields:  # "bit" has no null: a null cap_hit failed STILTS votlint
        if field.datatype == "bit":
            field.datatype = "boolean"
    element.name = "rrnet_catalogue"
    element.description = "LAMOST-RRNet stellar labels (rrnet); provenance in the INFO elements"
    for key, value in provenance.items():
        element.infos.append(Info(name=key, value=value))
    resource.tables.append(element)
    with atomic_target(out) as tmp:
        writeto(votable, str(tmp), tabledata_format="tabledata")


def _header_text(value: str) -> str:
    """A header value FITS can hold (printable ASCII): any other character as a Python
    escape (``\\u2603``), so that a path with a non-ASCII name keeps every character
    (cfitsio dropped them: ``sp ace/st  re``)."""
    return re.sub(_NOT_FITS_TEXT, lambda m: m.group().encode("unicode_escape").decode(), value)


def fits_date(value: str) -> str:
    """An ISO time as FITS DATE wants it: UTC, ``YYYY-MM-DDThh:mm:ss``, no offset."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds")


def _write_fits(
    lazy: pl.LazyFrame,
    chunks: Iterator[pl.DataFrame],
    path: Path,
    provenance: dict[str, str],
    info: dict[str, ColumnInfo],
    *,
    shown_name: str | None = None,
) -> None:
    schema = lazy.collect_schema()
    text = [n for n, t in schema.items() if t in (pl.Utf8, pl.Categorical)]
    strings = [pl.col(n).cast(pl.Utf8) for n in text]
    ints = {n: _fits_null(t) for n, t in schema.items() if t.is_integer()}
    ints = {n: null for n, null in ints.items() if null is not None}
    stats = lazy.select(  # one pass: text widths, what FITS text cannot hold, TNULL clashes
        *(s.str.len_chars().max().alias(n) for s, n in zip(strings, text, strict=True)),
        *(
            s.str.contains(_NOT_FITS_TEXT).sum().alias(f"{n}\0foreign")
            for s, n in zip(strings, text, strict=True)
        ),
        *((pl.col(n) == null).any().alias(f"{n}\0clash") for n, null in ints.items()),
    ).collect()
    widths = {n: max(1, int(stats[n][0] or 0)) for n in text}
    changed = {n: int(stats[f"{n}\0foreign"][0] or 0) for n in text}
    changed = {n: k for n, k in changed.items() if k}
    if changed:  # FITS text is ASCII: say what was changed (a file name no longer matches)
        log.warning(
            "%s: FITS text is printable ASCII; other characters written as '?' in %s "
            "(Parquet, VOTable, ECSV and CSV keep them)",
            shown_name or path.name,
            ", ".join(f"{n} ({k} rows)" for n, k in changed.items()),
        )
    clashes = [n for n in ints if stats[f"{n}\0clash"][0]]
    signed = [n for n in clashes if schema[n].is_signed_integer()]
    widen = [pl.col(n).cast(pl.Int16) for n in clashes if n not in signed]  # UInt8 with 255
    if widen:
        lazy = lazy.with_columns(widen)
        chunks = (c.with_columns(widen) for c in chunks)
        schema = lazy.collect_schema()
    nulls: dict[str, int | None] = {n: _fits_null(t) for n, t in schema.items()}
    for name in signed:  # a real -1 would read back as null: the type's minimum instead
        nulls[name] = int(np.iinfo(pl.Series(dtype=schema[name]).to_numpy().dtype).min)
    names = list(schema.names())
    units = [fits_unit(info[n].unit) for n in names]
    with fitsio.FITS(str(path), "rw", clobber=True) as fits:
        first = True
        for chunk in chunks:
            data = _fits_array(chunk, schema, widths, nulls)
            if first:
                fits.write(data, units=units, extname=FITS_EXTNAME)
                first = False
            else:
                fits[-1].append(data)
        if first:  # no rows at all
            data = _fits_array(pl.DataFrame(schema=schema), schema, widths, nulls)
            fits.write(data, units=units, extname=FITS_EXTNAME)
        hdu = fits[-1]
        hdu.write_key("LONGSTRN", "OGIP 1.0", comment="long strings use the CONTINUE convention")
        for i, name in enumerate(names, start=1):
            column = info[name]
            unit = f"[{column.unit}] " if column.unit and not units[i - 1] else ""
            hdu.write_key(f"TTYPE{i}", name, comment=(unit + column.description)[:47])
            hdu.write_key(f"TCOMM{i}", column.description)
            if nulls[name] is not None:
                hdu.write_key(f"TNULL{i}", nulls[name])
        for key, value in provenance.items():
            keyword = FITS_KEYWORDS.get(key)
            if keyword:
                value = fits_date(value) if keyword == "DATE" else _header_text(value)
                hdu.write_key(keyword, value, comment=FITS_COMMENTS.get(keyword, ""))
        for line in _astropy_fits_comments(schema, info):
            hdu.write_comment(line)


def _astropy_fits_comments(schema: pl.Schema, info: dict[str, ColumnInfo]) -> list[str]:
    """astropy's serialized-column COMMENT block for this table (units, descriptions).

    astropy writes units FITS cannot spell (``dex``) only there, and reads them back
    from there without a warning; other readers see TUNIT, TCOMM and TTYPE comments.
    """
    from astropy.io import fits
    from astropy.table import QTable

    table = QTable(to_astropy(pl.DataFrame(schema=schema), info))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*could not be saved in native FITS format")
        table.write(buffer, format="fits")
    buffer.seek(0)
    with fits.open(buffer) as hdus:
        header = hdus[1].header
    lines = [str(card.value) for card in header.cards if card.keyword == "COMMENT"]
    begin = "--BEGIN-ASTROPY-SERIALIZED-COLUMNS--"
    return lines[lines.index(begin) :] if begin in lines else []


def _fits_null(dtype: pl.DataType) -> int | None:
    """TNULL of an integer FITS column: -1 if signed (booleans too), 255 for bytes."""
    if dtype == pl.Boolean or (dtype.is_integer() and dtype.is_signed_integer()):
        return FITS_INT_NULL
    return FITS_BYTE_NULL if dtype == pl.UInt8 else None


def _fits_array(
    frame: pl.DataFrame, schema: pl.Schema, widths: dict[str, int], nulls: dict[str, int | None]
) -> np.ndarray:
    fields, values = [], []
    for name, dtype in schema.items():
        column = frame.get_column(name)
        if dtype.is_float():
            array = column.fill_null(float("nan")).to_numpy()
        elif dtype == pl.Boolean:
            array = column.cast(pl.Int16).fill_null(FITS_INT_NULL).to_numpy()
        elif dtype.is_integer():
            array = column.cast(dtype).fill_null(nulls[name] or 0).to_numpy()
        else:
            text = column.cast(pl.Utf8).fill_null("").str.replace_all(_NOT_FITS_TEXT, "?")
            encoded = [s.encode("ascii") for s in text.to_list()]  # printable ASCII now
            array = np.array(encoded, dtype=f"S{widths[name]}")
        fields.append((name, array.dtype))
        values.append(array)
    out = np.empty(frame.height, dtype=fields)
    for (name, _), array in zip(fields, values, strict=True):
        out[name] = array
    return out


def read_catalogue(
    path: str | os.PathLike[str], fmt: str | None = None, *, column_style: str | None = None
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Read a catalogue written here back as ``(table, provenance)``, catalogue dtypes restored.

    Column names come back as the internal (paper) names whatever style the file
    uses, or renamed to ``column_style`` when given. FITS, VOTable and ECSV nulls
    (NaN floats, TNULL integers, empty strings, masked entries) become nulls again.
    """
    path = Path(path)
    fmt = resolve_format(path, fmt, writing=False)
    if fmt == "parquet":
        provenance = {
            k: v for k, v in pl.read_parquet_metadata(path).items() if k.startswith("rrnet.")
        }
        table = pl.read_parquet(path)
    elif fmt == "csv":
        sidecar = json.loads(sidecar_path(path).read_text())
        provenance = sidecar["provenance"]
        header = pl.read_csv(path, n_rows=0).columns
        renames = internal_columns(header)
        # carried columns as written (an all-empty column would read as text)
        overrides = {
            c["name"]: _SIMPLE_DTYPES[c["dtype"]]
            for c in sidecar.get("columns", [])
            if c.get("dtype") in _SIMPLE_DTYPES and c["name"] in header
        }
        overrides |= {
            n: COLUMNS_BY_NAME[renames.get(n, n)].dtype
            for n in header
            if renames.get(n, n) in COLUMNS_BY_NAME
        }
        table = pl.read_csv(path, schema_overrides=overrides)
    elif fmt == "fits":
        table, provenance = _read_fits(path)
    else:
        table, provenance = _read_astropy(path, fmt)
    table = table.rename(internal_columns(table.columns))
    table = table.with_columns(
        [
            pl.col(n).cast(COLUMNS_BY_NAME[n].dtype)
            for n in table.columns
            if n in COLUMNS_BY_NAME and table.schema[n] != COLUMNS_BY_NAME[n].dtype
        ]
    )
    if column_style is not None:
        table = table.rename(styled_columns(table.columns, column_style))
    return table, provenance


_SIMPLE_TYPES = (pl.Float32, pl.Float64, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8,
                 pl.UInt16, pl.UInt32, pl.UInt64, pl.Boolean, pl.String)  # fmt: skip
_SIMPLE_DTYPES: dict[str, pl.DataType] = {str(t()): t() for t in _SIMPLE_TYPES}
"""The dtypes a CSV catalogue's sidecar records that CSV reads back as they were."""


def _read_astropy(path: Path, fmt: str) -> tuple[pl.DataFrame, dict[str, str]]:
    from astropy.table import Table

    if fmt == "ecsv":
        table = Table.read(path, format="ascii.ecsv")
        return from_astropy(table), {k: str(v) for k, v in table.meta.items()}
    from astropy.io.votable import parse

    element = parse(str(path)).get_first_table()
    provenance = {info.name: str(info.value) for info in element.infos}
    frame = from_astropy(element.to_table(use_names_over_ids=True))
    text = [n for n, t in frame.schema.items() if t == pl.Utf8]  # VOTable text has no null
    return frame.with_columns(pl.col(text).replace("", None)), provenance


def _read_fits(path: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    with fitsio.FITS(str(path)) as fits:
        if FITS_EXTNAME not in fits:  # fitsio: "extension not found: catalogue"
            names = [hdu.get_extname() or f"HDU {hdu.get_extnum()}" for hdu in fits]
            raise ValueError(
                f"{path.name} has no {FITS_EXTNAME} table, so it is no rrnet catalogue "
                f"(its HDUs: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
            )
        data, header = fits[FITS_EXTNAME].read(), fits[FITS_EXTNAME].read_header()
    columns = {}
    for i, name in enumerate(data.dtype.names, start=1):
        values = data[name]
        if values.dtype.kind in "US":
            series = pl.Series(name, values.astype(str)).str.strip_chars_end().replace("", None)
        else:
            series = pl.Series(name, values.astype(values.dtype.newbyteorder("=")))
            if values.dtype.kind == "f":
                series = series.fill_nan(None)
            elif f"TNULL{i}" in header:
                series = pl.when(series == header[f"TNULL{i}"]).then(None).otherwise(series)
                series = pl.select(series.alias(name)).to_series()
        columns[name] = series
    by_keyword = {v: k for k, v in FITS_KEYWORDS.items()}
    provenance = {by_keyword[k]: str(header[k]) for k in by_keyword if k in header}
    return pl.DataFrame(columns), provenance
