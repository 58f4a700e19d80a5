"""Builds of ``rrnet._core`` side by side: the RV kernel, CPU per spectrum, interleaved.

On a shared machine two separate runs differ by more than the change being measured;
loading the builds into one process and alternating them run by run exposes them to the
same load. Each run measures ``bench_rv.spectra`` (400 by default) on one thread; the
outputs of every build are compared with the first one's.

    python benchmarks/ab_rv.py /path/to/old/_core.abi3.so [more builds] --runs 21

The current build (``rrnet._core``) is always the last one.
"""

from __future__ import annotations

import argparse
import time
from types import ModuleType

import numpy as np

from ab_preprocess_stages import load_core
from bench_rv import spectra
from rrnet import _core
from rrnet.preprocess import rv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("builds", nargs="*", help="paths of other _core builds")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    names = [*args.builds, "current"]
    cores = [load_core(p) for p in args.builds] + [_core]
    t = rv.default_templates()
    flux, ivar, _ = spectra(t, args.n, 0)

    def run(core: ModuleType) -> tuple:
        return core.rv_measure_batch(flux, ivar, t.flux, t.ln0, t.dln, threads=1)

    first = run(cores[0])
    for name, core in zip(names[1:], cores[1:], strict=True):
        out = run(core)
        same = all(np.array_equal(out[k], first[k]) for k in (3, 4))
        diff = np.nanmax(np.abs(out[0] - first[0]))
        print(f"{name}: statuses and templates equal {same}, max |rv difference| {diff:.2g} km/s")
    cpu = np.zeros((len(cores), args.runs))
    for r in range(args.runs):
        for b, core in enumerate(cores):
            c0 = time.process_time()
            run(core)
            cpu[b, r] = (time.process_time() - c0) / args.n * 1e6
    for name, row in zip(names, cpu, strict=True):
        print(
            f"{name}: CPU us/spectrum min {row.min():.1f} median {np.median(row):.1f}; "
            f"vs first: min ratio {row.min() / cpu[0].min():.3f}, "
            f"median of run ratios {np.median(row / cpu[0]):.3f}"
        )


if __name__ == "__main__":
    main()
