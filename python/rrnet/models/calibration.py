"""Calibration of the ensemble's 1-sigma errors, fitted on validation, stored with a checkpoint.

Paper eq. 3 (:func:`rrnet.models.ensemble.ensemble_moments`) gives the *raw* error
``err``. On held-out stars it is not a calibrated 1-sigma (the demo's z-scores had
std 0.4-0.6). Training therefore fits, per label and on the VALIDATION split only,
a calibrated error; the first forms by maximum likelihood of the residuals
``r = pred - true`` under ``N(0, err_cal^2)``::

    err_cal = sqrt((err * exp(a + b * log(clip(snr, SNR_MIN, SNR_MAX) / SNR_REF)))^2 + floor^2)

in one of six forms (:data:`FORMS`): "const" (``b = 0``, ``floor = 0``: one factor per
label), "scale" (``b`` free: an S/N-dependent factor), "floor" (``b`` and a floor that
does not shrink with the noise), "balanced" / "balanced-scale" ("const" / "scale" with
``a`` moved midway, in log, between z std 1 and 68.27 % coverage,
:func:`balance_shift`), and "power" (:func:`fit_power`)::

    err_cal = err_ref * (err / err_ref)^power * exp(a + b * log(clip(snr, 5, 300) / 30))

with ``a``, ``b`` and ``power`` chosen so that, in each issue-17 S/N bin of the
validation rows, z has rms 1 and 68.27 % of |z| <= 1. Residuals are not Gaussian
(platykurtic for most abundances, heavy-tailed for Teff, log g, [Fe/H]), so one factor
per S/N cannot give both; the exponent sets how much the error varies from star to star,
hence the shape of z. But it buys the S/N-bin windows by misranking errors *within* a
bin: an exponent of 4.6 ([Ti/H], demo) made held-out z std 1.22 / 0.85 / 0.69 from the
smallest to the largest third of the raw errors (an error of 0.040 dex on a star 5.8
sigma off). The default, "auto", therefore fits "balanced-scale" on validation splits of
at least :data:`AUTO_MIN_ROWS` spectra (errors stay proportional to eq. 3 at a given
S/N: those thirds 0.84-1.28, the largest within 0.8-1.25 of the smallest for 16 of 17
labels, against 8 with "power") and "const" on smaller ones (docs/results.md, issue 17:
on the demo checkpoint, 645 held-out stars, both target windows in 53 of 85 label x S/N
bins against 56 for "power"; on the paper-recipe run's 70 validation stars the S/N
slopes fitted noise and "const" was best, 44 against 31). The parameters live in
``calibration.json`` beside ``config.json``::

    {"format": "rrnet-calibration", "version": 3, "split": "valid", "form": "power",
     "form_requested": "power",
     "snr": "snr_blue", "snr_ref": 30.0, "snr_clip": [5.0, 300.0],
     "labels": {"Teff[K]": {"a": -0.9, "b": 0.0, "floor": 0.0, "power": 1.4,
                            "err_ref": 80.0, "n": 140,
                            "z_std_before": 0.4, "z_std_after": 1.0}, ...}}

Inference replaces each ``<label>_err`` by :func:`calibrated_error` (unless asked for
raw errors); version 1 files (no floor) are read with ``floor = 0``, version 1 and 2
files (the other forms, still written as version 2) with ``power = 1``. ``shared``
(optional, :func:`fit_shared_error`) is the part of the calibrated error that repeat
spectra of a star share; it does not change ``<label>_err``, only how the per-star
table combines them (``rrnet-infer --per-star --error-floor calibration``).
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
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
"""Version 1 files have no ``floor`` (read as 0); version 3 added the "power" form's
``power`` and ``err_ref`` (absent: ``power = 1``, the error used as it is)."""
MODEL = "err_cal = sqrt((err * exp(a + b * log(clip(snr, 5, 300) / 30)))^2 + floor^2)"
MODEL_POWER = "err_cal = err_ref * (err / err_ref)^power * exp(a + b * log(clip(snr, 5, 300) / 30))"
SNR_REF = 30.0
"""S/N at which ``exp(a)`` is the scale (keeps ``a`` and ``b`` weakly correlated)."""
SNR_MIN, SNR_MAX = 5.0, 300.0
"""S/N range the fit extrapolates within; outside it the scale is held constant."""
MIN_ROWS = 10
"""Fewer validation rows than this for a label: constant factor only (b = 0)."""
SNR_COLUMN = "snr_blue"
"""The S/N the calibration is a function of (the manifest's/catalogue's header S/N)."""
MIN_NOISE_FRACTION = 0.1
"""With a shared part ``s``, a spectrum's noise part is at least this fraction of its
error (:func:`fit_shared_error` and the per-star table weight alike)."""
SHARED_CAP = 1.0 - MIN_NOISE_FRACTION**2
"""A star's shared part is at most ``sqrt(SHARED_CAP)`` times its smallest error: a
shared part larger than a spectrum's whole error gave a star of one spectrum an error
4x its own, and a combined error larger than its best spectrum's."""


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


