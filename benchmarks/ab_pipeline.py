"""Two checkouts of rrnet's preprocessing, end to end, alternated run by run.

On a shared, loaded 2-core machine two separate benchmark runs differ by more
than the change being measured. This script runs ``preprocess_catalog`` on the
same copies of the real file with an old and a new ``python/`` tree (each with
its own ``_core.abi3.so``), one fresh process per run, old and new alternated,
and reports the process CPU time per spectrum (all threads; less sensitive to
the load than wall time), the wall rate, the CPU share and the ratio new/old
of each pair. It checks that both trees write identical stores (manifest and
every flux file, byte for byte).

    python benchmarks/ab_pipeline.py --old /path/to/old/python [--files 400] [--pairs 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NEW = HERE.parent / "python"

CHILD = """
import json, os, resource, shutil, sys, time
import polars as pl
from rrnet.preprocess.pipeline import preprocess_catalog
catalog, data, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cat = pl.read_parquet(catalog)
preprocess_catalog(cat.head(50), data, out + ".warm", workers=workers)  # imports, pools
shutil.rmtree(out + ".warm")
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
preprocess_catalog(cat, data, out, workers=workers)
wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
print(json.dumps({"n": cat.height, "wall": wall, "cpu": cpu, "load": os.getloadavg()[0]}))
"""


def run(python_dir: Path, catalog: Path, data: Path, out: Path, workers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(python_dir)}
    args = [sys.executable, "-c", CHILD, str(catalog), str(data), str(out), str(workers)]
    done = subprocess.run(args, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def digest(store: Path) -> str:
    """Hash of every file of a store except its info file's timestamps."""
    h = hashlib.sha256()
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        if path.name in ("store.json", ".rrnet.lock") or path.suffix == ".json":
            continue
        h.update(path.relative_to(store).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="old python/ tree")
    parser.add_argument("--new", type=Path, default=NEW, help="new python/ tree")
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from bench_preprocess_e2e import make_files

    with tempfile.TemporaryDirectory(prefix="rrnet-ab-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        catalog = Path(tmp) / "catalog.parquet"
        make_files(data, args.files).write_parquet(catalog)
        got: dict[str, list[dict]] = {"old": [], "new": []}
        digests: dict[str, set[str]] = {"old": set(), "new": set()}
        for i in range(args.pairs):
            order = ("old", "new") if i % 2 == 0 else ("new", "old")
            for name in order:
                out = Path(tmp) / f"store-{name}-{i}"
                tree = args.old if name == "old" else args.new
                got[name].append(run(tree, catalog, data, out, args.workers))
                digests[name].add(digest(out))
                r = got[name][-1]
                print(
                    f"pair {i} {name}: {r['cpu'] / r['n'] * 1e6:7.1f} us CPU/spectrum, "
                    f"{r['n'] / r['wall']:7.1f} spectra/s, CPU {r['cpu'] / r['wall']:.0%}, "
                    f"load {r['load']:.1f}",
                    flush=True,
                )
        report(got)
        same = len(digests["old"] | digests["new"]) == 1
        print(f"stores identical (manifest and flux bytes, all runs): {same}")
        if not same:
            raise SystemExit(1)


def report(got: dict[str, list[dict]]) -> None:
    cpu = {k: np.array([r["cpu"] / r["n"] * 1e6 for r in v]) for k, v in got.items()}
    rate = {k: np.array([r["n"] / r["wall"] for r in v]) for k, v in got.items()}
    print("| build | CPU us/spectrum median (min) | spectra/s median (max) |")
    print("|---|---:|---:|")
    for k in ("old", "new"):
        print(
            f"| {k} | {np.median(cpu[k]):.0f} ({cpu[k].min():.0f}) "
            f"| {np.median(rate[k]):.0f} ({rate[k].max():.0f}) |"
        )
    ratios = cpu["new"] / cpu["old"]
    print(f"CPU new/old per pair: {' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"median of pair ratios {np.median(ratios):.3f}")


if __name__ == "__main__":
    main()
