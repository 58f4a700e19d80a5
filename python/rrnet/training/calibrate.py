"""The step after training: fit the error calibration on the validation split.

The finished checkpoint predicts the validation rows (eq. 3 errors, exactly what
inference computes), :func:`rrnet.models.calibration.fit_calibration` fits the
per-label error calibration, and ``calibration.json`` is written beside
``config.json``, with each abundance's [X/Fe] skill on the same rows
(:mod:`rrnet.models.xfe_skill`). Test rows are never read here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rrnet.models import xfe_skill
from rrnet.models.calibration import fit_calibration, write_calibration


def calibrate_checkpoint(
    out: str | Path,
    flux: Any,
    labels: np.ndarray,
    valid_rows: np.ndarray,
    snr: np.ndarray,
    *,
    device: str = "auto",
    form: str | None = None,
    groups: np.ndarray | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any] | None:
    """Fit and store the calibration of checkpoint ``out`` on rows ``valid_rows``.

    ``flux``/``labels``/``snr`` are indexed by the same rows as the training arrays;
    returns the written document (None when the checkpoint is incomplete). ``form``:
    the calibration's form (:data:`rrnet.models.calibration.FORMS` or "auto", the
    default :data:`~rrnet.models.calibration.DEFAULT_FORM`). ``groups`` (same rows; star id of
    independent spectra): also fit the part of the error a star's repeats share.
    """
    from rrnet.models.checkpoint import read_checkpoint_config
    from rrnet.models.ensemble import Ensemble

    out = Path(out)
    config = read_checkpoint_config(out)
    if (config.get("training") or {}).get("status") != "complete":
        return None
    rows = np.asarray(valid_rows, dtype=np.int64)
    ensemble = Ensemble.from_checkpoint(out, device=device)
    pred = ensemble.predict(np.asarray(flux[rows], dtype=np.float32))
    mean, std = _numpy(pred.mean), _numpy(pred.std)
    doc = fit_calibration(
        mean, labels[rows], std, np.asarray(snr)[rows], list(ensemble.labels), form=form,
        groups=None if groups is None else np.asarray(groups)[rows],
    )  # fmt: skip
    skills = {
        label: skill if math.isfinite(skill) else None
        for label, skill in xfe_skill.skills(mean, labels[rows], list(ensemble.labels)).items()
        if label in doc["labels"]
    }
    for label, skill in skills.items():
        doc["labels"][label]["xfe_skill"] = skill
    write_calibration(out, doc)
    worst = (
        max((abs(v["z_std_before"] - 1.0), k) for k, v in doc["labels"].items())
        if doc["labels"]
        else (0.0, "-")
    )
    log(
        f"calibrated errors on {rows.size} validation spectra "
        f"(largest raw z-std offset {worst[0]:.2f}, {worst[1]})"
    )
    words = xfe_skill.low_skill_words(skills)
    if words:
        log(f"validation split: {words}")
    return doc


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)
