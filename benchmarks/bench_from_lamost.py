"""Memory and time of ``rrnet-catalog from-lamost`` on a survey-sized MRS general catalogue.

DR7's MRS general catalogue has ~29 million band rows; the question is whether a
small machine can pair it. This script writes a synthetic catalogue in the official
layout (the DR7 v1.0 column set, one row per band of each coadd and single exposure,
a file's rows together, ~25 % of files from the time-domain survey with exposures
only), gzipped CSV, then runs in a fresh process each, alternately:

* ``whole``: the catalogue collected and paired in one piece (:func:`pair_bands` on
  the scanned table: what ``from-lamost`` did before it paired a few nights at a time);
* ``parts``: :func:`from_lamost` as shipped.

It prints wall time and peak RSS of each, their ratio, and checks the two outputs are
equal. Run: ``python benchmarks/bench_from_lamost.py --rows 2000000 --repeats 2``.
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

RV = [f"rv_{f}{v}" for f in ("b", "r", "br", "lasp") for v in (0, 1)]


def synthesise(path: Path, n_rows: int, seed: int = 0) -> int:
    """A catalogue of about ``n_rows`` band rows; returns the exact count written."""
    rng = np.random.default_rng(seed)
    n_files = max(1, n_rows // 10)
    time_domain = rng.random(n_files) < 0.25
    n_exp = rng.integers(1, 9, n_files)
    n_spec = np.where(time_domain, n_exp, n_exp + 1)  # coadd first, where there is one
    file_idx = np.repeat(np.arange(n_files), n_spec)
    start = np.cumsum(n_spec) - n_spec
    k = np.arange(file_idx.size) - start[file_idx]  # spectrum within its file
    coadd = (~time_domain[file_idx]) & (k == 0)
    spec = np.repeat(np.arange(file_idx.size), 2)  # a blue and a red row each
    f = file_idx[spec]
    lmjd = 57000 + f // 4000  # ~4,000 files a night
    n = spec.size
    band = np.tile(np.array(["B", "R"]), file_idx.size)
    lmjm = lmjd * 1440 + 60 + 14 * (k[spec] - (~time_domain[f]).astype(int)).clip(0)
    rvs = {c: np.round(rng.normal(0, 40, n), 2) for c in RV}
    for c in RV:
        rvs[c][rng.random(n) < 0.05] = -9999.0
    table = pl.DataFrame(
        {
            "obsid": 700000000 + spec,
            "uid": [f"G{v:09d}" for v in f],
            "gp_id": 10_000_000 + f,
            "designation": [f"J{v:06d}.00+{v % 900000:06d}.0" for v in f],
            "obsdate": "2018-10-17",
            "lmjd": lmjd,
            "mjd": lmjd - 1,
            "planid": [f"HIP{v % 997:06d}01" for v in lmjd],
            "spid": 1 + (f % 16),
            "fiberid": 1 + (f // 16) % 250,
            "lmjm": lmjm,
            "ra_obs": rng.uniform(0, 360, n).round(6),
            "dec_obs": rng.uniform(-10, 80, n).round(6),
            "snr": rng.lognormal(3, 1, n).round(2),
            "gaia_source_id": rng.integers(1, 2**60, n),
            "gaia_g_mean_mag": rng.uniform(9, 15, n).round(4),
            "band": band,
            "coadd": coadd[spec].astype(np.int8),
            "fibermask": 0,
            **{k2: v for c in RV for k2, v in ((c, rvs[c]), (f"{c}_err", np.abs(rvs[c]) / 50))},
            "rv_b_flag": 0,
            "rv_r_flag": 0,
            "rv_br_flag": 0,
            "rv_lasp_flag": 0,
        }
    )
    with gzip.open(path, "wb", compresslevel=1) as out:
        table.write_csv(out, separator="|")
    return n


CHILD = """
import sys, time
import polars as pl
from rrnet.io.lamost_catalog import from_lamost, pair_bands, scanned_lamost_table
path, how, out = sys.argv[1:4]
t0 = time.perf_counter()
if how == "whole":
    with scanned_lamost_table(path) as lazy:
        table = pair_bands(lazy, spectra="all")
else:
    table = from_lamost(path, spectra="all")
wall = time.perf_counter() - t0
table.write_parquet(out)
# VmHWM: this process's own peak (ru_maxrss would inherit the parent's at exec)
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 2**20
print(f"{wall:.2f} {rss:.3f} {table.height}")
"""


def run(path: Path, how: str, out: Path) -> tuple[float, float, int]:
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), how, str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    wall, rss, rows = res.stdout.split()
    return float(wall), float(rss), int(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="band rows to synthesise")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-from-lamost-") as tmp:
        cat = Path(tmp) / "mrs_catalogue.csv.gz"
        t0 = time.perf_counter()
        n = synthesise(cat, args.rows)
        print(
            f"catalogue: {n:,} band rows, {cat.stat().st_size / 2**20:.0f} MiB gzipped "
            f"({time.perf_counter() - t0:.0f} s to write)"
        )
        results: dict[str, list[tuple[float, float, int]]] = {"whole": [], "parts": []}
        for r in range(args.repeats):
            for how in ("whole", "parts"):
                results[how].append(run(cat, how, Path(tmp) / f"{how}.parquet"))
                wall, rss, rows = results[how][-1]
                print(
                    f"  round {r + 1} {how:5s}: {wall:7.2f} s, "
                    f"peak RSS {rss:6.2f} GiB, {rows:,} rows"
                )
        same = pl.read_parquet(Path(tmp) / "whole.parquet").equals(
            pl.read_parquet(Path(tmp) / "parts.parquet")
        )
        per_m = 1e6 / n
        for how, rs in results.items():
            rss = max(x[1] for x in rs)
            print(
                f"{how:5s}: median {np.median([x[0] for x in rs]):.2f} s, peak RSS {rss:.2f} GiB "
                f"({rss * per_m:.2f} GiB per million band rows)"
            )
        ratio = max(x[1] for x in results["parts"]) / max(x[1] for x in results["whole"])
        speed = np.median([x[0] for x in results["parts"]]) / np.median(
            [x[0] for x in results["whole"]]
        )
        print(f"parts / whole: peak RSS {ratio:.2f}, wall {speed:.2f}; outputs equal: {same}")


if __name__ == "__main__":
    main()
