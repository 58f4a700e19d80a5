"""Polars <-> astropy tables, so catalogues can use astropy's ECSV and VOTable code.

Nulls become masked entries (and back); units are astropy units, so astropy's
writers spell them in each format's own convention. ``dex`` is astropy's
logarithmic unit: the VOTable 1.3 (CDS) spelling ``[-]`` and the generic ``dex``
both read back as ``u.dex`` without a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass(frozen=True)
class ColumnInfo:
    """What a writer knows about one output column besides its values."""

    unit: str = ""
    description: str = ""
    ucd: str = ""


def astropy_unit(unit: str, *, cds: bool = False):  # -> astropy.units.UnitBase | None
    """The astropy unit of ``unit`` ('' -> None); ``cds``: dex as ``dex(1)`` (written ``[-]``)."""
    import astropy.units as u

    if not unit:
        return None
    if unit == "dex" and cds:
        return u.dex(u.one)
    return u.Unit(unit)


def fits_unit(unit: str) -> str:
    """``unit`` in the FITS standard's spelling, or '' when FITS has none (``dex``)."""
    import astropy.units as u

    if not unit:
        return ""
    try:
        return u.Unit(unit).to_string("fits")
    except ValueError:
        return ""


def _masked(series: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Values (nulls filled with a harmless placeholder) and the null mask."""
    dtype = series.dtype
    mask = series.is_null().to_numpy()
    if dtype.is_float():
        values = series.fill_null(float("nan")).to_numpy()
    elif dtype.is_integer():
        values = series.fill_null(0).to_numpy()
    elif dtype == pl.Boolean:
        values = series.fill_null(False).to_numpy()
    else:
        strings = series.cast(pl.Utf8).fill_null("")
        width = max(1, int(strings.str.len_chars().max() or 0))
        values = np.array(strings.to_list(), dtype=f"U{width}")
    return values, mask


def to_astropy(
    frame: pl.DataFrame,
    info: Mapping[str, ColumnInfo],
    meta: Mapping[str, str] | None = None,
    *,
    cds_units: bool = False,
):  # -> astropy.table.Table
    """An astropy Table of ``frame``: masked where null, with units, descriptions, UCDs."""
    from astropy.table import Column, MaskedColumn, Table

    table = Table(meta=dict(meta or {}))
    for name in frame.columns:
        values, mask = _masked(frame.get_column(name))
        column_info = info.get(name, ColumnInfo())
        kind = MaskedColumn if mask.any() else Column
        kwargs = {"mask": mask} if mask.any() else {}
        column = kind(
            values,
            name=name,
            unit=astropy_unit(column_info.unit, cds=cds_units),
            description=column_info.description or None,
            **kwargs,
        )
        if column_info.ucd:
            column.meta["ucd"] = column_info.ucd
        table.add_column(column)
    return table


def from_astropy(table) -> pl.DataFrame:
    """A Polars DataFrame of an astropy Table: masked entries become nulls."""
    columns = []
    for name in table.colnames:
        column = table[name]
        mask = np.ma.getmaskarray(column)
        values = np.asarray(column.filled() if hasattr(column, "filled") else column)
        if values.dtype.kind == "S":
            values = np.char.decode(values, "utf-8")
        series = pl.Series(name, values.astype(values.dtype.newbyteorder("=")))
        if mask.any():
            series = pl.select(
                pl.when(pl.Series(mask)).then(None).otherwise(series).alias(name)
            ).to_series()
        columns.append(series)
    return pl.DataFrame(columns)


def text_widths(lazy: pl.LazyFrame) -> dict[str, str]:
    """astropy's ``table::len::<name>`` Parquet metadata: the width of each text column.

    astropy measures a text column itself unless told, and cannot measure a null (its
    Parquet reader then fails); told, it reads a null as the text ``None``, so a column
    with nulls is at least 4 wide (or ``None`` would be cut to ``N``, which looks like a
    value). The metadata must be in the Arrow schema (``sink_parquet(arrow_schema=...)``),
    which is what pyarrow and astropy read.
    """
    text = [n for n, t in lazy.collect_schema().items() if t == pl.Utf8]
    if not text:
        return {}
    widths = lazy.select(
        *(pl.col(n).str.len_chars().max().alias(n) for n in text),
        *(pl.col(n).null_count().alias(f"{n}\0nulls") for n in text),
    ).collect()
    out = {}
    for name in text:
        longest = int(widths[name][0] or 0)
        nulls = int(widths[f"{name}\0nulls"][0])
        out[f"table::len::{name}"] = str(max(longest, len("None") if nulls else 1))
    return out


def read_astropy_table(path, fmt: str) -> pl.DataFrame:
    """An ECSV or VOTable file (by ``fmt``) read by astropy, as a Polars DataFrame.

    VOTable columns keep their ``name`` (not their XML ``ID``).
    """
    from astropy.table import Table

    if fmt == "ecsv":
        return from_astropy(Table.read(path, format="ascii.ecsv"))
    return from_astropy(Table.read(path, format="votable", use_names_over_ids=True))