def _shaped(params: Mapping[str, float], err: np.ndarray, inverse: bool = False) -> np.ndarray:
    """``err_ref * (err / err_ref)^power`` ("power" form), else ``err`` unchanged;
    ``inverse``: the same with ``1 / power`` (undoes it)."""
    err = np.asarray(err, dtype=np.float64)
    power = float(params.get("power", 1.0))
    if power == 1.0:
        return err
    ref = float(params["err_ref"])
    return ref * (np.maximum(err, 0.0) / ref) ** (1.0 / power if inverse else power)


def calibrated_error(params: Mapping[str, float], err: np.ndarray, snr: np.ndarray) -> np.ndarray:
    """``sqrt((shaped(err) * scale)^2 + floor^2)``: the calibrated 1-sigma of raw errors
    ``err`` (``shaped(err) = err`` except in the "power" form, :func:`_shaped`)."""
    floor = float(params.get("floor", 0.0))
    scaled = _shaped(params, err) * scale(params, snr)
    return np.hypot(scaled, floor) if floor > 0 else scaled


def raw_error(params: Mapping[str, float], err_cal: np.ndarray, snr: np.ndarray) -> np.ndarray:
    """The inverse of :func:`calibrated_error` (paper eq. 3 error from a calibrated one)."""
    floor = float(params.get("floor", 0.0))
    cal = np.asarray(err_cal, dtype=np.float64)
    noise = np.sqrt(np.maximum(cal**2 - floor**2, 0.0)) if floor > 0 else cal
    return _shaped(params, noise / scale(params, snr), inverse=True)


def fit_floor(resid: np.ndarray, err: np.ndarray, snr: np.ndarray) -> tuple[float, float, float]:
    """Maximum-likelihood ``(a, b, floor)`` of ``r ~ N(0, (err e^(a + b x))^2 + floor^2)``.

    The floor is the part of the error that does not shrink with the noise (model
    error of the label at that star); started from :func:`fit_scale` with a floor at
    the 10th percentile of ``|r|``, optimised in ``log floor`` (L-BFGS).
    """
    from scipy.optimize import minimize

    ok = np.isfinite(resid) & np.isfinite(err) & (err > 0) & np.isfinite(snr)
    r2, e2 = np.asarray(resid)[ok] ** 2, np.asarray(err)[ok] ** 2
    x = _log_snr(np.asarray(snr)[ok])
    a0, b0 = fit_scale(np.asarray(resid)[ok], np.asarray(err)[ok], np.asarray(snr)[ok])
    if r2.size < MIN_ROWS:
        return a0, b0, 0.0

    def nll(theta: np.ndarray) -> float:
        var = e2 * np.exp(2.0 * (theta[0] + theta[1] * x)) + np.exp(2.0 * theta[2])
        return float(0.5 * np.sum(np.log(var) + r2 / var))

    start = np.array([a0 - 0.1, b0, math.log(max(np.percentile(np.sqrt(r2), 10), 1e-12))])
    best = minimize(nll, start, method="L-BFGS-B")
    theta = best.x if best.fun < nll(np.array([a0, b0, -700.0])) else np.array([a0, b0, -np.inf])
    return float(theta[0]), float(theta[1]), float(math.exp(theta[2]))


