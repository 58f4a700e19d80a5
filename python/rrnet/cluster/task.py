"""The shard task: the single-machine pipeline on one shard, run on a Dask worker.

It reads and preprocesses the shard's files (Rust kernels), predicts with the
ensembles and writes ``parts/shard-NNNNNN.parquet`` atomically; it returns a
small dict (paths and counts, never arrays), so the scheduler moves bytes, not
spectra. Ensembles are loaded once per worker process, lazily, keyed by their
checkpoint hashes; a worker keeps one set of models however many shards it runs.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from rrnet.inference.quality import DEFAULT_THRESHOLDS, QualityThresholds

FAULT_ENV = "RRNET_RUN_FAULT_ONCE"
"""Test hook: a path; the first task attempt that creates it kills its worker (``os._exit``)."""
FAULT_RAISE_ENV = "RRNET_RUN_FAULT_RAISE"
"""Test hook: a shard index whose task raises on every attempt."""
FAULT_AFTER_WRITE_ENV = "RRNET_RUN_FAULT_AFTER_WRITE"
"""Test hook: a shard index whose task raises after writing its part (a worker lost late)."""

_MODELS: dict[tuple[Any, ...], tuple[list[Any], dict[str, int]]] = {}


@dataclass(frozen=True)
class ShardJob:
    """Everything a worker needs for one shard (small: the sub-catalogue, not spectra)."""

    index: int
    start: int
    catalog: pl.DataFrame
    data_dir: str
    part: str
    attempts: str
    models: tuple[str, ...]
    hashes: tuple[str, ...]
    carried: tuple[str, ...]
    device: str = "auto"
    batch_size: int | None = None
    reader_threads: int | None = None
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS
    preprocess: dict[str, Any] = field(default_factory=dict)
    fault_marker: str | None = None
    fault_raise: int | None = None
    fault_after_write: int | None = None
    synthetic_domain: bool = False
    """A checkpoint trained on synthesised spectra only: every row gets SYNTHETIC_DOMAIN."""
    calibrate: bool = True
    """Errors scaled by each checkpoint's calibration (False: paper eq. 3, ``--raw-errors``)."""
    precision: str = "fp32"
    """Arithmetic of the ensembles: fp32, tf32 or bf16 (``--precision``)."""
    compile: bool = False
    """``torch.compile`` the ensembles (``--compile``)."""


PART_DEVICE_KEY = "rrnet.device"
"""Part-file metadata: the device its worker ran the models on (``--device auto`` is
resolved per worker, so the catalogue's provenance collects it from the parts)."""

SHARD_HOLD_ENV = "RRNET_TEST_SHARD_HOLD_S"
"""Seconds each shard waits before its work (0: none); for tests of interruptions only."""


def worker_device(device: str) -> str:
    """``auto`` with several GPUs: one GPU per worker process, from the worker name's index."""
    import torch

    if device != "auto" or not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return device
    name = ""
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):
        pass
    match = re.search(r"(\d+)$", name)
    return f"cuda:{int(match.group(1)) % torch.cuda.device_count() if match else 0}"


def cached_models(job: ShardJob) -> tuple[list[Any], dict[str, int]]:
    """The loaded checkpoints and label sources of ``job``, loaded once per process."""
    from rrnet.inference.models import label_sources, load_checkpoints

    device = worker_device(job.device)
    key = (job.hashes, device, job.thresholds, job.precision, job.compile)
    if key not in _MODELS:
        _MODELS.clear()  # one model set per worker bounds its memory
        checkpoints = load_checkpoints(
            list(job.models),
            device=device,
            thresholds=job.thresholds,
            precision=job.precision,
            compile=job.compile,
        )
        _MODELS[key] = (checkpoints, label_sources(checkpoints))
    return _MODELS[key]


def _note_attempt(job: ShardJob) -> None:
    """Append one line per attempt (the driver counts retries from it), then maybe fail."""
    Path(job.attempts).parent.mkdir(parents=True, exist_ok=True)
    with open(job.attempts, "a") as handle:
        handle.write(f"{socket.gethostname()} {os.getpid()} {time.time():.3f}\n")
    if job.fault_raise == job.index:
        raise RuntimeError(f"injected fault in shard {job.index}")
    if job.fault_marker:
        try:
            fd = os.open(job.fault_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)  # a lost worker (walltime, OOM, preemption), as seen by the scheduler


def use_core_share(threads: int | None) -> None:
    """Run this worker process on its share of the job's cores (``cores // processes``).

    The Rust kernels and the OOD scoring would otherwise start a thread per core of the
    node in every one of its processes (N processes x N threads), and PyTorch would run
    one thread whatever the share (Dask's nanny starts workers with
    ``OMP_NUM_THREADS=1``). A ``RRNET_NUM_THREADS`` the user set is kept."""
    if threads is None or threads < 1:
        return
    import torch

    os.environ.setdefault("RRNET_NUM_THREADS", str(threads))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def run_shard(job: ShardJob) -> dict[str, Any]:
    """Compute one shard's catalogue rows into its part file; return counts and timings."""
    from rrnet.inference.streaming import Chunk, catalogue_chunk
    from rrnet.inference.writers import write_part
    from rrnet.preprocess.pipeline import iter_preprocessed

    began = time.perf_counter()
    _note_attempt(job)
    hold = float(os.environ.get(SHARD_HOLD_ENV) or 0)
    if hold > 0:  # tests hold each shard, so that a run can be stopped half-way through
        time.sleep(hold)
    use_core_share(job.reader_threads)
    checkpoints, sources = cached_models(job)
    loaded = time.perf_counter()
    frames = []
    for batch in iter_preprocessed(
        job.catalog,
        job.data_dir,
        batch_size=max(job.catalog.height, 1),
        workers=job.reader_threads,
        **job.preprocess,
    ):
        manifest = batch.manifest.with_columns(pl.col("row") + job.start)
        chunk = Chunk(job.index, manifest, batch.flux)
        frames.append(
            catalogue_chunk(
                chunk,
                checkpoints,
                sources,
                job.thresholds,
                job.batch_size,
                list(job.carried),
                calibrate=job.calibrate,
                synthetic_domain=job.synthetic_domain,
            )
        )
    frame = pl.concat(frames) if frames else pl.DataFrame()
    device = str(checkpoints[0].ensemble.device)
    write_part(frame, job.part, metadata={PART_DEVICE_KEY: device})
    if job.fault_after_write == job.index:
        raise RuntimeError(f"injected fault after shard {job.index} was written")
    return {
        "shard": job.index,
        "part": job.part,
        "rows": frame.height,
        "seconds": time.perf_counter() - began,
        "model_seconds": loaded - began,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
