"""Per-star table: a star's exposures combined, with their scatter and a variability flag.

LAMOST MRS observes many stars several times. Each label is combined with
inverse-variance weights ``w = 1 / err**2``: mean ``sum(w x) / sum(w)``, error
``1 / sqrt(sum(w))``. The scatter between exposures is the weighted standard
deviation ``sqrt(sum(w (x - mean)**2) / sum(w))`` and the reduced chi-square
``sum(w (x - mean)**2) / (n - 1)`` compares it with the errors: a star is flagged
``variable`` when that exceeds ``chi2_threshold`` for one of ``variability_labels``
(binaries and pulsators change Teff and log g between exposures).

Only independent spectra are combined. A LAMOST MRS file holds a coadd (extensions
``COADD_B``/``COADD_R``) made from the single exposures beside it (``B-<id>``/
``R-<id>``); combining both would count the same photons twice. The rule, per star
and file: the usable single exposures of that file are combined, and its coadd is
used only when the file has no usable single exposure. Spectra from different files
(other nights, plates) are independent; a spectrum listed twice (the same file name,
in any folder, and extensions) counts once. Without ``filename``/``extname_blue``
columns every row counts as independent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from rrnet.inference.columns import SPEC_LABELS
from rrnet.io.lamost import COADD_PREFIX
from rrnet.labels import internal_columns, internal_name, styled_name
from rrnet.models.calibration import MIN_NOISE_FRACTION, SHARED_CAP

DEFAULT_VARIABILITY_LABELS: tuple[str, ...] = ("Teff[K]", "Logg")
DEFAULT_CHI2_THRESHOLD: float = 4.0
"""Reduced chi-square above which a star is ``variable`` (p ~ 0.05 at 1 dof, ~0.007 at 3)."""


def file_key() -> pl.Expr:
    """A spectrum file's own name, whatever its folder, case or compression: the same
    file listed from two folders, or stored unpacked, is one file."""
    base = pl.col("filename").str.split("/").list.last().str.to_lowercase()
    return base.str.replace(r"\.fits(\.gz)?$", "")


def repeats_exposures(usable: pl.Expr, star_column: str) -> pl.Expr:
    """True for a coadd row whose file also has a usable single exposure of the star."""
    coadd = pl.col("extname_blue").fill_null("").str.to_uppercase().str.starts_with(COADD_PREFIX)
    exposure_in_file = (usable & ~coadd).any().over([pl.col(star_column), file_key()])
    return coadd & exposure_in_file


def listed_before(usable: pl.Expr, names: Sequence[str], star_column: str) -> pl.Expr:
    """True for a usable row whose spectrum (:func:`file_key` and extensions) an earlier
    usable row of the same star already holds: a file listed twice, or found in two
    folders, is one observation, not two that average down. A row without a file name
    or extension is never taken for another."""
    keys = [pl.col(star_column), file_key(), pl.col("extname_blue").str.to_uppercase()]
    if "extname_red" in names:
        keys.append(pl.col("extname_red").str.to_uppercase())
    named = pl.col("filename").is_not_null() & pl.col("extname_blue").is_not_null()
    return usable & named & ~pl.struct([*keys, usable.alias("_u")]).is_first_distinct()


def per_star_table(
    catalogue: pl.DataFrame | pl.LazyFrame,
    *,
    star_column: str = "star_id",
    labels: Sequence[str] = SPEC_LABELS,
    only_recommended: bool = True,
    variability_labels: Sequence[str] = DEFAULT_VARIABILITY_LABELS,
    chi2_threshold: float = DEFAULT_CHI2_THRESHOLD,
    floor: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """One row per star (first-appearance order) from a per-exposure catalogue.

    A LazyFrame (e.g. ``pl.scan_parquet`` of a large catalogue) is read one label at a
    time: 2 million rows of 17 labels take ~7 s and 1.3 GB (``benchmarks/bench_per_star.py``).

    Exposures used: ``status == 'ok'`` (and ``flag == 1`` with ``only_recommended``)
    with a finite value and a positive finite error, independent ones only (module
    docstring: a file's coadd only when none of its exposures is usable; a spectrum listed
    twice once); every star id of the input
    appears, with ``n_exp = 0`` and null labels when none is usable.

    ``floor`` (label -> sigma, optional): the part of each exposure's error that
    does not average down (model error shared by all exposures of a star). Then
    ``noise_i^2 = err_i^2 - s^2`` (at least ``(0.1 err_i)^2``) weights the mean and the
    chi-square, and ``L_err = sqrt(1 / sum(1 / noise_i^2) + s^2)``, where the star's
    shared part ``s^2 = min(floor^2, 0.99 min_i err_i^2)`` (so a star of one spectrum
    keeps its error, and combining never gives more than the best spectrum's);
    without it the whole error is treated as noise (the old behaviour).

    Columns: ``star_column``, ``n_exp``, ``ra``, ``dec`` (of the first exposure), per
    label ``L``, ``L_err``, ``L_scatter``, ``L_chi2r``, ``L_n``, then ``variable``
    (uint8, 1 = variable, 0 = not; null when no variability label has 2 exposures).
    """
    lazy = catalogue.lazy()
    names = lazy.collect_schema().names()
    if star_column not in names:
        raise ValueError(
            f"per-star table needs a {star_column!r} column in the catalogue "
            f"(has: {', '.join(names)})"
        )
    # a catalogue as rrnet-infer writes it by default (teff, teff_err): computed under
    # the internal names, returned in the catalogue's own style
    identifier = internal_columns(names)
    lazy = lazy.rename(identifier)
    labels = [internal_name(label) for label in labels]
    variability_labels = [internal_name(label) for label in variability_labels]
    floor = {internal_name(label): sigma for label, sigma in (floor or {}).items()}
    usable = pl.col("status") == "ok"
    if only_recommended:
        usable = usable & (pl.col("flag") == 1)
    frame = lazy.with_row_index("_order").filter(_has_id(pl.col(star_column), lazy, star_column))
    if {"filename", "extname_blue"} <= set(names):
        usable = usable & ~repeats_exposures(usable, star_column)
        usable = usable & ~listed_before(usable, names, star_column)
    # The rows' star, order and usability once; then one label at a time, so that only
    # one label's per-row columns are ever in memory (all 17 at once took 3.6 GB for 2
    # million rows). Per label: each row's weight, its star's weighted mean (window sums
    # over those columns) and the weighted squared residual; per star, plain sums of
    # them. Polars runs those on its fast path (the same formulas written inside the
    # aggregation ran group by group, ~4 minutes for 2 million rows), and the two passes
    # are the formula's own, so nothing cancels.
    rows = frame.select(
        "_order",
        star_column,
        usable.alias("_usable"),
        *[c for c in ("ra", "dec") if c in names],
    ).collect(engine="streaming")
    rows = _in_order(rows)
    grouped = rows.group_by(star_column).agg(
        pl.col("_order").min(),
        pl.col("_usable").sum().cast(pl.Int32).alias("n_exp"),
        pl.col("ra").first() if "ra" in names else pl.lit(None).alias("ra"),
        pl.col("dec").first() if "dec" in names else pl.lit(None).alias("dec"),
    )
    for label in labels:
        values = _in_order(
            frame.select("_order", label, f"{label}_err").collect(engine="streaming")
        )
        part = _label_per_star(
            pl.concat(
                [rows.select(star_column, "_usable"), values.drop("_order")], how="horizontal"
            ),
            label,
            star_column,
            float(floor.get(label, 0.0)),
        )
        grouped = grouped.join(part, on=star_column, how="left")
    grouped = grouped.sort("_order").drop("_order")
    variable = pl.lit(False)
    for label in variability_labels:
        variable = variable | (pl.col(f"{label}_chi2r").fill_null(0.0) > chi2_threshold)
    # null where no variability label has two exposures: untested, not "not variable"
    tested = pl.any_horizontal(
        pl.col(f"{label}_chi2r").is_not_null() for label in variability_labels
    )
    variable = pl.when(tested).then(variable)
    order = [star_column, "n_exp", "ra", "dec"]
    for label in labels:
        order += [label, f"{label}_err", f"{label}_scatter", f"{label}_chi2r", f"{label}_n"]
    float32 = [c for c in order[4:] if not c.endswith("_n")]
    return (
        grouped.with_columns(
            [pl.col(c).cast(pl.Float32) for c in float32]
            + [variable.cast(pl.UInt8).alias("variable")]
        )
        .select([*order, "variable"])
        .rename(lambda c: styled_name(c, "identifier") if identifier else c)
    )


def _in_order(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` in input order (``_order``): each label's columns are read apart from the
    rows' stars, and set beside them row by row (a sort only if a reader reordered)."""
    return rows if rows.get_column("_order").is_sorted() else rows.sort("_order")


def _label_per_star(rows: pl.DataFrame, label: str, star_column: str, floor: float) -> pl.DataFrame:
    """``L``, ``L_err``, ``L_n``, ``L_scatter``, ``L_chi2r`` per star of one label, from
    rows of the star id, ``_usable``, the label and its error (formulas: the docstring
    of :func:`per_star_table`)."""
    x, err = pl.col(label).cast(pl.Float64), pl.col(f"{label}_err").cast(pl.Float64)
    good = pl.col("_usable") & x.is_finite() & err.is_finite() & (err > 0)
    smallest = pl.when(good).then(err).min().over(star_column)
    s2 = pl.min_horizontal(floor**2, SHARED_CAP * smallest**2)
    noise2 = pl.max_horizontal(err**2 - s2, (MIN_NOISE_FRACTION * err) ** 2)
    w = pl.when(good).then(1.0 / noise2).otherwise(0.0)
    weighted = rows.lazy().with_columns(
        w.alias("_w"),
        (w * pl.when(good).then(x).otherwise(0.0)).alias("_wx"),
        good.alias("_good"),
        s2.alias("_s2"),
    )
    mean = pl.col("_wx").sum().over(star_column) / pl.col("_w").sum().over(star_column)
    residual = pl.when("_good").then(pl.col("_w") * (x - mean) ** 2).otherwise(0.0)
    sums = weighted.with_columns(mean.alias("_mean"), residual.alias("_r2")).group_by(star_column)
    per_star = sums.agg(
        pl.col("_w").sum(), pl.col("_r2").sum(), pl.col("_good").sum(),
        pl.col("_mean").first(), pl.col("_s2").first(),
    )  # fmt: skip
    n, sw, resid2 = pl.col("_good"), pl.col("_w"), pl.col("_r2")
    return per_star.select(
        star_column,
        pl.when(n > 0).then(pl.col("_mean")).alias(label),
        pl.when(n > 0).then((1.0 / sw + pl.col("_s2")).sqrt()).alias(f"{label}_err"),
        n.cast(pl.Int32).alias(f"{label}_n"),
        pl.when(n > 1).then((resid2 / sw).sqrt()).alias(f"{label}_scatter"),
        pl.when(n > 1).then(resid2 / (n - 1)).alias(f"{label}_chi2r"),
    ).collect()


def _has_id(column: pl.Expr, lazy: pl.LazyFrame, name: str) -> pl.Expr:
    """Rows with a star id: not null, and for text not blank (FITS, VOTable and ECSV
    write an empty id as null, so a Parquet catalogue's '' made one star of them all)."""
    if lazy.collect_schema()[name] in (pl.Utf8, pl.Categorical):
        return column.is_not_null() & (column.cast(pl.Utf8).str.strip_chars() != "")
    return column.is_not_null()