def fit_shared_error(values: np.ndarray, err: np.ndarray, groups: np.ndarray) -> float:
    """The part ``s`` of calibrated errors ``err`` that repeat spectra of a star share.

    Why: exposures of one star share its model error, so their scatter measures only
    the noise part. ``groups`` labels independent spectra by star (one entry per
    row). ``s`` is the constant with which the mean reduced chi-square over stars
    with >= 2 spectra, weights ``1 / max(err^2 - s_star^2, (MIN_NOISE_FRACTION err)^2)``
    with ``s_star^2 = min(s^2, SHARED_CAP min(err)^2)`` over the star's spectra (what
    :func:`rrnet.inference.per_star.per_star_table` uses with ``floor``), is 1;
    0 when it is >= 1 already. Bisection: the chi-square grows with ``s``.
    """
    ok = np.isfinite(values) & np.isfinite(err) & (err > 0)
    x, e, g = np.asarray(values)[ok], np.asarray(err)[ok], np.asarray(groups)[ok]
    _, inv, counts = np.unique(g, return_inverse=True, return_counts=True)
    rep = counts[inv] >= 2
    if not rep.any():
        return 0.0
    x, e, inv = x[rep], e[rep], np.unique(inv[rep], return_inverse=True)[1]
    n = np.bincount(inv)
    smallest = np.full(n.size, np.inf)
    np.minimum.at(smallest, inv, e)
    cap2 = (SHARED_CAP * smallest**2)[inv]

    def mean_chi2r(s: float) -> float:
        w = 1.0 / np.maximum(e**2 - np.minimum(s**2, cap2), (MIN_NOISE_FRACTION * e) ** 2)
        mean = np.bincount(inv, w * x) / np.bincount(inv, w)
        return float(np.mean(np.bincount(inv, w * (x - mean[inv]) ** 2) / (n - 1)))

    if mean_chi2r(0.0) >= 1.0:
        return 0.0
    lo, hi = 0.0, float(np.sqrt(np.max(cap2)))  # beyond every star's cap nothing changes
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_chi2r(mid) < 1.0 else (lo, mid)
    return 0.5 * (lo + hi)


FORMS: tuple[str, ...] = ("scale", "floor", "const", "balanced", "balanced-scale", "power")
AUTO = "auto"
"""The default: "balanced-scale" with at least :data:`AUTO_MIN_ROWS` validation spectra,
else "const" (module docstring: "power" measured 3-6 label-bins better but misranks errors)."""
DEFAULT_FORM = AUTO
AUTO_MIN_ROWS = 500
"""Validation spectra an S/N slope per label needs (~100 per issue-17 S/N bin) to fit more
than noise. Measured (docs/results.md, issue 17): with 815-838 validation spectra (the
demo) "balanced-scale" met both windows in 50-54 of 85 held-out label-bins against 41-51
for "const"; with 216 (70 stars, the paper-recipe run) 31 against 44."""


def resolve_form(form: str | None, n_rows: int) -> str:
    """The form fitted for ``form`` (None: :data:`DEFAULT_FORM`) on ``n_rows`` validation rows."""
    form = form or DEFAULT_FORM
    if form == AUTO:
        return "balanced-scale" if n_rows >= AUTO_MIN_ROWS else "const"
    if form not in FORMS:
        raise ValueError(f"unknown calibration form {form!r} (expected one of {(*FORMS, AUTO)})")
    return form


COVERAGE_1SIGMA: float = math.erf(1.0 / math.sqrt(2.0))
"""P(|z| <= 1) of a standard normal (0.6827): the 1-sigma coverage a calibrated error gives."""


def balance_shift(resid: np.ndarray, err_cal: np.ndarray) -> float:
    """The shift of ``a`` that puts errors ``err_cal`` midway (in log) between matching
    the rms of ``z = resid / err_cal`` (z std 1) and its 1-sigma coverage (68.27 %).

    Why: a network's residuals are not Gaussian (platykurtic where it shrinks toward
    the label mean, heavy-tailed where a few stars fail), so no single factor gives
    both z std 1 and 68.3 % coverage; the geometric mean of the two factors misses
    each by about half as much as either one misses the other.
    """
    ok = np.isfinite(resid) & np.isfinite(err_cal) & (err_cal > 0)
    z = np.abs(np.asarray(resid)[ok] / np.asarray(err_cal)[ok])
    if z.size < MIN_ROWS:
        return 0.0
    rms = float(np.sqrt(np.mean(z**2)))
    q = float(np.quantile(z, COVERAGE_1SIGMA))
    return 0.5 * math.log(q / rms) if rms > 0 and q > 0 else 0.0


