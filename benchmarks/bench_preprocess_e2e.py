"""End to end, from .fits.gz files to a preprocessed store: rrnet vs the original method.

The baseline is the original RRNet preprocessing path, in one process: for each
catalogue row, astropy opens the file, the RV shift and scipy ``interp1d`` put
each arm on the grid, and the NumPy reference normalises the spectrum. rrnet is
``preprocess_catalog`` (threads reading, Rust kernels, shards written with
fsync). Both run on the same files (copies of the real DR7 file, 5 spectra
each, varied RV) in the same run; the ratio of their spectra/s is printed.

    python benchmarks/bench_preprocess_e2e.py [--files 400] [--baseline-spectra 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from astropy.io import fits as afits
from scipy.interpolate import interp1d

from rrnet.grid import BLUE_GRID, C_KMS, RED_GRID
from rrnet.preprocess import reference
from rrnet.preprocess.pipeline import default_workers, preprocess_catalog

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_FILE = SHARED / "data" / "lamost" / "med-58025-HIP9645901_sp02-051.fits.gz"
EXPOSURES = ("83555758", "83555772", "83555785", "83555799")
SPECTRA = [("COADD_B", "COADD_R")] + [(f"B-{i}", f"R-{i}") for i in EXPOSURES]


def make_files(folder: Path, n_files: int) -> pl.DataFrame:
    """``n_files`` copies of the real file and a catalogue of all their spectra."""
    rows = []
    for i in range(n_files):
        name = f"med-{i:06d}.fits.gz"
        shutil.copyfile(REAL_FILE, folder / name)
        for j, (blue, red) in enumerate(SPECTRA):
            rows.append((name, blue, red, float(40 * np.sin(5 * i + j))))
    return pl.DataFrame(
        rows, schema=["filename", "extname_blue", "extname_red", "rv"], orient="row"
    )


def original_method(path: Path, blue: str, red: str, rv: float) -> np.ndarray:
    """One spectrum the way the original code does it."""
    with afits.open(path) as hdul:
        arms = []
        for extname, grid in ((blue, BLUE_GRID), (red, RED_GRID)):
            data = hdul[extname].data
            wave = 10 ** data["LOGLAM"].astype(np.float64) / (1 + rv / C_KMS)
            arms.append(interp1d(wave, data["FLUX"].astype(np.float64))(grid))
    return reference.normalize(np.concatenate(arms).astype(np.float32)[None])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400, help="file copies (5 spectra each)")
    parser.add_argument("--baseline-spectra", type=int, default=40)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    workers = default_workers() if args.workers is None else args.workers

    with tempfile.TemporaryDirectory(prefix="rrnet-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        catalog = make_files(data, args.files)
        print(f"{catalog.height} spectra in {args.files} .fits.gz files, {os.cpu_count()} cores")

        rows = catalog.head(args.baseline_spectra).rows()
        start = time.perf_counter()
        baseline = np.stack([original_method(data / f, b, r, rv) for f, b, r, rv in rows])
        t_base = time.perf_counter() - start
        rate_base = len(rows) / t_base

        start = time.perf_counter()
        store = preprocess_catalog(
            catalog, data, Path(tmp) / "store", workers=workers, progress=False
        )
        t_fast = time.perf_counter() - start
        rate_fast = catalog.height / t_fast

        ok = store.manifest["status"].to_list().count("ok")
        diff = np.abs(store.read_flux(range(len(rows))) - baseline)
        base_name = "original method (astropy, interp1d, reference; 1 process)"
        fast_name = f"rrnet preprocess_catalog (workers={workers}, store, fsync)"
        print(f"{base_name}: {rate_base:8.1f} spectra/s")
        print(f"{fast_name:<{len(base_name)}}: {rate_fast:8.1f} spectra/s")
        print(f"ratio: {rate_fast / rate_base:.1f}x")
        print(
            f"agreement on {len(rows)} spectra: median |diff| {np.median(diff):.2e}, "
            f"99th percentile {np.percentile(diff, 99):.2e}; {ok}/{catalog.height} ok"
        )


if __name__ == "__main__":
    main()
