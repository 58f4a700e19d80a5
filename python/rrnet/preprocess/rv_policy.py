"""Which RV shifts a spectrum to its rest frame: the catalogue's, the measured one, or none.

Why: a spectrum whose catalogue RV is missing (LAMOST's -9999, null, NaN) was lost, and a
wrong one (a binary, a bad catalogue value) silently shifted every line. The pipeline
measures each spectrum's RV from its raw arms (:func:`rrnet.preprocess.rv.measure_spectra`,
once per spectrum, in the same pass that reads it) and decides here:

- ``catalog``: the catalogue's RV; a missing one makes the row ``bad_rv`` (nothing measured);
- ``measure``: the measured RV; a failed measurement makes the row ``bad_rv``;
- ``auto`` (the command lines' default): the catalogue's RV when usable, else the measured.

Whenever both exist they are compared: ``rv_disagree`` is set when
``|rv_catalog - rv_measured| > DISAGREE_NSIGMA * hypot(err_catalog, err_measured) +
DISAGREE_FLOOR_KMS`` (a missing catalogue error counts as 0). The floor absorbs what the
errors do not describe: LAMOST's plate-to-plate zero points (a few km/s), template
mismatch and the blue/red offset seen on real spectra (~1.8-1.9 km/s). The bit flags
binaries and bad catalogue RVs (``docs/preprocessing.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rrnet.grid import C_KMS
from rrnet.preprocess.rv import RV_STATUS, ArmArrays, measure_spectra

RV_MODES: tuple[str, ...] = ("catalog", "measure", "auto")
DEFAULT_RV_MODE = "auto"
"""The mode of the commands and of the library alike: the catalogue's RV where usable,
else the measured one."""
"""Accepted values of ``rv_mode`` (``rrnet-preprocess --rv``, ``rrnet-infer --rv``)."""

MISSING_RV: float = -9999.0
"""LAMOST's "not measured" value: an unusable catalogue RV, like null and NaN."""

DISAGREE_NSIGMA: float = 3.0
"""Combined standard errors the catalogue and measured RVs may differ by."""

DISAGREE_FLOOR_KMS: float = 5.0
"""Added to the allowed difference [km/s] (zero points, template mismatch)."""

MAX_CATALOG_ERR_KMS: float = 1000.0
"""A catalogue RV error at or beyond this [km/s], like one <= 0 (LAMOST's -9999), NaN or
null, counts as no error (0) in the disagreement test: an rv_err of -9999 had made the
allowed difference 3e4 km/s, so a catalogue RV 30 km/s off was never flagged."""


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`RV_MODES`, else ValueError (one line)."""
    if mode not in RV_MODES:
        raise ValueError(f"rv_mode must be one of {', '.join(RV_MODES)}, got {mode!r}")
    return mode


def catalog_rv_required(correct_rv: bool, mode: str) -> bool:
    """Whether the catalogue must have an RV column: only when spectra are shifted by
    the catalogue's RV alone (mode "catalog"); "measure" and "auto" can do without."""
    return correct_rv and check_mode(mode) == "catalog"


def usable(rv: float | None) -> bool:
    """True for a real catalogue velocity: finite, not -9999, slower than light."""
    return rv is not None and bool(np.isfinite(rv)) and rv != MISSING_RV and abs(rv) < C_KMS


def error_column(rv_column: str, columns: list[str]) -> str | None:
    """The catalogue's RV error column: ``<rv_column>_err`` if present, else None."""
    name = f"{rv_column}_err"
    return name if name in columns else None


@dataclass(frozen=True)
class RvDecision:
    """Per spectrum: the RV used (NaN: none), where it came from, and the disagreement."""

    used: np.ndarray
    source: list[str]
    disagree: np.ndarray


def decide(
    mode: str,
    rv_catalog: np.ndarray,
    err_catalog: np.ndarray,
    rv_measured: np.ndarray,
    err_measured: np.ndarray,
) -> RvDecision:
    """Apply ``mode`` row by row (measured values are NaN where the measurement failed)."""
    check_mode(mode)
    cat = np.asarray(rv_catalog, dtype=np.float64)
    meas = np.asarray(rv_measured, dtype=np.float64)
    cat_ok = np.array([usable(v) for v in cat], dtype=bool)
    meas_ok = np.isfinite(meas) & np.isfinite(err_measured) & (np.abs(meas) < C_KMS)
    take_cat = cat_ok if mode != "measure" else np.zeros_like(cat_ok)
    take_meas = ~take_cat & meas_ok if mode != "catalog" else np.zeros_like(meas_ok)
    used = np.where(take_cat, cat, np.where(take_meas, meas, np.nan))
    source = [
        "catalog" if c else "measured" if m else "none"
        for c, m in zip(take_cat, take_meas, strict=True)
    ]
    err_c = np.asarray(err_catalog, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        # -9999 ("not measured"), <= 0, NaN or absurd: no error, not an allowance of 3e4 km/s
        err_c = np.where((err_c > 0) & (err_c < MAX_CATALOG_ERR_KMS), err_c, 0.0)
        allowed = DISAGREE_NSIGMA * np.hypot(err_c, err_measured) + DISAGREE_FLOOR_KMS
        disagree = cat_ok & meas_ok & (np.abs(cat - meas) > allowed)
    return RvDecision(used, source, disagree)


@dataclass(frozen=True)
class RvResult:
    """A chunk's measurement (combined arms; NaN where failed, ``status`` by name) and decision."""

    measured: np.ndarray
    measured_err: np.ndarray
    status: list[str | None]
    decision: RvDecision
    template_labels: np.ndarray
    """(Teff, logg, [Fe/H]) of the measurement's best template ``[n, 3]`` (NaN: none)."""
    data_status: np.ndarray | None = None
    """Preprocessing status code of each spectrum as measured (not OK: the spectrum is
    unusable whatever its RV); None when nothing was measured."""


def resolve(
    mode: str,
    spectra: list[tuple[ArmArrays, ArmArrays]],
    rv_catalog: np.ndarray,
    err_catalog: np.ndarray,
) -> RvResult:
    """Measure the raw (blue, red) arms (unless ``mode`` is ``catalog``) and :func:`decide`."""
    n = len(spectra)
    meas = np.full(n, np.nan)
    err = np.full(n, np.nan)
    status: list[str | None] = [None] * n
    labels = np.full((n, 3), np.nan)
    data_status = None
    if check_mode(mode) != "catalog" and n:
        res = measure_spectra(spectra)
        code = res.status[:, 2]
        ok = code == 0
        meas[ok], err[ok] = res.rv[ok, 2], res.err[ok, 2]
        status = [RV_STATUS.get(int(c), str(int(c))).lower() for c in code]
        if res.data_status is not None:  # flux unusable whatever its RV: not measured
            status = [None if d != 0 else s for s, d in zip(status, res.data_status, strict=True)]
        if res.template_labels is not None:
            labels[ok] = res.template_labels[ok]
        data_status = res.data_status
    decision = decide(mode, rv_catalog, err_catalog, meas, err)
    return RvResult(meas, err, status, decision, labels, data_status)


__all__ = [
    "DEFAULT_RV_MODE",
    "DISAGREE_FLOOR_KMS",
    "DISAGREE_NSIGMA",
    "MISSING_RV",
    "RV_MODES",
    "RvDecision",
    "RvResult",
    "check_mode",
    "decide",
    "error_column",
    "resolve",
    "usable",
]
