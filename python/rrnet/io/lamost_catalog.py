"""LAMOST's MRS general catalogue (one row per band per exposure or coadd) -> rrnet rows.

LAMOST distributes the MRS general catalogue of each data release (DR7 to DR11) as
CSV (often gzipped, ``|`` or ``,`` separated), FITS or Parquet. One row describes
one band (``B`` or ``R``) of one single exposure or of the coadd of a target's
exposures. rrnet wants one row per spectrum: a file, a blue and a red extension
and one RV. :func:`pair_bands` builds those rows:

- the file is ``med-{lmjd:05d}-{planid}_sp{spid:02d}-{fiberid:03d}.fits.gz``
  (:func:`lamost_filename`, as the survey names it on disk);
- the extensions are ``COADD_B``/``COADD_R`` for coadds and ``B-{lmjm}``/``R-{lmjm}``
  for exposures (:func:`extension_name`), as in the files' headers;
- the RV is the first usable column of :data:`RV_PRIORITY` (``docs/lamost.md`` says
  why): -9999 (LAMOST's "not measured"), null, NaN and a non-zero ``_flag`` count as
  missing; ``rv_source`` records the column used.

Nothing is dropped: a spectrum with one band only, several rows for the same band,
unusable identifiers or no usable RV is kept as a row with ``catalog_status`` and
``catalog_reason`` (the names ``status``/``reason`` belong to the store manifest).
Output order is input order (of each spectrum's first row).

Release differences are data, not code: :data:`COLUMN_ALIASES` lists every
accepted spelling of each field; a catalogue lacking a required field is refused
with one line naming the missing columns.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from rrnet.io.catalog import CatalogError, fits_nulls, fits_rows_frame
from rrnet.io.lamost import BadFitsError
from rrnet.io.lamost_fast import FileRead, Reader, read_many
from rrnet.io.locate import is_utf8, unlisted_folders, warn_unlisted
from rrnet.utils.faults import is_machine_fault
from rrnet.utils.progress import Progress
from rrnet.utils.scratch import scratch_root

log = logging.getLogger(__name__)

MISSING_VALUE: float = -9999.0
"""LAMOST's value for a quantity that was not measured."""

COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    # field: accepted column names, first present wins (compared in lower case)
    "obsid": ("obsid",),
    "lmjd": ("lmjd",),
    "planid": ("planid",),
    "spid": ("spid",),
    "fiberid": ("fiberid",),
    "lmjm": ("lmjm",),
    "band": ("band",),
    "coadd": ("coadd",),
    "designation": ("designation", "desig"),
    "ra": ("ra", "ra_obs"),
    "dec": ("dec", "dec_obs"),
    "mjd": ("mjd",),
    "gp_id": ("gp_id",),
    "mobsid": ("mobsid",),
    "snr": ("snr",),
}
"""The one table of release-specific column names (DR7 to DR11 MRS general catalogues)."""

REQUIRED_FIELDS: tuple[str, ...] = (
    "obsid",
    "lmjd",
    "planid",
    "spid",
    "fiberid",
    "lmjm",
    "band",
    "coadd",
)
"""Fields without which a row cannot be turned into a file and extension name."""

RV_PRIORITY: tuple[str, ...] = (
    "rv_br1",
    "rv_br0",
    "rv_lasp1",
    "rv_lasp0",
    "rv_b1",
    "rv_r1",
    "rv_b0",
    "rv_r0",
)
"""Default RV columns, best first: the zero-point-corrected blue+red cross-correlation RV
(Zhang et al. 2021), its uncorrected value, the LASP pipeline RV (corrected, raw), then
the single-band values."""

RV_FLAG: dict[str, str] = {
    "rv_br1": "rv_br_flag",
    "rv_br0": "rv_br_flag",
    "rv_b1": "rv_b_flag",
    "rv_b0": "rv_b_flag",
    "rv_r1": "rv_r_flag",
    "rv_r0": "rv_r_flag",
    "rv_lasp1": "rv_lasp_flag",
    "rv_lasp0": "rv_lasp_flag",
}
"""Quality flag of each RV column (0: good); a flag column absent from a release is ignored."""

SPECTRA_CHOICES: tuple[str, ...] = ("auto", "coadd", "exposures", "all")
"""``auto``: each file's coadd where the catalogue lists one, else its exposures (LAMOST
publishes coadds for the non-time-domain survey and single exposures for the time-domain
survey); ``coadd``, ``exposures``: one kind only; ``all``: both."""

FILE_FIELDS: tuple[str, ...] = ("lmjd", "planid", "spid", "fiberid")

OUTPUT_COLUMNS: tuple[str, ...] = (
    "filename",
    "extname_blue",
    "extname_red",
    "rv",
    "rv_err",
    "rv_source",
    "catalog_status",
    "catalog_reason",
    "obsid",
    "gp_id",
    "designation",
    "ra",
    "dec",
    "lmjd",
    "planid",
    "spid",
    "fiberid",
    "lmjm",
    "coadd",
    "snr_b",
    "snr_r",
)
"""Columns of an rrnet catalogue built from LAMOST's, in order."""
OUTPUT_UNITS: dict[str, str] = {"rv": "km/s", "rv_err": "km/s", "ra": "deg", "dec": "deg"}
"""Units of :data:`OUTPUT_COLUMNS` (the others have none), written into FITS outputs."""
OUTPUT_DESCRIPTIONS: dict[str, str] = {
    "filename": "the spectrum's file, relative to the data folder",
    "extname_blue": "extension of the blue arm (COADD_B or B-<lmjm>)",
    "extname_red": "extension of the red arm (COADD_R or R-<lmjm>)",
    "rv": "RV used for the rest frame (heliocentric)",
    "rv_err": "error of rv",
    "rv_source": "column or table rv came from",
    "catalog_status": "ok, or why the row cannot be preprocessed",
    "catalog_reason": "why, in words (notes on ok rows)",
    "obsid": "LAMOST observation id",
    "gp_id": "LAMOST star id (null where -9999)",
    "designation": "LAMOST designation (J...)",
    "ra": "right ascension (J2000)",
    "dec": "declination (J2000)",
    "lmjd": "local modified Julian day of the night",
    "planid": "observing plan",
    "spid": "spectrograph",
    "fiberid": "fibre",
    "lmjm": "exposure's local modified Julian minute (a coadd: the catalogue's value as given)",
    "coadd": "true for a coadd, false for one exposure",
    "snr_b": "the catalogue's S/N of the blue row (null: scan)",
    "snr_r": "the catalogue's S/N of the red row (null: scan)",
}
"""One-line meanings of :data:`OUTPUT_COLUMNS` (docs/lamost.md), written into FITS outputs."""


