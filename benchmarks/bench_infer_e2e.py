"""End-to-end inference benchmark (issue 7): .fits.gz -> catalogue on CPU.

Measures, in one run:

1. spectra/s from raw ``.fits.gz`` to catalogue with ``--catalog`` (preprocessing on
   the fly + a 12-member SP+CA RRNet ensemble of paper size, random weights), next
   to preprocessing alone and inference alone from a store (same rows, same run);
2. peak RSS of a whole run for 20k vs 200k rows from a store, and for 2k vs 20k rows
   with ``--catalog``, each in a fresh subprocess: memory must not grow with the
   catalogue. These use a 1-member tiny RRNet so the runs stay short (the model's
   size does not change how memory scales with the row count).

Input: the real LAMOST file of ``../shared/data/lamost`` under many symlinked names
(5 spectra per file: the coadd and 4 exposures). The 200k-row store is synthetic:
one preprocessed shard of real spectra hard-linked as every shard (same bytes on
disk once; the reader cannot tell). Run: ``.venv/bin/python benchmarks/bench_infer_e2e.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from _shared import EXPOSURES, REAL_FILE

REPO = Path(__file__).resolve().parents[1]
SHARD = 4096


def make_data(root: Path, n_rows: int) -> tuple[Path, Path]:
    """A catalogue of ``n_rows`` spectra over symlinked copies of the real file."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(-(-n_rows // 5)):
        name = f"med-copy-{k:06d}.fits.gz"
        if not (data / name).exists():
            os.symlink(REAL_FILE, data / name)
        rows.append((name, "COADD_B", "COADD_R", 10.0, f"star{k}"))
        rows += [(name, f"B-{i}", f"R-{i}", 10.0, f"star{k}") for i in EXPOSURES]
    catalog = root / f"catalog-{n_rows}.csv"
    schema = ["filename", "extname_blue", "extname_red", "rv", "star_id"]
    pl.DataFrame(rows[:n_rows], schema=schema, orient="row").write_csv(catalog)
    return catalog, data


def make_checkpoint(path: Path, labels: tuple[str, ...], members: int, tiny: bool, fp: dict):
    from rrnet.models import ModelConfig, build_model
    from rrnet.models.checkpoint import save_checkpoint

    torch.manual_seed(len(labels))
    kw = dict(mode="raw", channels=(2,), hidden=(8, 8)) if tiny else {}
    config = ModelConfig(num_labels=len(labels), **kw)
    rng = np.random.default_rng(0)
    return save_checkpoint(
        path,
        model_config=config,
        labels=labels,
        member_state_dicts=[build_model(config).state_dict() for _ in range(members)],
        flux_mean=rng.uniform(0.9, 1.1, 7200).astype(np.float32),
        flux_std=rng.uniform(0.05, 0.2, 7200).astype(np.float32),
        label_mean=np.zeros(len(labels)),
        label_std=np.ones(len(labels)),
        preprocessing=fp,
    )


def synthetic_store(base: Path, out: Path, n_rows: int) -> Path:
    """A complete store of ``n_rows`` rows whose every shard is a hard link of ``base``'s
    first (full) shard; the manifest repeats that shard's rows with new row numbers."""
    from rrnet.store import open_store, shard_name

    src = open_store(base)
    assert src.shard_size == SHARD and n_rows % SHARD == 0
    (out / "shards").mkdir(parents=True)
    first = src.manifest.slice(0, SHARD)
    parts = []
    for shard in range(n_rows // SHARD):
        os.link(base / shard_name("normalized", 0), out / shard_name("normalized", shard))
        parts.append(
            first.with_columns(
                (pl.col("row") + shard * SHARD).alias("row"), pl.lit(shard).alias("shard")
            )
        )
    pl.concat(parts).write_parquet(out / "manifest.parquet")
    info = {**src.info, "n_rows": n_rows, "kinds": ["normalized"]}
    (out / "store.json").write_text(json.dumps(info))
    return out


def child(args: argparse.Namespace) -> None:
    """One measured run in this (fresh) process; prints a JSON line."""
    from rrnet.inference import InferOptions, run_inference

    torch.set_num_threads(int(os.environ.get("RRNET_NUM_THREADS", os.cpu_count() or 1)))
    t0 = time.perf_counter()
    inputs = (
        dict(store=args.store) if args.store else dict(catalog=args.catalog, data_dir=args.data)
    )
    options = InferOptions(args.model, device="cpu", overwrite=True, workers=args.workers)
    out = run_inference(options, out=args.out, **inputs)
    seconds = time.perf_counter() - t0
    n = pl.scan_parquet(out).select(pl.len()).collect().item()
    peak = _vm_hwm_mib()  # ru_maxrss would carry the parent's peak across fork + exec
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps({"rows": n, "seconds": seconds, "rss_mib": peak, "child_rss_mib": peak_children})
    )


