"""RV measurement speed (issue 16): microseconds per spectrum per core, vs NumPy/SciPy.

The same spectra (templates shifted by random RVs, S/N 30 white noise, on the fixed
grids) go through the Rust kernel on one thread and through a plain NumPy/SciPy
cross-correlation: each arm interpolated onto a uniform ln-wavelength grid (1 km/s),
FFT-correlated (``scipy.signal.correlate``) with every template, best peak within
+-600 km/s, parabola through it.

    python benchmarks/bench_rv.py --n 400
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import signal

from rrnet.grid import BLUE_GRID, C_KMS, N_PIX, N_PIX_ARM, RED_GRID
from rrnet.preprocess import rv


def spectra(t: rv.Templates, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` shifted, noisy templates: (flux, ivar, true rv)."""
    rng = np.random.default_rng(seed)
    v = rng.uniform(-400, 400, n)
    flux = np.empty((n, N_PIX), np.float32)
    for i in range(n):
        m = i % len(t.flux)
        for k, grid in enumerate((BLUE_GRID, RED_GRID)):
            p = (np.log(grid) - np.log1p(v[i] / C_KMS) - t.ln0[k]) / t.dln
            flux[i, k * N_PIX_ARM : (k + 1) * N_PIX_ARM] = 1.0 + rv._line_at(t.flux[m, k], p)
    flux += rng.normal(0, 1 / 30, flux.shape).astype(np.float32)
    return flux, np.full_like(flux, 900.0), v


def scipy_ccf(flux: np.ndarray, t: rv.Templates, window: float = 600.0) -> np.ndarray:
    """Velocity per spectrum by FFT cross-correlation (NumPy/SciPy baseline)."""
    half = int(np.ceil(np.log1p(window / C_KMS) / t.dln))
    out = np.empty(len(flux))
    ln_grids = []
    for k, grid in enumerate((BLUE_GRID, RED_GRID)):
        j0 = int(np.ceil((np.log(grid[0]) - t.ln0[k]) / t.dln))
        j1 = int((np.log(grid[-1]) - t.ln0[k]) / t.dln)
        ln_grids.append((j0, t.ln0[k] + t.dln * np.arange(j0, j1 + 1), np.log(grid)))
    for i, row in enumerate(flux):
        best = (-np.inf, 0.0)
        for m in range(len(t.flux)):
            ccf = 0.0
            for k, (j0, ln, ln_pix) in enumerate(ln_grids):
                d = np.interp(ln, ln_pix, row[k * N_PIX_ARM : (k + 1) * N_PIX_ARM]) - 1.0
                tm = t.flux[m, k, j0 - half : j0 - half + d.size + 2 * half] - 1.0
                ccf = ccf + signal.correlate(tm, d - d.mean(), mode="valid", method="fft")
            # lag index q: template sample j0 - half + q aligns with data sample 0 -> v = half - q
            q = int(np.argmax(ccf))
            if ccf[q] > best[0] and 0 < q < ccf.size - 1:
                dx = 0.5 * (ccf[q - 1] - ccf[q + 1]) / (ccf[q - 1] + ccf[q + 1] - 2 * ccf[q])
                best = (ccf[q], C_KMS * np.expm1((half - q - dx) * t.dln))
        out[i] = best[1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--n-scipy", type=int, default=40)
    args = ap.parse_args()
    t = rv.default_templates()
    flux, ivar, v = spectra(t, args.n, 0)
    rv.measure(flux[:4], ivar[:4], threads=1)  # warm up (thread pool)
    t0 = time.perf_counter()
    res = rv.measure(flux, ivar, threads=1)
    rust_us = (time.perf_counter() - t0) / args.n * 1e6
    ns = min(args.n_scipy, args.n)
    t0 = time.perf_counter()
    v_scipy = scipy_ccf(flux[:ns], t)
    scipy_us = (time.perf_counter() - t0) / ns * 1e6
    print(f"templates {len(t.flux)}, spectra {args.n} (scipy {ns}), one thread")
    print(f"rust  {rust_us:9.1f} us/spectrum/core  rms error {np.std(res.rv[:, 2] - v):.3f} km/s")
    print(f"scipy {scipy_us:9.1f} us/spectrum/core  rms error {np.std(v_scipy - v[:ns]):.3f} km/s")
    print(f"ratio scipy/rust {scipy_us / rust_us:.1f}")


if __name__ == "__main__":
    main()