def lamost_filename(lmjd: int, planid: str, spid: int, fiberid: int) -> str:
    """The survey's name of one fibre's file, e.g. ``med-58025-HIP9645901_sp02-051.fits.gz``."""
    return f"med-{lmjd:05d}-{planid}_sp{spid:02d}-{fiberid:03d}.fits.gz"


def extension_name(band: str, coadd: bool, lmjm: int | None) -> str:
    """``COADD_B``/``COADD_R`` for coadds, ``B-{lmjm}``/``R-{lmjm}`` for exposures."""
    return f"COADD_{band}" if coadd else f"{band}-{lmjm}"


# --------------------------------------------------------------------------- reading


def read_lamost_table(path: str | os.PathLike[str]) -> pl.DataFrame:
    """Read a catalogue as LAMOST distributes it (CSV, CSV.gz, FITS, Parquet); lower-case names.

    CSV columns are read as text (cast later, so ``-9999`` and blanks never break type
    inference); the separator (``|``, ``,`` or tab) is taken from the header line.
    """
    with scanned_lamost_table(path) as lazy:
        return _collect(lazy, path)


@contextmanager
def scanned_lamost_table(path: str | os.PathLike[str]) -> Iterator[pl.LazyFrame]:
    """:func:`read_lamost_table` as a LazyFrame, for a survey-sized catalogue: only the
    columns a query selects are parsed, in bounded memory. A gzipped CSV is inflated,
    streaming, to a temporary file first (as large as the CSV; polars cannot scan gzip);
    a FITS table (a gzipped one inflated to disk first, likewise) is copied to temporary
    Parquet files :data:`FITS_CHUNK_ROWS` rows at a time (fitsio reads whole tables,
    polars cannot scan FITS)."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"catalogue not found: {path}")
    name = path.name.lower()
    with tempfile.TemporaryDirectory(prefix="rrnet-catalog-", dir=scratch_root()) as scratch:
        try:
            if name.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
                lazy = _scan_csv(path, Path(scratch))
            elif name.endswith((".fits", ".fit", ".fits.gz")):
                lazy = _scan_fits(path, Path(scratch))
            elif name.endswith((".parquet", ".pq")):
                lazy = pl.scan_parquet(path)
            else:
                raise CatalogError(
                    f"unknown table format of {path}: use .csv, .csv.gz, .fits, .fits.gz or "
                    ".parquet"
                )
            names = lazy.collect_schema().names()
        except CatalogError:
            raise
        except _READ_ERRORS as exc:
            raise _read_error(path, exc) from exc
        lowered = [c.strip().lower() for c in names]
        clashes = [c for c in names if lowered.count(c.strip().lower()) > 1]
        if clashes:  # "unexpected DuplicateError" once renamed
            raise CatalogError(
                f"{path}: columns {', '.join(clashes)} differ only in case (rrnet compares "
                "column names in lower case): rename or drop one"
            )
        yield lazy.rename(dict(zip(names, lowered, strict=True)))


_READ_ERRORS = (pl.exceptions.PolarsError, OSError, ValueError, EOFError, zlib.error)


def _read_error(path: Path, exc: BaseException) -> BaseException:
    """A CatalogError naming the file, or the error itself when it is the machine's."""
    if is_machine_fault(exc):  # the disk, not the catalogue
        return exc
    if isinstance(exc, PermissionError):  # "[Errno 13] Permission denied: '...'"
        return CatalogError(f"cannot read {path}: not readable by this user (permission denied)")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CatalogError(f"cannot read {path}: {first}")


def _collect(lazy: pl.LazyFrame, path: str | os.PathLike[str]) -> pl.DataFrame:
    try:
        return lazy.collect(engine="in-memory")
    except _READ_ERRORS as exc:
        raise _read_error(Path(path), exc) from exc


FITS_CHUNK_ROWS = 500_000
"""Rows of a FITS catalogue held in memory at a time while it is copied to Parquet."""


