"""Out-of-distribution test that compares like with like at any S/N.

The older score (:mod:`rrnet.models.ood`) measures how far the flux lies from the
training mean in units of the training scatter; that scatter is dominated by the
stellar labels and the noise, so it tracks S/N and cannot see a new domain (a real
LAMOST spectrum scored as more typical than the median synthesised one). This test
asks instead whether the spectrum is explained by the training set:

* **Subspace.** ``mean`` and the ``k`` leading principal components ``P`` (rows,
  orthonormal) of the clipped normalised flux of the high-S/N training spectra.
  The residual of a spectrum ``x`` is ``r = d - P^T c``, ``d = clip(x) - mean``, with
  ``c`` the least-squares coefficients over the pixels that are not artefacts
  (:func:`robust_residual`: pixels that :func:`despike` would replace, widened by
  :data:`ARTEFACT_DILATE` on each side, are left out of the fit and a second fit is
  made). A plain projection ``c = P d`` lets one dead pixel or cosmic ray bend ``c``
  and leave a residual pattern over the whole spectrum; those few validation spectra
  set the thresholds' tails (99.5 % quantile of the local statistic on synthesised
  validation spectra at S/N 10-40: 4.9-7.1 with the plain projection, 2.9-3.7 with
  this one, 1.3 for white noise; docs/results.md).
* **Noise.** Each pixel's variance is the spectrum's own noise, ``1 / snr_arm**2``
  (the manifest's ``snr_blue``/``snr_red``: median flux * sqrt(ivar), i.e. the noise
  in continuum units), plus the subspace's own residual floor ``floor2`` per pixel,
  measured on validation spectra (median of ``r**2`` / 0.455 minus the noise variance,
  robust to cosmic rays), so that a clean spectrum gives ``z**2 ~ 1`` at any S/N.
  Artefacts narrower than the line-spread function (cosmic rays, bad pixels: the
  ``OUTLIERS`` bit's business) are replaced by their running median (:func:`despike`),
  and the 10 pixels at each end of each arm take the spectrum's median ``z**2``.
* **Two statistics** of ``z**2 = r**2 / (noise variance + floor2)``: ``global``, the
  mean over all pixels (a wrong RV, resolution, continuum or spectral type leaves
  residuals everywhere), and ``local``, the largest mean over windows of
  :data:`WINDOW` pixels every ``WINDOW // 2`` (an emission line or a telluric band
  touches few pixels); tests fitted by this version add two shape statistics of ``r``
  (:mod:`rrnet.models.ood_shape`): ``line width`` (a wrong resolution) and ``step``
  (a broken continuum), which add up pixels a defect changes coherently; tests fitted
  since the matched filter add two more (:mod:`rrnet.models.ood_lines`): ``line`` and
  ``band``, the residual filtered with a Gaussian as wide as the line-spread function
  (an emission line, telluric absorption, a cooler star's lines: every real feature is
  at least that wide, pixel noise is not); tests fitted since 2026-12-03 measure the
  step over the whole arm (:func:`rrnet.models.ood_shape.arm_step_amplitudes`) instead
  of 120-pixel windows.
* **Thresholds.** Quantiles of each statistic on the validation spectra (never seen
  by the subspace fit), per S/N node (spectra within a factor 2 of the node's S/N),
  at the levels :data:`QUANTILE_LEVELS` (:data:`SHAPE_LEVELS` with the shape
  statistics). The score is the largest statistic over its threshold, thresholds
  interpolated in log S/N; above 1 is out of distribution. With the shape statistics
  all four (six) are cut at one level per node, the one at which a fraction ``1 - q`` of the
  node's validation spectra fail some statistic (:attr:`Subspace.joint_levels`, solved
  at :data:`JOINT_QUANTILES`); the two-statistic tests of older checkpoints cut each
  at ``1 - (1 - q) / 2`` (Bonferroni). ``q`` is ``--ood-quantile``: a clean spectrum
  is flagged with probability ~ 1 - q.

Everything is stored in ``ood_subspace.safetensors`` of the checkpoint (part of its
hash); :func:`scorer` builds the score function.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from rrnet.grid import N_PIX_ARM
from rrnet.models import ood_lines, ood_shape
from rrnet.models.normalization import FLUX_CLIP
from rrnet.preprocess import kernels
from rrnet.utils.atomic import as_created, atomic_path
from rrnet.utils.cores import compute_threads

SUBSPACE_FILE = "ood_subspace.safetensors"
"""File of the subspace, floor and thresholds inside a checkpoint directory."""
SCORE_NAME = "subspace_chi2_robust"
"""Identifier of this score in the file's metadata (change it if the formula changes)."""
PLAIN_SCORE_NAME = "subspace_chi2"
"""The earlier formula (plain projection), still read from older checkpoints."""
SHAPE_SCORE_NAME = "subspace_chi2_shape"
"""The robust formula plus the line-width and step statistics (:mod:`rrnet.models.ood_shape`)."""
LINES_SCORE_NAME = "subspace_chi2_lines"
"""The shape formula plus the matched-filter statistics (:mod:`rrnet.models.ood_lines`)."""
ARM_STEP_SCORE_NAME = "subspace_chi2_armstep"
"""The lines formula with the step measured over whole arms (``ood_shape.arm_step_*``)."""
ARTEFACT_DILATE = 2
"""Pixels on each side of an artefact also left out of the robust fit (resampling
spreads a raw pixel over its neighbours)."""
WINDOW = 50
"""Pixels per window of the local statistic (5 Angstrom: a few line widths)."""
N_COMPONENTS = 60
"""Default number of principal components."""
FIT_MIN_SNR = 30.0
"""Training spectra below this S/N are left out of the PCA (their noise would be fitted)."""
MAX_FIT_SPECTRA = 4000
"""At most this many training spectra (S/N >= FIT_MIN_SNR, evenly spaced) in the PCA."""
QUANTILE_LEVELS: tuple[float, ...] = (0.9, 0.95, 0.99, 0.995, 0.999, 1.0)
"""Levels of the stored threshold tables; others are interpolated between them."""
SHAPE_LEVELS: tuple[float, ...] = (
    0.9, 0.95, 0.97, 0.98, 0.985, 0.99, 0.9925, 0.995, 0.9965, 0.998, 0.999, 1.0,
)  # fmt: skip
"""The finer levels of the four-statistic tables (the joint level falls between 0.99 and
0.999, where the tails of a few hundred validation spectra per node change fast)."""
JOINT_QUANTILES: tuple[float, ...] = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
"""The ``--ood-quantile`` values the joint levels are solved at (others interpolated)."""
SNR_NODES: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
"""S/N at which thresholds are tabulated (interpolated in log S/N between them)."""
MIN_PER_NODE = 30
"""Fewer validation spectra than this near a node: the node takes the all-S/N quantile."""
EDGE = 10
"""Pixels at each end of each arm that take the spectrum's median ``z**2``."""
GAUSS_MEDIAN_CHI2 = 0.454936423119572
"""Median of a chi-square with one degree of freedom."""
SPIKE_WIDTH = 25
"""Pixels of the running median that defines an artefact (chosen on the synthesised
validation set: 15 left resampled cosmic rays of 7-10 pixels in, 25 removes them)."""
SPIKE_FACTOR = 9.0
"""A pixel's ``z**2`` above this times the running median (and above this) is replaced."""
ROW_BLOCK = 64
"""Spectra scored at a time (their float64 temporaries, 3.7 MB each, stay in the cache)."""


