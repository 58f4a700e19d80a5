"""Recalibration of the ensemble's predicted uncertainties.

A per-label factor ``s`` scales the predicted 1-sigma errors so that the z-scores
``(pred - true) / (s * err)`` have unit standard deviation on the VALIDATION split.
The factor is fitted on validation stars only (never test stars, which would leak
the test set into the errors), and stored next to the checkpoint as
``recalibration.json``::

    {"format": "rrnet-recalibration", "version": 1, "split": "valid",
     "apply": "err_calibrated = err * factors[label]",
     "factors": {"Teff[K]": 1.08, ...}, "n": {"Teff[K]": 812, ...}, ...}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import polars as pl

from rrnet.evaluation.metrics import GAUSS_COVERAGE_1SIGMA, GAUSS_COVERAGE_2SIGMA, label_metrics
from rrnet.evaluation.sample import TRUE_SUFFIX
from rrnet.labels import COLUMN_STYLES, styled_name
from rrnet.utils.atomic import write_text

RECALIBRATION_FILE = "recalibration.json"
FORMAT = "rrnet-recalibration"
VERSION = 1

NEEDS_RECALIBRATION_TOLERANCE: float = 0.1
"""A label needs recalibration when its z-score std differs from 1 by more than this."""


def sigma_scale(pred: np.ndarray, true: np.ndarray, err: np.ndarray) -> tuple[float, int]:
    """The factor ``std(z)`` (ddof 0) with ``z = (pred - true) / err``, and the count used."""
    m = label_metrics(pred, true, err)
    return m.z_std, m.n_z


def restrict_to_split(
    sample: pl.DataFrame, keys: Iterable[object], *, key: str = "star_id"
) -> pl.DataFrame:
    """Rows of ``sample`` whose ``key`` is among ``keys`` (e.g. the validation stars)."""
    values = pl.Series("keys", list(keys)).cast(sample.schema[key])
    return sample.filter(pl.col(key).is_in(values.implode()))


def fit_recalibration(
    valid_sample: pl.DataFrame, labels: Iterable[str]
) -> dict[str, dict[str, float | int]]:
    """Per-label ``{"factor", "n", "coverage_1sigma_before", "coverage_1sigma_after"}``.

    ``valid_sample`` must already be restricted to the validation split (see
    :func:`restrict_to_split`); labels without usable rows get no entry.
    """
    out: dict[str, dict[str, float | int]] = {}
    for label in labels:
        pred = valid_sample.get_column(label).cast(pl.Float64).to_numpy()
        true = valid_sample.get_column(label + TRUE_SUFFIX).cast(pl.Float64).to_numpy()
        err = valid_sample.get_column(f"{label}_err").cast(pl.Float64).to_numpy()
        factor, n = sigma_scale(pred, true, err)
        if n < 2 or not math.isfinite(factor) or factor <= 0:
            continue
        before = label_metrics(pred, true, err).coverage_1sigma
        after = label_metrics(pred, true, err * factor).coverage_1sigma
        out[label] = {
            "factor": factor,
            "n": n,
            "coverage_1sigma_before": before,
            "coverage_1sigma_after": after,
        }
    return out


def write_recalibration(
    checkpoint_dir: str | os.PathLike[str],
    fitted: dict[str, dict[str, float | int]],
    *,
    source: str = "",
) -> Path:
    """Store the fitted factors as ``<checkpoint_dir>/recalibration.json`` (atomically)."""
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "split": "valid",
        "method": "factor = std((pred - true) / err) over validation-split rows (ddof 0)",
        "apply": "err_calibrated = err * factors[label]",
        "source_catalog": source,
        "factors": {label: v["factor"] for label, v in fitted.items()},
        "n": {label: v["n"] for label, v in fitted.items()},
        "coverage_1sigma_before": {
            label: v["coverage_1sigma_before"] for label, v in fitted.items()
        },
        "coverage_1sigma_after": {label: v["coverage_1sigma_after"] for label, v in fitted.items()},
    }
    return write_text(Path(checkpoint_dir) / RECALIBRATION_FILE, json.dumps(doc, indent=2) + "\n")


def read_recalibration(checkpoint_dir: str | os.PathLike[str]) -> dict[str, float]:
    """The per-label factors stored with a checkpoint (ValueError on a foreign file)."""
    doc = json.loads((Path(checkpoint_dir) / RECALIBRATION_FILE).read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ValueError(f"not a {FORMAT} v{VERSION} file in {checkpoint_dir}")
    return {str(k): float(v) for k, v in doc["factors"].items()}


def apply_recalibration(catalog: pl.DataFrame, factors: dict[str, float]) -> pl.DataFrame:
    """Multiply each label's error column by its factor, in either column style
    (``teff_err`` as rrnet-infer writes by default, or ``Teff[K]_err``); labels the
    catalogue lacks are left alone, but ValueError when it has none of them (nothing
    would change, silently)."""
    scaled = {
        column: factor
        for label, factor in factors.items()
        for column in dict.fromkeys(styled_name(f"{label}_err", s) for s in COLUMN_STYLES)
        if column in catalog.columns
    }
    if factors and not scaled:
        raise ValueError(
            f"the catalogue has no error column of the recalibrated labels "
            f"({', '.join(factors)}), in either column style"
        )
    return catalog.with_columns([(pl.col(c) * f).alias(c) for c, f in scaled.items()])


def needs_recalibration(z_std: float, tolerance: float = NEEDS_RECALIBRATION_TOLERANCE) -> bool:
    """True when the z-score std is off unity by more than ``tolerance``."""
    return math.isfinite(z_std) and abs(z_std - 1.0) > tolerance


COVERAGE_WINDOW: tuple[float, float] = (0.63, 0.73)
"""1-sigma coverage of calibrated errors (68.27 % for Gaussian residuals; issue 17)."""


def coverage_off(coverage: float | None, n: int) -> bool:
    """True when the 1-sigma coverage of ``n`` z-scores lies outside
    :data:`COVERAGE_WINDOW` by more than two binomial standard errors (sampling alone
    moves it by ~0.05 at 100 rows): the errors are right on average only."""
    if coverage is None or not math.isfinite(coverage) or n < 2:
        return False
    lo, hi = COVERAGE_WINDOW
    se = math.sqrt(GAUSS_COVERAGE_1SIGMA * (1.0 - GAUSS_COVERAGE_1SIGMA) / n)
    return coverage < lo - 2 * se or coverage > hi + 2 * se


def errors_off(z_std: float, coverage: float | None, n: int) -> bool:
    """Errors that a reader should not take as calibrated 1-sigma: the z-score std off
    unity by more than :data:`NEEDS_RECALIBRATION_TOLERANCE`, or the coverage off its
    window (:func:`coverage_off`); the verdict looked at the std alone, and called an
    abundance with 57 % of its residuals within 1 sigma calibrated."""
    return needs_recalibration(z_std) or coverage_off(coverage, n)


def calibration_table(metrics: pl.DataFrame) -> pl.DataFrame:
    """Per label (all S/N): z mean/std, 1- and 2-sigma coverage and whether to recalibrate.

    ``metrics`` is :func:`rrnet.evaluation.metrics.metrics_table` output. The z std
    shown here is measured on the evaluated sample; a factor to apply must be fitted
    on the validation split (:func:`fit_recalibration`), never on test data.
    """
    overall = metrics.filter(pl.col("snr_bin") == "all")
    return overall.select(
        "label",
        "n_z",
        "z_mean",
        "z_std",
        "coverage_1sigma",
        pl.lit(GAUSS_COVERAGE_1SIGMA).alias("expected_1sigma"),
        "coverage_2sigma",
        pl.lit(GAUSS_COVERAGE_2SIGMA).alias("expected_2sigma"),
        (
            pl.col("z_std").is_finite()
            & ((pl.col("z_std") - 1.0).abs() > NEEDS_RECALIBRATION_TOLERANCE)
        ).alias("needs_recalibration"),
    )


def catalogue_errors_calibrated(provenance: dict[str, str]) -> bool:
    """Whether a catalogue's ``_err`` columns carry the checkpoints' calibration
    (``rrnet.checkpoints`` entries with ``"errors": "calibrated ..."``)."""
    try:
        entries = json.loads(provenance.get("rrnet.checkpoints", "[]"))
    except ValueError:
        return False
    return any(str(e.get("errors", "")).startswith("calibrated") for e in entries)


def before_after_table(
    sample: pl.DataFrame,
    labels: Iterable[str],
    params: dict[str, dict[str, float]],
    *,
    calibrated: bool,
) -> pl.DataFrame:
    """Per label and S/N bin: z std and 1-sigma coverage with raw (paper eq. 3) and with
    calibrated errors. ``params`` are the checkpoints' calibrations (label -> a, b);
    ``calibrated`` says which of the two the sample's ``_err`` columns hold."""
    from rrnet.evaluation.metrics import metrics_table
    from rrnet.models.calibration import calibrated_error, calibration_snr, raw_error

    labels = [label for label in labels if label in params]
    if not labels or not {"snr_blue", "snr_red"} <= set(sample.columns):
        return pl.DataFrame()
    snr = calibration_snr(
        sample.get_column("snr_blue").cast(pl.Float64).to_numpy(),
        sample.get_column("snr_red").cast(pl.Float64).to_numpy(),
    )
    raw, cal = {}, {}
    for label in labels:
        err = sample.get_column(f"{label}_err").cast(pl.Float64).to_numpy()
        raw[label] = raw_error(params[label], err, snr) if calibrated else err
        cal[label] = err if calibrated else calibrated_error(params[label], err, snr)

    def with_errors(errors: dict[str, np.ndarray]) -> pl.DataFrame:
        return sample.with_columns([pl.Series(f"{k}_err", v) for k, v in errors.items()])

    before = metrics_table(with_errors(raw), labels)
    after = metrics_table(with_errors(cal), labels)
    keep = ["label", "snr_bin", "n_z"]
    return before.select(
        *keep,
        pl.col("z_std").alias("z_std_raw"),
        pl.col("coverage_1sigma").alias("coverage_1sigma_raw"),
    ).join(
        after.select(
            "label",
            "snr_bin",
            pl.col("z_std").alias("z_std_calibrated"),
            pl.col("coverage_1sigma").alias("coverage_1sigma_calibrated"),
        ),
        on=["label", "snr_bin"],
        how="left",
        maintain_order="left",
    )
