"""Average partial derivatives of the outputs with respect to the input spectrum (Fig. 4).

For a differentiable ``forward`` that maps continuum-normalised flux ``[B, n_pix]``
to labels ``[B, n_out]``, the saliency of output ``j`` at pixel ``p`` is the mean
over spectra of ``d y_j / d x_p``. Each spectrum's outputs depend on that spectrum
only (models run in eval mode), so the gradient of ``sum_b y_bj`` with respect to
the batch holds every per-spectrum gradient at once: one backward pass per output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from rrnet.models.normalization import FLUX_CLIP

Forward = Callable[[torch.Tensor], torch.Tensor]

TEFF_CLASSES_K: dict[str, tuple[float, float]] = {
    "cool": (4000.0, 4300.0),
    "hot": (6000.0, 6300.0),
}
"""Teff ranges [K] of the two star classes of the paper's Fig. 4 (upper bound exclusive)."""


def average_gradient(forward: Forward, flux: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Mean ``d y_j / d x_p`` over spectra, float64 ``[n_out, n_pix]``.

    ``flux`` is ``[n, n_pix]``; rows with non-finite values are skipped. Raises
    ValueError when no usable row is left.
    """
    flux = np.asarray(flux, dtype=np.float32)
    if flux.ndim != 2:
        raise ValueError(f"flux must be [n, n_pix], got shape {flux.shape}")
    flux = flux[np.isfinite(flux).all(axis=1)]
    if flux.shape[0] == 0:
        raise ValueError("no spectrum with finite flux to differentiate")
    total: np.ndarray | None = None
    for start in range(0, flux.shape[0], batch_size):
        x = torch.from_numpy(flux[start : start + batch_size].copy()).requires_grad_(True)
        y = forward(x)
        if y.ndim != 2 or y.shape[0] != x.shape[0]:
            raise ValueError(f"forward must return [B, n_out], got {tuple(y.shape)}")
        grads = []
        for j in range(y.shape[1]):
            (g,) = torch.autograd.grad(y[:, j].sum(), x, retain_graph=j + 1 < y.shape[1])
            grads.append(g.sum(dim=0).double().numpy())
        batch_sum = np.stack(grads)
        total = batch_sum if total is None else total + batch_sum
    assert total is not None
    return total / flux.shape[0]


def ensemble_forward(
    members: Sequence[torch.nn.Module],
    *,
    flux_mean: np.ndarray,
    flux_std: np.ndarray,
    label_mean: np.ndarray,
    label_std: np.ndarray,
    clip: tuple[float, float] = FLUX_CLIP,
) -> Forward:
    """Differentiable ensemble mean in physical label units, from normalised flux.

    Applies the models' input transform (clip, then per-pixel standardisation),
    averages the members' ``mu`` and de-standardises. Clipped pixels get zero
    gradient, as they have no influence on the prediction. Members are put in
    eval mode (no dropout).
    """
    f_mean = torch.as_tensor(np.asarray(flux_mean, dtype=np.float32))
    f_std = torch.as_tensor(np.asarray(flux_std, dtype=np.float32))
    l_mean = torch.as_tensor(np.asarray(label_mean, dtype=np.float32))
    l_std = torch.as_tensor(np.asarray(label_std, dtype=np.float32))
    for m in members:
        m.eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        xs = (torch.clamp(x, *clip) - f_mean) / f_std
        mu = torch.stack([m(xs)[0] for m in members]).mean(dim=0)
        return mu * l_std + l_mean

    return forward


def select_by_teff(
    teff_k: np.ndarray, lo: float, hi: float, *, max_spectra: int = 1000, seed: int = 0
) -> np.ndarray:
    """Indices of at most ``max_spectra`` random entries with ``lo <= Teff < hi`` (sorted)."""
    teff_k = np.asarray(teff_k, dtype=np.float64)
    idx = np.flatnonzero((teff_k >= lo) & (teff_k < hi))
    if idx.size > max_spectra:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_spectra, replace=False))
    return idx
