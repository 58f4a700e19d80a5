"""Cluster runner benchmark (issue 9): throughput with 1 and 2 local workers, and the
scheduler overhead per shard.

1. ``rrnet.infer`` on one machine (the baseline) and ``run_cluster`` on a LocalCluster
   with 1 then 2 worker processes (1 thread each, ``OMP_NUM_THREADS=1``), same rows,
   same tiny random SP+CA checkpoints, so the figures measure the pipeline and the
   scheduling rather than the model (the per-node model cost is in RESULTS.md).
   Wall times exclude cluster start-up and include the merge; a first run warms the
   workers (torch import and model load on each worker's first shard, reported
   separately), the second is timed.
2. Overhead per shard: ``--overhead-shards`` one-row shards whose file is missing
   (no I/O, no model call), on 1 worker: (wall - sum of task times) / shards is what
   the scheduler, the driver and the part files cost per shard.

Input: the real LAMOST file of ``../shared/data/lamost`` under many symlinked names
(5 spectra each). Run: ``.venv/bin/python benchmarks/bench_cluster.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _shared import REAL_FILE, SPECTRA

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: workers inherit it
os.environ.setdefault("RRNET_NUM_THREADS", "1")

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def world(root: Path, rows: int) -> tuple[Path, Path, list[Path]]:
    from helpers import make_checkpoint
    from rrnet.labels import CA_LABELS, SP_LABELS
    from rrnet.preprocess.settings import PreprocessSettings

    data = root / "data"
    data.mkdir()
    arms = SPECTRA
    table = []
    for k in range(-(-rows // 5)):
        name = f"med-{k:05d}.fits.gz"
        (data / name).symlink_to(REAL_FILE)
        table += [(name, b, r, -30.0 + 0.5 * k + 4.0 * j) for j, (b, r) in enumerate(arms)]
    cat = root / "cat.parquet"
    schema = ["filename", "extname_blue", "extname_red", "rv"]
    pl.DataFrame(table[:rows], schema=schema, orient="row").write_parquet(cat)
    fp = PreprocessSettings().fingerprint()
    models = [
        make_checkpoint(root / "SP", SP_LABELS, members=3, seed=1, preprocessing=fp),
        make_checkpoint(root / "CA", CA_LABELS, members=3, seed=2, preprocessing=fp),
    ]
    return cat, data, models


def on_cluster(workers: int, runs: list[tuple[str, dict]]) -> dict[str, dict]:
    from distributed import Client, LocalCluster

    from rrnet.cluster import run_cluster

    reports = {}
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    with cluster, Client(cluster) as client:
        for name, options in runs:
            reports[name] = run_cluster(client=client, **options)
    return reports


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=400)
    p.add_argument("--shard-size", type=int, default=40)
    p.add_argument("--overhead-shards", type=int, default=150)
    a = p.parse_args()
    from rrnet.inference import InferOptions, infer

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        root = Path(tmp)
        cat, data, models = world(root, a.rows)
        bad = root / "bad.parquet"
        pl.DataFrame(
            {
                "filename": [f"gone-{i}.fits.gz" for i in range(a.overhead_shards)],
                "extname_blue": "COADD_B",
                "extname_red": "COADD_R",
                "rv": 0.0,
            }
        ).write_parquet(bad)
        began = time.perf_counter()
        options = InferOptions(models, device="cpu")
        infer(options, catalog=cat, data_dir=data, workers=1)
        single = time.perf_counter() - began
        results: dict[str, object] = {
            "rows": a.rows,
            "shard_size": a.shard_size,
            "single_machine_spectra_per_s": round(a.rows / single, 1),
        }
        common = dict(models=options, data_dir=data, shard_size=a.shard_size)
        for workers in (1, 2):
            # The first run loads torch and the models in each worker (a once-per-worker
            # cost, reported as model_load_seconds_max); the second is the steady state.
            runs = [
                ("warm", dict(common, catalog=cat, out=root / f"warm{workers}.parquet")),
                ("run", dict(common, catalog=cat, out=root / f"w{workers}.parquet")),
            ]
            if workers == 1:
                over = dict(common, catalog=bad, out=root / "over.parquet", shard_size=1)
                runs.append(("overhead", over))
            reports = on_cluster(workers, runs)
            run = reports["run"]
            assert run["complete"] and run["rows_out"] == a.rows
            results[f"workers_{workers}"] = {
                "wall_s": run["wall_s"],
                "spectra_per_s": run["spectra_per_s"],
                "shards": run["shards"],
                "task_seconds_mean": run["task_seconds_mean"],
                "model_load_seconds_max": reports["warm"]["model_load_seconds_max"],
            }
            if "overhead" in reports:
                o = reports["overhead"]
                per_shard = o["wall_s"] / o["shards"]
                results["overhead_per_shard_ms"] = round(1000 * per_shard, 1)
                results["task_seconds_per_empty_shard_ms"] = round(1000 * o["task_seconds_mean"], 1)
        one = results["workers_1"]["spectra_per_s"]  # type: ignore[index]
        two = results["workers_2"]["spectra_per_s"]  # type: ignore[index]
        results["speedup_2_over_1"] = round(two / one, 2)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
