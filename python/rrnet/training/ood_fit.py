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
"""At most this many validation rows are read (evenly spaced): the thresholds' tails
were no better from 3,000 than from 1,500 (docs/results.md)."""


def _fit_rows(rows: np.ndarray, snr: np.ndarray, n_components: int) -> np.ndarray:
    """The training rows the PCA takes (``ood_subspace.pca_rows``), chosen before
    reading: a cap on all training rows would leave a large split's PCA only the
    fraction of them above its S/N cut. Too few such rows: at most ``MAX_ROWS`` of all
    (``fit_subspace`` then takes the better half by S/N)."""
    rows = np.asarray(rows, dtype=np.int64)
    good = ood_subspace.pca_rows(snr[rows], n_components, ood_subspace.MAX_FIT_SPECTRA)
    return ood_subspace.evenly_spaced(rows, MAX_ROWS) if good is None else rows[good]


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
    snr_b, snr_r = np.asarray(snr_blue, np.float64), np.asarray(snr_red, np.float64)
    train = np.sort(_fit_rows(train_rows, ood_subspace.combined_snr(snr_b, snr_r), n_components))
    valid_all = np.asarray(valid_rows, dtype=np.int64)
    valid = np.sort(ood_subspace.evenly_spaced(valid_all, MAX_ROWS))  # sorted reads
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
