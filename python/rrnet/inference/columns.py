"""The catalogue schema: column names, order, dtypes, units and descriptions.

One place defines the LAMOST-RRNet catalogue (method §5, the paper's Table 3)
so that every writer (Parquet, FITS, VOTable, ECSV, CSV), the documentation and the
tests agree. Columns carry the internal (paper) label names; the names a catalogue
file uses come from :data:`rrnet.labels.IDENTIFIER_NAMES` (``--column-style``).
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
    """One catalogue column (internal name): Polars dtype, unit, description and UCD.

    ``unit`` is an astropy/VOUnit string (``K``, ``deg``, ``dex``; ``""``: none) and
    ``ucd`` the IVOA Unified Content Descriptor the VOTable carries.
    """

    name: str
    dtype: pl.DataType
    unit: str
    description: str
    ucd: str = ""


def _label_unit(label: str) -> str:
    return "K" if label == "Teff[K]" else "dex"


def _label_ucd(label: str) -> str:
    if label == "Teff[K]":
        return "phys.temperature.effective"
    if label == "Logg":
        return "phys.gravity"
    return "phys.abund.Fe" if label == "FeH" else "phys.abund"


def _label_text(label: str) -> str:
    if label == "Teff[K]":
        return "effective temperature"
    if label == "Logg":
        return "surface gravity log10(g / cm s^-2)"
    return f"abundance [{label[:-1]}/H]"


def _label_columns() -> list[Column]:
    out = []
    for label in SPEC_LABELS:
        unit, text, ucd = _label_unit(label), _label_text(label), _label_ucd(label)
        out.append(Column(label, pl.Float32, unit, f"RRNet ensemble mean {text}", ucd))
        out.append(
            Column(
                f"{label}_err",
                pl.Float32,
                unit,
                f"1-sigma uncertainty of the {text}: ensemble (eq. 3) x S/N calibration "
                "(eq. 3 alone where the provenance says errors: raw)",
                f"stat.error;{ucd}",
            )
        )
    return out


SPEC_COLUMNS: tuple[Column, ...] = (
    Column("obsid", pl.Int64, "", "LAMOST observation id", "meta.id;meta.main"),
    Column(
        "filename",
        pl.Utf8,
        "",
        "spectrum file name, relative to the data directory",
        "meta.id;meta.file",
    ),
    Column("ra", pl.Float64, "deg", "right ascension (J2000)", "pos.eq.ra;meta.main"),
    Column("dec", pl.Float64, "deg", "declination (J2000)", "pos.eq.dec;meta.main"),
    Column("extname_blue", pl.Utf8, "", "FITS extension of the blue arm", "meta.id.part"),
    Column("extname_red", pl.Utf8, "", "FITS extension of the red arm", "meta.id.part"),
    Column(
        "snr_blue",
        pl.Float32,
        "",
        "S/N of the blue arm: header keyword SNR, else median flux*sqrt(ivar), the lower "
        "when they differ by over 2x; null when no pixel has a finite positive ivar",
        "stat.snr",
    ),
    Column(
        "snr_red",
        pl.Float32,
        "",
        "S/N of the red arm: header keyword SNR, else median flux*sqrt(ivar), the lower "
        "when they differ by over 2x; null when no pixel has a finite positive ivar",
        "stat.snr",
    ),
    *_label_columns(),
    Column(
        "flag",
        pl.UInt8,
        "",
        "1 = recommended (quality_bits == 0), 0 = not recommended",
        "meta.code.qual",
    ),
)
"""Method §5 (paper Table 3), in order."""

STATUS_COLUMNS: tuple[Column, ...] = (
    Column(
        "status",
        pl.Utf8,
        "",
        "'ok', or why the row has no labels (preprocessing code)",
        "meta.code.status",
    ),
    Column(
        "reason", pl.Utf8, "", "human-readable reason for status (and quality_bits)", "meta.note"
    ),
    Column(
        "quality_bits",
        pl.Int32,
        "",
        "bitmask of reasons for flag = 0 (docs/catalogue.md)",
        "meta.code.qual",
    ),
)

DIAGNOSTIC_COLUMNS: tuple[Column, ...] = (
    Column("row", pl.Int64, "", "0-based row index in the input catalogue", "meta.record"),
    Column(
        "n_outliers",
        pl.Int32,
        "",
        "bad pixels of the resampled flux: upward spikes (median-filter test) and flux <= 0",
        "meta.number",
    ),
    Column(
        "max_outlier_run",
        pl.Int32,
        "",
        "longest run of consecutive bad pixels (per arm)",
        "meta.number",
    ),
    Column("cap_hit", pl.Boolean, "", "continuum fit stopped at its iteration cap", "meta.code"),
    Column(
        "ood_score",
        pl.Float32,
        "",
        "out-of-distribution score / its threshold (> 1 sets quality bit 4, value 16)",
        "stat.value",
    ),
    Column(
        "disagreement",
        pl.Float32,
        "",
        "max over labels of member-mean spread / mean predicted member sigma",
        "stat.value",
    ),
    Column(
        "rv_used",
        pl.Float32(),
        "km/s",
        "radial velocity the spectrum was shifted to rest by; null where none was "
        "(no usable RV, or preprocessed without RV correction)",
        "spect.dopplerVeloc.opt",
    ),
    Column(
        "rv_used_source",
        pl.Utf8(),
        "",
        "where rv_used came from: catalog (the input catalogue's RV) or measured "
        "(rrnet's template fit); none where no RV was usable",
        "meta.note",
    ),
    Column(
        "rv_measured",
        pl.Float32(),
        "km/s",
        "radial velocity rrnet measured from the spectrum (template fit of both arms, or "
        "of the one usable arm; --rv auto|measure); null where not measured or it failed",
        "spect.dopplerVeloc.opt",
    ),
    Column(
        "rv_measured_err",
        pl.Float32(),
        "km/s",
        "1-sigma error of rv_measured",
        "stat.error;spect.dopplerVeloc.opt",
    ),
)
"""Per-row diagnostics after the quality columns (see docs/catalogue.md)."""

CATALOGUE_COLUMNS: tuple[Column, ...] = SPEC_COLUMNS + STATUS_COLUMNS + DIAGNOSTIC_COLUMNS
"""Every fixed column, in order; carried catalogue columns (e.g. star_id) follow."""

COLUMNS_BY_NAME: dict[str, Column] = {c.name: c for c in CATALOGUE_COLUMNS}


def catalogue_column_names() -> list[str]:
    """The fixed columns' names: part of a resumable run's identity, so that a run
    started by a version with other columns is not merged with this one's parts."""
    return [c.name for c in CATALOGUE_COLUMNS]


