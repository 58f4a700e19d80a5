"""Out-of-distribution score of a spectrum relative to the training split.

The networks only know the spectra they were trained on; a spectrum unlike all of
them (another spectral type, a bad reduction, a wrong RV) gets confident-looking but
meaningless labels. The score used here is cheap and needs nothing beyond the
normalisation every checkpoint already stores:

    score = mean over pixels of z**2,   z = (clip(flux, -0.5, 2.5) - flux_mean) / flux_std

i.e. the model input's mean squared standardised value. Over the training split its
mean is exactly 1 (``flux_mean``/``flux_std`` are that split's per-pixel mean and
population standard deviation). Training stores the score's quantiles on the
training split in ``config.json`` (``training.ood.quantiles``); inference divides a
spectrum's score by the quantile it chooses (default 0.99) and flags ratios above 1.

The clip range is the model input's, :data:`rrnet.models.normalization.FLUX_CLIP`
(one constant, so the score always sees what the networks see).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rrnet.models.normalization import FLUX_CLIP

SCORE_NAME = "mean_squared_z"
"""Identifier of the score definition stored in checkpoints (change it if the formula changes)."""
CLIP_LOW, CLIP_HIGH = FLUX_CLIP
"""The model input's clipping range of the normalised flux (method §3), unpacked."""
QUANTILE_LEVELS: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)
"""Levels stored in checkpoints; other levels are interpolated linearly between them."""


def ood_score(flux: np.ndarray, flux_mean: np.ndarray, flux_std: np.ndarray) -> np.ndarray:
    """Mean squared standardised flux per spectrum, float64 ``[B]``.

    ``flux`` is continuum-normalised, ``[B, n_pixels]`` (or one spectrum ``[n_pixels]``);
    a spectrum with any non-finite pixel scores NaN (it is unusable anyway).
    """
    flux = np.asarray(flux, dtype=np.float64)
    single = flux.ndim == 1
    flux = np.atleast_2d(flux)
    mean = np.asarray(flux_mean, dtype=np.float64)
    std = np.asarray(flux_std, dtype=np.float64)
    if flux.shape[1] != mean.size or mean.shape != std.shape:
        raise ValueError(
            f"flux has {flux.shape[1]} pixels, normalisation has {mean.size} and {std.size}"
        )
    z = (np.clip(flux, *FLUX_CLIP) - mean) / std
    score = np.mean(z * z, axis=1)
    score[~np.all(np.isfinite(flux), axis=1)] = np.nan
    return score[0:1] if single else score


def reference_quantiles(scores: np.ndarray) -> dict[str, float]:
    """Quantiles of training-split scores, keyed by level as a string ("0.99": value)."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("no finite OOD score to take quantiles of")
    values = np.quantile(scores, QUANTILE_LEVELS)
    return {repr(level): float(v) for level, v in zip(QUANTILE_LEVELS, values, strict=True)}


def reference_dict(scores: np.ndarray) -> dict[str, Any]:
    """The ``training.ood`` entry of ``config.json``."""
    return {
        "score": SCORE_NAME,
        "n_spectra": int(np.isfinite(scores).sum()),
        "quantiles": reference_quantiles(scores),
    }


def threshold(reference: Mapping[str, Any], quantile: float) -> float:
    """The stored score quantile at ``quantile`` (linear interpolation between levels)."""
    if reference.get("score") != SCORE_NAME:
        raise ValueError(f"unknown OOD score {reference.get('score')!r} (expected {SCORE_NAME})")
    table = sorted((float(k), float(v)) for k, v in reference["quantiles"].items())
    levels, values = zip(*table, strict=True)
    if not levels[0] <= quantile <= levels[-1]:
        raise ValueError(f"OOD quantile {quantile} outside the stored range {levels[0]}..1")
    return float(np.interp(quantile, levels, values))


def _read_normalization(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from safetensors.numpy import load_file

    tensors = load_file(str(path / "normalization.safetensors"))
    return tensors["flux_mean"], tensors["flux_std"]


def scorer_for_checkpoint(
    path: str | os.PathLike[str],
    config: Mapping[str, Any] | None = None,
    *,
    quantile: float = 0.99,
) -> tuple[Callable[[np.ndarray], np.ndarray] | None, float | None]:
    """``(score function, threshold)`` for a checkpoint, or ``(None, None)`` if it has no
    OOD reference (e.g. imported original weights)."""
    path = Path(path)
    if config is None:
        config = json.loads((path / "config.json").read_text())
    reference = (config.get("training") or {}).get("ood")
    if not reference:
        return None, None
    flux_mean, flux_std = _read_normalization(path)
    limit = threshold(reference, quantile)

    def score(flux: np.ndarray) -> np.ndarray:
        return ood_score(flux, flux_mean, flux_std)

    return score, limit
