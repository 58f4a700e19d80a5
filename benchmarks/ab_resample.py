"""Resampling, one thread: this build against a baseline build, same process.

Runs ``_core.resample_arrays`` (RV correction, S/N, interpolation of both arms) of
both builds on 256 spectra of the shared LAMOST file (its 5 blue/red pairs, read
with ``lamost_fast.read_many``), alternating call by call so that both see the same
load on a shared machine. Prints the CPU microseconds per spectrum of each build
(median, min), the ratio of the medians and the median of the pairwise ratios.
First checks that both builds give bit-identical outputs (flux, status, both S/N)
at ``--rv-sets`` sets of velocities (random in +-500 km/s, and exact zeros).

    python benchmarks/ab_resample.py --old /path/to/old/_core.abi3.so [--repeats 21]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

# benchmarks/ is the script's directory
from ab_preprocess_stages import NAMES, REAL_FILE, SPECTRA, load_core
from rrnet.io import lamost_fast as lf
from rrnet.preprocess import kernels

N_SPECTRA = 256


def arm_lists(n: int) -> tuple[tuple, tuple]:
    """(loglam, flux, ivar) lists of ``n`` spectra per arm, the file's pairs repeated."""
    files = lf.read_many([(REAL_FILE, NAMES)] * -(-n // len(SPECTRA)), threads=1)
    blue = [f.arms[b] for f in files for b, _ in SPECTRA][:n]
    red = [f.arms[r] for f in files for _, r in SPECTRA][:n]
    return tuple(
        ([a.loglam for a in arm], [a.flux for a in arm], [a.ivar for a in arm])
        for arm in (blue, red)
    )


def identical(a: tuple, b: tuple) -> bool:
    """Whether two ``resample_arrays`` results are the same bit for bit."""
    return all(
        x.dtype == y.dtype and np.array_equal(x.view(f"u{x.itemsize}"), y.view(f"u{y.itemsize}"))
        for x, y in zip(a, b, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="path of the baseline _core.abi3.so")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--rv-sets", type=int, default=40, help="velocity sets checked")
    args = parser.parse_args()
    old, new = load_core(args.old), kernels._core
    blue, red = arm_lists(N_SPECTRA)
    n = N_SPECTRA
    outs = {name: np.empty((n, 7200), np.float32) for name in ("old", "new")}

    def run(core, name: str, rv: np.ndarray) -> tuple:
        return core.resample_arrays(blue, red, rv, correct_rv=True, threads=1, out=outs[name])

    rng = np.random.default_rng(0)
    checked = 0
    for k in range(args.rv_sets):
        rv = np.zeros(n) if k == 0 else rng.uniform(-500.0, 500.0, n)
        a = tuple(np.copy(v) for v in run(old, "old", rv))
        b = tuple(np.copy(v) for v in run(new, "new", rv))
        assert identical(a, b), f"outputs differ at velocity set {k}"
        checked += n
    ok = int(np.sum(a[1] == 0))
    print(f"outputs bit-identical (flux, status, S/N) on {checked} spectra x velocities")
    print(f"  last set: {ok} of {n} spectra resampled without error")

    rv = np.linspace(-40.0, 40.0, n)
    runs = {"old": lambda: run(old, "old", rv), "new": lambda: run(new, "new", rv)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    load = os.getloadavg()[0]
    for repeat in range(args.repeats):
        for name in list(runs) if repeat % 2 else list(runs)[::-1]:
            start = time.process_time()
            runs[name]()
            times[name].append((time.process_time() - start) * 1e6 / n)
    print(
        f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}; resampling CPU us per "
        f"spectrum (1 thread), {args.repeats} repeats:"
    )
    for name, t in times.items():
        print(f"  {name:4s} median {np.median(t):6.1f}  min {min(t):6.1f}")
    old_t, new_t = np.array(times["old"]), np.array(times["new"])
    print(
        f"  old / new: ratio of medians {np.median(old_t) / np.median(new_t):.3f},"
        f" median of pairwise ratios {np.median(old_t / new_t):.3f}"
    )


if __name__ == "__main__":
    main()
