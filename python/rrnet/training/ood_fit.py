"""The step after training: fit the out-of-distribution test (:mod:`rrnet.models.ood_subspace`).

The principal subspace comes from the training rows, its residual floor and the
thresholds from the validation rows; ``ood_subspace.safetensors`` is written beside
``config.json`` (part of the checkpoint hash). Test rows are never read here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rrnet.models import ood_subspace

MAX_ROWS = 4000
"""At most this many rows of each split are read (evenly spaced): enough for k ~ 30."""


def _subset(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size > MAX_ROWS:
        rows = rows[np.linspace(0, rows.size - 1, MAX_ROWS).astype(np.int64)]
    return rows


def fit_ood_checkpoint(
    out: str | Path,
    flux: Any,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    snr_blue: np.ndarray,
    snr_red: np.ndarray,
    *,
    n_components: int = ood_subspace.N_COMPONENTS,
    log: Callable[[str], None] = lambda _msg: None,
) -> ood_subspace.Subspace | None:
    """Fit and store the OOD test of checkpoint ``out``; None (and nothing written) when
    the splits are too small or have no usable S/N (the checkpoint then keeps the older
    score, :mod:`rrnet.models.ood`)."""
    train, valid = np.sort(_subset(train_rows)), np.sort(_subset(valid_rows))  # sorted reads
    snr_b, snr_r = np.asarray(snr_blue, np.float64), np.asarray(snr_red, np.float64)
    try:
        sub = ood_subspace.fit(
            np.asarray(flux[train], dtype=np.float64),
            (snr_b[train], snr_r[train]),
            np.asarray(flux[valid], dtype=np.float64),
            (snr_b[valid], snr_r[valid]),
            n_components,
        )
    except ValueError as exc:
        log(f"no OOD subspace test: {exc}")
        return None
    ood_subspace.write(out, sub)
    info = ood_subspace.describe(sub)
    log(
        f"OOD subspace test: {info['n_components']} components from {train.size} training "
        f"spectra, floor and thresholds from {valid.size} validation spectra"
    )
    return sub
