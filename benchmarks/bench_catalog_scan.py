"""Speed of ``rrnet-catalog scan`` (a catalogue built from the files' headers).

Links ``--files`` copies of the real LAMOST file (5 spectra each) under one folder and
times, alternately in one process, :func:`scan_folder` with the Rust reader (as
shipped: headers of many files per parallel call) and with fitsio (one file after
another, as ``scan`` read them before); prints files/s, the ratio, and whether the two
tables are equal. Run: ``python benchmarks/bench_catalog_scan.py --files 2000 --repeats 3``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _shared import REAL_FILE
from rrnet.io.lamost_catalog import scan_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        root = Path(tmp)
        blob = REAL_FILE.read_bytes()
        for i in range(args.files):  # copies, not links: each file is read from its own pages
            (root / f"med-{50000 + i}-P1_sp01-001.fits.gz").write_bytes(blob)
        os.sync()
        times: dict[str, list[float]] = {"rust": [], "fitsio": []}
        tables = {}
        for _ in range(args.repeats):
            for reader in ("rust", "fitsio"):
                t0 = time.perf_counter()
                tables[reader] = scan_folder(root, reader=reader)  # type: ignore[arg-type]
                times[reader].append(time.perf_counter() - t0)
        for reader, ts in times.items():
            rates = ", ".join(f"{args.files / t:,.0f}" for t in ts)
            print(f"{reader:6s}: {rates} files/s ({tables[reader].height:,} rows)")
        ratio = np.median(times["fitsio"]) / np.median(times["rust"])
        same = tables["rust"].drop("catalog_reason").equals(tables["fitsio"].drop("catalog_reason"))
        print(f"rust / fitsio: {ratio:.2f}x (median of {args.repeats}); tables equal: {same}")


if __name__ == "__main__":
    main()
