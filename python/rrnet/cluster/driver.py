"""Run a whole catalogue on a Dask cluster: plan shards, run them, merge, report.

The driver submits at most ``shards_per_worker`` shards per worker at a time
(memory on the scheduler and workers stays bounded however long the
catalogue); each shard writes its own part file, so a rerun with ``resume``
skips finished shards and a lost worker only costs its shard. A task that
raises is retried ``retries`` times; a worker that dies is replaced and its
shard rescheduled by Dask (``distributed.scheduler.allowed-failures``). A shard
that still fails is reported and its rows are written with status
``shard_failed`` and the error as reason (a later ``resume`` retries it), so
every input row has exactly one output row. Parts are merged in input order
with the ``rrnet-infer`` writers, and a JSON run report is written beside the
output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rrnet.cluster.config import ClusterSettings, connect
from rrnet.cluster.plan import PlanError, Shard, part_name, plan_shards, write_plan
from rrnet.cluster.task import FAULT_ENV, FAULT_RAISE_ENV, ShardJob, run_shard
from rrnet.inference.quality import DEFAULT_THRESHOLDS, QualityBit, QualityThresholds
from rrnet.labels import COLUMN_STYLES, DEFAULT_COLUMN_STYLE

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 2000
"""Catalogue rows per shard: ~3000 tasks for DR7's 5.6M spectra."""

REPORT_FORMAT = "rrnet-run-report"
FAILED_STATUS = "shard_failed"


class RunError(ValueError):
    """Unusable arguments or an output that belongs to another run (one-line message)."""


def run_dir(out: str | os.PathLike[str]) -> Path:
    """The working directory of a run writing ``out`` (plan, parts, attempts)."""
    out = Path(out)
    return out.with_name(out.name + ".run")


def report_path(out: str | os.PathLike[str]) -> Path:
    """The run report beside ``out`` (``cat.parquet`` -> ``cat.parquet.report.json``)."""
    out = Path(out)
    return out.with_name(out.name + ".report.json")


def _load_catalog(catalog: Any, preprocess: dict[str, Any]) -> tuple[pl.DataFrame, str]:
    from rrnet.io.catalog import CatalogError, read_table, validate_catalog
    from rrnet.preprocess.pipeline import reserved_columns

    name = "<DataFrame>" if isinstance(catalog, pl.DataFrame) else str(catalog)
    try:
        table = catalog if isinstance(catalog, pl.DataFrame) else read_table(catalog)
        table = validate_catalog(
            table,
            rv_column=preprocess.get("rv_column", "rv"),
            require_rv=preprocess.get("correct_rv", True),
            reserved=reserved_columns(),
        )
    except (CatalogError, OSError) as exc:
        raise RunError(str(exc)) from exc
    return table, name