TARGET_SNR_EDGES: tuple[float, ...] = (10.0, 20.0, 40.0, 60.0, 100.0)
"""Lower edges of the S/N bins the "power" form is fitted to be calibrated in (issue 17's
bins; rows below the first edge count with the first bin)."""
POWER_BOUNDS = (0.25, 8.0)
"""Range of the "power" form's exponent (bounded away from 0 so that it stays invertible)."""


def _target_loss(z: np.ndarray, bins: Sequence[np.ndarray]) -> float:
    """Sum over S/N bins (row indices) of ``log(rms z)^2 + log(q |z|)^2``, q the 68.27 %
    quantile: 0 when every bin has z rms 1 and 1-sigma coverage 68.27 %."""
    total = 0.0
    for rows in bins:
        zk = np.abs(z[rows])
        rms = math.sqrt(float(np.mean(zk**2)))
        q = float(np.quantile(zk, COVERAGE_1SIGMA))
        total += math.log(max(rms, 1e-300)) ** 2 + math.log(max(q, 1e-300)) ** 2
    return total


def _target_bins(snr: np.ndarray) -> list[np.ndarray]:
    """Row indices per :data:`TARGET_SNR_EDGES` bin (below the first edge: the first
    bin); all rows as one bin when any bin has fewer than :data:`MIN_ROWS` rows."""
    k = np.maximum(np.searchsorted(np.asarray(TARGET_SNR_EDGES), snr, side="right"), 1)
    bins = [np.flatnonzero(k == i) for i in np.unique(k)]
    return bins if min(b.size for b in bins) >= MIN_ROWS else [np.arange(snr.size)]


def fit_power(resid: np.ndarray, err: np.ndarray, snr: np.ndarray) -> dict[str, float]:
    """``(a, b, power, err_ref)`` of ``err_cal = err_ref (err / err_ref)^power e^(a + b x)``.

    Why: one factor per S/N cannot give both z std 1 and 68.27 % coverage when the
    residuals are not Gaussian. The exponent changes how much the error varies from
    star to star at a given S/N, hence the *shape* of the z distribution (a wider
    spread of errors gives heavier tails), while ``a + b x`` sets its width. The
    three are chosen (Nelder-Mead, several starting exponents) to minimise
    :func:`_target_loss` over the :data:`TARGET_SNR_EDGES` bins of these rows;
    ``err_ref`` is the median ``err`` (keeps ``a`` near the plain factor's value).
    """
    from scipy.optimize import minimize

    ok = np.isfinite(resid) & np.isfinite(err) & (err > 0) & np.isfinite(snr)
    r, e, s = np.abs(np.asarray(resid)[ok]), np.asarray(err)[ok], np.asarray(snr)[ok]
    if r.size < MIN_ROWS:
        a, b = fit_scale(r, e, s)
        return {"a": a, "b": b, "power": 1.0, "err_ref": 1.0}
    x, ref, bins = _log_snr(s), float(np.median(e)), _target_bins(s)
    log_shape, r_ref = np.log(e / ref), r / ref

    def loss(theta: np.ndarray) -> float:
        return _target_loss(r_ref * np.exp(-theta[0] - theta[1] * x - theta[2] * log_shape), bins)

    a0, b0 = fit_scale(r, e, s)
    fits = [
        minimize(
            loss, np.array([a0, b0, p0]), method="Nelder-Mead",
            bounds=[(None, None), (None, None), POWER_BOUNDS],
            options={"xatol": 1e-4, "fatol": 1e-8, "maxiter": 2000},
        )
        for p0 in (1.0, 0.5, 2.0, 4.0)
    ]  # fmt: skip
    a, b, power = (float(v) for v in min(fits, key=lambda got: got.fun).x)
    return {"a": a, "b": b, "power": power, "err_ref": ref}