def _vm_hwm_mib() -> float:
    """Peak resident set of this process image (``VmHWM``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measured(*args: str | Path) -> dict:
    cmd = [sys.executable, __file__, "--child", *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _fingerprint() -> dict:
    from rrnet.preprocess.settings import PreprocessSettings

    return PreprocessSettings().fingerprint()


def throughput(a: argparse.Namespace, root: Path, small_cat: Path, data: Path) -> None:
    """Preprocessing alone, inference alone (store) and both (--catalog), same rows."""
    from rrnet.labels import CA_LABELS, SP_LABELS
    from rrnet.preprocess.pipeline import iter_preprocessed, preprocess_catalog

    t0 = time.perf_counter()
    n = sum(b.rows.size for b in iter_preprocessed(small_cat, data, batch_size=256))
    pre = n / (time.perf_counter() - t0)
    store = preprocess_catalog(small_cat, data, root / "store", progress=False)
    fp = store.fingerprint
    sp = make_checkpoint(root / "SP", SP_LABELS, 6, tiny=False, fp=fp)
    ca = make_checkpoint(root / "CA", CA_LABELS, 6, tiny=False, fp=fp)
    r_store = measured("--store", store.path, "--model", sp, "--model", ca,
                       "--out", root / "s.parquet")  # fmt: skip
    r_cat = measured("--catalog", small_cat, "--data", data, "--model", sp, "--model", ca,
                     "--out", root / "c.parquet")  # fmt: skip
    inf = r_store["rows"] / r_store["seconds"]
    e2e = r_cat["rows"] / r_cat["seconds"]
    print(f"\n## throughput, {a.rows} spectra, 12-member SP+CA RRNet (post-RNN, paper size)")
    print(f"preprocessing only (iter_preprocessed):      {pre:8.1f} spectra/s")
    print(f"inference only (--store, 12 models):         {inf:8.1f} spectra/s "
          f"= {12 * inf:.0f} spectrum-model evaluations/s")  # fmt: skip
    print(f"end to end (--catalog, .fits.gz -> parquet): {e2e:8.1f} spectra/s")
    print(f"ratio end-to-end / min(stage rates):         {e2e / min(pre, inf):8.2f}")


def main() -> None:
    from rrnet.labels import SP_LABELS
    from rrnet.preprocess.pipeline import preprocess_catalog

    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=500, help="rows for the throughput figures")
    p.add_argument("--big", type=int, default=200 * 1024, help="large store rows (k*4096)")
    p.add_argument("--small", type=int, default=20 * 1024, help="small store rows (k*4096)")
    p.add_argument("--catalog-big", type=int, default=10_000)
    p.add_argument("--catalog-small", type=int, default=2_000)
    p.add_argument("--skip-throughput", action="store_true", help="memory figures only")
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-infer-"))
    try:
        threads = torch.get_num_threads()
        print(f"CPU: {os.cpu_count()} cores, torch threads {threads}, torch {torch.__version__}")
        # --- throughput: preprocessing, inference, both ----------------------------
        catalog, data = make_data(root, max(a.rows, SHARD))
        small_cat = root / "throughput.csv"
        pl.read_csv(catalog).head(a.rows).write_csv(small_cat)
        fp = _fingerprint()
        if not a.skip_throughput:
            throughput(a, root, small_cat, data)
        # --- memory: rows x10 --------------------------------------------------------
        base = preprocess_catalog(catalog, data, root / "base", shard_size=SHARD, progress=False)
        base_rows = base.n_rows
        assert base_rows >= SHARD
        tiny = make_checkpoint(root / "TINY", SP_LABELS, 1, tiny=True, fp=fp)
        print("\n## peak RSS, whole run in a fresh process (1-member tiny RRNet)")
        results = {}
        for n_rows in (a.small, a.big):
            st = synthetic_store(base.path, root / f"store-{n_rows}", n_rows)
            results[n_rows] = r = measured("--store", st, "--model", tiny,
                                           "--out", root / f"m{n_rows}.parquet")  # fmt: skip
            print(f"--store   {r['rows']:7d} rows: {r['rss_mib']:7.0f} MiB peak RSS, "
                  f"{r['rows'] / r['seconds']:8.0f} spectra/s")  # fmt: skip
            shutil.rmtree(st)
        ratio = results[a.big]["rss_mib"] / results[a.small]["rss_mib"]
        print(f"--store   RSS ratio {a.big} / {a.small} rows: {ratio:.2f}")
        cat_results = {}
        for n_rows in (a.catalog_small, a.catalog_big):
            c, _ = make_data(root, n_rows)
            cat_results[n_rows] = r = measured("--catalog", c, "--data", data, "--model", tiny,
                                               "--out", root / f"k{n_rows}.parquet")  # fmt: skip
            print(f"--catalog {r['rows']:7d} rows: {r['rss_mib']:7.0f} MiB peak RSS "
                  f"(readers <= {r['child_rss_mib']:.0f} MiB), "
                  f"{r['rows'] / r['seconds']:8.0f} spectra/s")  # fmt: skip
        ratio = cat_results[a.catalog_big]["rss_mib"] / cat_results[a.catalog_small]["rss_mib"]
        print(f"--catalog RSS ratio {a.catalog_big} / {a.catalog_small} rows: {ratio:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if "--child" in sys.argv:
        cp = argparse.ArgumentParser()
        cp.add_argument("--child", action="store_true")
        cp.add_argument("--store")
        cp.add_argument("--catalog")
        cp.add_argument("--data")
        cp.add_argument("--workers", type=int)
        cp.add_argument("--model", action="append")
        cp.add_argument("--out")
        child(cp.parse_args())
    else:
        main()