def _rows_hash(table: pl.DataFrame) -> str:
    digest = hashlib.sha256()
    for batch in table.iter_slices(65536):
        digest.update(batch.hash_rows().to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _carried(table: pl.DataFrame) -> tuple[str, ...]:
    """Input columns carried to the output, as the single-machine run carries them."""
    from rrnet.inference.columns import schema
    from rrnet.preprocess.pipeline import HEADER_COLUMNS, reserved_columns

    skip = set(schema()) | set(reserved_columns())
    names = [*table.columns, *(c for c in HEADER_COLUMNS if c not in table.columns)]
    return tuple(c for c in names if c not in skip)


def _failed_frame(
    shard: Shard, table: pl.DataFrame, error: str, carried: Sequence[str]
) -> pl.DataFrame:
    """Rows of a shard that kept failing: status ``shard_failed``, the error as reason."""
    from rrnet.inference.streaming import Chunk, catalogue_chunk
    from rrnet.preprocess.pipeline import HEADER_COLUMNS

    manifest = table.slice(shard.start, shard.rows)
    missing = [
        pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in HEADER_COLUMNS.items()
        if name not in manifest.columns
    ]
    manifest = manifest.with_columns(
        *missing,
        pl.int_range(shard.start, shard.stop, dtype=pl.Int64).alias("row"),
        pl.lit(FAILED_STATUS).alias("status"),
        pl.lit(f"shard {shard.index} failed: {error}").alias("reason"),
    )
    chunk = Chunk(shard.index, manifest, np.empty((0, 0), np.float32))
    return catalogue_chunk(chunk, [], {}, DEFAULT_THRESHOLDS, None, list(carried))


def _readable(path: Path) -> bool:
    try:
        pl.read_parquet_schema(path)
    except (OSError, pl.exceptions.PolarsError):
        return False
    return True


def _prepare(out: Path, resume: bool, overwrite: bool) -> None:
    work = run_dir(out)
    if resume or not (out.exists() or work.exists()):
        return
    if not overwrite:
        raise RunError(f"{out} exists: pass --resume to continue it or --overwrite")
    shutil.rmtree(work, ignore_errors=True)
    out.unlink(missing_ok=True)
    report_path(out).unlink(missing_ok=True)


def run_cluster(
    models: Sequence[str | os.PathLike[str]],
    catalog: str | os.PathLike[str] | pl.DataFrame,
    data_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    client: Any = None,
    settings: ClusterSettings | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    fmt: str | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
    preprocess: dict[str, Any] | None = None,
    retries: int = 2,
    shards_per_worker: int = 2,
    allow_fingerprint_mismatch: bool = False,
    progress: bool = False,
    column_style: str = DEFAULT_COLUMN_STYLE,
) -> dict[str, Any]:
    """Write the catalogue of ``catalog`` to ``out`` using a Dask cluster; return the report.

    Give a connected ``distributed.Client`` as ``client``, or ``settings`` to start
    (and stop) a cluster; neither starts a two-process LocalCluster. The output
    equals :func:`rrnet.inference.infer` on the same inputs, row for row.
    """
    from rrnet.inference.models import load_checkpoints
    from rrnet.inference.provenance import FingerprintMismatch, check_fingerprint
    from rrnet.inference.writers import resolve_format, write_part
    from rrnet.preprocess.settings import PreprocessSettings

    began = time.perf_counter()
    out = Path(out)
    preprocess = dict(preprocess or {})
    try:
        fmt = resolve_format(out, fmt)
    except ValueError as exc:
        raise RunError(str(exc)) from exc
    if not models:
        raise RunError("give at least one --model checkpoint")
    if column_style not in COLUMN_STYLES:
        raise RunError(f"--column-style must be one of {', '.join(COLUMN_STYLES)}")
    if shard_size < 1 or retries < 0 or shards_per_worker < 1:
        raise RunError("--shard-size and shards per worker must be positive, retries >= 0")
    if batch_size is not None and batch_size < 1:
        raise RunError("--batch-size must be positive")
    for path in models:
        if not (Path(path) / "config.json").is_file():
            raise RunError(f"not an rrnet checkpoint (no config.json): {path}")
    if not Path(data_dir).is_dir():
        raise RunError(f"data directory not found: {data_dir}")
    table, name = _load_catalog(catalog, preprocess)
    settings_fp = {k: v for k, v in preprocess.items() if k in ("correct_rv", "max_iter")}
    fingerprint = PreprocessSettings(**settings_fp).fingerprint()
    try:
        checkpoints = load_checkpoints(list(models), device="cpu", thresholds=thresholds)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise RunError(f"cannot load checkpoint: {exc}") from exc
    try:
        for checkpoint in checkpoints:
            check_fingerprint(
                str(checkpoint.path),
                checkpoint.preprocessing,
                fingerprint,
                allow_mismatch=allow_fingerprint_mismatch,
            )
    except FingerprintMismatch as exc:
        raise RunError(str(exc).strip().splitlines()[0]) from exc
    identity = {
        "catalog": name,
        "rows_hash": _rows_hash(table),
        "data_dir": os.path.abspath(data_dir),
        "fingerprint": fingerprint["hash"],
        "checkpoints": [c.hash for c in checkpoints],
        "shard_size": shard_size,
        "thresholds": thresholds.to_dict(),
        "preprocess": preprocess,
    }
    _prepare(out, resume, overwrite)
    work = run_dir(out)
    shards = plan_shards(table, shard_size)
    try:
        write_plan(work / "plan.json", shards, identity)
    except PlanError as exc:
        raise RunError(str(exc)) from exc
    previous = _read_report(out)
    if resume and out.exists() and previous.get("complete"):
        return {**previous, "shards_computed": 0, "shards_skipped": len(shards), "rerun": True}

    parts = work / "parts"
    done = {s.index for s in shards if _readable(parts / part_name(s.index))}
    todo = [s for s in shards if s.index not in done]
    carried = _carried(table)
    base = ShardJob(
        index=-1,
        start=0,
        catalog=table.clear(),
        data_dir=os.path.abspath(data_dir),
        part="",
        attempts="",
        models=tuple(os.path.abspath(p) for p in models),
        hashes=tuple(c.hash for c in checkpoints),
        carried=carried,
        device=device,
        batch_size=batch_size,
        reader_threads=(settings or ClusterSettings()).threads,
        thresholds=thresholds,
        preprocess=preprocess,
        fault_marker=os.environ.get(FAULT_ENV) or None,
        fault_raise=int(os.environ[FAULT_RAISE_ENV]) if os.environ.get(FAULT_RAISE_ENV) else None,
    )

    def job(shard: Shard) -> ShardJob:
        attempts = work / "attempts" / f"shard-{shard.index:06d}.txt"
        attempts.unlink(missing_ok=True)
        return replace(
            base,
            index=shard.index,
            start=shard.start,
            catalog=table.slice(shard.start, shard.rows),
            part=str(parts / part_name(shard.index)),
            attempts=str(attempts),
        )

    results: list[dict[str, Any]] = []
    failures: dict[int, str] = {}
    n_workers = 0
    if todo:
        if client is not None:
            n_workers = _execute(client, todo, job, retries, shards_per_worker, results, failures)
        else:
            with connect(settings or ClusterSettings()) as own:
                n_workers = _execute(own, todo, job, retries, shards_per_worker, results, failures)
    for index, error in failures.items():
        failed = _failed_frame(shards[index], table, error, carried)
        write_part(failed, parts / f"failed-{index:06d}.parquet")

    try:
        report = _merge_and_report(
            out,
            fmt,
            shards,
            parts,
            table.height,
            checkpoints,
            fingerprint,
            thresholds,
            name,
            column_style=column_style,
        )
    except ValueError as exc:  # e.g. a carried column clashing with a styled name
        raise RunError(str(exc)) from exc
    computed = sum(r["rows"] for r in results)
    wall = time.perf_counter() - began
    attempts = {s.index: _count_lines(work / "attempts" / f"shard-{s.index:06d}.txt") for s in todo}
    report |= {
        "complete": not failures,
        "shards": len(shards),
        "shards_computed": len(results),
        "shards_skipped": len(done),
        "shards_retried": sum(1 for n in attempts.values() if n > 1),
        "attempts": sum(attempts.values()),
        "failed_shards": [{**_span(shards[i]), "error": failures[i]} for i in sorted(failures)],
        "workers": n_workers,
        "wall_s": round(wall, 3),
        "rows_computed": computed,
        "spectra_per_s": round(computed / wall, 3) if wall > 0 else None,
        "task_seconds_mean": _mean([r["seconds"] for r in results]),
        "model_load_seconds_max": max((r["model_seconds"] for r in results), default=None),
    }
    _write_json(report_path(out), report)
    if not failures:
        shutil.rmtree(parts, ignore_errors=True)
        shutil.rmtree(work / "attempts", ignore_errors=True)
    if progress:
        print(_summary(report), file=sys.stderr, flush=True)
    return report


def _execute(
    client: Any,
    todo: list[Shard],
    job: Any,
    retries: int,
    shards_per_worker: int,
    results: list[dict[str, Any]],
    failures: dict[int, str],
) -> int:
    """Run ``todo`` with a bounded number of futures in flight; return the most workers seen."""
    from distributed import as_completed

    pending = iter(todo)
    running: dict[Any, Shard] = {}
    seen = 1
    completed = as_completed()

    def fill() -> None:
        nonlocal seen
        seen = max(seen, len(client.scheduler_info(n_workers=-1)["workers"]))
        while len(running) < seen * shards_per_worker:
            shard = next(pending, None)
            if shard is None:
                return
            future = client.submit(
                run_shard,
                job(shard),
                key=f"rrnet-shard-{shard.index:06d}-{time.time_ns()}",
                retries=retries,
                pure=False,
            )
            running[future] = shard
            completed.add(future)

    fill()
    for future in completed:
        shard = running.pop(future)
        try:
            results.append(future.result())
        except Exception as exc:  # any task failure is reported, not fatal
            text = str(exc).strip().splitlines()
            failures[shard.index] = f"{type(exc).__name__}: {text[0] if text else ''}".strip()
            log.warning("shard %d failed: %s", shard.index, failures[shard.index])
        future.release()
        fill()
    return seen


def _merge_and_report(
    out: Path,
    fmt: str,
    shards: list[Shard],
    parts: Path,
    rows_in: int,
    checkpoints: list[Any],
    fingerprint: dict[str, Any],
    thresholds: QualityThresholds,
    name: str,
    *,
    column_style: str = DEFAULT_COLUMN_STYLE,
) -> dict[str, Any]:
    """Merge parts (real, else failed) in shard order into ``out``; counts per status."""
    from rrnet.inference.columns import schema
    from rrnet.inference.models import label_sources
    from rrnet.inference.provenance import build_provenance
    from rrnet.inference.writers import merge_parts

    files = []
    by_status: dict[str, int] = {}
    no_ok = []
    for shard in shards:
        path = parts / part_name(shard.index)
        if not path.exists():
            path = parts / f"failed-{shard.index:06d}.parquet"
        files.append(path)
        frame = pl.read_parquet(path, columns=["status", "reason"])
        for status, count in frame["status"].value_counts().iter_rows():
            by_status[status] = by_status.get(status, 0) + count
        if not (frame["status"] == "ok").any():
            reasons = frame["reason"].value_counts(sort=True).head(5).iter_rows()
            no_ok.append({**_span(shard), "reasons": {r: n for r, n in reasons}})
    provenance = build_provenance(
        input_name=Path(name).name,
        input_kind="catalog",
        preprocessing=fingerprint,
        checkpoints=[c.describe() for c in checkpoints],
        label_sources=label_sources(checkpoints),
        thresholds=thresholds.to_dict(),
        quality_bits={bit.name: int(bit) for bit in QualityBit},
    )
    merge_parts(files, out, fmt, provenance, schema=schema(), column_style=column_style)
    return {
        "format": REPORT_FORMAT,
        "out": str(out),
        "rows_in": rows_in,
        "rows_out": sum(by_status.values()),
        "rows_by_status": dict(sorted(by_status.items())),
        "shards_without_ok_rows": no_ok,
    }


def _span(shard: Shard) -> dict[str, int]:
    return {"shard": shard.index, "start": shard.start, "stop": shard.stop}


def _count_lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _read_report(out: Path) -> dict[str, Any]:
    try:
        return json.loads(report_path(out).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from rrnet.inference.writers import atomic_target

    with atomic_target(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))


def _summary(report: dict[str, Any]) -> str:
    statuses = ", ".join(f"{k} {v}" for k, v in report["rows_by_status"].items())
    return (
        f"rrnet-run: {report['rows_out']}/{report['rows_in']} rows ({statuses}); "
        f"{report['shards_computed']} shards computed, {report['shards_skipped']} skipped, "
        f"{report['shards_retried']} retried, {len(report['failed_shards'])} failed; "
        f"{report['wall_s']:.1f} s, {report['spectra_per_s']} spectra/s"
    )