@dataclass(frozen=True)
class Subspace:
    """The fitted test: subspace, residual floor and threshold tables."""

    mean: np.ndarray
    """float64 [n_pixels]: mean clipped flux of the fitted spectra."""
    components: np.ndarray
    """float64 [k, n_pixels]: orthonormal principal directions."""
    floor2: np.ndarray
    """float64 [n_pixels]: residual variance the subspace leaves in clean spectra."""
    thresholds: np.ndarray
    """float64 [2, n_nodes, n_levels]: quantiles of (global, local) per S/N node."""
    snr_nodes: np.ndarray = field(default_factory=lambda: np.asarray(SNR_NODES))
    levels: np.ndarray = field(default_factory=lambda: np.asarray(QUANTILE_LEVELS))
    window: int = WINDOW
    robust: bool = True
    """Artefact pixels left out of the projection (:func:`robust_residual`); False for
    tests stored by older versions (:data:`PLAIN_SCORE_NAME`)."""
    step_noise: np.ndarray | None = None
    """float64 [n_positions]: noise factor ``a_k`` of the step statistic
    (:mod:`rrnet.models.ood_shape`); None: no shape statistics (older checkpoints)."""
    step_floor: np.ndarray | None = None
    """float64 [n_positions]: the subspace's own step variance ``f_k``; None with step_noise."""
    joint_quantiles: np.ndarray | None = None
    """float64 [n_q]: the ``quantile`` values :attr:`joint_levels` is tabulated at."""
    joint_levels: np.ndarray | None = None
    """float64 [n_nodes, n_q]: the common level of all statistics at which the validation
    spectra near each node fail some statistic with frequency ``1 - q``; None: Bonferroni."""
    lines: bool = False
    """Whether the matched-filter line and band statistics follow the shape ones
    (:mod:`rrnet.models.ood_lines`); False for tests stored before them."""
    arm_step: bool = False
    """Whether the step statistic is the whole-arm step (:func:`ood_shape.arm_step_amplitudes`,
    tests fitted since 2026-12-03) rather than the 120-pixel window difference."""

    @functools.cached_property
    def step_templates(self) -> np.ndarray:
        """The whole-arm step templates of this subspace (:func:`ood_shape.arm_step_templates`),
        computed once (~0.1 s, 20 MB), with one BLAS thread: the same bits wherever
        they are first needed."""
        with _single_threaded_blas():
            return ood_shape.arm_step_templates(self.components)

    @functools.cached_property
    def step_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """``sum(step_templates**2)`` per position, and per arm outside the arm ends
        (:func:`ood_shape.arm_energies`): computed once, not per block of spectra."""
        t = self.step_templates
        return np.sum(t**2, axis=1), ood_shape.arm_energies(t, _edge_pixels(t.shape[1]))

    @property
    def shape(self) -> bool:
        """Whether the line-width and step statistics are part of the test."""
        return self.step_floor is not None

    @property
    def n_statistics(self) -> int:
        """2 (global, local), 4 (also line width, step) or 6 (also line, band)."""
        if self.lines:
            return 6
        return 4 if self.shape else 2

    def limits(self, snr: np.ndarray, quantile: float) -> np.ndarray:
        """Thresholds ``[B, n_statistics]`` for spectra of S/N ``snr``.

        With a joint table (:attr:`joint_levels`), every statistic is cut at the level
        at which the validation spectra near each S/N node fail some statistic with
        frequency ``1 - quantile``; without one (two-statistic tests), each is cut at
        ``1 - (1 - quantile) / n_statistics`` (Bonferroni). Either way a clean spectrum
        passes all with probability ~>= ``quantile``.
        """
        at_level = self._at_levels(quantile)  # [n_statistics, n_nodes]
        x = np.log(np.clip(np.asarray(snr, dtype=np.float64), 1e-3, None))
        nodes = np.log(self.snr_nodes)
        n = self.n_statistics
        return np.stack([np.interp(x, nodes, at_level[s]) for s in range(n)], axis=1)

    def _at_levels(self, quantile: float) -> np.ndarray:
        """Per statistic and node, the threshold for ``quantile``."""
        if self.joint_levels is None:
            level = np.full(len(self.snr_nodes), 1.0 - (1.0 - quantile) / self.n_statistics)
            lowest = 1 - self.n_statistics * (1 - self.levels[0])
        else:
            assert self.joint_quantiles is not None  # stored with joint_levels
            lowest = float(self.joint_quantiles[0])
            qs = np.r_[self.joint_quantiles, 1.0]
            level = np.array(
                [np.interp(quantile, qs, np.r_[row, 1.0]) for row in self.joint_levels]
            )
        if not 0.0 < quantile <= 1.0 or quantile < lowest or np.any(level < self.levels[0]):
            raise ValueError(f"OOD quantile {quantile} outside the stored range {lowest:g}..1")
        return np.array(
            [[np.interp(lv, self.levels, row) for lv, row in zip(level, table, strict=True)]
             for table in self.thresholds]
        )  # fmt: skip