def fit_calibration(
    pred: np.ndarray,
    true: np.ndarray,
    err: np.ndarray,
    snr: np.ndarray,
    labels: Sequence[str],
    *,
    form: str | None = None,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """The ``calibration.json`` document from VALIDATION rows ``[N, L]`` (never test rows).

    ``form``: "const" (``err * exp(a)``), "scale" (``err * exp(a + b x)``), "floor"
    (the scale plus a per-label floor added in quadrature, :func:`fit_floor`),
    "balanced" / "balanced-scale" ("const" / "scale" with ``a`` shifted by
    :func:`balance_shift`), "power" (:func:`fit_power`), or "auto" (the default:
    "balanced-scale" or "const" by the number of rows, :func:`resolve_form`); the
    document's ``form`` is the one fitted, ``form_requested`` the one asked for.
    ``groups`` (star id per row, rows independent spectra): also store ``shared``,
    the part of the calibrated error that repeats share (:func:`fit_shared_error`).
    """
    requested = form or DEFAULT_FORM
    form = resolve_form(requested, len(pred))
    out: dict[str, Any] = {}
    for j, label in enumerate(labels):
        resid, e = pred[:, j] - true[:, j], err[:, j]
        ok = np.isfinite(resid) & np.isfinite(e) & (e > 0)
        if ok.sum() < 2:
            continue
        params: dict[str, float]
        if form == "floor":
            a, b, floor = fit_floor(resid[ok], e[ok], snr[ok])
            params = {"a": a, "b": b, "floor": floor}
        elif form == "power":
            params = {**fit_power(resid[ok], e[ok], snr[ok]), "floor": 0.0}
        else:
            use_snr = form in ("scale", "balanced-scale")
            a, b = fit_scale(resid[ok], e[ok], snr[ok], use_snr=use_snr)
            params = {"a": a, "b": b, "floor": 0.0}
        if form.startswith("balanced"):
            params["a"] += balance_shift(resid[ok], calibrated_error(params, e[ok], snr[ok]))
        e_cal = calibrated_error(params, e[ok], snr[ok])
        z_before = resid[ok] / e[ok]
        z_after = resid[ok] / e_cal
        if groups is not None:
            params["shared"] = fit_shared_error(pred[ok, j], e_cal, np.asarray(groups)[ok])
        out[label] = {
            **params,
            "n": int(ok.sum()),
            "z_std_before": float(np.sqrt(np.mean(z_before**2))),
            "z_std_after": float(np.sqrt(np.mean(z_after**2))),
            "coverage_1sigma_before": float(np.mean(np.abs(z_before) <= 1)),
            "coverage_1sigma_after": float(np.mean(np.abs(z_after) <= 1)),
        }
    return {
        "format": FORMAT,
        "version": VERSION if form == "power" else 2,  # readable by v2 code unless "power"
        "split": "valid",
        "snr": SNR_COLUMN,
        "snr_ref": SNR_REF,
        "snr_clip": [SNR_MIN, SNR_MAX],
        "form": form,
        "form_requested": requested,
        "model": MODEL_POWER if form == "power" else MODEL,
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
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a damaged file, named
        raise ValueError(f"{path}: invalid JSON ({exc})") from exc
    if (
        not isinstance(doc, dict)
        or doc.get("format") != FORMAT
        or doc.get("version") not in READABLE_VERSIONS
    ):
        raise ValueError(f"not a {FORMAT} v{VERSION} file: {path}")
    labels = doc.get("labels")
    if not isinstance(labels, dict) or not all(
        isinstance(v, dict) and all(_is_number(x) for x in v.values()) for v in labels.values()
    ):
        raise ValueError(f"{path}: 'labels' is not a table of numbers per label")
    return {str(k): dict(v) for k, v in labels.items()}


def superseded_default(checkpoint_dir: str | os.PathLike[str]) -> str | None:
    """Why a checkpoint's stored calibration is one the default no longer fits (None when
    it is not): "power" was what "auto" fitted until 2026-12-05, and it can re-rank the
    errors within an S/N bin (module docstring); such checkpoints keep applying it."""
    path = Path(checkpoint_dir) / CALIBRATION_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # none, or damaged: read_calibration says so where it is applied
    if not isinstance(doc, dict) or doc.get("form") != "power" or doc.get("form_requested") != AUTO:
        return None
    return (
        "its error calibration is the 'power' form, the default until 2026-12-05, which can "
        "re-rank errors within an S/N bin: retrain it, or refit the calibration with "
        "rrnet.training.calibrate.calibrate_checkpoint(..., form='auto') (docs/training.md)"
    )


def _is_number(value: Any) -> bool:
    """A stored parameter or diagnostic: a number, or null (a diagnostic with no rows)."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


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
            out[:, j] = calibrated_error(params[label], out[:, j], snr)
    return out