def _inflated(path: Path, scratch: Path, name: str) -> Path:
    """``path`` itself, or a gzipped ``path`` inflated, streaming, to ``scratch/name``.

    cfitsio inflates a ``.fits.gz`` whole into memory (3 million band rows: 2.7 GB peak
    against 1.5 GB) and polars cannot read gzip at all; on disk both read it in bounded memory."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    if not gzipped:
        return path
    plain = scratch / name
    with gzip.open(path, "rb") as source, open(plain, "wb") as target:
        shutil.copyfileobj(source, target, 1 << 20)
    return plain


def _scan_fits(path: Path, scratch: Path) -> pl.LazyFrame:
    import fitsio

    with fitsio.FITS(str(_inflated(path, scratch, "catalogue.fits"))) as fits:
        if len(fits) < 2:
            raise CatalogError(f"cannot read {path}: no table extension")
        hdu = fits[1]
        if hdu.get_exttype() not in ("BINARY_TBL", "ASCII_TBL"):
            raise CatalogError(f"cannot read {path}: its first extension is not a table")
        n_rows, nulls = hdu.get_nrows(), fits_nulls(hdu)
        parts = []
        for i, start in enumerate(range(0, max(n_rows, 1), FITS_CHUNK_ROWS)):
            part = scratch / f"fits-{i:06d}.parquet"
            fits_rows_frame(hdu[start : start + FITS_CHUNK_ROWS], nulls).write_parquet(part)
            parts.append(part)
    return pl.scan_parquet(parts)


def _scan_csv(path: Path, scratch: Path) -> pl.LazyFrame:
    given, path = path, _inflated(path, scratch, "catalogue.csv")
    with open(path, "rb") as handle:  # the header: the first line that is not a comment
        header = next((ln for ln in handle if not ln.startswith(b"#")), b"")
    sep = max(("|", ",", "\t"), key=header.decode("utf-8", "replace").count)
    _check_last_row(path, given, header.count(sep.encode()), sep.encode())
    return pl.scan_csv(path, separator=sep, infer_schema=False, comment_prefix="#")


def _check_last_row(path: Path, given: Path, n_separators: int, sep: bytes) -> None:
    """A CatalogError when the file ends inside a row (no newline, fewer fields than the
    header): a download cut short, whose last row would otherwise pass as a row with
    missing identifiers. (A cut exactly between rows cannot be told from a whole file.)"""
    with open(path, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - (1 << 16)))
        tail = handle.read()
    if not tail or tail.endswith(b"\n"):
        return
    last = tail.rsplit(b"\n", 1)[-1]
    if last.count(sep) < n_separators:
        raise CatalogError(
            f"{given} ends inside a row ({last.count(sep) + 1} of {n_separators + 1} "
            "fields, no newline): a download cut short? Fetch it again"
        )


# --------------------------------------------------------------------------- pairing


def resolve_columns(columns: list[str], rv_columns: tuple[str, ...]) -> dict[str, str]:
    """Field -> one of ``columns`` (:data:`COLUMN_ALIASES`); CatalogError names what is missing."""
    present = set(columns)
    found = {}
    for field, aliases in COLUMN_ALIASES.items():
        hit = next((a for a in aliases if a in present), None)
        if hit is not None:
            found[field] = hit
    missing = [COLUMN_ALIASES[f][0] for f in REQUIRED_FIELDS if f not in found]
    if not any(c in present for c in rv_columns):
        missing.append(" or ".join(rv_columns))
    if missing:
        raise CatalogError(
            f"not a LAMOST MRS general catalogue: missing column(s) {', '.join(missing)}"
        )
    return found


def _text(name: str) -> pl.Expr:
    """Stripped text, null where empty (``when``, not ``replace``: that one stops polars
    from streaming, and a DR7 catalogue would be held whole)."""
    text = pl.col(name).cast(pl.Utf8, strict=False).str.strip_chars()
    return pl.when(text != "").then(text)


def _number(name: str, dtype: pl.DataType | type[pl.DataType]) -> pl.Expr:
    value = _text(name).cast(pl.Float64, strict=False)
    value = pl.when(value == MISSING_VALUE).then(None).otherwise(value)
    return value.cast(dtype, strict=False) if dtype != pl.Float64 else value


def _identifier(name: str) -> pl.Expr:
    """Text, null where LAMOST wrote its "not measured" -9999 (an unidentified star's
    ``gp_id``: kept as text, all of them would be one star in per-star work)."""
    text = _text(name)
    missing = text.cast(pl.Float64, strict=False) == MISSING_VALUE
    return pl.when(missing.fill_null(False)).then(None).otherwise(text)


TRUE_TEXTS = ("1", "t", "true", "y", "yes", "1.0")
FALSE_TEXTS = ("0", "f", "false", "n", "no", "0.0")


def _truthy(name: str) -> pl.Expr:
    text = _text(name).str.to_lowercase()
    return text.is_in(list(TRUE_TEXTS)).fill_null(False)


def _value_problem(cols: dict[str, str]) -> pl.Expr:
    """Why a row's ``band`` or ``coadd`` names no spectrum (null where both do): such a
    row was merged into another spectrum (``coadd = 2`` read as an exposure, blaming a
    real one as a duplicate) or vanished (``band = 'X'``); it now stays a row of its own."""
    band = _text(cols["band"]).str.to_uppercase()
    coadd = _text(cols["coadd"]).str.to_lowercase()
    bad_band = ~band.str.slice(0, 1).is_in(["B", "R"]).fill_null(False)
    bad_coadd = ~coadd.is_in([*TRUE_TEXTS, *FALSE_TEXTS]).fill_null(False)
    shown = {
        "band": pl.format("'{}'", band).fill_null("empty"),
        "coadd": pl.format("'{}'", coadd).fill_null("empty"),
    }
    return (
        pl.when(bad_band)
        .then(pl.format("band is {}, neither B nor R" + UNCLEAR_KIND, shown["band"]))
        .when(bad_coadd)
        .then(pl.format("coadd is {}, neither 0 nor 1" + UNCLEAR_KIND, shown["coadd"]))
    )


def _id_problem(cols: dict[str, str]) -> pl.Expr:
    """Why the file identifiers of a row make no LAMOST file name (null where they do):
    a fibre of -1 made ``..._sp02--01.fits.gz``, an LMJM of 83555758.5 was truncated, a
    plan id holding a path (``HIP/../../etc``) named a file elsewhere, all status ok."""
    checks = []
    for field in ("lmjd", "spid", "fiberid", "lmjm"):
        text = _text(cols[field])
        value = text.cast(pl.Float64, strict=False)
        whole = (value >= 0) & (value == value.floor()) & value.is_finite()
        bad = (
            text.is_not_null() & (value != MISSING_VALUE).fill_null(True) & ~whole.fill_null(False)
        )
        checks.append((bad, pl.format(f"{field} is '{{}}', not a whole number >= 0", text)))
    plan = _text(cols["planid"])
    path_like = plan.str.contains(r"[/\\]").fill_null(False) | plan.is_in([".", ".."])
    checks.append((path_like, pl.format("planid '{}' is a path, not a plan name", plan)))
    out: Any = pl.when(checks[0][0]).then(checks[0][1])
    for bad, why in checks[1:]:
        out = out.when(bad).then(why)
    return out


def _obsid_note(name: str) -> pl.Expr:
    """The reason of an ``ok`` row whose obsid is text that is no integer (null where
    it is one, or empty, or -9999): the obsid is left empty, which said nothing."""
    text = _text(name)
    unparsed = text.is_not_null() & _number(name, pl.Int64).is_null()
    unparsed = unparsed & (text.cast(pl.Float64, strict=False) != MISSING_VALUE).fill_null(True)
    return pl.when(unparsed).then(pl.format("obsid '{}' is no integer: left empty", text))


UNCLEAR_KIND = ": which spectrum the row belongs to is unclear"
"""The end of the reason of such a row (every ``--spectra`` choice keeps it)."""


def _normalise(cols: dict[str, str]) -> list[pl.Expr]:
    """The fields rrnet needs, typed, plus ``_row`` (the input position: a column
    :func:`_typed_rows` adds before anything is filtered)."""
    exprs = [
        pl.col("_row").cast(pl.Int64),
        _number(cols["obsid"], pl.Int64).alias("obsid"),
        _number(cols["lmjd"], pl.Int64).alias("lmjd"),
        _text(cols["planid"]).alias("planid"),
        _number(cols["spid"], pl.Int64).alias("spid"),
        _number(cols["fiberid"], pl.Int64).alias("fiberid"),
        _number(cols["lmjm"], pl.Int64).alias("lmjm"),
        _text(cols["band"]).str.to_uppercase().str.slice(0, 1).alias("band"),
        _truthy(cols["coadd"]).alias("coadd"),
        _value_problem(cols).alias("_bad_value"),
        _id_problem(cols).alias("_bad_id"),
        _obsid_note(cols["obsid"]).alias("_note"),
    ]
    fields = (("gp_id", pl.Utf8), ("designation", pl.Utf8), ("ra", pl.Float64), ("dec", pl.Float64))
    for field, dtype in fields:
        if field in cols:
            expr = _identifier(cols[field]) if dtype == pl.Utf8 else _number(cols[field], dtype)
        else:
            expr = pl.lit(None, dtype)
        exprs.append(expr.alias(field))
    snr = _number(cols["snr"], pl.Float64) if "snr" in cols else pl.lit(None, pl.Float64)
    exprs.append(snr.alias("snr"))
    return exprs


def _usable(columns: list[str], column: str) -> pl.Expr:
    """True where ``column`` holds a real velocity: not null, finite, not -9999, flag 0."""
    value = _number(column, pl.Float64)
    ok = value.is_not_null() & value.is_finite() & (value.abs() < 3.0e5)
    flag = RV_FLAG.get(column)
    if flag is not None and flag in columns:
        ok = ok & _number(flag, pl.Float64).fill_null(0.0).eq(0.0)
    return ok.fill_null(False)


def _typed_rows(lazy: pl.LazyFrame, rv_columns: tuple[str, ...]) -> tuple[pl.LazyFrame, list[str]]:
    """The fields pairing uses, typed, one row per row of ``lazy`` (which has the input
    position ``_row``), and the RV columns the catalogue has (in order of preference)."""
    names = lazy.collect_schema().names()
    cols = resolve_columns(names, rv_columns)
    rv_present = [c for c in rv_columns if c in names]
    exprs = _normalise(cols)
    for i, c in enumerate(rv_present):
        ok = _usable(names, c)
        exprs.append(pl.when(ok).then(_number(c, pl.Float64)).alias(f"_rv{i}"))
        err = f"{c}_err"
        err_expr = _number(err, pl.Float64) if err in names else pl.lit(None, pl.Float64)
        exprs.append(pl.when(ok).then(err_expr).alias(f"_err{i}"))
    return lazy.select(exprs), rv_present


def pair_bands(
    table: pl.DataFrame | pl.LazyFrame,
    *,
    spectra: str = "auto",
    rv_columns: tuple[str, ...] = RV_PRIORITY,
) -> pl.DataFrame:
    """One rrnet row per spectrum (blue + red of one exposure or coadd), in input order.

    The whole table is paired at once; :func:`from_lamost` does the same for a
    catalogue file of any size, a few nights at a time.

    Parameters
    ----------
    table : DataFrame or LazyFrame
        LAMOST's MRS general catalogue, lower-case column names (:func:`read_lamost_table`,
        or :func:`scanned_lamost_table`: only the columns used are then parsed, as numbers).
    spectra : {"auto", "coadd", "exposures", "all"}
        Which spectra become rows (:data:`SPECTRA_CHOICES`).
    rv_columns : tuple of str
        RV columns in order of preference; columns the catalogue lacks are skipped.

    Returns
    -------
    DataFrame with :data:`OUTPUT_COLUMNS`.
    """
    if spectra not in SPECTRA_CHOICES:
        raise ValueError(f"spectra must be one of {SPECTRA_CHOICES}, got {spectra!r}")
    typed, rv_present = _typed_rows(table.lazy().with_row_index("_row"), rv_columns)
    paired = _pair_typed(typed.collect(engine="in-memory"), rv_present)
    return choose_spectra(paired, spectra).select(OUTPUT_COLUMNS)


def _pair_typed(base: pl.DataFrame, rv_present: list[str]) -> pl.DataFrame:
    """Every spectrum of typed band rows (:func:`_typed_rows`), ``_row`` kept, in input order."""
    base = base.with_columns(
        pl.when(pl.col("coadd")).then(None).otherwise(pl.col("lmjm")).alias("_key_lmjm"),
        (pl.col("band") != "B").alias("_not_blue"),
        # a row whose band or coadd names no spectrum is a spectrum of its own
        pl.when(pl.col("_bad_value").is_not_null()).then(pl.col("_row")).alias("_alone"),
    ).sort(["_not_blue", "_row"])  # blue rows first: their values win within a spectrum
    grouped = base.group_by(
        ["lmjd", "planid", "spid", "fiberid", "coadd", "_key_lmjm", "_alone"],
        maintain_order=True,
    ).agg(_aggregations(len(rv_present)))
    return _finish(grouped.sort("_row"), rv_present)


PART_ROWS = 1_000_000
"""Band rows :func:`from_lamost` pairs at a time, in whole nights (pairing holds ~1.2 GB
per million rows)."""


def _night_parts(lazy: pl.LazyFrame, part_rows: int) -> list[pl.Expr]:
    """Filters that cut the typed rows into runs of whole nights of about ``part_rows``
    rows (a file's rows share its ``lmjd``, so no spectrum is cut); rows without
    ``lmjd`` are a part of their own."""
    lmjd = pl.col("lmjd")
    counts = lazy.group_by(lmjd.alias("_lmjd")).len().sort("_lmjd", nulls_last=True).collect()
    parts: list[pl.Expr] = []
    first, n = None, 0
    for night, count in counts.drop_nulls("_lmjd").iter_rows():
        first, n = (night if first is None else first), n + count
        if n >= part_rows:
            parts.append(lmjd.is_between(first, night))
            first, n = None, 0
    if first is not None:
        parts.append(lmjd >= first)
    if counts.get_column("_lmjd").null_count() or not parts:
        parts.append(lmjd.is_null())  # also the one part of an empty table
    return parts


def choose_spectra(paired: pl.DataFrame, spectra: str) -> pl.DataFrame:
    """The rows of :func:`pair_bands` (``spectra="all"``) that ``spectra`` keeps: ``auto``
    a file's coadd where it has one, else its exposures (rows without file ids stay)."""
    if spectra not in SPECTRA_CHOICES:
        raise ValueError(f"spectra must be one of {SPECTRA_CHOICES}, got {spectra!r}")
    if spectra == "all":
        return paired
    unclear = pl.col("catalog_reason").str.ends_with(UNCLEAR_KIND).fill_null(False)
    if spectra != "auto":  # a row whose kind is unclear is kept with its reason
        return paired.filter((pl.col("coadd") == (spectra == "coadd")) | unclear)
    unnamed = pl.any_horizontal(pl.col(f).is_null() for f in FILE_FIELDS)
    file_has_coadd = pl.col("coadd").filter(~unclear).any().over(FILE_FIELDS)
    return paired.filter(pl.col("coadd") | ~file_has_coadd | unnamed | unclear)


def _aggregations(n_rv: int) -> list[pl.Expr]:
    blue, red = pl.col("band") == "B", pl.col("band") == "R"
    aggs = [
        pl.col("_row").min(),
        pl.col("obsid").drop_nulls().first(),
        pl.col("gp_id").drop_nulls().first(),
        pl.col("designation").drop_nulls().first(),
        pl.col("ra").drop_nulls().first(),
        pl.col("dec").drop_nulls().first(),
        pl.col("lmjm").drop_nulls().first(),
        blue.sum().alias("_n_blue"),
        red.sum().alias("_n_red"),
        (~(blue | red)).sum().alias("_n_other"),
        pl.col("snr").filter(blue).first().alias("snr_b"),
        pl.col("snr").filter(red).first().alias("snr_r"),
        pl.col("_bad_value").drop_nulls().first(),
        pl.col("_bad_id").drop_nulls().first(),
        pl.col("_note").drop_nulls().first(),
    ]
    for i in range(n_rv):
        aggs.append(pl.col(f"_rv{i}").drop_nulls().first())
        aggs.append(pl.col(f"_err{i}").filter(pl.col(f"_rv{i}").is_not_null()).first())
    return aggs


def _finish(grouped: pl.DataFrame, rv_present: list[str]) -> pl.DataFrame:
    """File and extension names, the chosen RV and each spectrum's status."""
    lmjm = pl.col("lmjm").cast(pl.Utf8)
    ids_ok = (
        pl.all_horizontal(pl.col(c).is_not_null() for c in ("lmjd", "planid", "spid", "fiberid"))
        & (pl.col("coadd") | pl.col("lmjm").is_not_null())
        & pl.col("_bad_id").is_null()
    )
    filename = pl.format(
        "med-{}-{}_sp{}-{}.fits.gz",
        pl.col("lmjd").cast(pl.Utf8).str.zfill(5),
        pl.col("planid"),
        pl.col("spid").cast(pl.Utf8).str.zfill(2),
        pl.col("fiberid").cast(pl.Utf8).str.zfill(3),
    )

    def ext(band: str, count: str) -> pl.Expr:
        name = pl.when(pl.col("coadd")).then(pl.lit(f"COADD_{band}")).otherwise(f"{band}-" + lmjm)
        return pl.when(pl.col(count) > 0).then(name)

    rv = pl.coalesce([pl.col(f"_rv{i}") for i in range(len(rv_present))] or [pl.lit(None)])
    source = pl.coalesce(
        [pl.when(pl.col(f"_rv{i}").is_not_null()).then(pl.lit(c)) for i, c in enumerate(rv_present)]
        or [pl.lit(None, pl.Utf8)]
    )
    # the chosen column's own error, null if it has none (a coalesce went on to the next
    # column's error: rv_br1 came with rv_br0's)
    err: pl.Expr = pl.lit(None, pl.Float64)
    for i in reversed(range(len(rv_present))):
        err = pl.when(pl.col(f"_rv{i}").is_not_null()).then(pl.col(f"_err{i}")).otherwise(err)
    out = grouped.with_columns(
        pl.when(ids_ok).then(filename).alias("filename"),
        ext("B", "_n_blue").alias("extname_blue"),
        ext("R", "_n_red").alias("extname_red"),
        rv.cast(pl.Float64).alias("rv"),
        err.cast(pl.Float64).alias("rv_err"),
        source.cast(pl.Utf8).alias("rv_source"),
    )
    return out.with_columns(_status(ids_ok, rv_present)).select("_row", *OUTPUT_COLUMNS)


def _status(ids_ok: pl.Expr, rv_present: list[str]) -> list[pl.Expr]:
    """``catalog_status`` and ``catalog_reason``, the first problem found."""
    tried = ", ".join(rv_present) or "(none present)"
    spectrum = (
        pl.when(pl.col("coadd"))
        .then(pl.lit("coadd"))
        .otherwise(pl.format("exposure LMJM {}", pl.col("lmjm")))
    )
    cases = [
        (pl.col("_bad_value").is_not_null(), "bad_ids", pl.col("_bad_value")),
        (pl.col("_bad_id").is_not_null(), "bad_ids", pl.col("_bad_id")),
        (~ids_ok, "bad_ids", pl.lit("lmjd, planid, spid, fiberid or lmjm is missing")),
        (
            pl.col("_n_blue") == 0,
            "single_band",
            pl.format("{} has no blue (B) row in the catalogue", spectrum),
        ),
        (
            pl.col("_n_red") == 0,
            "single_band",
            pl.format("{} has no red (R) row in the catalogue", spectrum),
        ),
        (
            (pl.col("_n_blue") > 1) | (pl.col("_n_red") > 1),
            "duplicate",
            pl.format("{} has several rows for one band", spectrum),
        ),
        (
            pl.col("rv").is_null(),
            "no_rv",
            pl.lit(f"no usable RV in {tried} (-9999, null or flagged)"),
        ),
    ]
    status: pl.Expr = pl.lit("ok")
    # the note only where no band row gave an obsid (one band's 'abc' beside the other's
    # integer leaves the integer)
    reason: pl.Expr = pl.when(pl.col("obsid").is_null()).then(pl.col("_note"))
    for cond, name, why in reversed(cases):
        status = pl.when(cond).then(pl.lit(name)).otherwise(status)
        reason = pl.when(cond).then(why).otherwise(reason)
    return [status.alias("catalog_status"), reason.alias("catalog_reason")]


def from_lamost(
    path: str | os.PathLike[str],
    *,
    spectra: str = "auto",
    rv_columns: tuple[str, ...] = RV_PRIORITY,
    part_rows: int = PART_ROWS,
) -> pl.DataFrame:
    """:func:`pair_bands` of a catalogue file of any size, in bounded memory.

    The columns pairing uses are parsed once, streaming, into a temporary Parquet file
    (in ``TMPDIR``, beside the inflated copy of a gzipped CSV), then paired about
    ``part_rows`` band rows (whole nights) at a time; the result equals pairing the
    whole table at once.
    """
    if spectra not in SPECTRA_CHOICES:
        raise ValueError(f"spectra must be one of {SPECTRA_CHOICES}, got {spectra!r}")
    with scanned_lamost_table(path) as lazy:
        return _pair_in_parts(lazy, Path(path), spectra, rv_columns, part_rows)


def _pair_in_parts(
    lazy: pl.LazyFrame, path: Path, spectra: str, rv_columns: tuple[str, ...], part_rows: int
) -> pl.DataFrame:
    """The body of :func:`from_lamost`, on a catalogue already scanned."""
    typed, rv_present = _typed_rows(lazy.with_row_index("_row"), rv_columns)
    with tempfile.TemporaryDirectory(prefix="rrnet-catalog-", dir=scratch_root()) as scratch:
        try:
            rows = Path(scratch) / "rows.parquet"
            typed.sink_parquet(rows)  # streaming: the input is never held whole
            stored = pl.scan_parquet(rows)
            paired = [
                choose_spectra(_pair_typed(stored.filter(part).collect(), rv_present), spectra)
                for part in _night_parts(stored, part_rows)
            ]
        except (pl.exceptions.PolarsError, OSError, EOFError, zlib.error) as exc:
            raise _read_error(path, exc) from exc
    return pl.concat(paired).sort("_row").select(OUTPUT_COLUMNS)


def read_rv_table(path: str | os.PathLike[str]) -> pl.DataFrame:
    """An ``--rv-from`` table for :func:`join_rv`, in bounded memory: an ``obsid``/``rv``
    table's three columns, or LAMOST's MRS general catalogue already paired (the file
    read once: a gzipped DR7 catalogue is inflated to tens of GB)."""
    with scanned_lamost_table(path) as lazy:
        names = lazy.collect_schema().names()
        if "obsid" in names and "rv" in names:
            return _collect(lazy.select(c for c in ("obsid", "rv", "rv_err") if c in names), path)
        return _pair_in_parts(lazy, Path(path), "all", RV_PRIORITY, PART_ROWS)


def status_summary(
    table: pl.DataFrame, column: str = "catalog_status"
) -> list[tuple[str, int, str | None]]:
    """``(status, count, one example reason)`` per status, ``ok`` first then by count."""
    reason = "catalog_reason" if column == "catalog_status" else "reason"
    counts = (
        table.group_by(column)
        .agg(pl.len().alias("n"), pl.col(reason).drop_nulls().first().alias("example"))
        .with_columns((pl.col(column) != "ok").alias("_not_ok"))
        .sort(["_not_ok", "n", column], descending=[False, True, False])
    )
    return [(s, int(n), e) for s, n, e in counts.select(column, "n", "example").iter_rows()]


# --------------------------------------------------------------------------- scanning files

FILE_PATTERN = re.compile(r"^med-(\d+)-(.+)_sp(\d+)-(\d+)\.fits(\.gz)?$")
"""The survey's file names (parsed back into lmjd, planid, spid, fiberid)."""


def _file_pairs(read: FileRead, rel: str) -> list[dict]:
    """Rows of one file: its coadd pair and each exposure pair found in its extension names."""
    if read.error is not None or read.info is None:
        exc = read.error or BadFitsError(f"cannot read {read.path.name}")
        return [{"filename": rel, "catalog_status": exc.status, "catalog_reason": str(exc)}]
    info, path = read.info, read.path
    match = FILE_PATTERN.match(path.name)
    ids = {}
    if match:
        ids = {"lmjd": int(match[1]), "planid": match[2], "spid": int(match[3])}
        ids["fiberid"] = int(match[4])
    spectra: dict[tuple[bool, int | None], dict[str, str]] = {}
    for extname in info.extnames:  # the file's own spelling (cfitsio ignores case)
        m = re.fullmatch(r"COADD_([BR])|([BR])-(\d+)", extname.strip(), re.IGNORECASE)
        if m is None:
            continue
        key = (True, None) if m[1] else (False, int(m[3]))
        spectra.setdefault(key, {})[(m[1] or m[2]).upper()] = extname
    if not spectra:  # a row says so: a file seen is never left out silently
        names = ", ".join(info.extnames) or "none"
        why = f"no MRS spectrum extension (COADD_B/R, B-/R-LMJM) in {path.name}: {names}"
        return [{"filename": rel, "catalog_status": "missing_extension", "catalog_reason": why}]
    rows = []
    for (coadd, lmjm), bands in spectra.items():
        rows.append(
            {
                "filename": rel,
                "extname_blue": bands.get("B"),
                "extname_red": bands.get("R"),
                "obsid": info.obsid,
                "designation": info.desig,
                "ra": info.ra,
                "dec": info.dec,
                **ids,
                "lmjm": lmjm,
                "coadd": coadd,
            }
        )
    return rows


SCAN_BATCH = 512
"""Files whose headers :func:`scan_folder` reads in one parallel call."""


def scan_folder(
    root: str | os.PathLike[str], *, reader: Reader = "auto", progress: bool = False
) -> pl.DataFrame:
    """One row per spectrum (coadd pair, each exposure pair) of every MRS file under ``root``.

    Files are visited in sorted path order; ``filename`` is relative to ``root``. The
    headers are read by :func:`rrnet.io.lamost_fast.read_many` (``reader``: Rust on all
    cores, fitsio for what it does not support); ``progress`` shows files read (stderr).
    RV columns are empty (see :func:`join_rv`); unreadable files and spectra with one
    band only are kept as status rows.
    """
    root = Path(root)
    os.listdir(root)  # a folder this user cannot list is their error, not "no spectra"
    warn_unlisted(unlisted_folders(root), root, "their files are not in the scan")
    files, undecodable = [], []
    for path in sorted(p for p in root.rglob("*") if _is_spectrum_file(p)):
        rel = path.relative_to(root).as_posix()
        if not is_utf8(rel):  # no catalogue can name it (and no table can hold it)
            undecodable.append(rel)
            continue
        files.append((path, rel))
    rows = []
    shown = Progress(len(files), enabled=progress, prefix="rrnet-catalog scan", unit="files")
    for start in range(0, len(files), SCAN_BATCH):  # headers only, files in parallel
        batch = files[start : start + SCAN_BATCH]
        reads = read_many([(path, ()) for path, _ in batch], reader=reader)
        for (_, rel), read in zip(batch, reads, strict=True):
            rows.extend(_file_pairs(read, rel))
        shown.update(len(batch))
    shown.close()
    if undecodable:
        log.warning(
            "%d file(s) under %s left out: their names are not UTF-8 (the first: %a)",
            len(undecodable),
            root,
            undecodable[0],
        )
    schema = {c: _SCAN_SCHEMA.get(c, pl.Utf8) for c in OUTPUT_COLUMNS}
    table = pl.DataFrame(rows, schema={c: schema[c] for c in schema if c in _SCAN_INPUT})
    for c in OUTPUT_COLUMNS:
        if c not in table.columns:
            table = table.with_columns(pl.lit(None, schema[c]).alias(c))
    return table.select(OUTPUT_COLUMNS)


def _is_spectrum_file(path: Path) -> bool:
    """Named like a spectrum file, whatever it is (a dangling link, a folder, ...: the
    reader gives those their status row)."""
    return path.name.lower().endswith((".fits", ".fits.gz"))


_SCAN_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "rv": pl.Float64, "rv_err": pl.Float64, "obsid": pl.Int64, "ra": pl.Float64,
    "dec": pl.Float64, "lmjd": pl.Int64, "spid": pl.Int64, "fiberid": pl.Int64,
    "lmjm": pl.Int64, "coadd": pl.Boolean, "snr_b": pl.Float64, "snr_r": pl.Float64,
}  # fmt: skip
_SCAN_INPUT = frozenset(
    {
        *("filename", "extname_blue", "extname_red", "obsid", "designation", "ra", "dec"),
        *("lmjd", "planid", "spid", "fiberid", "lmjm", "coadd", "catalog_status", "catalog_reason"),
    }
)


