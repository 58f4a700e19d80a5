"""Two checkouts of rrnet's preprocessing, alternated run by run: rate, CPU and the tail.

The tail is the time from the end of the last batch's computation (its ``finish``)
to ``preprocess_catalog`` returning: writing the shard (flux files, fsync, manifest
part) and the store's manifest. With the flux files written as a shard's rows are
finished (``rrnet.preprocess.shard_files``) only the last rows and the fsync of what
is not on disk yet remain. One fresh process per run (copies of the real file, one
shard of ``--files * 5`` spectra, ``workers=2``), old and new alternated.

    python benchmarks/ab_shard_tail.py --old /path/to/old/python [--files 400] [--pairs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import json, os, shutil, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from bench_preprocess_e2e import make_files
from rrnet.preprocess import pipeline as P
ends = []
finish = P._BatchBuilder.finish
def timed(*a, **k):
    r = finish(*a, **k)
    ends.append(time.perf_counter())
    return r
P._BatchBuilder.finish = timed
tmp = Path(tempfile.mkdtemp(prefix="rrnet-ab-tail-"))
data = tmp / "data"
data.mkdir()
cat = make_files(data, int(sys.argv[2]))
P.preprocess_catalog(cat.head(10), data, tmp / "warm", workers=2, progress=False)
t0, c0 = time.perf_counter(), os.times()
P.preprocess_catalog(cat, data, tmp / "out", workers=2, progress=False)
t1, c1 = time.perf_counter(), os.times()
cpu = c1.user - c0.user + c1.system - c0.system
shutil.rmtree(tmp)
print(json.dumps({"rate": cat.height / (t1 - t0), "share": cpu / (t1 - t0),
                  "tail": t1 - ends[-1], "cpu_us": cpu / cat.height * 1e6,
                  "load": os.getloadavg()[0]}))
"""


def run(python_dir: Path, files: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(python_dir)}
    args = [sys.executable, "-c", CHILD, str(HERE), str(files)]
    done = subprocess.run(args, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="old python/ tree")
    parser.add_argument("--new", type=Path, default=HERE.parent / "python")
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--pairs", type=int, default=4)
    args = parser.parse_args()
    got: dict[str, list[dict]] = {"old": [], "new": []}
    for i in range(args.pairs):
        for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
            r = run(args.old if name == "old" else args.new, args.files)
            got[name].append(r)
            print(
                f"pair {i} {name}: {r['rate']:7.1f} spectra/s, CPU {r['share']:.0%}, "
                f"tail {r['tail']:.3f} s, {r['cpu_us']:.0f} us CPU/spectrum, load {r['load']:.1f}",
                flush=True,
            )
    print("| build | spectra/s | CPU share | tail [s] | CPU us/spectrum | (medians) |")
    print("|---|---:|---:|---:|---:|---|")
    for name, rows in got.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(
            f"| {name} | {med['rate']:.0f} | {med['share']:.0%} | {med['tail']:.3f} | "
            f"{med['cpu_us']:.0f} | |"
        )


if __name__ == "__main__":
    main()
