"""The ``flag`` (1 = recommended) and the ``quality_bits`` mask that says why not.

Every cut is a named bit, so a user can re-select rows with their own mask
(``quality_bits & ~QualityBit.LOW_SNR == 0`` keeps low-S/N stars, for example)
without re-running inference. Thresholds default to the paper's cuts (S/N >= 10,
at most 100 outlier pixels, no run longer than 30) and are recorded in the
catalogue's provenance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntFlag
from typing import Any

import numpy as np


class QualityBit(IntFlag):
    """Reasons for ``flag = 0``; a row is recommended iff no bit is set."""

    PREPROCESS_FAILED = 1
    """Preprocessing failed (status != 'ok'): no labels."""
    LOW_SNR = 2
    """S/N of the blue or the red arm below ``min_snr`` (or unknown)."""
    OUTLIERS = 4
    """More than ``max_outliers`` outlier pixels, or a run longer than ``max_outlier_run``."""
    CONTINUUM_CAP = 8
    """The continuum fit stopped at its iteration cap (the last fit was used)."""
    OUT_OF_DISTRIBUTION = 16
    """The spectrum's OOD score exceeds the training split's ``ood_quantile``."""
    MEMBERS_DISAGREE = 32
    """For some label the spread of the member means exceeds ``max_disagreement``
    times the members' own mean predicted sigma."""
    LABEL_OUT_OF_RANGE = 64
    """Some predicted label lies outside the checkpoint's training label range."""
    INFERENCE_FAILED = 128
    """A model returned a non-finite value for this spectrum: no labels."""
    RV_DISAGREE = 256
    """The catalogue RV and the RV measured by preprocessing differ beyond their errors
    plus a floor (``rv_disagree`` of the manifest, :mod:`rrnet.preprocess.rv_policy`):
    a binary, or a wrong catalogue RV (the spectrum was shifted by the catalogue's)."""
    SYNTHETIC_DOMAIN = 512
    """A checkpoint trained on synthesised spectra (rrnet-synth labels) was applied to
    spectra other than its own training store: its errors were never tested there."""


BIT_TEXT: dict[QualityBit, str] = {
    QualityBit.PREPROCESS_FAILED: "preprocessing failed",
    QualityBit.LOW_SNR: "low S/N",
    QualityBit.OUTLIERS: "too many or too long outlier runs",
    QualityBit.CONTINUUM_CAP: "continuum fit hit its iteration cap",
    QualityBit.OUT_OF_DISTRIBUTION: "spectrum far from the training set",
    QualityBit.MEMBERS_DISAGREE: "ensemble members disagree",
    QualityBit.LABEL_OUT_OF_RANGE: "label outside the training range",
    QualityBit.INFERENCE_FAILED: "model output not finite",
    QualityBit.RV_DISAGREE: "catalogue and measured RV disagree",
    QualityBit.SYNTHETIC_DOMAIN: "model trained on synthetic spectra only",
}


@dataclass(frozen=True)
class QualityThresholds:
    """Cuts behind ``quality_bits``; stored in every catalogue's provenance."""

    min_snr: float = 10.0
    max_outliers: int = 100
    max_outlier_run: int = 30
    ood_quantile: float = 0.99
    max_disagreement: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


DEFAULT_THRESHOLDS = QualityThresholds()
"""The paper's cuts plus this package's OOD and disagreement defaults."""


def quality_bits(
    *,
    preprocess_ok: np.ndarray,
    snr_blue: np.ndarray,
    snr_red: np.ndarray,
    n_outliers: np.ndarray,
    max_outlier_run: np.ndarray,
    cap_hit: np.ndarray,
    ood_ratio: np.ndarray,
    disagreement: np.ndarray,
    out_of_range: np.ndarray,
    inference_failed: np.ndarray,
    thresholds: QualityThresholds,
    rv_disagree: np.ndarray | None = None,
    synthetic_domain: bool = False,
) -> np.ndarray:
    """int32 bitmask per row. NaN diagnostics never set a bit except S/N (unknown = low).

    ``ood_ratio`` is the OOD score divided by its training quantile (> 1 is out of
    distribution); ``disagreement`` is :func:`member_disagreement`; ``rv_disagree`` is the
    manifest's flag (None: not measured, no bit).
    """
    t = thresholds
    bits = np.zeros(np.asarray(preprocess_ok).shape, dtype=np.int32)

    def set_bit(mask: np.ndarray, bit: QualityBit) -> None:
        bits[np.asarray(mask, dtype=bool)] |= int(bit)

    with np.errstate(invalid="ignore"):
        snr_ok = (np.asarray(snr_blue) >= t.min_snr) & (np.asarray(snr_red) >= t.min_snr)
        set_bit(~np.asarray(preprocess_ok, dtype=bool), QualityBit.PREPROCESS_FAILED)
        set_bit(~snr_ok, QualityBit.LOW_SNR)
        set_bit(
            (np.asarray(n_outliers) > t.max_outliers)
            | (np.asarray(max_outlier_run) > t.max_outlier_run),
            QualityBit.OUTLIERS,
        )
        set_bit(cap_hit, QualityBit.CONTINUUM_CAP)
        set_bit(np.asarray(ood_ratio) > 1.0, QualityBit.OUT_OF_DISTRIBUTION)
        set_bit(np.asarray(disagreement) > t.max_disagreement, QualityBit.MEMBERS_DISAGREE)
        set_bit(out_of_range, QualityBit.LABEL_OUT_OF_RANGE)
        set_bit(inference_failed, QualityBit.INFERENCE_FAILED)
        if rv_disagree is not None:
            set_bit(rv_disagree, QualityBit.RV_DISAGREE)
    if synthetic_domain:
        set_bit(np.asarray(preprocess_ok, dtype=bool), QualityBit.SYNTHETIC_DOMAIN)
    return bits


def flag(bits: np.ndarray) -> np.ndarray:
    """uint8: 1 where no quality bit is set (recommended), else 0."""
    return (np.asarray(bits) == 0).astype(np.uint8)


def describe(bits: int) -> str:
    """``"ok"`` or the set bits' texts joined by ``"; "`` (lowest bit first)."""
    texts = [text for bit, text in BIT_TEXT.items() if int(bits) & int(bit)]
    return "; ".join(texts) if texts else "ok"


def member_disagreement(members_mu: np.ndarray, members_var: np.ndarray) -> np.ndarray:
    """Per spectrum, max over labels of ``std_i(mu_i) / sqrt(mean_i var_i)``.

    The numerator is the ensemble's epistemic spread, the denominator the members'
    own predicted (aleatoric) sigma; both are in the same units, so the ratio is
    unit-free. Arrays are ``[M, B, L]``; one member gives 0.
    """
    mu = np.asarray(members_mu, dtype=np.float64)
    var = np.asarray(members_var, dtype=np.float64)
    spread = mu.std(axis=0)
    sigma = np.sqrt(var.mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sigma > 0, spread / sigma, np.where(spread > 0, np.inf, 0.0))
    return ratio.max(axis=1) if ratio.shape[1] else np.zeros(ratio.shape[0])


def outside_range(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """True per row where some label lies outside ``[lo, hi]`` (NaN bounds = unbounded)."""
    v = np.asarray(values, dtype=np.float64)
    lo = np.where(np.isnan(lo), -np.inf, lo)
    hi = np.where(np.isnan(hi), np.inf, hi)
    return ((v < lo) | (v > hi)).any(axis=1)