NO_RV_SCAN_REASON = (
    "no RV in the files: rrnet-preprocess measures it (--rv auto, the default), "
    "or give --rv-from TABLE"
)
"""``catalog_reason`` of scanned rows without an RV table (status ``no_rv``)."""


def _warn_rv_table(given: pl.DataFrame, rvs: pl.DataFrame) -> None:
    """Say what an ``obsid``/``rv`` table resolves without a word: ids that are no
    integer (they match no spectrum), and obsids given different RVs (the first is used)."""
    unparsed = given.filter(given["obsid"].is_not_null() & rvs["obsid"].is_null())
    if unparsed.height:
        log.warning(
            "%d row(s) of the --rv-from table have an obsid that is no integer (e.g. %r): "
            "they match no spectrum", unparsed.height, str(unparsed["obsid"][0]),
        )  # fmt: skip
    spread = (
        rvs.drop_nulls(["obsid", "rv"])
        .group_by("obsid", maintain_order=True)
        .agg(pl.col("rv").unique(maintain_order=True))
        .filter(pl.col("rv").list.len() > 1)
    )
    if spread.height:
        obsid, values = spread.row(0)
        log.warning(
            "%d obsid(s) have different RVs in the --rv-from table; the first row's is used, "
            "e.g. obsid %d: %s km/s", spread.height, obsid, ", ".join(f"{v:g}" for v in values),
        )  # fmt: skip


