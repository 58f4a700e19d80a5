"""Normalisation statistics, computed on the training split only.

Computing them on all spectra would leak the validation/test sets into the model
input; the checkpoint stores these, so inference standardises exactly as training.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rrnet.models.ood import CLIP_HIGH, CLIP_LOW

MIN_FLUX_STD = 1e-3
"""Floor of the per-pixel flux standard deviation (a pixel constant over the training
set would otherwise divide by zero)."""

RowReader = Callable[[np.ndarray], np.ndarray]
"""``reader(indices) -> float32 [len(indices), n_pixels]`` normalised flux."""


def flux_statistics(
    reader: RowReader, rows: np.ndarray, n_pixels: int, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and population std of the clipped flux over ``rows``.

    Two passes in float64 (mean, then squared deviations), chunk by chunk, so that it
    works on memory-mapped stores larger than RAM. Raises ValueError on a non-finite
    flux (such rows must be excluded before training).
    """
    rows = np.asarray(rows)
    if rows.size == 0:
        raise ValueError("no training spectra to compute flux statistics on")
    total = np.zeros(n_pixels)
    for start in range(0, rows.size, chunk):
        flux = _clipped(reader(rows[start : start + chunk]), rows[start : start + chunk])
        total += flux.sum(axis=0)
    mean = total / rows.size
    sq = np.zeros(n_pixels)
    for start in range(0, rows.size, chunk):
        flux = _clipped(reader(rows[start : start + chunk]), rows[start : start + chunk])
        sq += ((flux - mean) ** 2).sum(axis=0)
    std = np.maximum(np.sqrt(sq / rows.size), MIN_FLUX_STD)
    return mean.astype(np.float32), std.astype(np.float32)


def _clipped(flux: np.ndarray, rows: np.ndarray) -> np.ndarray:
    flux = np.asarray(flux, dtype=np.float64)
    bad = ~np.all(np.isfinite(flux), axis=1)
    if bad.any():
        raise ValueError(f"non-finite flux in training row(s) {rows[bad][:5].tolist()}")
    return np.clip(flux, CLIP_LOW, CLIP_HIGH)


def label_statistics(labels: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-label mean and population std over the present (non-NaN) values.

    Raises ValueError for a label with no value or no spread in the training split.
    """
    labels = np.asarray(labels, dtype=np.float64)
    count = np.sum(~np.isnan(labels), axis=0)
    empty = [n for n, c in zip(names, count, strict=True) if c == 0]
    if empty:
        raise ValueError(f"label(s) with no value in the training split: {', '.join(empty)}")
    mean = np.nanmean(labels, axis=0)
    std = np.sqrt(np.nanmean((labels - mean) ** 2, axis=0))
    # one value, up to the round-off of its mean (4.0 x 1,000 has std ~1e-13, not 0)
    flat = [n for n, s, m in zip(names, std, mean, strict=True) if not s > 1e-9 * max(1.0, abs(m))]
    if flat:
        raise ValueError(f"label(s) constant over the training split: {', '.join(flat)}")
    return mean, std


def label_ranges(labels: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    """``{label: {"min", "max", "n"}}`` over the present training values (for inference)."""
    labels = np.asarray(labels, dtype=np.float64)
    out = {}
    for j, name in enumerate(names):
        col = labels[:, j][~np.isnan(labels[:, j])]
        out[name] = {"min": float(col.min()), "max": float(col.max()), "n": int(col.size)}
    return out
