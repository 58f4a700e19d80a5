"""Two builds of ``rrnet._core`` side by side in one process, stage by stage, interleaved.

On a shared, loaded machine two separate runs differ by more than the change
being measured; loading both builds into one process and alternating them call
by call exposes both to the same load. Stages (CPU time per spectrum, one thread):

- reading: ``read_lamost_batch`` on copies of the real file (both builds; the
  arrays and cards are checked equal);
- resampling including its Python-side preparation: the old path concatenates
  the reader's arrays into ragged buffers (``to_ragged``) for
  ``old.resample_batch``; the new path hands the arrays to the current
  ``rrnet.preprocess.resample_batch`` (borrowed, ``_core.resample_arrays``);
  outputs are checked equal bit for bit;
- continuum normalisation (``normalize_batch`` of both builds).

    python benchmarks/ab_preprocess_stages.py --old /path/to/old/_core.abi3.so [--repeats 15]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from types import ModuleType

import numpy as np

from _shared import REAL_FILE, SPECTRA
from rrnet.io import lamost_fast as lf
from rrnet.preprocess import kernels
from rrnet.preprocess.ragged import to_ragged

NAMES = [e for pair in SPECTRA for e in pair]
N_FILES = 52


def load_core(path: str) -> ModuleType:
    """A build of ``rrnet._core`` from ``path``, beside the one already imported."""
    spec = importlib.util.spec_from_file_location("rrnet._core", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(core: ModuleType) -> list:
    paths = [str(REAL_FILE)] * N_FILES
    return core.read_lamost_batch(
        paths, [NAMES] * N_FILES, lf._PRIMARY, lf._ARM, 1 << 28, threads=1
    )


def same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b, equal_nan=True)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="path of the older _core.abi3.so")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    old, new = load_core(args.old), kernels._core
    files = [lf._from_rust(REAL_FILE, NAMES, r) for r in read(new)]
    blue = [f.arms[b] for f in files for b, _ in SPECTRA][:256]
    red = [f.arms[r] for f in files for _, r in SPECTRA][:256]
    n = len(blue)
    rv = np.linspace(-40.0, 40.0, n)

    def old_resample() -> tuple:
        arms = [
            (
                *to_ragged([a.loglam for a in arm], None, np.float64),
                *to_ragged([a.flux for a in arm], None, np.float32),
                *to_ragged([a.ivar for a in arm], None, np.float32),
            )
            for arm in (blue, red)
        ]
        return old.resample_batch(arms[0], arms[1], rv, correct_rv=True, threads=1)

    def new_resample() -> tuple:
        res = kernels.resample_batch(
            [a.loglam for a in blue],
            [a.flux for a in blue],
            [a.loglam for a in red],
            [a.flux for a in red],
            rv,
            blue_ivar=[a.ivar for a in blue],
            red_ivar=[a.ivar for a in red],
            threads=1,
        )
        return res.flux, res.status, res.snr_blue, res.snr_red

    assert same(read(old), read(new)), "the builds read different arrays or cards"
    assert same(old_resample(), new_resample()), "the resampled outputs differ"
    flux = new_resample()[0]
    stages = {
        "read (Rust reader)": (lambda: read(old), lambda: read(new), N_FILES * len(SPECTRA)),
        "resample incl. Python prep": (old_resample, new_resample, n),
        "normalize": (
            lambda: old.normalize_batch(flux, 100, threads=1),
            lambda: new.normalize_batch(flux, 100, threads=1),
            n,
        ),
    }
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in stages}
    load = os.getloadavg()[0]
    for repeat in range(args.repeats):
        for name, (run_old, run_new, count) in stages.items():
            pair = [(run_old, times[name][0]), (run_new, times[name][1])]
            for run, out in pair[:: 1 if repeat % 2 else -1]:  # alternate who goes first
                start = time.process_time()
                run()
                out.append((time.process_time() - start) * 1e6 / count)
    print(
        f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}; CPU us per spectrum, "
        f"old -> new (median, min of {args.repeats})"
    )
    for name, (a, b) in times.items():
        print(
            f"  {name:28s} {np.median(a):6.0f} -> {np.median(b):6.0f}"
            f"   min {min(a):6.0f} -> {min(b):6.0f}"
        )


if __name__ == "__main__":
    main()
