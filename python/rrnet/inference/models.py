"""Several checkpoints combined into one set of catalogue labels.

The paper runs two ensembles: SP (Teff, Logg, FeH) and CA (the other 14
abundances). Each catalogue label comes from exactly one checkpoint: the first
one, in the order given, that predicts it (later duplicates are ignored and
logged). Labels no checkpoint predicts stay null. A converted authors' release
is just another checkpoint.

Per checkpoint this also computes the quality diagnostics that need the model:
member disagreement, training label range and the out-of-distribution score.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rrnet.inference.columns import SPEC_LABELS
from rrnet.inference.quality import (
    DEFAULT_THRESHOLDS,
    QualityThresholds,
    member_disagreement,
    outside_range,
)
from rrnet.models.calibration import apply_calibration

log = logging.getLogger(__name__)


@dataclass
class LoadedCheckpoint:
    """One checkpoint ready to predict, with what the quality bits need from it."""

    path: Path
    hash: str
    config: dict[str, Any]
    ensemble: Any
    labels: tuple[str, ...]
    label_lo: np.ndarray
    label_hi: np.ndarray
    ood: Any | None
    """OOD scorer: ``ood(flux, snr_blue, snr_red) -> score`` per spectrum, or None if the
    checkpoint has none."""
    ood_threshold: float | None
    """The score's threshold (1.0 for the subspace test, whose score is already a ratio)."""
    calibration: dict[str, dict[str, float]] | None = None
    """Per-label error calibration (``calibration.json``), None if the checkpoint has none."""

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        return self.config.get("preprocessing")

    def describe(self, calibrate: bool = True) -> dict[str, Any]:
        """Provenance entry: path, hash, labels, domain and which errors are quoted
        (``calibrate``: whether the run applies calibration.json)."""
        if calibrate and self.calibration:
            errors = "calibrated (calibration.json, fitted on the validation split)"
        else:
            errors = "raw (paper eq. 3, uncalibrated)"
        return {
            "path": os.path.abspath(self.path),  # where it was, wherever the run started
            "hash": self.hash,
            "labels": list(self.labels),
            "calibrated_labels": sorted(self.calibration or {}),
            "domain": (self.config.get("training") or {}).get("domain"),
            "errors": errors,
            "ood_test": ood_kind(self),
            "xfe_skill": self.xfe_skill,
        }

    @property
    def xfe_skill(self) -> dict[str, float | None]:
        """Each abundance's [X/Fe] skill on the validation split (``calibration.json``;
        :mod:`rrnet.models.xfe_skill`), empty when the checkpoint has none."""
        return {k: v["xfe_skill"] for k, v in (self.calibration or {}).items() if "xfe_skill" in v}


@dataclass(frozen=True)
class Prediction:
    """Catalogue labels for a batch: values/errors ``[B, 17]`` (NaN = no source) + diagnostics."""

    values: np.ndarray
    errors: np.ndarray
    ood_ratio: np.ndarray
    disagreement: np.ndarray
    out_of_range: np.ndarray
    failed: np.ndarray


