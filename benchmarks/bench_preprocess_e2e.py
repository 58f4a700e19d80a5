"""End to end, from .fits.gz files to a preprocessed store: rrnet vs its floors and baselines.

All on the same files (copies of the real DR7 file, 5 spectra each, varied RV),
in one run, on ``--workers`` threads:

- rrnet ``preprocess_catalog`` with the Rust reader (default; in-memory
  libdeflate, Rust kernels, shards written with fsync);
- the same with ``reader="fitsio"`` (the reference reader: zlib, scratch file,
  cfitsio);
- merely opening each file with fitsio and reading all its HDUs (the floor the
  issue compares against);
- the original RRNet path (astropy, scipy ``interp1d``, NumPy reference; one
  process, on a subset).

It then checks that the Rust-reader store equals the fitsio-reader store (every
status and iteration count, flux to roundoff) on these files and on a
synthesised set (descending/ascending LOGLAM, one-row vector layout, missing
columns, truncated files), and splits the Rust path's time into reading,
kernels and the rest.

    python benchmarks/bench_preprocess_e2e.py [--files 400] [--baseline-spectra 40] [--repeats 1]

With ``--repeats R`` > 1, R - 1 more rounds alternate the rrnet (Rust reader) run
(writing both flux kinds, the default, then the normalised flux only: all the original
path makes, and the documented DR-scale store) and the original path; each ratio is
also given as the median of the rounds' ratios (each round's runs see the same load).

rrnet applies the catalogue's RV (``--rv-mode catalog``, default here), as the original
path does. The commands' default, ``--rv auto``, also measures every spectrum's RV
(to flag disagreements) and costs more; each round times it too (both flux kinds).
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fitsio
import numpy as np
import polars as pl
from astropy.io import fits as afits
from scipy.interpolate import interp1d

from _shared import REAL_FILE, SPECTRA
from rrnet.grid import BLUE_GRID, C_KMS, RED_GRID
from rrnet.io.lamost_fast import read_many
from rrnet.preprocess import normalize_detailed, reference, resample_batch
from rrnet.preprocess.pipeline import default_workers, preprocess_catalog
from rrnet.store import Store


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


def fitsio_floor(paths: list[Path], workers: int) -> None:
    """Open each file with fitsio and read every HDU (header and table), nothing else."""

    def read(path: Path) -> None:
        with fitsio.FITS(str(path)) as f:
            for hdu in f:
                hdu.read_header()
                hdu.read()

    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        list(pool.map(read, paths))


def _variant_tables(edit: str) -> list[tuple[str, np.ndarray | None, list[dict]]]:
    """The real file's HDUs as (extname, data, header records), edited."""
    out = []
    with fitsio.FITS(str(REAL_FILE)) as f:
        for i, hdu in enumerate(f):
            header = [r for r in hdu.read_header().records() if _keep_card(r["name"], i)]
            data = hdu.read() if i else None
            if i and edit == "reversed":
                data = data[::-1].copy()
            elif i and edit == "vector":
                data = _vector_row(data)
            elif i and edit == "no-ivar" and hdu.get_extname() == "COADD_B":
                data = data[[n for n in data.dtype.names if n != "IVAR"]]
            out.append((hdu.get_extname(), data, header))
    return out


