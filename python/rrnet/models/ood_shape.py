"""Two shape statistics of the OOD subspace residual, aimed at defects the ``z**2`` means miss.

The mean ``z**2`` statistics of :mod:`rrnet.models.ood_subspace` weigh every pixel's
squared residual alike, so a defect that changes many pixels by a fraction of the noise
each (a wrong line width, a broken continuum) stays below thresholds set by the
subspace's own misfit at high S/N. Both statistics here project the residual ``r`` onto
the pattern such a defect leaves, so its pixels add up coherently:

* **line width** (:func:`line_width`): the weighted least-squares amplitude of ``r``
  along the second difference ``D`` of the fitted reference ``x - r`` (per arm), in
  units of its own noise: ``|sum w r D| / sqrt(sum w D**2)``, ``w = 1 / variance``,
  artefact pixels and arm ends weighted 0. A Gaussian line-spread function wider (or
  narrower) than the training set's changes a spectrum by ``(s**2 / 2) D`` to first
  order, so a wrong resolution is a residual along ``D``; white noise gives ``|N(0, 1)|``.
* **step** (:func:`step_differences`): ``mean(u[k : k + W]) - mean(u[k - W : k])`` at
  positions ``k`` every :data:`STEP_STRIDE` pixels of each arm, ``W =``
  :data:`STEP_WIDTH`, with ``u`` the residual winsorised at :data:`WINSOR` times its
  pixel sigma (a cosmic ray or dead pixel moves a difference by a bounded amount). A
  step in the raw flux survives continuum normalisation as such a jump. Each position's
  difference is scaled by its validation variance ``a v + f_k`` (``v`` the noise
  variance of the difference, ``a`` one factor for the pixels' correlation, ``f_k`` the
  subspace's own floor there, fitted by least squares on validation spectra,
  :func:`fit_step_floor`), and the statistic is
  the largest scaled square over positions.
* **arm step** (:func:`arm_step_amplitudes`, tests fitted since 2026-12-03): the same
  scaled square, but each position's difference is the least-squares amplitude of a
  step over the *whole arm* in the residual: the unit step at ``k`` less what
  normalisation's degree-5 continuum polynomial and the subspace would absorb of it
  (:func:`arm_step_templates`). A broken continuum changes every pixel of the arm after
  the break, not only the 120 next to it, so all of them add up: on synthesised spectra
  with a 5 % step at S/N 20-40 the window difference flagged 80 %, the whole-arm step
  97 % (``docs/results.md``).
"""

from __future__ import annotations

import numpy as np

from rrnet.grid import GRID, N_PIX_ARM

STEP_WIDTH = 120
"""Pixels on each side of a step position (12 Angstrom)."""
STEP_STRIDE = 5
"""Pixels between step positions."""
STEP_MARGIN = 10
"""Pixels at each end of an arm (the masked arm ends) no step window starts or ends in."""
WINSOR = 3.0
"""The residual is clipped at this many pixel sigmas before the step differences."""
ARM_STEP_STRIDE = 20
"""Pixels between the whole-arm step positions. A step midway between two positions
matches the nearer template with cosine 0.93 (0.87 of its squared height; neighbouring
templates: cosine 0.72-0.87, as the continuum fit leaves most of a step near the
break); 350 templates keep the statistic at ~6 % of the test's scoring time."""
ARM_STEP_MARGIN = 60
"""Pixels at each end of an arm with no whole-arm step position (a step that close to
the end is a continuum slope to the normalisation)."""
CONTINUUM_DEGREE = 5
"""Degree of the polynomial continuum normalisation fits to each arm (``rrnet-core``,
in standardised log wavelength)."""
MIN_NOISE_FACTOR = 0.3
"""Lower bound of the fitted noise factor ``a_k`` (resampling correlates pixels: ~1.6)."""


def second_difference(model: np.ndarray) -> np.ndarray:
    """``x[i+1] - 2 x[i] + x[i-1]`` within each arm, 0 at the arm ends, ``[B, n_pixels]``."""
    out = np.zeros_like(model)
    for a in range(0, model.shape[1], N_PIX_ARM):
        m = model[:, a : a + N_PIX_ARM]
        out[:, a + 1 : a + N_PIX_ARM - 1] = m[:, 2:] - 2.0 * m[:, 1:-1] + m[:, :-2]
    return out


