"""A toy catalogue with known errors, to try the report without a trained model.

Predictions are ``true + sigma_true * N(0, 1)`` while the catalogue claims
``err = sigma_true / error_scale``: with ``error_scale = 1`` the errors are
calibrated, with 2 they are too small by a factor 2 (z std = 2). Stars have
1-4 exposures at different S/N so the repeat analysis has something to do.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from rrnet.labels import ALL_LABELS

SIGMA_AT_SNR20: dict[str, float] = {"Teff[K]": 100.0, "Logg": 0.15}
"""Toy 1-sigma errors at S/N 20; abundances use 0.08 dex. Errors scale as 20 / S/N."""


def toy_tables(
    n_stars: int = 60, *, seed: int = 0, error_scale: float = 1.0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(catalog, labels)``: a rrnet-infer-like catalogue and per-star reference labels."""
    rng = np.random.default_rng(seed)
    giants = rng.random(n_stars) < 0.4
    truth = {
        "star_id": np.arange(n_stars, dtype=np.int64),
        "Teff[K]": np.where(
            giants, rng.uniform(4000, 5200, n_stars), rng.uniform(4300, 6500, n_stars)
        ),
        "Logg": np.where(giants, rng.uniform(1.5, 3.5, n_stars), rng.uniform(4.0, 4.8, n_stars)),
        "FeH": rng.normal(-0.2, 0.3, n_stars),
    }
    for label in ALL_LABELS:
        if label not in truth:
            truth[label] = truth["FeH"] + rng.normal(0.05, 0.1, n_stars)
    labels = pl.DataFrame(truth)
    n_exp = rng.integers(1, 5, n_stars)
    star = np.repeat(np.arange(n_stars), n_exp)
    n = star.size
    snr = rng.uniform(8, 150, n)
    rows: dict[str, object] = {
        "obsid": np.arange(1000, 1000 + n, dtype=np.int64),
        "filename": [f"spec-{i}.fits.gz" for i in range(n)],
        "extname_blue": [f"B-{i}" for i in range(n)],
        "extname_red": [f"R-{i}" for i in range(n)],
        "snr_blue": snr,
        "snr_red": snr * 1.3,
        "star_id": star.astype(np.int64),
    }
    for label in ALL_LABELS:
        sigma = SIGMA_AT_SNR20.get(label, 0.08) * 20.0 / snr
        rows[label] = truth[label][star] + sigma * rng.standard_normal(n)
        rows[f"{label}_err"] = sigma / error_scale
    rows["flag"] = (snr >= 10).astype(np.int64)
    rows["status"] = ["ok"] * n
    return pl.DataFrame(rows), labels
