"""S/N-dependent calibration of the ensemble's 1-sigma errors, stored with a checkpoint.

Paper eq. 3 (:func:`rrnet.models.ensemble.ensemble_moments`) gives the *raw* error
``err``. On held-out stars it is not a calibrated 1-sigma (the demo's z-scores had
std 0.4-0.6), and how far off it is changes with S/N. Training therefore fits, per
label and on the VALIDATION split only, a scale that depends on S/N::

    err_cal = err * exp(a + b * log(clip(snr, SNR_MIN, SNR_MAX) / SNR_REF))

by maximum likelihood of the validation residuals ``r = pred - true`` under
``N(0, err_cal^2)``; ``b = 0`` is the constant factor of the old recalibration. The
parameters live in ``calibration.json`` beside ``config.json``::

    {"format": "rrnet-calibration", "version": 1, "split": "valid",
     "snr": "snr_blue", "snr_ref": 30.0, "snr_clip": [5.0, 300.0],
     "labels": {"Teff[K]": {"a": -0.9, "b": 0.1, "n": 140, "z_std_before": 0.4,
                            "z_std_after": 1.0}, ...}}

Inference multiplies each ``<label>_err`` by :func:`scale` (unless asked for raw errors).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CALIBRATION_FILE = "calibration.json"
FORMAT = "rrnet-calibration"
VERSION = 1
SNR_REF = 30.0
"""S/N at which ``exp(a)`` is the scale (keeps ``a`` and ``b`` weakly correlated)."""
SNR_MIN, SNR_MAX = 5.0, 300.0
"""S/N range the fit extrapolates within; outside it the scale is held constant."""
MIN_ROWS = 10
"""Fewer validation rows than this for a label: constant factor only (b = 0)."""
SNR_COLUMN = "snr_blue"
"""The S/N the calibration is a function of (the manifest's/catalogue's header S/N)."""


def calibration_snr(snr_blue: np.ndarray, snr_red: np.ndarray | None = None) -> np.ndarray:
    """The S/N the scale is evaluated at: ``snr_blue``, else ``snr_red``, else SNR_REF."""
    snr = np.asarray(snr_blue, dtype=np.float64).copy()
    if snr_red is not None:
        red = np.asarray(snr_red, dtype=np.float64)
        snr = np.where(np.isfinite(snr) & (snr > 0), snr, red)
    return np.where(np.isfinite(snr) & (snr > 0), snr, SNR_REF)


def _log_snr(snr: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(snr, dtype=np.float64), SNR_MIN, SNR_MAX) / SNR_REF)


def fit_scale(
    resid: np.ndarray, err: np.ndarray, snr: np.ndarray, *, use_snr: bool = True
) -> tuple[float, float]:
    """Maximum-likelihood ``(a, b)`` of ``r ~ N(0, (err * exp(a + b x))^2)``, ``x = log snr``.

    Newton iterations on the (convex) negative log-likelihood
    ``sum(a + b x + z^2 exp(-2 (a + b x)) / 2)``, ``z = r / err``.
    """
    ok = np.isfinite(resid) & np.isfinite(err) & (err > 0) & np.isfinite(snr)
    z2 = (np.asarray(resid)[ok] / np.asarray(err)[ok]) ** 2
    if z2.size == 0:
        raise ValueError("no usable rows to calibrate on")
    x = _log_snr(np.asarray(snr)[ok])
    a0 = 0.5 * math.log(max(float(np.mean(z2)), 1e-300))
    if not use_snr or z2.size < MIN_ROWS or np.ptp(x) < 1e-6:
        return a0, 0.0
    design = np.stack([np.ones_like(x), x], axis=1)
    theta = np.array([a0, 0.0])
    for _ in range(100):
        w = z2 * np.exp(-2.0 * design @ theta)
        grad = design.T @ (1.0 - w)
        hess = 2.0 * (design * w[:, None]).T @ design + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta - np.clip(step, -1.0, 1.0)
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def scale(params: Mapping[str, float], snr: np.ndarray) -> np.ndarray:
    """The factor ``exp(a + b log(snr/SNR_REF))`` per row (``snr`` clipped to the fit range)."""
    return np.exp(float(params["a"]) + float(params["b"]) * _log_snr(snr))


def fit_calibration(
    pred: np.ndarray,
    true: np.ndarray,
    err: np.ndarray,
    snr: np.ndarray,
    labels: Sequence[str],
) -> dict[str, Any]:
    """The ``calibration.json`` document from VALIDATION rows ``[N, L]`` (never test rows)."""
    out: dict[str, Any] = {}
    for j, label in enumerate(labels):
        resid, e = pred[:, j] - true[:, j], err[:, j]
        ok = np.isfinite(resid) & np.isfinite(e) & (e > 0)
        if ok.sum() < 2:
            continue
        a, b = fit_scale(resid[ok], e[ok], snr[ok])
        z_before = resid[ok] / e[ok]
        z_after = z_before / scale({"a": a, "b": b}, snr[ok])
        out[label] = {
            "a": a,
            "b": b,
            "n": int(ok.sum()),
            "z_std_before": float(np.sqrt(np.mean(z_before**2))),
            "z_std_after": float(np.sqrt(np.mean(z_after**2))),
            "coverage_1sigma_before": float(np.mean(np.abs(z_before) <= 1)),
            "coverage_1sigma_after": float(np.mean(np.abs(z_after) <= 1)),
        }
    return {
        "format": FORMAT,
        "version": VERSION,
        "split": "valid",
        "snr": SNR_COLUMN,
        "snr_ref": SNR_REF,
        "snr_clip": [SNR_MIN, SNR_MAX],
        "model": "err_cal = err * exp(a + b * log(clip(snr, 5, 300) / 30))",
        "labels": out,
    }


def write_calibration(checkpoint_dir: str | os.PathLike[str], doc: Mapping[str, Any]) -> Path:
    """Store ``doc`` as ``<checkpoint_dir>/calibration.json`` (atomically)."""
    from rrnet.utils.atomic import write_text

    return write_text(Path(checkpoint_dir) / CALIBRATION_FILE, json.dumps(doc, indent=2) + "\n")


def read_calibration(checkpoint_dir: str | os.PathLike[str]) -> dict[str, dict[str, float]] | None:
    """Per-label parameters stored with a checkpoint; None when it has none."""
    path = Path(checkpoint_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ValueError(f"not a {FORMAT} v{VERSION} file: {path}")
    return {str(k): dict(v) for k, v in doc["labels"].items()}


def apply_calibration(
    err: np.ndarray,
    labels: Sequence[str],
    params: Mapping[str, Mapping[str, float]],
    snr: np.ndarray,
) -> np.ndarray:
    """``err [N, L]`` (columns = ``labels``) with each calibrated label's column scaled."""
    out = np.array(err, dtype=np.float64, copy=True)
    for j, label in enumerate(labels):
        if label in params:
            out[:, j] *= scale(params[label], snr)
    return out
