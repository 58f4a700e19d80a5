"""Input and output scaling: the authors' flux clip + standardisation, label (de)scaling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: The authors clip continuum-normalised flux to this range before standardising.
FLUX_CLIP: tuple[float, float] = (-0.5, 2.5)

ArrayLike = np.ndarray | torch.Tensor


def standardize_flux(flux: ArrayLike, flux_mean: ArrayLike, flux_std: ArrayLike) -> ArrayLike:
    """Clip normalised flux to [-0.5, 2.5], then ``(flux - flux_mean) / flux_std`` per pixel.

    Works on NumPy arrays (returns float32) and on tensors (keeps device and dtype).
    NaN flux stays NaN (callers decide how to flag such spectra).
    """
    lo, hi = FLUX_CLIP
    if isinstance(flux, torch.Tensor):
        mean = torch.as_tensor(flux_mean, dtype=flux.dtype, device=flux.device)
        std = torch.as_tensor(flux_std, dtype=flux.dtype, device=flux.device)
        return (flux.clamp(lo, hi) - mean) / std
    clipped = np.clip(np.asarray(flux, dtype=np.float32), lo, hi)
    mean = np.asarray(flux_mean, dtype=np.float32)
    std = np.asarray(flux_std, dtype=np.float32)
    return (clipped - mean) / std


@dataclass(frozen=True)
class Normalization:
    """Training-set statistics that map flux into, and labels out of, model units.

    Attributes
    ----------
    flux_mean, flux_std
        Per-pixel statistics of the clipped normalised flux, float32 ``[n_pixels]``.
    label_mean, label_std
        Per-label statistics in physical units, float64 ``[L]``.
    """

    flux_mean: np.ndarray
    flux_std: np.ndarray
    label_mean: np.ndarray
    label_std: np.ndarray

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name, dtype in (
            ("flux_mean", np.float32),
            ("flux_std", np.float32),
            ("label_mean", np.float64),
            ("label_std", np.float64),
        ):
            value = np.asarray(getattr(self, name), dtype=dtype)
            if value.ndim != 1:
                raise ValueError(f"{name} must be a vector, got shape {value.shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name} contains non-finite values")
            set_(self, name, value)
        if self.flux_mean.shape != self.flux_std.shape:
            raise ValueError(
                f"flux_mean {self.flux_mean.shape} and flux_std {self.flux_std.shape} differ"
            )
        if self.label_mean.shape != self.label_std.shape:
            raise ValueError(
                f"label_mean {self.label_mean.shape} and label_std {self.label_std.shape} differ"
            )
        if np.any(self.flux_std <= 0) or np.any(self.label_std <= 0):
            raise ValueError("flux_std and label_std must be positive")

    def standardize_flux(self, flux: ArrayLike) -> ArrayLike:
        """The model input: clipped and standardised flux (see :func:`standardize_flux`)."""
        return standardize_flux(flux, self.flux_mean, self.flux_std)

    def standardize_labels(self, labels: np.ndarray) -> np.ndarray:
        """Physical labels ``[..., L]`` -> model units (float32; NaN stays NaN)."""
        return ((np.asarray(labels, np.float64) - self.label_mean) / self.label_std).astype(
            np.float32
        )

    def destandardize(self, mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model-unit mean and variance ``[..., L]`` -> physical mean and variance (float64)."""
        mu_phys = np.asarray(mu, np.float64) * self.label_std + self.label_mean
        return mu_phys, np.asarray(var, np.float64) * self.label_std**2