def _label_range(training: dict[str, Any], labels: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """Training label min/max per label from ``config["training"]`` (NaN where unknown)."""
    lo = np.full(len(labels), np.nan)
    hi = np.full(len(labels), np.nan)
    ranges = training.get("label_ranges") or training.get("label_range") or {}
    for i, label in enumerate(labels):
        entry = ranges.get(label)
        if isinstance(entry, dict):
            lo[i], hi[i] = entry.get("min", np.nan), entry.get("max", np.nan)
        elif entry is not None:
            lo[i], hi[i] = entry
    return lo, hi


def load_checkpoints(
    paths: list[str | os.PathLike[str]],
    *,
    device: str = "auto",
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
    precision: str = "fp32",
    compile: bool = False,
) -> list[LoadedCheckpoint]:
    """Load every checkpoint (all members of each on ``device``).

    ``precision`` (fp32, tf32, bf16) and ``compile`` (``torch.compile``) choose how the
    ensembles run; see :func:`rrnet.models.device.use_precision`.
    """
    from rrnet.models.calibration import read_calibration
    from rrnet.models.checkpoint import checkpoint_hash, read_checkpoint_config
    from rrnet.models.device import resolve_device, use_precision
    from rrnet.models.ensemble import Ensemble

    amp = use_precision(precision, resolve_device(device))

    loaded = []
    shared: dict[str, Any] = {}  # one scorer per distinct OOD test (_predict_rows scores it once)
    for raw in paths:
        path = Path(raw)
        config = read_checkpoint_config(path)
        ensemble = Ensemble.from_checkpoint(path, device=device, amp=amp, compile=compile)
        labels = tuple(ensemble.labels)
        training = config.get("training") or {}
        lo, hi = _label_range(training, labels)
        ood, threshold = _ood_for(path, config, thresholds, shared)
        loaded.append(
            LoadedCheckpoint(
                path,
                checkpoint_hash(path),
                config,
                ensemble,
                labels,
                lo,
                hi,
                ood,
                threshold,
                read_calibration(path),
            )
        )
    return loaded


def _ood_for(
    path: Path, config: dict[str, Any], thresholds: QualityThresholds, shared: dict[str, Any]
) -> tuple[Any | None, float | None]:
    """The checkpoint's OOD scorer and the threshold at ``thresholds.ood_quantile``: the
    subspace test when the checkpoint stores one, else the older mean-squared-z score
    (checkpoints trained before it; it ignores the S/N). A subspace test equal to one
    already loaded (``shared``, by :func:`ood_subspace.digest`) gets that one's scorer."""
    from rrnet.models import ood, ood_subspace

    sub = ood_subspace.read(path)
    if sub is not None:
        key = ood_subspace.digest(sub)
        if key not in shared:
            shared[key] = ood_subspace.scorer(sub, thresholds.ood_quantile)
        return shared[key], 1.0
    score, limit = ood.scorer_for_checkpoint(path, config, quantile=thresholds.ood_quantile)
    if score is None:
        return None, None

    def legacy(flux: np.ndarray, _snr_blue: Any = None, _snr_red: Any = None) -> np.ndarray:
        return score(flux)

    return legacy, limit


def ood_kind(checkpoint: LoadedCheckpoint) -> str:
    """Which OOD test flags the checkpoint's rows: "subspace", "mean_squared_z" or "none"."""
    from rrnet.models.ood_subspace import SUBSPACE_FILE

    if checkpoint.ood is None:
        return "none"
    return "subspace" if (checkpoint.path / SUBSPACE_FILE).is_file() else "mean_squared_z"


def label_sources(checkpoints: list[LoadedCheckpoint]) -> dict[str, int]:
    """Catalogue label -> index of the first checkpoint that predicts it."""
    sources: dict[str, int] = {}
    for index, checkpoint in enumerate(checkpoints):
        for label in checkpoint.labels:
            if label not in SPEC_LABELS:
                log.warning(
                    "%s predicts %r, not a catalogue label: ignored", checkpoint.path, label
                )
            elif label in sources:
                log.warning(
                    "%s and %s both predict %s: using the first",
                    checkpoints[sources[label]].path,
                    checkpoint.path,
                    label,
                )
            else:
                sources[label] = index
    return sources


def predict(
    checkpoints: list[LoadedCheckpoint],
    sources: dict[str, int],
    flux: np.ndarray,
    thresholds: QualityThresholds,
    batch_size: int | None = None,
    snr: np.ndarray | None = None,
    snr_arms: tuple[np.ndarray, np.ndarray] | None = None,
) -> Prediction:
    """Run every checkpoint that provides a label on ``flux`` (float32 ``[B, 7200]``).

    ``batch_size`` is the spectra per forward call (None: the ensemble's device default).
    ``snr`` (``[B]``, :func:`rrnet.models.calibration.calibration_snr`): when given, each
    checkpoint's stored calibration scales its errors; None keeps paper eq. 3 errors.
    ``snr_arms`` (``snr_blue``, ``snr_red``, each ``[B]``): the noise the subspace OOD
    test measures residuals against; None leaves that test's score NaN (no bit).
    """
    n = flux.shape[0]
    values = np.full((n, len(SPEC_LABELS)), np.nan, dtype=np.float64)
    errors = np.full_like(values, np.nan)
    ood_ratio = np.full(n, np.nan)
    disagreement = np.zeros(n)
    out_of_range = np.zeros(n, dtype=bool)
    failed = np.zeros(n, dtype=bool)
    scores: dict[int, np.ndarray] = {}  # checkpoints sharing one OOD test score it once
    model_input = _model_input(flux, checkpoints)
    for index, checkpoint in enumerate(checkpoints):
        used = [i for i, label in enumerate(checkpoint.labels) if sources.get(label) == index]
        if not used:
            continue
        result = checkpoint.ensemble.predict(
            model_input, batch_size=batch_size, return_members=True
        )
        mean, std = _numpy(result.mean)[:, used], _numpy(result.std)[:, used]
        members_mu = _numpy(result.members_mu)[:, :, used]
        members_var = _numpy(result.members_var)[:, :, used]
        if snr is not None and checkpoint.calibration:
            names = [checkpoint.labels[i] for i in used]
            std = apply_calibration(std, names, checkpoint.calibration, snr)
        bad = ~(np.isfinite(mean).all(axis=1) & np.isfinite(std).all(axis=1))
        failed |= bad
        for j, i in enumerate(used):
            column = SPEC_LABELS.index(checkpoint.labels[i])
            values[:, column], errors[:, column] = mean[:, j], std[:, j]
        with np.errstate(invalid="ignore"):
            disagreement = np.fmax(disagreement, member_disagreement(members_mu, members_var))
        out_of_range |= outside_range(mean, checkpoint.label_lo[used], checkpoint.label_hi[used])
        if checkpoint.ood is not None and checkpoint.ood_threshold:
            if id(checkpoint.ood) not in scores:
                arms = snr_arms if snr_arms is not None else (np.full(n, np.nan),) * 2
                scores[id(checkpoint.ood)] = _numpy(checkpoint.ood(flux, *arms))
            ood_ratio = np.fmax(ood_ratio, scores[id(checkpoint.ood)] / checkpoint.ood_threshold)
    values[failed] = np.nan
    errors[failed] = np.nan
    return Prediction(values, errors, ood_ratio, disagreement, out_of_range & ~failed, failed)


def _model_input(flux: np.ndarray, checkpoints: list[LoadedCheckpoint]) -> Any:
    """``flux`` as the ensembles take it: on their GPU, sent there once for all of them.

    Why: each ensemble would otherwise copy and send the same rows itself; sharing one
    transfer made the store path 27 % faster on an H200 (benchmarks/RESULTS.md, GPU).
    On a CPU, or with ensembles on different devices, ``flux`` is returned as it is.
    """
    devices = {checkpoint.ensemble.device for checkpoint in checkpoints}
    if len(checkpoints) < 2 or len(devices) != 1 or next(iter(devices)).type == "cpu":
        return flux
    import torch

    rows = np.require(flux, dtype=np.float32, requirements=["C", "W"])  # writable for torch
    return torch.from_numpy(rows).to(next(iter(devices)))


def _numpy(x: Any) -> np.ndarray:
    """A numpy float64 array from a numpy array or a (possibly GPU) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)