def line_width(r: np.ndarray, model: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``|sum w r D| / sqrt(sum w D**2)`` per spectrum, ``D`` the second difference of
    ``model`` (the fitted reference); ``weight`` is 0 where a pixel must not count."""
    d2 = second_difference(model)
    num = np.sum(weight * r * d2, axis=1)
    den = np.sqrt(np.sum(weight * d2 * d2, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(num) / den


def step_positions(n_pixels: int) -> np.ndarray:
    """Pixel index ``k`` of each step position (per arm, away from the ends)."""
    lo, hi = STEP_WIDTH + STEP_MARGIN, N_PIX_ARM - STEP_WIDTH - STEP_MARGIN
    return np.concatenate(
        [a + np.arange(lo, hi + 1, STEP_STRIDE) for a in range(0, n_pixels, N_PIX_ARM)]
    )


def step_differences(r: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Right-minus-left window means of the winsorised residual, ``[B, n_positions]``."""
    u = sigma * np.clip(r / sigma, -WINSOR, WINSOR)
    csum = np.concatenate([np.zeros((len(u), 1)), np.cumsum(u, axis=1)], axis=1)
    k = step_positions(r.shape[1])
    w = STEP_WIDTH
    return (csum[:, k + w] - 2.0 * csum[:, k] + csum[:, k - w]) / w


def step_noise(noise_var: np.ndarray) -> np.ndarray:
    """Variance of each step difference for white noise of ``noise_var`` per pixel:
    ``2 var / W`` at each position (the arm's noise variance), ``[B, n_positions]``."""
    return noise_var[:, step_positions(noise_var.shape[1])] * (2.0 / STEP_WIDTH)


def fit_step_floor(diff: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a, f)``: least squares of ``diff**2 = a noise + f_k`` over validation spectra,
    one noise factor ``a`` for all positions (the pixels' correlation from resampling is
    the same everywhere; one factor per position would be noisy and the max over
    positions would pick its low values), ``a >=`` :data:`MIN_NOISE_FACTOR` (1 when all
    spectra have one S/N) and ``f_k >= 0``; ``a`` returned per position."""
    y, x = diff**2, noise
    xm, ym = x.mean(axis=0), y.mean(axis=0)
    sxx = np.sum((x - xm) ** 2)
    sxy = np.sum((x - xm) * (y - ym))
    slope = sxy / sxx if sxx > 1e-12 * np.sum(xm**2) else 1.0
    a = max(slope, MIN_NOISE_FACTOR)
    return np.full(xm.shape, a), np.maximum(ym - a * xm, 0.0)


def step_statistic(diff: np.ndarray, noise: np.ndarray, a: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``max_k diff_k**2 / (a_k noise_k + f_k)`` per spectrum."""
    return np.max(diff**2 / (a * noise + f + 1e-300), axis=1)


def arm_step_positions(n_pixels: int) -> np.ndarray:
    """Pixel index ``k`` of each whole-arm step position (both arms)."""
    ks = np.arange(ARM_STEP_MARGIN, N_PIX_ARM - ARM_STEP_MARGIN + 1, ARM_STEP_STRIDE)
    return np.concatenate([a + ks for a in range(0, n_pixels, N_PIX_ARM)])


def arm_step_templates(components: np.ndarray) -> np.ndarray:
    """``[n_positions, n_pixels]``: at each :func:`arm_step_positions` ``k``, the unit step
    of its arm (1 from ``k`` to the arm's end) less its least-squares fit by the continuum
    polynomial of that arm (degree :data:`CONTINUUM_DEGREE` in standardised ``log10`` of
    the grid: what normalisation takes out of a broken continuum) and less its projection
    onto the orthonormal ``components`` (what the subspace fit takes)."""
    n_pixels = components.shape[1]
    positions = arm_step_positions(n_pixels)
    out = np.zeros((positions.size, n_pixels))
    pixel = np.arange(n_pixels)
    for a in range(0, n_pixels, N_PIX_ARM):
        x = np.log10(GRID[a : a + N_PIX_ARM])
        q, _ = np.linalg.qr(np.vander((x - x.mean()) / x.std(), CONTINUUM_DEGREE + 1))
        rows = (positions >= a) & (positions < a + N_PIX_ARM)
        steps = (pixel[a : a + N_PIX_ARM] >= positions[rows, None]).astype(np.float64)
        out[rows, a : a + N_PIX_ARM] = steps - (steps @ q) @ q.T
    return out - (out @ components.T) @ components


def arm_step_amplitudes(
    r: np.ndarray,
    sigma: np.ndarray,
    templates: np.ndarray,
    masked: np.ndarray,
    norms: np.ndarray | None = None,
) -> np.ndarray:
    """``[B, n_positions]``: least-squares amplitude of each template in the residual,
    winsorised as for :func:`step_differences`, the ``masked`` pixels (arm ends) left out.
    ``norms``: ``sum(templates**2, axis=1)`` where the caller keeps it."""
    u = sigma * np.clip(r / sigma, -WINSOR, WINSOR)
    u = np.where(np.isfinite(u), u, 0.0)
    u[:, masked] = 0.0
    return (u @ templates.T) / (np.sum(templates**2, axis=1) if norms is None else norms)


def arm_energies(templates: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """``[n_arms, n_positions]``: ``sum(templates**2)`` over each arm's pixels outside
    ``masked``, what :func:`arm_step_noise` weighs each arm's variance with."""
    t2 = templates**2
    t2[:, masked] = 0.0
    return t2.reshape(len(t2), -1, N_PIX_ARM).sum(axis=2).T


def arm_step_noise(arm_var: np.ndarray, energies: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Variance of each :func:`arm_step_amplitudes` value, ``[B, n_positions]``, for white
    noise of a variance constant within each arm (``arm_var [B, n_arms]``, what the arms'
    S/N give; unknown: 0): ``sum_arms var * energy / norms**2`` with the arms' template
    energies (:func:`arm_energies`) and ``norms = sum(templates**2, axis=1)``."""
    v = np.where(np.isfinite(arm_var), arm_var, 0.0)
    return (v @ energies) / norms**2