def _keep_card(name: str, hdu: int) -> bool:
    structural = ("XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "TFIELDS", "EXTEND")
    return (hdu == 0 and name not in ("SIMPLE", *structural)) or (
        hdu > 0 and name in ("SNR", "LMJM", "EXPTIME")
    )


def _vector_row(data: np.ndarray) -> np.ndarray:
    out = np.zeros(1, dtype=[(n, data.dtype[n], (data.size,)) for n in data.dtype.names])
    for n in data.dtype.names:
        out[n][0] = data[n]
    return out


def make_synthesised(folder: Path) -> pl.DataFrame:
    """Variants of the real file (one per layout or defect) and a catalogue of their spectra."""
    rows = []
    for edit in ("reversed", "vector", "no-ivar"):
        plain = folder / f"{edit}.fits"
        with fitsio.FITS(str(plain), "rw", clobber=True) as f:
            for extname, data, header in _variant_tables(edit):
                if data is None:
                    f.write(None, header=header)
                else:
                    f.write(np.ascontiguousarray(data), extname=extname, header=header)
        (folder / f"{edit}.fits.gz").write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    raw = REAL_FILE.read_bytes()
    (folder / "cut.fits.gz").write_bytes(raw[: len(raw) // 2])
    (folder / "trailing.fits.gz").write_bytes(gzip.compress(gzip.decompress(raw) + b"x"))
    for name in ("reversed", "vector", "no-ivar", "cut", "trailing"):
        for j, (blue, red) in enumerate(SPECTRA):
            rows.append((f"{name}.fits.gz", blue, red, 10.0 * j - 20))
    return pl.DataFrame(
        rows, schema=["filename", "extname_blue", "extname_red", "rv"], orient="row"
    )


def compare_stores(fast: Store, ref: Store) -> str:
    """One line: do the two stores agree (statuses, iterations, flux)?"""
    columns = ["status", "continuum_iterations_blue", "continuum_iterations_red", "n_outliers"]
    same = fast.manifest.select(columns).equals(ref.manifest.select(columns))
    rows = np.arange(fast.n_rows)
    diffs = []
    for kind in fast.info["kinds"]:
        a, b = fast.read_flux(rows, kind=kind), ref.read_flux(rows, kind=kind)
        nan_same = np.array_equal(np.isnan(a), np.isnan(b))
        diffs.append(
            f"{kind} max|diff| {np.nanmax(np.abs(a - b), initial=0):.1e}"
            f"{'' if nan_same else ' (NaN pattern differs!)'}"
        )
    n_ok = int((fast.manifest["status"] == "ok").sum())
    verdict = "statuses and iteration counts equal" if same else "MANIFESTS DIFFER"
    return f"{verdict}; {', '.join(diffs)}; {n_ok}/{fast.n_rows} ok"


def time_parts(data: Path, catalog: pl.DataFrame, workers: int) -> tuple[float, float]:
    """Seconds for (Rust reading of every file, kernels on every spectrum) alone."""
    files = sorted(set(catalog["filename"].to_list()))
    names = [e for pair in SPECTRA for e in pair]
    start = time.perf_counter()
    reads = read_many([(data / f, names) for f in files], threads=workers)
    t_read = time.perf_counter() - start
    arms = {f: r.arms for f, r in zip(files, reads, strict=True)}
    blue = [arms[f][b] for f, b in zip(catalog["filename"], catalog["extname_blue"], strict=True)]
    red = [arms[f][r] for f, r in zip(catalog["filename"], catalog["extname_red"], strict=True)]
    start = time.perf_counter()
    res = resample_batch(
        [a.loglam for a in blue],
        [a.flux for a in blue],
        [a.loglam for a in red],
        [a.flux for a in red],
        catalog["rv"].to_numpy(),
        blue_ivar=[a.ivar for a in blue],
        red_ivar=[a.ivar for a in red],
        threads=max(workers, 1),
    )
    normalize_detailed(res.flux, threads=max(workers, 1))
    return t_read, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400, help="file copies (5 spectra each)")
    parser.add_argument("--baseline-spectra", type=int, default=40)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of rrnet vs original")
    parser.add_argument(
        "--rv-mode",
        default="catalog",
        choices=("catalog", "auto", "measure"),
        help="rrnet's RV mode (catalog: as the original path; auto: the commands' default)",
    )
    args = parser.parse_args()
    workers = default_workers() if args.workers is None else args.workers

    with tempfile.TemporaryDirectory(prefix="rrnet-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        catalog = make_files(data, args.files)
        n = catalog.height
        load = os.getloadavg()
        print(
            f"{n} spectra in {args.files} .fits.gz files, {os.cpu_count()} cores, "
            f"workers={workers}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
        )
        rates: dict[str, float] = {}
        stores: dict[str, Store] = {}
        for reader in ("auto", "fitsio"):  # warm-up: imports, thread pools, page cache
            preprocess_catalog(
                catalog.head(10),
                data,
                Path(tmp) / f"warm-{reader}",
                workers=workers,
                progress=False,
                reader=reader,
            )
        fitsio_floor(sorted(data.iterdir()), workers)
        cpu: dict[str, float] = {}
        for reader in ("auto", "fitsio"):
            start, times = time.perf_counter(), os.times()
            stores[reader] = preprocess_catalog(
                catalog,
                data,
                Path(tmp) / reader,
                workers=workers,
                progress=False,
                reader=reader,
                rv_mode=args.rv_mode,
            )
            wall, after = time.perf_counter() - start, os.times()
            rates[f"rrnet, {reader} reader"] = n / wall
            used = (after.user - times.user) + (after.system - times.system)
            cpu[f"rrnet, {reader} reader"] = used / wall
        paths = sorted(data.iterdir())
        start = time.perf_counter()
        fitsio_floor(paths, workers)
        rates["fitsio open + read all HDUs"] = n / (time.perf_counter() - start)

        rows = catalog.head(args.baseline_spectra).rows()
        start = time.perf_counter()
        baseline = np.stack([original_method(data / f, b, r, rv) for f, b, r, rv in rows])
        rates["original method (1 process)"] = len(rows) / (time.perf_counter() - start)
        t_read, t_kernels = time_parts(data, catalog, workers)
        load = os.getloadavg()

        def rrnet_rate(folder: Path, keep_resampled: bool, rv_mode: str = args.rv_mode) -> float:
            start = time.perf_counter()
            preprocess_catalog(catalog, data, folder, workers=workers, progress=False,
                               keep_resampled=keep_resampled, rv_mode=rv_mode)  # fmt: skip
            rate = n / (time.perf_counter() - start)
            shutil.rmtree(folder)
            return rate

        # rounds alternate rrnet (both flux kinds; the normalised flux only, which is all
        # the original path makes and the documented DR-scale store) and the original path:
        # each round's runs see the same load
        first = rates["rrnet, auto reader"]
        rounds = [(first, np.nan, np.nan, rates["original method (1 process)"])]
        for i in range(1, args.repeats):
            both = rrnet_rate(Path(tmp) / f"round-{i}", True)
            normalised = rrnet_rate(Path(tmp) / f"round-{i}-normalised", False)
            measured = rrnet_rate(Path(tmp) / f"round-{i}-auto", True, "auto")
            start = time.perf_counter()
            for f, b, r, rv in rows:
                original_method(data / f, b, r, rv)
            rounds.append((both, normalised, measured, len(rows) / (time.perf_counter() - start)))

        fast = rates["rrnet, auto reader"]
        if len(rounds) > 1:
            kinds = (
                f"both flux kinds, --rv {args.rv_mode}",
                f"normalised flux only, --rv {args.rv_mode}",
                "both flux kinds, --rv auto: RVs measured too",
            )
            for k, kind in enumerate(kinds):
                pairs = [(r[k], r[3]) for r in rounds if np.isfinite(r[k])]
                ratios = sorted(a / b for a, b in pairs)
                print(
                    f"{len(pairs)} rounds, rrnet ({kind}) / original: "
                    + ", ".join(f"{a:.0f}/{b:.1f}" for a, b in pairs)
                    + f" spectra/s; ratios {', '.join(f'{x:.1f}x' for x in ratios)}; "
                    + f"median {float(np.median(ratios)):.1f}x"
                )
        print(f"{'path':<34} {'spectra/s':>10} {'rrnet (Rust reader) / this':>28}")
        for name, rate in rates.items():
            print(f"{name:<34} {rate:>10.1f} {fast / rate:>27.2f}x")
        t_total = n / fast
        print(
            f"time split of the Rust path ({t_total * 1e3 / n:.3f} ms per spectrum wall): "
            f"reading {t_read / t_total:.0%}, kernels {t_kernels / t_total:.0%}, "
            f"rest (planning, manifest, shard writes, overlap) "
            f"{1 - (t_read + t_kernels) / t_total:.0%}"
        )
        print(f"load average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
        print(
            "CPU used (process, all threads): "
            + ", ".join(f"{name} {share:.0%}" for name, share in cpu.items())
            + f" of {max(workers, 1):.0%} available"
        )
        diff = np.abs(stores["auto"].read_flux(range(len(rows))) - baseline)
        print(
            f"vs original on {len(rows)} spectra: median |diff| {np.median(diff):.2e}, "
            f"99th percentile {np.percentile(diff, 99):.2e}"
        )
        print(f"copies of the real file: {compare_stores(stores['auto'], stores['fitsio'])}")
        synth = Path(tmp) / "synth"
        synth.mkdir()
        synth_catalog = make_synthesised(synth)
        synth_stores = [
            preprocess_catalog(
                synth_catalog,
                synth,
                Path(tmp) / f"synth-{reader}",
                workers=workers,
                progress=False,
                reader=reader,
            )
            for reader in ("auto", "fitsio")
        ]
        print(f"synthesised set: {compare_stores(*synth_stores)}")


if __name__ == "__main__":
    main()
