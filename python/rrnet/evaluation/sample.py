"""The evaluation sample: catalogue predictions joined to reference labels.

The catalogue (``rrnet-infer`` output) holds predictions ``<label>`` and errors
``<label>_err``; the reference table holds true values ``<label>``. They are joined
on one or more key columns (``star_id`` for labels per star, or ``obsid`` /
``extname_blue`` / ``extname_red`` for labels per spectrum); true values are
renamed ``<label>_true``. Only rows with status "ok" (and flag 1, unless
``all_rows``) count; :class:`SampleCounts` says how many rows each step dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl

from rrnet.labels import MISSING_AT_OR_BELOW, TRUE_SUFFIX


class SampleError(ValueError):
    """The catalogue and labels cannot be evaluated together (one-line message)."""


@dataclass(frozen=True)
class SampleCounts:
    """Rows kept at each step of :func:`build_sample`."""

    catalog_rows: int
    status_ok: int
    flag_ok: int
    with_labels: int
    labels_rows: int = 0
    labels_matching_no_catalogue_row: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def predicted_labels(catalog: pl.DataFrame, candidates: tuple[str, ...]) -> list[str]:
    """The labels (in ``candidates`` order) that have both value and ``_err`` columns."""
    return [c for c in candidates if c in catalog.columns and f"{c}_err" in catalog.columns]


def add_snr(catalog: pl.DataFrame, snr: str) -> pl.DataFrame:
    """Add the ``snr`` column used for binning.

    ``snr`` is a column name, or ``"min"``/``"mean"`` of ``snr_blue`` and ``snr_red``.
    """
    if snr in ("min", "mean"):
        missing = [c for c in ("snr_blue", "snr_red") if c not in catalog.columns]
        if missing:
            raise SampleError(f"S/N {snr!r} needs column(s) {', '.join(missing)}")
        both = [pl.col("snr_blue").cast(pl.Float64), pl.col("snr_red").cast(pl.Float64)]
        expr = pl.min_horizontal(both) if snr == "min" else pl.mean_horizontal(both)
        return catalog.with_columns(expr.alias("snr"))
    if snr not in catalog.columns:
        raise SampleError(f"catalogue has no S/N column {snr!r}")
    values = catalog.get_column(snr).cast(pl.Float64, strict=False)
    if values.is_null().all() and catalog.get_column(snr).null_count() < catalog.height:
        # --snr filename: a polars error mid-report (an all-empty column is fine: unknown)
        raise SampleError(f"S/N column {snr!r} holds no numbers")
    return catalog.with_columns(values.alias("snr"))


def select_usable(catalog: pl.DataFrame, *, all_rows: bool = False) -> pl.DataFrame:
    """Rows with status "ok" and, unless ``all_rows``, flag == 1 (columns optional)."""
    out = catalog
    if "status" in out.columns:
        out = out.filter(pl.col("status").cast(pl.Utf8) == "ok")
    if not all_rows and "flag" in out.columns:
        out = out.filter(pl.col("flag") == 1)
    return out


def with_label_columns(
    catalog: pl.DataFrame,
    labels_table: pl.DataFrame,
    columns: tuple[str, ...],
    *,
    key: tuple[str, ...],
) -> pl.DataFrame:
    """The catalogue with those ``columns`` of the labels table it lacks, joined on ``key``
    (null where no labels row matches): every catalogue row, not only the joined sample,
    must know its star to be kept to a checkpoint's split (the Kiel, [X/Fe] and OOD
    figures showed training stars when the star column came from the labels table)."""
    wanted = [c for c in columns if c in labels_table.columns and c not in catalog.columns]
    if not wanted:
        return catalog
    text = [k for k in key if labels_table.schema[k] == pl.String]
    side = labels_table.select(*key, *wanted).with_columns(pl.col(text).str.strip_chars())
    side = side.with_columns([pl.col(k).cast(catalog.schema[k], strict=False) for k in key])
    side = side.unique(list(key), keep="first")
    return catalog.join(side, on=list(key), how="left", maintain_order="left")


def _reference(column: str) -> pl.Expr:
    """A reference label as float, null where it was not measured (NaN, -9999 or
    another value at or below -999, e.g. a converted -9999) or is text that is no
    number (``n/a``: it stopped the whole report), as rrnet-train reads labels."""
    value = pl.col(column).cast(pl.Float64, strict=False)
    return pl.when(value.is_finite() & (value > MISSING_AT_OR_BELOW)).then(value).otherwise(None)


def build_sample(
    catalog: pl.DataFrame,
    labels_table: pl.DataFrame,
    labels: list[str] | tuple[str, ...],
    *,
    key: tuple[str, ...] = ("star_id",),
    snr: str = "snr_blue",
    all_rows: bool = False,
    carry: tuple[str, ...] = (),
) -> tuple[pl.DataFrame, SampleCounts]:
    """Join predictions to reference labels; see the module docstring.

    Returns the sample (catalogue columns, ``snr`` and ``<label>_true``) and the counts.
    Labels missing from the reference table are an error; reference rows with a
    duplicated key are an error too (they would silently duplicate predictions). Text
    keys are compared without surrounding blanks; ``carry``: columns of the labels table
    the sample takes where the catalogue has none (a split's star column, ``APOGEE_ID``).
    """
    for name, table in (("catalogue", catalog), ("labels", labels_table)):
        missing = [k for k in key if k not in table.columns]
        if missing:
            raise SampleError(f"{name} has no key column(s) {', '.join(missing)}")
    absent = [c for c in labels if c not in labels_table.columns]
    if absent:
        raise SampleError(f"labels table lacks column(s) {', '.join(absent)}")
    text = [k for k in key if labels_table.schema[k] == pl.String]
    labels_table = labels_table.with_columns(pl.col(text).str.strip_chars())
    carried = [c for c in carry if c in labels_table.columns and c not in catalog.columns]
    truth = labels_table.select(
        [*key, *carried, *(_reference(c).alias(c + TRUE_SUFFIX) for c in labels)]
    )
    if truth.select(key).is_duplicated().any():
        raise SampleError(f"labels table has duplicated key(s) {', '.join(key)}")
    status_ok = select_usable(catalog, all_rows=True)
    flag_ok = select_usable(catalog, all_rows=all_rows)
    if status_ok.height and not flag_ok.height:  # not "no row matches the labels"
        raise SampleError(
            f"no row has flag 1 (recommended) among the {status_ok.height} with status ok "
            "(see quality_bits); --all-rows evaluates them all"
        )
    with_snr = add_snr(flag_ok, snr)
    dtypes = {k: with_snr.schema[k] for k in key}
    for k in key:  # a key that cannot take the catalogue's type is a usage error
        cast = truth.get_column(k).cast(dtypes[k], strict=False)
        bad = cast.is_null() & truth.get_column(k).is_not_null()
        if bad.any():
            example = truth.get_column(k).filter(bad)[0]
            raise SampleError(
                f"key column {k}: the labels table's {example!r} is not a catalogue "
                f"{dtypes[k]} value ({int(bad.sum())} such rows)"
            )
    truth = truth.with_columns([pl.col(k).cast(dtypes[k]) for k in key])
    joined = with_snr.join(truth, on=list(key), how="inner", maintain_order="left")
    known = catalog.select(key).with_columns([pl.col(k).cast(dtypes[k]) for k in key])
    counts = SampleCounts(
        catalog_rows=catalog.height,
        status_ok=status_ok.height,
        flag_ok=flag_ok.height,
        with_labels=joined.height,
        labels_rows=truth.height,
        labels_matching_no_catalogue_row=truth.join(
            known.unique(), on=list(key), how="anti"
        ).height,
    )
    return joined, counts
