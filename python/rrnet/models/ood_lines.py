"""Matched-filter statistics of the OOD subspace residual for features as wide as the LSF.

Light that went through the spectrograph has at least the width of its line-spread
function (R = 7500: Gaussian sigma 2.9 grid pixels in the blue arm, 3.7 in the red one),
so every real defect a single spectrum can carry (an emission line, telluric absorption,
lines of a star outside the training labels) leaves a residual at least that wide, while
pixel noise is white. The mean ``z**2`` statistics of :mod:`rrnet.models.ood_subspace`
weigh each pixel's square alone; filtering the residual with a Gaussian of the LSF's
width first adds up the pixels of one line coherently (the matched filter), which gains
a factor ``sqrt(sqrt(2 pi) sigma) ~ 3`` in the detection significance of the excess
chi-square at the same false-positive rate.

With ``w = 1 / variance`` (0 at artefact pixels and arm ends) and ``g`` a Gaussian of
:data:`SIGMA_PX` pixels, the filtered residual per arm is

    m = (g * (w r)) / sqrt(g**2 * w)

(``*`` a convolution within the arm): the weighted least-squares amplitude of a line of
profile ``g`` centred at each pixel over its standard error, ``N(0, 1)`` at every pixel
for white noise of the stated variance. Two statistics:

* **line** (:func:`line_statistic`): ``max m**2`` over the pixels, a single line;
* **band** (:func:`band_statistic`): the largest mean of ``m**2`` over windows of
  :data:`BAND_WINDOW` pixels every half window within each arm, many weak lines (a
  telluric band, a cooler star's lines), each too weak alone.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve1d

from rrnet.grid import N_PIX_ARM

SIGMA_PX = 4.0
"""Gaussian sigma [grid pixels of 0.1 A] of the filter: between the blue and red arms' LSF
(2.9 and 3.7 pixels at R = 7500) and an intrinsically broadened line (~4.5 pixels); a
filter of sigma ``s`` keeps ``sqrt(2 s t / (s**2 + t**2))`` of the significance of a line
of sigma ``t`` (>= 0.96 for t in 2.9-5.5)."""
TRUNCATE = 4.0
"""Kernel half-width in sigmas."""
BAND_WINDOW = 600
"""Pixels per window of the band statistic (60 Angstrom: a telluric band's width)."""


def kernel(sigma_px: float = SIGMA_PX) -> np.ndarray:
    """The Gaussian filter, peak 1, ``2 ceil(TRUNCATE sigma) + 1`` taps."""
    half = int(np.ceil(TRUNCATE * sigma_px))
    x = np.arange(-half, half + 1, dtype=np.float64)
    return np.exp(-0.5 * (x / sigma_px) ** 2)


def filtered(r: np.ndarray, weight: np.ndarray, sigma_px: float = SIGMA_PX) -> np.ndarray:
    """``m = (g * (w r)) / sqrt(g**2 * w)`` within each arm, ``[B, n_pixels]`` (0 where no
    pixel with weight is in reach)."""
    b, n = r.shape
    lines = (-1, N_PIX_ARM)
    return _filtered_lines(r.reshape(lines), weight.reshape(lines), sigma_px).reshape(b, n)


def _filtered_lines(r: np.ndarray, weight: np.ndarray, sigma_px: float) -> np.ndarray:
    """:func:`filtered` of independent lines ``[L, n]`` (arms, or windows of one)."""
    g = kernel(sigma_px)
    num = convolve1d(weight * r, g, axis=1, mode="constant")
    den = convolve1d(weight, g * g, axis=1, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.sqrt(np.where(den > 0, den, 1.0)), 0.0)


def line_statistic(m: np.ndarray) -> np.ndarray:
    """``max m**2`` per spectrum."""
    return np.max(m * m, axis=1)


def band_statistic(m: np.ndarray, window: int = BAND_WINDOW) -> np.ndarray:
    """Largest mean of ``m**2`` over windows of ``window`` pixels every ``window // 2``
    within each arm, per spectrum."""
    b, n = m.shape
    per_arm = (m * m).reshape(b * (n // N_PIX_ARM), N_PIX_ARM)
    step = max(window // 2, 1)
    csum = np.concatenate([np.zeros((len(per_arm), 1)), np.cumsum(per_arm, axis=1)], axis=1)
    starts = np.arange(0, N_PIX_ARM - window + 1, step)
    means = (csum[:, starts + window] - csum[:, starts]) / window
    return means.reshape(b, -1).max(axis=1)


LSF_LIKE = 0.85
"""A spike whose neighbourhood's ``z**2`` is at least this fraction explained by one
Gaussian of :data:`SIGMA_PX` may be an LSF-wide feature (an unresolved line of sigma
2.9-5.5 pixels: >= 0.92; a resampled cosmic ray of 1-3 raw pixels, a flat top of 3-7
grid pixels: <= 0.78)."""
LSF_REACH = 4
"""Pixels around a spike pixel searched for the best-explained centre (its flanks)."""
SHARP_RATIO = 0.5
"""A feature whose largest pixel-to-pixel jump of ``z`` exceeds this fraction of its peak
``|z|`` (plus :data:`SHARP_NOISE`) is sharper than any LSF: a Gaussian of sigma >= 2.9
pixels changes by <= 0.21 of its peak per pixel, a flat-topped cosmic-ray plateau (7-9
pixels after resampling and the flux clip at low S/N) by ~1."""
SHARP_NOISE = 4.0
"""Allowance [z units] for the noise in the largest jump over a kernel's reach (the
maximum of ~33 differences of unit normals)."""


def lsf_like(
    r: np.ndarray, weight: np.ndarray, sigma_px: float = SIGMA_PX, at: np.ndarray | None = None
) -> np.ndarray:
    """``[B, n_pixels]`` bool: pixels near which one Gaussian of ``sigma_px`` explains at
    least :data:`LSF_LIKE` of the weighted squared residual within its reach, and whose
    neighbourhood has no jump sharper than an LSF (:data:`SHARP_RATIO`); the terms are
    those of :func:`lsf_terms`. ``at``: only these pixels are wanted (others False)."""
    if at is None:
        return _like(*lsf_terms(r, weight, sigma_px))
    out = np.zeros(r.shape, dtype=bool)
    line, col, terms = _terms_at(r, weight, sigma_px, at)
    out.reshape(-1, N_PIX_ARM)[line, col] = _like(*terms)
    return out


def _like(best: np.ndarray, jump: np.ndarray, peak: np.ndarray) -> np.ndarray:
    return (best >= LSF_LIKE) & ~(jump > SHARP_RATIO * peak + SHARP_NOISE)


def lsf_terms(
    r: np.ndarray, weight: np.ndarray, sigma_px: float = SIGMA_PX, at: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel ``[B, n_pixels]``: the best explained fraction within :data:`LSF_REACH`
    pixels, and the largest ``|z[j+1] - z[j]|`` and largest ``|z|`` over the kernel's
    support (``z = r sqrt(w)``, within each arm).

    The explained fraction at centre ``i`` is ``m_i**2 / sum_j w_j r_j**2`` over the
    kernel's support (``m`` of :func:`filtered`; <= 1 by Cauchy-Schwarz, 1 for an exact
    Gaussian of that width); taking the largest within the reach lets a line's flanks
    count with its centre.

    ``at`` (bool, like ``r``): only these pixels are wanted (the others are 0), answered
    by :func:`_terms_at`.
    """
    b, n = r.shape
    if at is None:
        lines = (r.reshape(-1, N_PIX_ARM), weight.reshape(-1, N_PIX_ARM))
        best, jump, peak = _lsf_terms_lines(*lines, sigma_px)
        return best.reshape(b, n), jump.reshape(b, n), peak.reshape(b, n)
    line, col, terms = _terms_at(r, weight, sigma_px, at)
    full = []
    for term in terms:
        out = np.zeros((b * n // N_PIX_ARM, N_PIX_ARM))
        out[line, col] = term
        full.append(out.reshape(b, n))
    return full[0], full[1], full[2]


def _terms_at(
    r: np.ndarray, weight: np.ndarray, sigma_px: float, at: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(arm line, column, (best, jump, peak)) of the ``at`` pixels.

    The callers ask about the few pixels :func:`rrnet.models.ood_subspace.despike`
    replaced (~0.4 %), so each is answered from a window of the pixels its terms depend
    on, with the same arithmetic as over the whole arm (bit-identical terms; about a third
    of the OOD score's time saved); beyond an arm end the window holds zeros, what the
    arm's own boundary handling reads there (:func:`_lsf_terms_lines`).
    """
    lines_r, lines_w = r.reshape(-1, N_PIX_ARM), weight.reshape(-1, N_PIX_ARM)
    line, col = np.nonzero(at.reshape(lines_r.shape))
    halo = int(np.ceil(TRUNCATE * sigma_px)) + LSF_REACH  # what a pixel's terms read
    cols = col[:, None] + np.arange(-halo, halo + 1)
    inside = (cols >= 0) & (cols < N_PIX_ARM)
    window = (line[:, None], np.clip(cols, 0, N_PIX_ARM - 1))
    terms = _lsf_terms_lines(
        np.where(inside, lines_r[window], 0.0),
        np.where(inside, lines_w[window], 0.0),
        sigma_px,
        inside,
    )
    best, jump, peak = (t[:, halo] for t in terms)
    return line, col, (best, jump, peak)


def _lsf_terms_lines(
    r: np.ndarray, weight: np.ndarray, sigma_px: float, inside: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`lsf_terms` of independent lines ``[L, n]`` (arms, or windows of one).

    ``inside`` (bool, like ``r``; default all): the pixels of the arm; the others are
    zero padding (``r = weight = 0``), as the convolutions' and maxima's boundary modes
    pad a whole arm: no explained fraction there, no jump into or out of it.
    """
    from scipy.ndimage import maximum_filter1d

    m = _filtered_lines(r, weight, sigma_px)
    support = np.ones(kernel(sigma_px).size)
    energy = convolve1d(weight * r * r, support, axis=1, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(energy > 0, (m * m) / energy, 0.0)
    if inside is not None:
        frac = np.where(inside, frac, 0.0)
    best = maximum_filter1d(frac, 2 * LSF_REACH + 1, axis=1, mode="constant")
    z = r * np.sqrt(weight)
    jump = np.zeros_like(z)
    jump[:, 1:] = np.abs(np.diff(z, axis=1))
    if inside is not None:
        jump[:, 1:] = np.where(inside[:, 1:] & inside[:, :-1], jump[:, 1:], 0.0)
    jump[:, :-1] = np.maximum(jump[:, :-1], jump[:, 1:])  # both pixels of a jump
    width = support.size
    return best, maximum_filter1d(jump, width, axis=1), maximum_filter1d(np.abs(z), width, axis=1)
