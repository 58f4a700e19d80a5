"""The catalogue schema: column names, order, dtypes, units and descriptions.

One place defines the LAMOST-RRNet catalogue (method §5, the paper's Table 3)
so that every writer (Parquet, CSV, FITS), the documentation and the tests agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from rrnet.labels import ALL_LABELS

SPEC_LABELS: tuple[str, ...] = ALL_LABELS
"""Labels in catalogue order (method §5): Teff, log g, then the 15 [X/H]."""

ID_COLUMNS: tuple[str, ...] = (
    "obsid",
    "filename",
    "ra",
    "dec",
    "extname_blue",
    "extname_red",
)
"""Identifiers copied from the input catalogue (null where the catalogue lacks them)."""


@dataclass(frozen=True)
class Column:
    """One catalogue column: Polars dtype, physical unit (FITS TUNIT) and description."""

    name: str
    dtype: pl.DataType
    unit: str
    description: str


def _label_unit(label: str) -> str:
    return "K" if label == "Teff[K]" else "dex"


def _label_text(label: str) -> str:
    if label == "Teff[K]":
        return "effective temperature"
    if label == "Logg":
        return "surface gravity log10(g / cm s^-2)"
    return f"abundance [{label[:-1]}/H]"


def _label_columns() -> list[Column]:
    out = []
    for label in SPEC_LABELS:
        unit, text = _label_unit(label), _label_text(label)
        out.append(Column(label, pl.Float32, unit, f"RRNet ensemble mean {text}"))
        out.append(
            Column(
                f"{label}_err",
                pl.Float32,
                unit,
                f"1-sigma uncertainty of {label}: ensemble (eq. 3) x S/N calibration",
            )
        )
    return out


SPEC_COLUMNS: tuple[Column, ...] = (
    Column("obsid", pl.Int64, "", "LAMOST observation id"),
    Column("filename", pl.Utf8, "", "spectrum file name, relative to the data directory"),
    Column("ra", pl.Float64, "deg", "right ascension (J2000)"),
    Column("dec", pl.Float64, "deg", "declination (J2000)"),
    Column("extname_blue", pl.Utf8, "", "FITS extension of the blue arm"),
    Column("extname_red", pl.Utf8, "", "FITS extension of the red arm"),
    Column(
        "snr_blue",
        pl.Float32,
        "",
        "S/N of the blue arm: header keyword SNR (median flux*sqrt(ivar) if the header has none)",
    ),
    Column(
        "snr_red",
        pl.Float32,
        "",
        "S/N of the red arm: header keyword SNR (median flux*sqrt(ivar) if the header has none)",
    ),
    *_label_columns(),
    Column("flag", pl.UInt8, "", "1 = recommended (quality_bits == 0), 0 = not recommended"),
)
"""Method §5 (paper Table 3), in order."""

STATUS_COLUMNS: tuple[Column, ...] = (
    Column("status", pl.Utf8, "", "'ok', or why the row has no labels (preprocessing code)"),
    Column("reason", pl.Utf8, "", "human-readable reason for status (and quality_bits)"),
    Column("quality_bits", pl.Int32, "", "bitmask of reasons for flag = 0 (docs/catalogue.md)"),
)

DIAGNOSTIC_COLUMNS: tuple[Column, ...] = (
    Column("row", pl.Int64, "", "0-based row index in the input catalogue"),
    Column(
        "n_outliers",
        pl.Int32,
        "",
        "bad pixels of the resampled flux: upward spikes (median-filter test) and flux <= 0",
    ),
    Column("max_outlier_run", pl.Int32, "", "longest run of consecutive bad pixels (per arm)"),
    Column("cap_hit", pl.Boolean, "", "continuum fit stopped at its iteration cap"),
    Column("ood_score", pl.Float32, "", "out-of-distribution score / its training threshold"),
    Column(
        "disagreement",
        pl.Float32,
        "",
        "max over labels of member-mean spread / mean predicted member sigma",
    ),
)
"""Per-row diagnostics after the quality columns (see docs/catalogue.md)."""

CATALOGUE_COLUMNS: tuple[Column, ...] = SPEC_COLUMNS + STATUS_COLUMNS + DIAGNOSTIC_COLUMNS
"""Every fixed column, in order; carried catalogue columns (e.g. star_id) follow."""

COLUMNS_BY_NAME: dict[str, Column] = {c.name: c for c in CATALOGUE_COLUMNS}


def schema() -> dict[str, pl.DataType]:
    """The fixed part of the catalogue schema, in column order."""
    return {c.name: c.dtype for c in CATALOGUE_COLUMNS}


def value_columns(label: str) -> tuple[str, str]:
    """The value and error column of ``label``."""
    return label, f"{label}_err"
