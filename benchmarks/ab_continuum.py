"""Continuum normalisation, one thread: this build against a baseline build, same process.

Prints CPU microseconds per spectrum per core for ``_core.normalize_batch`` of both
builds (alternating call by call, so that both see the same load on a shared
machine), their ratio, and checks that the outputs agree: every status, iteration
count, cap flag and outlier count equal, fluxes to roundoff. Spectra: the 5 real
spectra of the shared LAMOST file resampled at rv = -20 km/s, each copy with fresh
1 % noise (as ``bench_preprocess.py``); ``--check-synthetic`` adds synthetic
spectra (noisier, with spikes, dead segments and lines) to the agreement check.

    python benchmarks/ab_continuum.py --old /path/to/old/_core.abi3.so [--n 2000] [--repeats 15]

Without ``--old`` only this build is timed (no ratio). ``--chunked`` times the calls as
the pipeline makes them (256-row chunks, each into the next of four reused buffers)
instead of one call into a fresh array (which also pays its page faults).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from types import ModuleType

import numpy as np

import rrnet.preprocess as fast
from ab_preprocess_stages import load_core  # benchmarks/ is the script's directory
from bench_preprocess import RV_KMS, read_arms
from rrnet.preprocess import kernels
from rrnet.preprocess.batch_builder import COMPUTE_CHUNK


def real_fluxes(n: int, seed: int = 0) -> np.ndarray:
    """``n`` copies of the 5 real spectra (resampled), each with fresh 1 % noise."""
    base = np.stack([fast.resample_spectrum(*a, RV_KMS) for a in read_arms()])
    rng = np.random.default_rng(seed)
    flux = base[np.arange(n) % len(base)]
    return (flux * (1 + rng.normal(0, 0.01, flux.shape))).astype(np.float32)


def synthetic_fluxes(n: int, seed: int = 1) -> np.ndarray:
    """Smooth continua with absorption lines, 1-10 % noise, spikes and dead segments."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1.0, 1.0, 3600)
    out = np.empty((n, 7200), np.float32)
    for i in range(n):
        arms = []
        for _ in range(2):
            cont = 100 * (1 + rng.normal(0, 0.2, 4) @ np.vstack([x, x**2, x**3, x**4]))
            cont = np.abs(cont) + 20
            lines = np.zeros_like(x)
            for c in rng.uniform(-1, 1, rng.integers(0, 30)):
                lines += rng.uniform(0, 0.6) * np.exp(-(((x - c) / rng.uniform(5e-4, 5e-3)) ** 2))
            f = cont * (1 - np.minimum(lines, 0.95)) * (1 + rng.normal(0, rng.uniform(0.01, 0.1)))
            f = f * (1 + rng.normal(0, rng.uniform(0.01, 0.1), x.size))
            f[rng.integers(0, x.size, rng.integers(0, 20))] *= rng.uniform(2, 10)
            if rng.random() < 0.3:
                start = rng.integers(0, x.size - 40)
                f[start : start + rng.integers(1, 40)] = 0.0
            arms.append(f)
        out[i] = np.concatenate(arms)
    return out


def check_same(old: tuple, new: tuple, what: str, identical: bool = False) -> str:
    """Assert two ``normalize_batch`` results agree (``identical``: to the bit); describe."""
    names = ("iterations", "cap_hit", "n_outliers", "max_run", "status")
    for name, a, b in zip(names, old[1:], new[1:], strict=True):
        assert np.array_equal(a, b), f"{what}: {name} differ in {np.sum(a != b)} entries"
    ok = np.asarray(old[5]) == 0
    diff = np.abs(old[0][ok].astype(np.float64) - new[0][ok])
    scale = np.maximum(np.abs(old[0][ok]), 1e-30)
    rel = float(np.max(diff / scale)) if diff.size else 0.0
    assert rel < 1e-5, f"{what}: fluxes differ by {rel:.2e} (relative)"
    nan_same = np.array_equal(np.isnan(old[0]), np.isnan(new[0]))
    assert nan_same, f"{what}: NaN rows differ"
    same_bits = np.array_equal(
        np.asarray(old[0]).view(np.uint32), np.asarray(new[0]).view(np.uint32)
    )
    assert same_bits or not identical, f"{what}: fluxes not bit-identical"
    return (
        f"{what}: {ok.sum()} of {ok.size} spectra ok, max relative flux difference {rel:.1e}"
        f", fluxes bit-identical: {same_bits}"
    )


def timed_call(core: ModuleType, flux: np.ndarray, max_iter: int, chunked: bool) -> Callable:
    """One timed run of ``core``'s batch over ``flux``: one call into a fresh array, or
    (``chunked``) as the pipeline calls it, chunks into a few reused chunk buffers."""
    if not chunked:
        return lambda: core.normalize_batch(flux, max_iter, threads=1)
    buffers = [np.empty((COMPUTE_CHUNK, flux.shape[1]), np.float32) for _ in range(4)]

    def run() -> None:
        for k, start in enumerate(range(0, len(flux), COMPUTE_CHUNK)):
            rows = flux[start : start + COMPUTE_CHUNK]
            core.normalize_batch(rows, max_iter, threads=1, out=buffers[k % 4][: len(rows)])

    return run


def time_alternating(runs: dict[str, Callable[[], object]], n: int, repeats: int) -> dict:
    """CPU microseconds per spectrum of each run, the order alternating per repeat."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for repeat in range(repeats):
        for name in order if repeat % 2 else order[::-1]:
            start = time.process_time()
            runs[name]()
            times[name].append((time.process_time() - start) * 1e6 / n)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="path of the baseline _core.abi3.so")
    parser.add_argument("--n", type=int, default=2000, help="spectra per call")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--check-synthetic", type=int, default=0, help="synthetic spectra checked")
    parser.add_argument("--identical", action="store_true", help="require bit-identical fluxes")
    parser.add_argument(
        "--chunked",
        action="store_true",
        help=f"time as the pipeline calls it: {COMPUTE_CHUNK}-row chunks into 4 reused buffers",
    )
    args = parser.parse_args()
    new = kernels._core
    flux = real_fluxes(args.n)
    runs = {"new": timed_call(new, flux, args.max_iter, args.chunked)}
    if args.old:
        old = load_core(args.old)
        runs["old"] = timed_call(old, flux, args.max_iter, args.chunked)
        pair = [core.normalize_batch(flux, args.max_iter, threads=1) for core in (old, new)]
        print(check_same(*pair, "real (1 % noise)", args.identical))
        if args.check_synthetic:
            syn = synthetic_fluxes(args.check_synthetic)
            pair = [core.normalize_batch(syn, args.max_iter, threads=1) for core in (old, new)]
            print(check_same(*pair, "synthetic", args.identical))
    iterations = new.normalize_batch(flux, args.max_iter, threads=1)[1]
    print(f"{args.n} spectra, fit iterations per arm: median {np.median(iterations):.0f}")
    load = os.getloadavg()[0]
    times = time_alternating(runs, args.n, args.repeats)
    print(
        f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}; "
        f"continuum CPU us per spectrum per core (1 thread), {args.repeats} repeats:"
    )
    for name, t in times.items():
        print(f"  {name:4s} median {np.median(t):6.1f}  min {min(t):6.1f}")
    if args.old:
        old_t, new_t = np.array(times["old"]), np.array(times["new"])
        print(
            f"  old / new: ratio of medians {np.median(old_t) / np.median(new_t):.3f},"
            f" of mins {old_t.min() / new_t.min():.3f},"
            f" median of pairwise ratios {np.median(old_t / new_t):.3f}"
        )


if __name__ == "__main__":
    main()