def _warn_shared_obsid(joined: pl.DataFrame) -> None:
    """Say that an ``obsid`` names a file, not a spectrum: a file's coadd and exposures
    share it, so an ``obsid``/``rv`` table gives them all one RV (a variable star's
    exposures each need their own, which LAMOST's catalogue, matched by LMJM, gives)."""
    shared = (
        joined.filter(pl.col("rv").is_not_null() & pl.col("obsid").is_not_null())
        .group_by("filename")
        .agg(pl.len().alias("n"))
        .filter(pl.col("n") > 1)
    )
    if shared.height:
        log.warning(
            "%d file(s) hold several spectra (coadd and exposures) under one obsid, and the "
            "--rv-from table's obsid gives them all the same RV; LAMOST's MRS catalogue as "
            "--rv-from matches each exposure by its LMJM", shared.height,
        )  # fmt: skip


def join_rv(scanned: pl.DataFrame, rv_table: pl.DataFrame | None) -> pl.DataFrame:
    """Fill ``rv``/``rv_err``/``rv_source`` of scanned rows and set each row's status.

    ``rv_table`` is either LAMOST's MRS general catalogue, as it is or already paired
    (:func:`read_rv_table`; matched per spectrum: file name, coadd or LMJM; RV by
    :data:`RV_PRIORITY`), or any table with ``obsid`` and
    ``rv`` [km/s] (optional ``rv_err``), matched by ``obsid``. Without a table every
    readable two-band row is ``no_rv``, which ``rrnet-preprocess --rv auto`` (its default)
    resolves by measuring the RV from the spectrum.
    """
    key = ["_base", "coadd", "_key_lmjm"]

    def keyed(t: pl.DataFrame) -> pl.DataFrame:
        """The file's own name, case and ``.fits``/``.fits.gz`` aside (a scanned file may
        be stored uncompressed or upper case; the catalogue names the survey's file)."""
        base = pl.col("filename").str.split("/").list.last().str.to_lowercase()
        return t.with_columns(
            base.str.replace(r"\.fits(\.gz)?$", "").alias("_base"),
            pl.when(pl.col("coadd")).then(-1).otherwise(pl.col("lmjm")).alias("_key_lmjm"),
        )

    table = scanned.drop("rv", "rv_err", "rv_source")
    paired_lamost = rv_table is not None and "extname_blue" in rv_table.columns  # has obsid too
    if rv_table is None:
        joined = table.with_columns(
            pl.lit(None, pl.Float64).alias("rv"),
            pl.lit(None, pl.Float64).alias("rv_err"),
            pl.lit(None, pl.Utf8).alias("rv_source"),
        )
        why = NO_RV_SCAN_REASON
    elif "obsid" in rv_table.columns and "rv" in rv_table.columns and not paired_lamost:
        ok = _usable(rv_table.columns, "rv")  # -9999, NaN, null: no RV, and no source
        err = _number("rv_err", pl.Float64) if "rv_err" in rv_table.columns else pl.lit(None)
        rvs = rv_table.select(
            pl.col("obsid").cast(pl.Int64, strict=False),
            pl.when(ok).then(_number("rv", pl.Float64)).alias("rv"),
            pl.when(ok).then(err.cast(pl.Float64)).alias("rv_err"),
            pl.when(ok).then(pl.lit("rv")).alias("rv_source"),
        )
        _warn_rv_table(rv_table, rvs)
        rvs = rvs.unique("obsid", keep="first", maintain_order=True)
        joined = table.join(rvs, on="obsid", how="left", maintain_order="left")
        _warn_shared_obsid(joined)
        why = "no usable RV for this obsid in the --rv-from table"
    else:
        paired = rv_table if paired_lamost else pair_bands(rv_table, spectra="all")
        pairs = keyed(paired).select(*key, "rv", "rv_err", "rv_source")
        pairs = pairs.unique(key, keep="first", maintain_order=True)
        joined = (
            keyed(table).join(pairs, on=key, how="left", maintain_order="left").drop(key[0], key[2])
        )
        why = "no usable RV for this spectrum in the --rv-from catalogue"
    single = pl.col("extname_blue").is_null() | pl.col("extname_red").is_null()
    status = (
        pl.when(pl.col("catalog_status").is_not_null()).then(pl.col("catalog_status"))
        .when(single).then(pl.lit("single_band"))
        .when(pl.col("rv").is_null()).then(pl.lit("no_rv"))
        .otherwise(pl.lit("ok"))
    )  # fmt: skip
    reason = (
        pl.when(pl.col("catalog_status").is_not_null()).then(pl.col("catalog_reason"))
        .when(single).then(pl.format("only one band in {}", pl.col("filename")))
        .when(pl.col("rv").is_null()).then(pl.lit(why))
    )  # fmt: skip
    return joined.with_columns(
        status.alias("catalog_status"), reason.alias("catalog_reason")
    ).select(OUTPUT_COLUMNS)
