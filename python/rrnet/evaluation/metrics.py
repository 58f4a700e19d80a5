"""Accuracy and uncertainty metrics of predicted labels against reference labels.

All statistics are plain NumPy on 1-D arrays so that they can be checked by hand.
Residuals are ``pred - true``; z-scores are ``(pred - true) / err`` with ``err`` the
predicted 1-sigma uncertainty. Entries with a non-finite prediction or reference
value are left out (missing abundances); z-statistics also need ``err > 0``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from rrnet.labels import TRUE_SUFFIX
from rrnet.models import xfe_skill
from rrnet.models.calibration import COVERAGE_1SIGMA, TARGET_SNR_EDGES

SNR_BINS: tuple[tuple[float, float], ...] = tuple(
    zip(TARGET_SNR_EDGES, (*TARGET_SNR_EDGES[1:], math.inf), strict=True)
)
"""S/N bins of the report, lower edge inclusive, upper exclusive (paper Figs 2, 5, 7):
10-20, 20-40, 40-60, 60-100, >= 100, the bins the calibration is fitted in."""

GAUSS_COVERAGE_1SIGMA: float = COVERAGE_1SIGMA
"""Probability of |z| <= 1 for a standard normal (0.6827; the calibration's target)."""
GAUSS_COVERAGE_2SIGMA: float = math.erf(2.0 / math.sqrt(2.0))
"""Probability of |z| <= 2 for a standard normal (0.9545)."""

MAD_TO_SIGMA: float = 1.482602218505602
"""1 / Phi^-1(3/4): turns a median absolute deviation into a Gaussian sigma."""


def snr_bin_name(lo: float, hi: float) -> str:
    """Human-readable name of an S/N bin, e.g. ``"10-20"`` or ``">=100"``."""
    return f">={lo:g}" if math.isinf(hi) else f"{lo:g}-{hi:g}"


@dataclass(frozen=True)
class LabelMetrics:
    """Summary of one label on one sample (NaN where a statistic is undefined).

    ``scatter`` is the population standard deviation (ddof 0) of the residuals,
    ``robust_scatter`` 1.4826 x their median absolute deviation from the median,
    ``sigma_mean`` the mean predicted 1-sigma error, ``coverage_1sigma`` and
    ``coverage_2sigma`` the fraction of entries with ``|z| <= 1`` and ``<= 2``
    (0.683 and 0.954 for calibrated Gaussian errors). The spreads (``scatter``,
    ``robust_scatter``, ``z_std``) are NaN below two values.
    """

    n: int
    mae: float
    bias: float
    scatter: float
    robust_scatter: float
    sigma_mean: float
    n_z: int
    z_mean: float
    z_std: float
    coverage_1sigma: float
    coverage_2sigma: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else math.nan


MIN_SPREAD_N: int = 2
"""A spread (scatter, z std) needs two values: one value has no spread, not a spread 0."""


def _std(x: np.ndarray) -> float:
    return float(np.std(x)) if x.size >= MIN_SPREAD_N else math.nan


def label_metrics(
    pred: np.ndarray, true: np.ndarray, err: np.ndarray | None = None
) -> LabelMetrics:
    """MAE (paper eq. 4), bias, scatter and z-score statistics of one label."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    err = np.full_like(pred, np.nan) if err is None else np.asarray(err, dtype=np.float64)
    if not pred.shape == true.shape == err.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape}, true {true.shape}, err {err.shape}")
    ok = np.isfinite(pred) & np.isfinite(true)
    resid = pred[ok] - true[ok]
    e = err[ok]
    good_err = np.isfinite(e) & (e > 0)
    z = resid[good_err] / e[good_err]
    med = np.median(resid) if resid.size else math.nan
    robust = (
        MAD_TO_SIGMA * float(np.median(np.abs(resid - med)))
        if resid.size >= MIN_SPREAD_N
        else math.nan
    )
    return LabelMetrics(
        n=int(resid.size),
        mae=_mean(np.abs(resid)),
        bias=_mean(resid),
        scatter=_std(resid),
        robust_scatter=robust,
        sigma_mean=_mean(e[np.isfinite(e)]),
        n_z=int(z.size),
        z_mean=_mean(z),
        z_std=_std(z),
        coverage_1sigma=_mean((np.abs(z) <= 1.0).astype(np.float64)),
        coverage_2sigma=_mean((np.abs(z) <= 2.0).astype(np.float64)),
    )


def snr_bin_masks(
    snr: np.ndarray, bins: tuple[tuple[float, float], ...] = SNR_BINS
) -> dict[str, np.ndarray]:
    """Boolean masks ``{"all": ..., "10-20": ..., ...}``; "all" holds every entry."""
    snr = np.asarray(snr, dtype=np.float64)
    masks = {"all": np.ones(snr.shape, dtype=bool)}
    for lo, hi in bins:
        masks[snr_bin_name(lo, hi)] = (snr >= lo) & (snr < hi)
    return masks


def metrics_table(
    sample: pl.DataFrame,
    labels: list[str] | tuple[str, ...],
    *,
    snr_column: str = "snr",
    bins: tuple[tuple[float, float], ...] = SNR_BINS,
    true_suffix: str = TRUE_SUFFIX,
) -> pl.DataFrame:
    """Long table: one row per (label, S/N bin) with every :class:`LabelMetrics` field.

    ``sample`` holds ``<label>`` (prediction), ``<label>_err`` and ``<label><true_suffix>``
    for each label, and the S/N column.
    """
    masks = snr_bin_masks(sample.get_column(snr_column).to_numpy(), bins)
    rows = []
    for label in labels:
        pred = sample.get_column(label).cast(pl.Float64).to_numpy()
        true = sample.get_column(label + true_suffix).cast(pl.Float64).to_numpy()
        err = sample.get_column(f"{label}_err").cast(pl.Float64).to_numpy()
        for name, mask in masks.items():
            m = label_metrics(pred[mask], true[mask], err[mask])
            rows.append({"label": label, "snr_bin": name, **m.to_dict()})
    return pl.DataFrame(rows, schema_overrides={"n": pl.Int64, "n_z": pl.Int64})


def xfe_skill_table(
    sample: pl.DataFrame,
    labels: list[str] | tuple[str, ...],
    *,
    snr_column: str = "snr",
    bins: tuple[tuple[float, float], ...] = SNR_BINS,
    true_suffix: str = TRUE_SUFFIX,
) -> pl.DataFrame | None:
    """Long table of each abundance's [X/Fe] skill beyond [Fe/H] per S/N bin
    (:mod:`rrnet.models.xfe_skill`): ``label``, ``snr_bin``, ``n``, ``xfe_skill``.
    None when [Fe/H] or every other abundance is missing from ``labels``."""
    abundances = xfe_skill.abundance_labels(labels)
    fe = xfe_skill.FE_LABEL
    if fe not in labels or not abundances:
        return None

    def column(name: str) -> np.ndarray:
        return sample.get_column(name).cast(pl.Float64).to_numpy()

    pred_fe, true_fe = column(fe), column(fe + true_suffix)
    masks = snr_bin_masks(sample.get_column(snr_column).to_numpy(), bins)
    rows = []
    for label in abundances:
        pred, true = column(label), column(label + true_suffix)
        have = np.isfinite(pred) & np.isfinite(true) & np.isfinite(pred_fe) & np.isfinite(true_fe)
        for name, mask in masks.items():
            m = mask & have
            skill = xfe_skill.xfe_skill(pred[m], true[m], pred_fe[m], true_fe[m])
            rows.append({"label": label, "snr_bin": name, "n": int(m.sum()), "xfe_skill": skill})
    return pl.DataFrame(rows, schema_overrides={"n": pl.Int64, "xfe_skill": pl.Float64})


OOD_BIT = 16
"""``QualityBit.OUT_OF_DISTRIBUTION`` (rrnet.inference.quality; evaluation reads only the
catalogue, so the value is repeated here and checked equal by the tests)."""
OOD_SNR_BINS: tuple[tuple[float, float], ...] = ((0.0, 10.0), *SNR_BINS)
"""The report's S/N bins plus the low-S/N one the quality cut removes."""


def ood_rates(
    catalog: pl.DataFrame,
    *,
    snr_column: str = "snr",
    bins: tuple[tuple[float, float], ...] = OOD_SNR_BINS,
) -> pl.DataFrame | None:
    """OOD flag rate per S/N bin over the catalogue rows given (every flag value):
    ``snr_bin``, ``n``, ``n_ood`` (quality bit 16 set), ``ood_rate``, ``ood_score_median``.
    None when the catalogue has no ``quality_bits`` column."""
    if "quality_bits" not in catalog.columns or snr_column not in catalog.columns:
        return None
    bits = catalog.get_column("quality_bits").cast(pl.Int64).fill_null(0).to_numpy()
    flagged = (bits & OOD_BIT) != 0
    score = (
        catalog.get_column("ood_score").cast(pl.Float64).to_numpy()
        if "ood_score" in catalog.columns
        else np.full(catalog.height, np.nan)
    )
    rows = []
    for name, mask in snr_bin_masks(catalog.get_column(snr_column).to_numpy(), bins).items():
        n = int(mask.sum())
        finite = score[mask][np.isfinite(score[mask])]
        rows.append(
            {
                "snr_bin": name,
                "n": n,
                "n_ood": int(flagged[mask].sum()),
                "ood_rate": float(flagged[mask].mean()) if n else math.nan,
                "ood_score_median": float(np.median(finite)) if finite.size else math.nan,
            }
        )
    return pl.DataFrame(rows)
