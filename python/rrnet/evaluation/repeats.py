"""Predicted uncertainties against the scatter between repeat observations (paper Fig. 7).

For a star observed ``n_s >= min_exposures`` times the scatter of its predictions,
``sigma_obs = std(y_1..y_ns)`` (ddof 1), measures the noise-driven part of the error;
the ensemble's ``sigma_pred`` also contains the model (epistemic) part, so a ratio
``sigma_obs / sigma_pred`` below 1 is expected, and a ratio above 1 means the
predicted errors are too small. Per S/N bin (the star's median S/N over its
exposures) ``sigma_obs`` is pooled as ``sqrt(mean(var_star))`` and ``sigma_pred`` is
the mean predicted error.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from rrnet.evaluation.metrics import SNR_BINS, snr_bin_masks
from rrnet.inference.per_star import repeats_exposures


def per_star(
    catalog: pl.DataFrame,
    labels: list[str] | tuple[str, ...],
    *,
    key: str = "star_id",
    snr_column: str = "snr",
    min_exposures: int = 2,
) -> pl.DataFrame:
    """One row per star with >= ``min_exposures`` independent spectra (a file's coadd is
    left out when the star has single exposures in that file: it is made of them).

    Columns: key, ``n_exp``, ``snr`` (median), and per label ``<label>_var_obs``
    (sample variance of the predictions, ddof 1) and ``<label>_sigma_pred`` (mean error).
    """
    if min_exposures < 2:
        raise ValueError("min_exposures must be >= 2 (a scatter needs two exposures)")
    if {"filename", "extname_blue"} <= set(catalog.columns):
        # independent spectra only, as --per-star: a coadd repeats its file's exposures
        catalog = catalog.filter(~repeats_exposures(pl.lit(True), key))
    aggs = [pl.len().alias("n_exp"), pl.col(snr_column).median().alias("snr")]
    for label in labels:
        aggs.append(pl.col(label).cast(pl.Float64).var(ddof=1).alias(f"{label}_var_obs"))
        aggs.append(pl.col(f"{label}_err").cast(pl.Float64).mean().alias(f"{label}_sigma_pred"))
    return catalog.group_by(key).agg(aggs).filter(pl.col("n_exp") >= min_exposures).sort(key)


def repeat_table(
    stars: pl.DataFrame,
    labels: list[str] | tuple[str, ...],
    *,
    bins: tuple[tuple[float, float], ...] = SNR_BINS,
) -> pl.DataFrame:
    """Per (label, S/N bin): ``n_stars``, ``n_spectra``, ``sigma_obs``, ``sigma_pred``, ``ratio``.

    ``ratio = sigma_obs / sigma_pred``; NaN where a bin has no star.
    """
    masks = snr_bin_masks(stars.get_column("snr").to_numpy(), bins)
    n_exp = stars.get_column("n_exp").to_numpy()
    rows = []
    for label in labels:
        var_obs = stars.get_column(f"{label}_var_obs").to_numpy().astype(np.float64)
        sig_pred = stars.get_column(f"{label}_sigma_pred").to_numpy().astype(np.float64)
        for name, mask in masks.items():
            ok = mask & np.isfinite(var_obs) & np.isfinite(sig_pred)
            obs = math.sqrt(float(np.mean(var_obs[ok]))) if ok.any() else math.nan
            pred = float(np.mean(sig_pred[ok])) if ok.any() else math.nan
            ratio = obs / pred if ok.any() and pred > 0 else math.nan
            rows.append(
                {
                    "label": label,
                    "snr_bin": name,
                    "n_stars": int(ok.sum()),
                    "n_spectra": int(n_exp[ok].sum()),
                    "sigma_obs": obs,
                    "sigma_pred": pred,
                    "ratio": ratio,
                }
            )
    return pl.DataFrame(rows, schema_overrides={"n_stars": pl.Int64, "n_spectra": pl.Int64})
