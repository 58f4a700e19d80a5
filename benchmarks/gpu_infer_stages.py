"""Where the time of `rrnet-infer --store` goes on a GPU node: disk, host, transfer, model.

Self-contained like ``gpu_infer.py`` (torch, numpy; no polars, fitsio or Rust extension,
none of which the bare GPU machine has). It writes normalised-flux shards in the store's
own on-disk layout (``shards/normalized-NNNNNN.npy``, float32 ``[rows, 7200]``), then
times each stage of what ``rrnet-infer --store`` does per chunk, alone:

- ``disk``: reading the shards (memory-mapped, copied to RAM), after dropping the page
  cache where the machine allows it (``cold`` says whether it did);
- ``host_to_device``: copying a chunk to the GPU, from pageable and from pinned memory;
- ``model``: the 12-model ensemble (6 SP + 6 CA) on device-resident input, bf16
  (``--compile``: under ``torch.compile``, the warm-up call compiling);
- ``chunk_path``: ``Ensemble.predict`` on memory-mapped shard rows for both ensembles,
  i.e. read + clip + standardise + transfer + model + copy back (the catalogue write,
  done by a background thread, is not included); ``chunk_path_in_ram``: the rows read
  into RAM once per batch, as the streaming loop does, each ensemble copying and
  sending them itself; ``chunk_path_shared``: the rows sent to the device once and
  shared by both ensembles.

Prints one JSON document with spectra/s per stage and the slowest stage.
Usage: python benchmarks/gpu_infer_stages.py [--spectra 65536] [--compile] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from gpu_infer import _sync, random_ensembles  # benchmarks/, the script's folder, is on sys.path

SHARD_ROWS = 8192


def _drop_page_cache(tiny: bool) -> bool:
    """Empty the machine's page cache (root only), so reads come from the disk; never
    for a --tiny CPU check, which runs beside other work."""
    if tiny:
        return False
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _write_shards(folder: Path, n: int, n_pixels: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, start in enumerate(range(0, n, SHARD_ROWS)):
        rows = min(SHARD_ROWS, n - start)
        flux = (1 + 0.05 * rng.standard_normal((rows, n_pixels), dtype=np.float32)).astype(
            np.float32
        )
        path = folder / f"normalized-{i:06d}.npy"
        np.save(path, flux)
        paths.append(path)
    return paths


CHUNK_PATHS = ("chunk_path", "chunk_path_in_ram", "chunk_path_shared")
"""Ways to feed a shard's rows to both ensembles: each reads the memory map itself;
the rows read into RAM once (rrnet-infer today), each ensemble copying and sending
its own; the rows sent to the device once, shared by both ensembles."""


def _predict_shard(variant: str, flux: np.ndarray, ensembles, batch: int, device) -> None:
    if variant == "chunk_path":
        for ens in ensembles:
            ens.predict(flux, batch_size=batch)
        return
    for begin in range(0, flux.shape[0], batch):
        rows = np.array(flux[begin : begin + batch], dtype=np.float32)
        shared = variant == "chunk_path_shared"
        source = torch.from_numpy(rows).to(device) if shared else rows
        for ens in ensembles:
            ens.predict(source, batch_size=batch)


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=65536)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--compile", action="store_true", help="torch.compile the ensembles")
    parser.add_argument("--tiny", action="store_true", help="small CPU run to check the script")
    args = parser.parse_args()
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    n_pixels = 160 if args.tiny else 7200
    n = 512 if args.tiny else args.spectra
    batch = 64 if args.tiny else args.batch
    report: dict = {
        "device": str(device),
        "spectra": n,
        "batch": batch,
        "compile": args.compile,
        "unit": "spectra/s",
    }

    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        start = time.perf_counter()
        paths = _write_shards(Path(tmp), n, n_pixels)
        report["write_s"] = round(time.perf_counter() - start, 1)

        report["cold"] = _drop_page_cache(args.tiny)
        start = time.perf_counter()
        for path in paths:
            np.array(np.load(path, mmap_mode="r"))
        report["disk"] = _rate(n, time.perf_counter() - start)

        chunk = np.array(np.load(paths[0], mmap_mode="r")[:batch])
        pinned = torch.from_numpy(chunk).pin_memory() if device.type == "cuda" else None
        for name, source in (("pageable", torch.from_numpy(chunk)), ("pinned", pinned)):
            if source is None:
                continue
            source.to(device)
            _sync(device)
            start = time.perf_counter()
            for _ in range(20):
                source.to(device, non_blocking=name == "pinned")
            _sync(device)
            report[f"host_to_device_{name}"] = _rate(20 * batch, time.perf_counter() - start)

        ensembles = random_ensembles(device, 6, n_pixels, args.compile, True, args.tiny)
        x = torch.from_numpy(chunk).to(device)
        for ens in ensembles:
            ens.predict_standardized(x, batch_size=batch)
        _sync(device)
        start = time.perf_counter()
        for _ in range(5):
            for ens in ensembles:
                ens.predict_standardized(x, batch_size=batch)
        _sync(device)
        report["model"] = _rate(5 * batch, time.perf_counter() - start)

        for ens in ensembles:  # warm the host path too (compiled: its own graph, once)
            ens.predict(chunk, batch_size=batch)
        for variant in CHUNK_PATHS:
            report[f"cold_{variant}"] = _drop_page_cache(args.tiny)
            start = time.perf_counter()
            for path in paths:
                _predict_shard(variant, np.load(path, mmap_mode="r"), ensembles, batch, device)
            _sync(device)
            report[variant] = _rate(n, time.perf_counter() - start)

    stages = ("disk", "host_to_device_pageable", "model")
    report["slowest_stage"] = min(stages, key=lambda s: report[s])
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