PER_STAR_COLUMNS: tuple[Column, ...] = (
    Column(
        "n_exp", pl.Int32, "", "exposures used (status ok, and flag 1 by default)", "meta.number"
    ),
    Column(
        "variable",
        pl.UInt8,
        "",
        "1 = Teff or log g varies beyond the errors, 0 = not; null: fewer than 2 exposures",
        "meta.code;src.var",
    ),
)
"""Per-star table columns besides the catalogue's (:mod:`rrnet.inference.per_star`)."""


def per_star_column(name: str) -> Column | None:
    """Unit, description and UCD of a per-star table column (:mod:`rrnet.inference.per_star`):
    its labels and errors are combinations of exposures, not one spectrum's values."""
    for label in SPEC_LABELS:
        value, text = COLUMNS_BY_NAME[label], _label_text(label)
        if name == label:
            described = f"weighted mean {text} of the star's independent exposures"
            return Column(name, value.dtype, value.unit, described, value.ucd)
        if name == f"{label}_err":
            described = (
                f"1-sigma uncertainty of the mean {text}: the exposures' noise averaged, "
                "their shared part (the error floor in the rrnet.per_star provenance) not"
            )
            return Column(name, value.dtype, value.unit, described, f"stat.error;{value.ucd}")
    if name in ("ra", "dec"):
        value = COLUMNS_BY_NAME[name]
        text = f"{value.description} of the star's first exposure"
        return Column(name, value.dtype, value.unit, text, value.ucd)
    return column_meta(name)


CARRIED_RV_COLUMNS: dict[str, Column] = {
    "rv": Column(
        "rv",
        pl.Float64(),
        "km/s",
        "input catalogue's radial velocity (rrnet reads the RV column in km/s); "
        "rv_used is the one the spectrum was shifted by",
        "spect.dopplerVeloc.opt",
    ),
    "rv_err": Column(
        "rv_err",
        pl.Float64(),
        "km/s",
        "input catalogue's 1-sigma error of rv",
        "stat.error;spect.dopplerVeloc.opt",
    ),
}
"""The input's ``rv``/``rv_err`` (rrnet-catalog's names, the default --rv-column), carried
into the catalogue: rrnet requires km/s there, so their unit is known (they had none)."""


def column_meta(name: str) -> Column | None:
    """Unit, description and UCD of an internal column name, per-star columns included.

    None for carried input columns (e.g. ``star_id``), which rrnet knows nothing about.
    """
    known = COLUMNS_BY_NAME.get(name) or next((c for c in PER_STAR_COLUMNS if c.name == name), None)
    if known is not None:
        return known
    for label in SPEC_LABELS:
        value = COLUMNS_BY_NAME[label]
        what = _label_text(label)  # in words: the internal name is not the column's
        if name == f"{label}_scatter":
            text = f"weighted scatter of the {what} between a star's exposures"
            return Column(name, pl.Float32, value.unit, text, f"stat.stdev;{value.ucd}")
        if name == f"{label}_chi2r":
            text = f"reduced chi-square of the {what} between a star's exposures"
            return Column(name, pl.Float32, "", text, "stat.fit.chi2")
        if name == f"{label}_n":
            return Column(name, pl.Int32, "", f"exposures combined for the {what}", "meta.number")
    if name in CARRIED_RV_COLUMNS:
        return CARRIED_RV_COLUMNS[name]
    if name == "desig":  # added from the files' headers when the input lacks it
        text = "LAMOST designation: the input catalogue's desig, else DESIG of the file's header"
        return Column(name, pl.String(), "", text, "meta.id")
    return None


def schema() -> dict[str, pl.DataType]:
    """The fixed part of the catalogue schema, in column order."""
    return {c.name: c.dtype for c in CATALOGUE_COLUMNS}


def value_columns(label: str) -> tuple[str, str]:
    """The value and error column of ``label``."""
    return label, f"{label}_err"
