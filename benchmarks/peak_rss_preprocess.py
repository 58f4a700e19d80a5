"""Peak memory of ``rrnet-preprocess`` must not grow with the catalogue.

Runs the preprocessing of catalogues of increasing length (the real DR7 file
repeated, varied RV) each in a fresh subprocess, and prints each run's peak RSS
(``ru_maxrss``) next to that of a 100-row run measured in the same invocation.
Only the normalised flux is stored (``keep_resampled=False``) to keep the
200,000-row store at 5.8 GB; the memory held per shard is the same either way
up to one extra shard buffer.

    python benchmarks/peak_rss_preprocess.py [--rows 100 20000 200000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _shared import REAL_FILE

CHILD = r"""
import json, resource, sys, time
import numpy as np, polars as pl
from pathlib import Path
from rrnet.preprocess.pipeline import preprocess_catalog

n_rows, data_dir, out, name = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ids = ("83555758", "83555772", "83555785", "83555799")
pairs = [("COADD_B", "COADD_R")] + [(f"B-{i}", f"R-{i}") for i in ids]
i = np.arange(n_rows)
catalog = pl.DataFrame({
    "filename": [name] * n_rows,
    "extname_blue": [pairs[k % 5][0] for k in range(n_rows)],
    "extname_red": [pairs[k % 5][1] for k in range(n_rows)],
    "rv": 60 * np.sin(i * 0.37),
})
start = time.perf_counter()
store = preprocess_catalog(catalog, data_dir, out, keep_resampled=False, progress=False)
seconds = time.perf_counter() - start
manifest = pl.scan_parquet(store.path / "manifest.parquet")  # not loaded whole
ok = int(manifest.select((pl.col("status") == "ok").sum()).collect().item())
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": n_rows, "ok": ok, "seconds": seconds, "peak_rss_mib": peak_mib}))
"""


def run(n_rows: int, tmp: Path) -> dict:
    out = tmp / f"store-{n_rows}"
    cmd = [
        sys.executable,
        "-c",
        CHILD,
        str(n_rows),
        str(REAL_FILE.parent),
        str(out),
        REAL_FILE.name,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    subprocess.run(["rm", "-rf", str(out)], check=True)  # the 200k store is 5.8 GB
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 20_000, 200_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rrnet-rss-") as tmp:
        results = []
        for n_rows in args.rows:
            started = time.perf_counter()
            r = run(n_rows, Path(tmp))
            results.append(r)
            print(
                f"{r['rows']:>8} rows: peak RSS {r['peak_rss_mib']:7.1f} MiB, "
                f"{r['rows'] / r['seconds']:7.1f} spectra/s, {r['ok']} ok "
                f"({time.perf_counter() - started:.0f} s with start-up)",
                flush=True,
            )
    base = results[0]["peak_rss_mib"]
    for r in results[1:]:
        print(
            f"peak RSS {r['rows']} rows / {results[0]['rows']} rows: {r['peak_rss_mib'] / base:.2f}"
        )


if __name__ == "__main__":
    main()
