"""A toy spectral model for tests, demos and benchmarks of the training code.

Absorption lines at fixed positions whose depths and widths depend smoothly on
(Teff, log g, [Fe/H]); the network has to learn that mapping from the flux, as it
would from real spectra. It is not a stellar atmosphere model (``rrnet.synth`` is
the realistic one); it exists so that training can be checked in seconds.
"""

from __future__ import annotations

import numpy as np

TOY_LABELS: tuple[str, ...] = ("Teff[K]", "Logg", "FeH")


def toy_spectra(
    n: int,
    *,
    n_pixels: int = 7200,
    n_lines: int = 60,
    snr: float = 50.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(flux float32 [n, n_pixels], labels float64 [n, 3])`` with labels TOY_LABELS.

    Labels are uniform in Teff 4000-6500 K, log g 1-5, [Fe/H] -1.5..0.5. The line list
    (positions, sensitivities) is fixed, independent of ``seed``; ``seed`` draws the
    labels and the Gaussian noise of standard deviation ``1/snr``.
    """
    lines = np.random.default_rng(12345)
    centre = np.sort(lines.uniform(5, n_pixels - 5, n_lines))
    depth0 = lines.uniform(0.1, 0.5, n_lines)
    sens = lines.normal(0.0, 1.0, (n_lines, 3)) * np.array([0.35, 0.2, 0.4])
    width0 = lines.uniform(1.0, 2.5, n_lines)

    rng = np.random.default_rng(seed)
    teff = rng.uniform(4000, 6500, n)
    logg = rng.uniform(1.0, 5.0, n)
    feh = rng.uniform(-1.5, 0.5, n)
    z = np.stack([(teff - 5250) / 1250, (logg - 3) / 2, (feh + 0.5)], axis=1)
    depth = np.clip(depth0 * np.exp(z @ sens.T), 0.0, 0.95)  # [n, lines]
    width = width0 * (1 + 0.15 * z[:, 1:2])  # log g broadens every line
    x = np.arange(n_pixels, dtype=np.float64)
    flux = np.ones((n, n_pixels))
    for k in range(n_lines):
        lo, hi = int(max(centre[k] - 12, 0)), int(min(centre[k] + 13, n_pixels))
        seg = x[lo:hi]
        profile = np.exp(-0.5 * ((seg[None] - centre[k]) / width[:, k : k + 1]) ** 2)
        flux[:, lo:hi] -= depth[:, k : k + 1] * profile
    flux += rng.normal(0.0, 1.0 / snr, flux.shape)
    return flux.astype(np.float32), np.stack([teff, logg, feh], axis=1)