def pixel_variance(snr_blue: np.ndarray, snr_red: np.ndarray, n_pixels: int) -> np.ndarray:
    """Noise variance ``[B, n_pixels]`` of normalised flux: ``1/snr**2`` per arm (NaN if
    the arm's S/N is unknown or not positive)."""
    out = np.empty((np.size(snr_blue), n_pixels))
    for arm, snr in enumerate((snr_blue, snr_red)):
        s = np.asarray(snr, dtype=np.float64).reshape(-1)
        var = np.where(np.isfinite(s) & (s > 0), 1.0 / np.where(s > 0, s, 1.0) ** 2, np.nan)
        out[:, arm * N_PIX_ARM : (arm + 1) * N_PIX_ARM] = var[:, None]
    return out


def residual(mean: np.ndarray, components: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """``d - P^T P d`` with ``d = clip(flux) - mean``, float64 ``[B, n_pixels]``."""
    d = _centred(mean, flux)
    return d - (d @ components.T) @ components


def _centred(mean: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """``clip(flux) - mean``, float64 ``[B, n_pixels]``: what the subspace describes."""
    return np.clip(np.atleast_2d(np.asarray(flux, dtype=np.float64)), *FLUX_CLIP) - mean


def robust_residual(
    mean: np.ndarray,
    components: np.ndarray,
    flux: np.ndarray,
    variance: np.ndarray,
    keep_lines: bool = False,
) -> np.ndarray:
    """The residual off the span fitted without artefact pixels, float64 ``[B, n_pixels]``.

    Artefacts are the pixels :func:`despike` replaces in ``r**2 / variance`` of the plain
    residual, widened by :data:`ARTEFACT_DILATE`; with ``m`` those pixels, the
    coefficients solve ``(I - P_m P_m^T) c = P d - P_m d_m`` (least squares over the
    other pixels, ``P`` orthonormal), and the residual is ``d - P^T c`` at every pixel.
    Rows without artefacts keep the plain residual. With ``keep_lines`` (tests with the
    matched-filter statistics), spikes as wide as the line-spread function
    (:func:`rrnet.models.ood_lines.lsf_like`) are not artefacts.
    """
    from scipy.ndimage import maximum_filter1d

    d = _centred(mean, flux)
    coef = d @ components.T
    r = d - coef @ components
    z2 = r**2 / variance
    finite = np.all(np.isfinite(z2), axis=1)
    artefact = np.zeros(z2.shape, dtype=bool)
    artefact[finite] = despike(z2[finite]) != z2[finite]
    if keep_lines:  # LSF-wide features are light, not artefacts (ood_lines.lsf_like)
        lsf = ood_lines.lsf_like(np.where(np.isfinite(r), r, 0.0), 1.0 / variance, at=artefact)
        artefact &= ~lsf
    widened = maximum_filter1d(artefact.view(np.uint8), 2 * ARTEFACT_DILATE + 1, axis=1)
    refit = np.flatnonzero(widened.any(axis=1))
    if refit.size == 0:
        return r
    k = components.shape[0]  # one small system per row, solved and applied as a batch
    lhs, rhs = np.empty((refit.size, k, k)), np.empty((refit.size, k))
    by_pixel = np.ascontiguousarray(components.T)  # a row's masked pixels: contiguous rows
    for j, i in enumerate(refit):
        m = np.flatnonzero(widened[i])
        pm = by_pixel[m]
        lhs[j] = np.eye(k) - pm.T @ pm
        rhs[j] = coef[i] - d[i, m] @ pm
    c = np.linalg.solve(lhs, rhs[..., None])[..., 0]
    r[refit] = d[refit] - c @ components
    return r


def despike(z2: np.ndarray) -> np.ndarray:
    """``z2`` with artefacts narrower than the line-spread function (cosmic rays, bad
    pixels) replaced by the running median of :data:`SPIKE_WIDTH` pixels: a pixel above
    :data:`SPIKE_FACTOR` times that median (and above the factor itself) is replaced.

    Light that went through the spectrograph is at least the LSF wide (R = 7500: Gaussian
    sigma >= 2.9 grid pixels); a resampled cosmic ray is up to ~10 pixels wide with a flat
    top. A line of sigma >= 4.5 pixels (an intrinsic width >= 0.3 A) keeps a running
    median >= 0.17 of its peak and stays whole; an unresolved line (sigma 2.9-4 pixels)
    with peak ``z**2`` above ~50 loses its core pixels (its flanks still count). (A test
    on pixel-to-pixel steps was tried and dropped: the residual of a shifted line steps
    as sharply as a resampled cosmic ray.)
    """
    # np.where(z2 > F * np.maximum(m, 1), m, z2), m scipy's median_filter (mode="nearest")
    return kernels.despike(z2, SPIKE_WIDTH, SPIKE_FACTOR)


def _edge_pixels(n_pixels: int) -> np.ndarray:
    """The :data:`EDGE` pixels at both ends of each arm (resampling and continuum-fit
    edges; a spike there cannot be told from its neighbours)."""
    starts = range(0, n_pixels, N_PIX_ARM)
    return np.concatenate(
        [np.r_[s : s + EDGE, s + N_PIX_ARM - EDGE : s + N_PIX_ARM] for s in starts]
    )


def _row_medians(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=1)`` (equal for rows without NaN) from one partition and
    a maximum instead of a partition at three places (~half the time)."""
    half = values.shape[1] // 2
    part = np.partition(values, half, axis=1)
    if values.shape[1] % 2:
        return part[:, half]
    return (part[:, :half].max(axis=1) + part[:, half]) / 2


def window_means(z2: np.ndarray, window: int) -> np.ndarray:
    """Means of ``z2`` over windows of ``window`` pixels starting every ``window // 2``
    (half-overlapping, so that a line is never split between two windows)."""
    step = max(window // 2, 1)
    csum = np.concatenate([np.zeros((len(z2), 1)), np.cumsum(z2, axis=1)], axis=1)
    starts = np.arange(0, z2.shape[1] - window + 1, step)
    return (csum[:, starts + window] - csum[:, starts]) / window


def statistics(
    sub: Subspace, flux: np.ndarray, snr_blue: np.ndarray, snr_red: np.ndarray
) -> np.ndarray:
    """``[B, n_statistics]``: (global, local) mean ``z**2`` after :func:`despike`, arm ends
    masked, then (line width, step) where the test has them (:mod:`rrnet.models.ood_shape`)
    and (line, band) where it has those (:mod:`rrnet.models.ood_lines`); NaN for
    non-finite flux or unknown S/N."""
    stats, _ = _statistics(sub, flux, snr_blue, snr_red)
    return stats


def _statistics(
    sub: Subspace, flux: np.ndarray, snr_blue: np.ndarray, snr_red: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """:func:`statistics` and the raw step ``(differences, noise)`` (what calibration fits).

    Every statistic is a row's own, so rows are scored :data:`ROW_BLOCK` at a time: a
    block's ~20 float64 temporaries stay in the cache (whole batches took ~1.6x the
    time), and blocks run on one thread per core with single-threaded BLAS inside (the
    block's numpy, scipy and BLAS calls release the GIL; BLAS's own threads on blocks
    this small only spun: ~1.8x the CPU time).
    """
    from concurrent.futures import ThreadPoolExecutor

    flux = np.atleast_2d(np.asarray(flux))
    if len(flux) == 0:
        return np.empty((0, sub.n_statistics)), (np.empty((0, 0)), np.empty((0, 0)))
    snr_blue, snr_red = np.broadcast_to(snr_blue, len(flux)), np.broadcast_to(snr_red, len(flux))

    def block(start: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        rows = slice(start, start + ROW_BLOCK)
        return _block_statistics(sub, flux[rows], snr_blue[rows], snr_red[rows])

    starts = range(0, len(flux), ROW_BLOCK)
    workers = min(compute_threads(), len(starts))
    with _single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
        if sub.arm_step:  # cached on first use: once, before the threads
            _ = sub.step_sums
        blocks = list(pool.map(block, starts))
    stats = np.concatenate([b[0] for b in blocks])
    step = tuple(np.concatenate([b[1][k] for b in blocks]) for k in range(2))
    return stats, (step[0], step[1])


class _SharedBlasLimit:
    """BLAS limited to one thread while the OOD blocks run on their own threads.

    The limit is process-wide: scorings running at once in several threads share one,
    set by the first and lifted by the last (each setting its own, an overlapping exit
    restored another's "1" and left BLAS single-threaded for the rest of the process).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limit: Any = None
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        """A child forked mid-scoring inherits the count, the limit and perhaps the lock,
        but none of the scorings: it starts afresh with BLAS as it was before them."""
        limit, self._limit, self._users, self._lock = self._limit, None, 0, threading.Lock()
        if limit is not None:
            limit.restore_original_limits()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._limit = _blas_controller().limit(limits=1, user_api="blas")
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._limit.restore_original_limits()
                    self._limit = None


_single_threaded_blas = _SharedBlasLimit()


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """The process's BLAS libraries, found once (a scan of what is loaded: 0.5 ms; the
    BLAS these statistics use is numpy's, loaded before this module)."""
    return ThreadpoolController()


def _block_statistics(
    sub: Subspace, flux: np.ndarray, snr_blue: np.ndarray, snr_red: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """:func:`_statistics` of one block of rows."""
    from scipy.ndimage import maximum_filter1d

    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    noise = pixel_variance(snr_blue, snr_red, flux.shape[1])
    var = noise + sub.floor2
    if sub.robust:
        r = robust_residual(sub.mean, sub.components, flux, var, keep_lines=sub.lines)
    else:
        r = residual(sub.mean, sub.components, flux)
    z2 = r**2 / var
    finite = np.all(np.isfinite(z2), axis=1)
    raw = z2.copy() if sub.shape else z2
    z2[finite] = despike(z2[finite])
    if sub.lines:  # spikes as wide as the LSF are light and keep their z**2
        replaced = (z2 != raw) & finite[:, None]  # lsf_like matters only there
        lsf = ood_lines.lsf_like(np.where(finite[:, None], r, 0.0), 1.0 / var, at=replaced)
        z2 = np.where(lsf, raw, z2)
    spikes = z2 != raw  # before the arm ends are overwritten below
    edges = _edge_pixels(flux.shape[1])
    z2[:, edges] = _row_medians(np.delete(z2, edges, axis=1))[:, None]
    out = [z2.mean(axis=1), window_means(z2, sub.window).max(axis=1)]
    step = (np.empty((len(z2), 0)), np.empty((len(z2), 0)))
    if sub.shape:
        artefact = maximum_filter1d(spikes.view(np.uint8), 2 * ARTEFACT_DILATE + 1, axis=1)
        weight = np.where(artefact.astype(bool), 0.0, 1.0 / var)
        weight[:, edges] = 0.0
        model = np.clip(flux, *FLUX_CLIP) - r  # the fitted reference
        out.append(ood_shape.line_width(r, model, weight))
        if sub.arm_step:
            t, (norms, energies) = sub.step_templates, sub.step_sums
            arm_var = noise[:, ::N_PIX_ARM]  # constant within each arm
            step = (ood_shape.arm_step_amplitudes(r, np.sqrt(var), t, edges, norms),
                    ood_shape.arm_step_noise(arm_var, energies, norms))  # fmt: skip
        else:
            step = (ood_shape.step_differences(r, np.sqrt(var)), ood_shape.step_noise(noise))
        if sub.step_noise is not None and sub.step_floor is not None:
            out.append(ood_shape.step_statistic(*step, sub.step_noise, sub.step_floor))
        else:  # calibration's provisional test: the floor is not fitted yet
            out.append(np.zeros(len(z2)))
        if sub.lines:
            m = ood_lines.filtered(np.where(np.isfinite(r), r, 0.0), weight)
            out += [ood_lines.line_statistic(m), ood_lines.band_statistic(m)]
    stats = np.stack(out, axis=1)
    stats[~finite] = np.nan
    return stats, step


def combined_snr(snr_blue: np.ndarray, snr_red: np.ndarray) -> np.ndarray:
    """The S/N thresholds are looked up at: the lower of the two arms."""
    return np.fmin(np.asarray(snr_blue, np.float64), np.asarray(snr_red, np.float64))


def score(
    sub: Subspace,
    flux: np.ndarray,
    snr_blue: np.ndarray,
    snr_red: np.ndarray,
    quantile: float = 0.99,
) -> np.ndarray:
    """``max(global / t_global, local / t_local)`` per spectrum; > 1 is out of distribution."""
    stats = statistics(sub, flux, snr_blue, snr_red)
    limits = sub.limits(combined_snr(snr_blue, snr_red), quantile)
    with np.errstate(invalid="ignore"):
        return np.max(stats / limits, axis=1)


def evenly_spaced(rows: np.ndarray, most: int) -> np.ndarray:
    """At most ``most`` of ``rows``, evenly spaced (deterministic; all when fewer)."""
    rows = np.asarray(rows)
    if rows.size > most:
        rows = rows[np.linspace(0, rows.size - 1, most).astype(np.int64)]
    return rows


def pca_rows(
    snr: np.ndarray, n_components: int = N_COMPONENTS, max_spectra: int = MAX_FIT_SPECTRA
) -> np.ndarray | None:
    """Indices of the spectra the PCA takes: S/N >= :data:`FIT_MIN_SNR`, at most
    ``max_spectra`` of them evenly spaced; None when fewer than ``4 * n_components``
    qualify (:func:`fit_subspace` then takes the better half by S/N)."""
    snr = np.nan_to_num(np.asarray(snr, dtype=np.float64), nan=0.0)
    rows = np.flatnonzero(snr >= FIT_MIN_SNR)
    return None if rows.size < 4 * n_components else evenly_spaced(rows, max_spectra)


def fit_subspace(
    train_flux: np.ndarray,
    train_snr: np.ndarray,
    n_components: int = N_COMPONENTS,
    max_spectra: int = MAX_FIT_SPECTRA,
) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, components)`` of the training spectra :func:`pca_rows` chooses (the
    better half by S/N when too few qualify, at most ``max_spectra`` of them)."""
    flux = np.asarray(train_flux)
    snr = np.nan_to_num(np.asarray(train_snr, dtype=np.float64), nan=0.0)
    rows = pca_rows(snr, n_components, max_spectra)
    if rows is None:
        better_half = np.argsort(-snr, kind="stable")[: max(flux.shape[0] // 2, 1)]
        rows = evenly_spaced(better_half, max_spectra)
    x = np.clip(np.asarray(flux[np.sort(rows)], dtype=np.float64), *FLUX_CLIP)
    x = x[np.all(np.isfinite(x), axis=1)]
    if x.shape[0] < 2:
        raise ValueError("fewer than 2 finite training spectra to fit the OOD subspace")
    mean = x.mean(axis=0)
    k = min(n_components, x.shape[0] - 1)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:k].copy()


def calibrate(
    mean: np.ndarray,
    components: np.ndarray,
    valid_flux: np.ndarray,
    snr_blue: np.ndarray,
    snr_red: np.ndarray,
    shape: bool = True,
    lines: bool = True,
    arm_step: bool = True,
) -> Subspace:
    """The residual floor, the step floor (``shape``) and the threshold tables from
    validation spectra (``lines``, which needs ``shape``: with the matched-filter
    statistics; ``arm_step``, which needs ``lines``: the step over whole arms)."""
    flux = np.asarray(valid_flux, dtype=np.float64)
    snr_b, snr_r = np.asarray(snr_blue, np.float64), np.asarray(snr_red, np.float64)
    var = pixel_variance(snr_b, snr_r, flux.shape[1])
    good = np.all(np.isfinite(flux), axis=1) & np.all(np.isfinite(var), axis=1)
    if good.sum() < 2:
        raise ValueError("fewer than 2 validation spectra with finite flux and S/N")
    flux, var, snr_b, snr_r = flux[good], var[good], snr_b[good], snr_r[good]
    r2 = residual(mean, components, flux) ** 2
    snr = combined_snr(snr_b, snr_r)
    high = snr >= FIT_MIN_SNR
    use = high if high.sum() >= 10 else np.ones(snr.size, dtype=bool)
    # median, not mean: robust to spikes; median(r**2) = 0.4549 var for a Gaussian r
    floor2 = np.maximum(
        np.median(r2[use], axis=0) / GAUSS_MEDIAN_CHI2 - np.median(var[use], axis=0), 0.0
    )
    lines = lines and shape
    arm_step = arm_step and lines
    n_stats = 6 if lines else 4 if shape else 2
    provisional = Subspace(
        mean, components, floor2 + 1e-12, np.zeros((n_stats, len(SNR_NODES), 1)),
        step_floor=np.zeros(0) if shape else None, lines=lines, arm_step=arm_step,
    )  # fmt: skip
    stats, step = _statistics(provisional, flux, snr_b, snr_r)
    a = f = None
    if shape:
        a, f = ood_shape.fit_step_floor(*step)
        stats[:, 3] = ood_shape.step_statistic(*step, a, f)
    if not shape:
        tables = _threshold_tables(stats, snr, QUANTILE_LEVELS)
        return Subspace(mean, components, floor2 + 1e-12, tables)
    tables = _threshold_tables(stats, snr, SHAPE_LEVELS)
    joint = _joint_levels(stats, snr, tables)
    return Subspace(
        mean, components, floor2 + 1e-12, tables, levels=np.asarray(SHAPE_LEVELS),
        step_noise=a, step_floor=f, joint_quantiles=np.asarray(JOINT_QUANTILES),
        joint_levels=joint, lines=lines, arm_step=arm_step,
    )  # fmt: skip


def _near(snr: np.ndarray, node: float) -> np.ndarray:
    """Validation spectra a node's quantiles come from (all of them when too few)."""
    near = np.abs(np.log(snr / node)) <= np.log(2.0)
    return near if near.sum() >= MIN_PER_NODE else np.ones(snr.size, dtype=bool)


def _threshold_tables(stats: np.ndarray, snr: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """``[n_statistics, n_nodes, n_levels]`` quantiles of each statistic near each S/N node."""
    tables = np.empty((stats.shape[1], len(SNR_NODES), len(levels)))
    for j, node in enumerate(SNR_NODES):
        tables[:, j] = np.quantile(stats[_near(snr, node)], levels, axis=0).T
    return tables


def _joint_levels(stats: np.ndarray, snr: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """``[n_nodes, n_q]``: per node and ``q`` of :data:`JOINT_QUANTILES`, the lowest common
    level (bisection, 1e-6) at which at most ``1 - q`` of the validation spectra near the
    node exceed some statistic's threshold (thresholds interpolated as :meth:`limits` does)."""
    levels = np.asarray(SHAPE_LEVELS)
    out = np.empty((len(SNR_NODES), len(JOINT_QUANTILES)))
    for j, node in enumerate(SNR_NODES):
        near = stats[_near(snr, node)]

        def failing(level: float) -> float:
            limit = np.array([np.interp(level, levels, row[j]) for row in tables])  # noqa: B023
            return float(np.mean(np.any(near > limit, axis=1)))  # noqa: B023

        for k, q in enumerate(JOINT_QUANTILES):
            lo, hi = q, 1.0  # failing(q) >= 1 - q: each statistic alone fails that often
            while hi - lo > 1e-6:
                mid = 0.5 * (lo + hi)
                lo, hi = (lo, mid) if failing(mid) <= 1.0 - q else (mid, hi)
            out[j, k] = hi
    return out


def fit(
    train_flux: np.ndarray,
    train_snr: tuple[np.ndarray, np.ndarray],
    valid_flux: np.ndarray,
    valid_snr: tuple[np.ndarray, np.ndarray],
    n_components: int = N_COMPONENTS,
    shape: bool = True,
    lines: bool = True,
    max_spectra: int = MAX_FIT_SPECTRA,
) -> Subspace:
    """Subspace from the training spectra (at most ``max_spectra``, :func:`fit_subspace`),
    floors and thresholds from the validation ones (``shape``: with the line-width and
    step statistics, :mod:`rrnet.models.ood_shape`; ``lines`` as well: with the
    matched-filter ones, :mod:`rrnet.models.ood_lines`)."""
    mean, components = fit_subspace(
        train_flux, combined_snr(*train_snr), n_components, max_spectra=max_spectra
    )
    return calibrate(mean, components, valid_flux, *valid_snr, shape=shape, lines=lines)


def write(path: str | os.PathLike[str], sub: Subspace) -> Path:
    """Store ``sub`` as ``path/ood_subspace.safetensors`` (float64 tensors + metadata)."""
    from safetensors.numpy import save_file

    target = Path(path) / SUBSPACE_FILE
    arrays, meta = _stored(sub)
    with atomic_path(target) as tmp:
        save_file(arrays, str(tmp), meta)
        as_created(tmp)
    return target


def _stored(sub: Subspace) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """What :func:`write` stores of ``sub``: its float64 tensors and metadata."""
    tensors = {
        "mean": sub.mean,
        "components": sub.components,
        "floor2": sub.floor2,
        "thresholds": sub.thresholds,
        "snr_nodes": np.asarray(sub.snr_nodes, np.float64),
        "levels": np.asarray(sub.levels, np.float64),
    }
    meta = {"score": score_name(sub), "window": str(sub.window)}
    if sub.step_noise is not None and sub.step_floor is not None:
        tensors |= {"step_noise": sub.step_noise, "step_floor": sub.step_floor}
    if sub.joint_levels is not None and sub.joint_quantiles is not None:
        tensors |= {"joint_quantiles": sub.joint_quantiles, "joint_levels": sub.joint_levels}
        meta |= dict(zip(("step_width", "step_stride"), _step_layout(sub.arm_step), strict=True))
    if sub.lines:
        meta |= {"line_sigma": str(ood_lines.SIGMA_PX), "band_window": str(ood_lines.BAND_WINDOW)}
    return {k: np.ascontiguousarray(v, np.float64) for k, v in tensors.items()}, meta


def read(path: str | os.PathLike[str]) -> Subspace | None:
    """The checkpoint's stored test, or None when it has none (older checkpoints)."""
    from safetensors import safe_open

    target = Path(path) / SUBSPACE_FILE
    if not target.is_file():
        return None
    try:
        with safe_open(str(target), framework="numpy") as handle:
            meta = handle.metadata() or {}
            t = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except OSError:
        raise  # the machine's (or a vanished file), not a damaged test
    except Exception as exc:  # safetensors' own error: a truncated or foreign file
        raise ValueError(f"{target}: not a readable safetensors file ({exc})") from exc
    names = (ARM_STEP_SCORE_NAME, LINES_SCORE_NAME, SHAPE_SCORE_NAME, SCORE_NAME, PLAIN_SCORE_NAME)
    if meta.get("score") not in names:
        raise ValueError(f"{target}: unknown OOD score {meta.get('score')!r}")
    arm_step = meta["score"] == ARM_STEP_SCORE_NAME
    lines = arm_step or meta["score"] == LINES_SCORE_NAME
    shape = lines or meta["score"] == SHAPE_SCORE_NAME
    if shape and (meta.get("step_width"), meta.get("step_stride")) != _step_layout(arm_step):
        raise ValueError(f"{target}: step statistic stored for another window or stride")
    filt = (str(ood_lines.SIGMA_PX), str(ood_lines.BAND_WINDOW))
    if lines and (meta.get("line_sigma"), meta.get("band_window")) != filt:
        raise ValueError(f"{target}: line statistics stored for another filter or window")
    return Subspace(
        t["mean"], t["components"], t["floor2"], t["thresholds"],
        t["snr_nodes"], t["levels"], int(meta.get("window", WINDOW)),
        meta["score"] != PLAIN_SCORE_NAME, t.get("step_noise"), t.get("step_floor"),
        t.get("joint_quantiles"), t.get("joint_levels"), lines, arm_step,
    )  # fmt: skip


def _step_layout(arm_step: bool) -> tuple[str, str]:
    """(width, stride) of the stored step statistic's positions, as stored in the file:
    ``arm:margin:degree`` and :data:`ood_shape.ARM_STEP_STRIDE`, or the window's width
    and stride."""
    if arm_step:
        arm = f"arm:{ood_shape.ARM_STEP_MARGIN}:{ood_shape.CONTINUUM_DEGREE}"
        return arm, str(ood_shape.ARM_STEP_STRIDE)
    return str(ood_shape.STEP_WIDTH), str(ood_shape.STEP_STRIDE)


def score_name(sub: Subspace) -> str:
    """The formula identifier stored with ``sub``."""
    if sub.arm_step:
        return ARM_STEP_SCORE_NAME
    if sub.lines:
        return LINES_SCORE_NAME
    if sub.shape:
        return SHAPE_SCORE_NAME
    return SCORE_NAME if sub.robust else PLAIN_SCORE_NAME


def scorer(
    sub: Subspace, quantile: float
) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """``score(flux, snr_blue, snr_red)`` at ``quantile`` (checked now, not per call)."""
    sub.limits(np.array([10.0]), quantile)

    def run(flux: np.ndarray, snr_blue: np.ndarray, snr_red: np.ndarray) -> np.ndarray:
        return score(sub, flux, snr_blue, snr_red, quantile)

    return run


def digest(sub: Subspace) -> str:
    """SHA-256 of what :func:`write` stores of ``sub`` (every tensor and the metadata, in
    name order): equal for the same test stored twice, e.g. by an SP and a CA checkpoint
    trained on the same store and split (their files differ in metadata order only)."""
    import hashlib

    arrays, meta = _stored(sub)
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(arrays):
        h.update(f"|{name}{arrays[name].shape}|".encode())
        h.update(arrays[name].tobytes())
    return h.hexdigest()


def describe(sub: Subspace) -> dict[str, object]:
    """Summary for logs and provenance."""
    return {
        "score": score_name(sub),
        "n_components": int(sub.components.shape[0]),
        "window": sub.window,
        "floor_rms_median": float(np.sqrt(np.median(sub.floor2))),
        # per statistic and S/N node, the thresholds --ood-quantile 0.99 applies
        "threshold_0.99": json.loads(json.dumps(sub._at_levels(0.99).round(4).tolist())),
    }
