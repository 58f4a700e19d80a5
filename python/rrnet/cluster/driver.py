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
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rrnet.cluster.config import (
    BATCH_KINDS,
    ClusterConfigError,
    ClusterSettings,
    check_submission,
    connect,
    job_script,
)
from rrnet.cluster.keeper import Interrupted, Keeper, RunAborted
from rrnet.cluster.plan import (
    PlanError,
    Shard,
    failed_part_name,
    part_name,
    plan_shards,
    write_plan,
)
from rrnet.cluster.task import (
    FAULT_AFTER_WRITE_ENV,
    FAULT_ENV,
    FAULT_RAISE_ENV,
    PART_DEVICE_KEY,
    ShardJob,
    run_shard,
)
from rrnet.inference.columns import catalogue_column_names
from rrnet.inference.options import (
    InferError,
    InferOptions,
    PathLike,
    check_options,
    finished_output_problem,
    load_checked,
    output_record,
)
from rrnet.inference.quality import DEFAULT_THRESHOLDS, QualityBit
from rrnet.inference.streaming import (
    reading_provenance,
    synthetic_domain,
    warn_checkpoint_caveats,
)
from rrnet.io.locate import FIND_FILES, located
from rrnet.preprocess.pipeline import warn_missing_rv_column
from rrnet.utils.atomic import read_json, write_json
from rrnet.utils.faults import is_machine_fault
from rrnet.utils.lock import output_lock
from rrnet.utils.progress import Progress

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 2000
"""Catalogue rows per shard: ~3000 tasks for DR7's 5.6M spectra."""

REPORT_FORMAT = "rrnet-run-report"
FAILED_STATUS = "shard_failed"


class RunError(ValueError):
    """Unusable arguments or an output that belongs to another run (one-line message)."""


class RunStopped(RuntimeError):
    """The run stopped before its end (signal, no workers); finished shards are kept.

    ``exit_status`` is 128 + the signal number for a signal, else 1.
    """

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


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
    from rrnet.preprocess import rv_policy
    from rrnet.preprocess.pipeline import reserved_columns

    name = "<DataFrame>" if isinstance(catalog, pl.DataFrame) else os.path.realpath(catalog)
    try:
        table = catalog if isinstance(catalog, pl.DataFrame) else read_table(catalog)
        table = validate_catalog(
            table,
            rv_column=preprocess.get("rv_column", "rv"),
            require_rv=rv_policy.catalog_rv_required(
                preprocess.get("correct_rv", True), preprocess.get("rv_mode", "catalog")
            ),
            reserved=reserved_columns(),
        )
    except (CatalogError, OSError) as exc:
        raise RunError(str(exc)) from exc
    if table.height == 0:  # as rrnet-infer and rrnet-preprocess (it exited 0, empty output)
        raise RunError("the catalogue has no rows")
    return table, name


def _rows_hash(table: pl.DataFrame) -> str:
    digest = hashlib.sha256()
    for batch in table.iter_slices(65536):
        digest.update(batch.hash_rows().to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _carried(table: pl.DataFrame) -> tuple[str, ...]:
    """Input columns carried to the output, as the single-machine run carries them."""
    from rrnet.inference.streaming import carried_columns
    from rrnet.preprocess.pipeline import HEADER_COLUMNS

    names = dict(table.schema)
    names |= {c: dtype for c, dtype in HEADER_COLUMNS.items() if c not in names}
    return tuple(carried_columns(names))


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
    if out.exists() and (out.is_symlink() or not out.is_file()):
        raise RunError(f"{out} is not a regular file; refusing to overwrite it")
    if out.exists() and read_json(report_path(out)) is None and not (work / "plan.json").is_file():
        raise RunError(f"{out} was not written by rrnet-run (no run record); refusing to overwrite")
    if work.exists() and not (work / "plan.json").is_file():
        raise RunError(f"{work} is not an rrnet-run folder (no plan.json); refusing to remove it")
    shutil.rmtree(work, ignore_errors=True)
    out.unlink(missing_ok=True)
    report_path(out).unlink(missing_ok=True)


@dataclass(frozen=True)
class _Run:
    """A checked cluster run: its input table, checkpoints, shards and files."""

    options: InferOptions
    out: Path
    fmt: str
    table: pl.DataFrame
    name: str
    data_dir: str
    fingerprint: dict[str, Any]
    checkpoints: list[Any]
    shards: list[Shard]

    @property
    def work(self) -> Path:
        return run_dir(self.out)

    @property
    def parts(self) -> Path:
        return self.work / "parts"

    def attempts(self, index: int) -> Path:
        """The file each attempt of shard ``index`` appends a line to."""
        return self.work / "attempts" / f"shard-{index:06d}.txt"


def _checked_run(
    options: InferOptions, catalog: Any, data_dir: PathLike, out: Path, shard_size: int
) -> _Run:
    """Check the options and inputs, load the checkpoints, write (or check) the plan."""
    from rrnet.inference.provenance import FingerprintMismatch
    from rrnet.preprocess.settings import PreprocessSettings

    preprocess = dict(options.preprocess)
    try:
        fmt = check_options(options, out)
        if options.per_star:
            raise InferError("rrnet-run does not write per-star tables (use rrnet-infer)")
        if not Path(data_dir).is_dir():
            raise InferError(f"data directory not found: {data_dir}")
        table, name = _load_catalog(catalog, preprocess)
        table, _ = located(table, data_dir, preprocess)  # the jobs get the found paths
        warn_missing_rv_column(
            table, preprocess.get("rv_column", "rv"), preprocess.get("correct_rv", True)
        )
        settings_fp = {k: v for k, v in preprocess.items() if k in ("correct_rv", "max_iter")}
        fingerprint = PreprocessSettings(**settings_fp).fingerprint()
        checkpoints = load_checked(options, fingerprint, device="cpu")
    except (InferError, FingerprintMismatch) as exc:
        raise RunError(str(exc).strip().splitlines()[0]) from exc
    warn_checkpoint_caveats(checkpoints, options.calibrate)  # as rrnet-infer does
    identity = {
        "catalog": name,
        "rows_hash": _rows_hash(table),
        "data_dir": os.path.realpath(data_dir),
        "fingerprint": fingerprint["hash"],
        "checkpoints": [c.hash for c in checkpoints],
        "shard_size": shard_size,
        "thresholds": options.thresholds.to_dict(),
        "preprocess": preprocess,
        **({} if options.calibrate else {"raw_errors": True}),  # parts of one kind of error
        **options.arithmetic_identity(),
        "columns": catalogue_column_names(),  # parts of older versions lack columns
    }
    _prepare(out, options.resume, options.overwrite)
    shards = plan_shards(table, shard_size)
    try:
        write_plan(run_dir(out) / "plan.json", shards, identity)
    except PlanError as exc:
        raise RunError(str(exc)) from exc
    data = os.path.realpath(data_dir)
    return _Run(options, out, fmt, table, name, data, fingerprint, checkpoints, shards)


def _job_factory(run: _Run, settings: ClusterSettings | None) -> Callable[[Shard], ShardJob]:
    """What a worker needs to compute a shard (its attempts file is started afresh)."""
    options = run.options
    base = ShardJob(
        index=-1,
        start=0,
        catalog=run.table.clear(),
        data_dir=run.data_dir,
        part="",
        attempts="",
        models=tuple(os.path.realpath(p) for p in options.models),
        hashes=tuple(c.hash for c in run.checkpoints),
        carried=_carried(run.table),
        device=options.device,
        batch_size=options.batch_size,
        reader_threads=(settings or ClusterSettings()).threads,
        thresholds=options.thresholds,
        preprocess={k: v for k, v in options.preprocess.items() if k != FIND_FILES},
        fault_marker=os.environ.get(FAULT_ENV) or None,
        fault_raise=_index_hook(FAULT_RAISE_ENV),
        fault_after_write=_index_hook(FAULT_AFTER_WRITE_ENV),
        synthetic_domain=synthetic_domain("catalog", run.name, run.checkpoints),
        calibrate=options.calibrate,
        precision=options.precision,
        compile=options.compile,
    )

    def job(shard: Shard) -> ShardJob:
        attempts = run.attempts(shard.index)
        attempts.unlink(missing_ok=True)
        return replace(
            base,
            index=shard.index,
            start=shard.start,
            catalog=run.table.slice(shard.start, shard.rows),
            part=str(run.parts / part_name(shard.index)),
            attempts=str(attempts),
        )

    return job


@dataclass
class _Outcome:
    """What the shard tasks of this call returned or raised."""

    results: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[int, str] = field(default_factory=dict)
    written_despite_failure: list[int] = field(default_factory=list)
    """Shards whose task failed after writing its whole part (a worker lost late)."""
    workers: int = 0


def _compute_shards(
    run: _Run,
    todo: list[Shard],
    client: Any,
    settings: ClusterSettings | None,
    retries: int,
    shards_per_worker: int,
) -> _Outcome:
    """Run the shards of ``todo`` on the cluster; failed shards get a failed part file."""
    from rrnet.inference.writers import write_part

    outcome = _Outcome()
    settings = settings or ClusterSettings()
    job = _job_factory(run, settings)
    progress = Progress(
        run.table.height,
        initial=run.table.height - sum(s.rows for s in todo),
        enabled=run.options.progress,
        prefix="rrnet-run",
    )
    progress.note = f", {len(run.shards) - len(todo)}/{len(run.shards)} shards"
    loop = _Loop(todo, job, retries, shards_per_worker, outcome, progress, len(run.shards))
    if todo and client is not None:
        outcome.workers = _execute(client, Keeper(client, settings), loop)
    elif todo:
        keeper = None
        try:
            with connect(settings) as own:
                keeper = Keeper(own, settings)
                outcome.workers = _execute(own, keeper, loop)
        finally:
            if keeper is not None:
                keeper.cancel_all()
    progress.close()
    _keep_written_parts(run, outcome)
    carried = _carried(run.table)
    for index, error in outcome.failures.items():
        failed = _failed_frame(run.shards[index], run.table, error, carried)
        write_part(failed, run.parts / failed_part_name(index))
    return outcome


def _keep_written_parts(run: _Run, outcome: _Outcome) -> None:
    """A shard whose part was written (atomically: whole) is done, however its task ended.

    Under memory pressure the nanny may kill a worker after the part's rename but before
    the result reaches the driver; the rows are complete and a resume would skip them, so
    they are not reported as failed."""
    for index in sorted(outcome.failures):
        if _readable(run.parts / part_name(index)):
            log.warning(
                "shard %d: its rows were written before the failure (%s); kept",
                index,
                outcome.failures.pop(index),
            )
            outcome.written_despite_failure.append(index)


def _index_hook(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _run_statistics(
    run: _Run, todo: list[Shard], done: set[int], outcome: _Outcome, wall: float
) -> dict[str, Any]:
    """The report's counts and timings of this call (shards, attempts, throughput)."""
    results, failures = outcome.results, outcome.failures
    computed = sum(r["rows"] for r in results)
    computed += sum(run.shards[i].rows for i in outcome.written_despite_failure)
    attempts = {s.index: _count_lines(run.attempts(s.index)) for s in todo}
    return {
        "complete": not failures,
        "shards": len(run.shards),
        "shards_computed": len(results) + len(outcome.written_despite_failure),
        "shards_skipped": len(done),
        "shards_retried": sum(1 for n in attempts.values() if n > 1),
        "attempts": sum(attempts.values()),
        "failed_shards": [{**_span(run.shards[i]), "error": failures[i]} for i in sorted(failures)],
        "workers": outcome.workers,
        "wall_s": round(wall, 3),
        "rows_computed": computed,
        "spectra_per_s": round(computed / wall, 3) if wall > 0 else None,
        "task_seconds_mean": _mean([r["seconds"] for r in results]),
        "model_load_seconds_max": max((r["model_seconds"] for r in results), default=None),
    }


def run_cluster(
    models: InferOptions | PathLike | Sequence[PathLike],
    catalog: PathLike | pl.DataFrame,
    data_dir: PathLike,
    out: PathLike,
    *,
    client: Any = None,
    settings: ClusterSettings | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    retries: int = 2,
    shards_per_worker: int = 2,
    **overrides: Any,
) -> dict[str, Any]:
    """Write the catalogue of ``catalog`` to ``out`` using a Dask cluster; return the report.

    ``models`` is an :class:`~rrnet.inference.options.InferOptions` or checkpoint
    paths; ``overrides`` are its fields (``per_star`` is not supported). Give a
    connected ``distributed.Client`` as ``client``, or ``settings`` to start (and
    stop) a cluster; neither starts a two-process LocalCluster. The output equals
    :func:`rrnet.inference.infer` on the same inputs, row for row.
    """
    began = time.perf_counter()
    options = InferOptions.of(models, **overrides)
    out = Path(out)
    if shard_size < 1 or retries < 0 or shards_per_worker < 1:
        raise RunError("--shard-size and shards per worker must be positive, retries >= 0")
    with output_lock(out, directory=False, what="catalogue"):
        return _run_locked(
            options, catalog, data_dir, out, client, settings, shard_size, retries,
            shards_per_worker, began,
        )  # fmt: skip


def _run_locked(
    options: InferOptions,
    catalog: PathLike | pl.DataFrame,
    data_dir: PathLike,
    out: Path,
    client: Any,
    settings: ClusterSettings | None,
    shard_size: int,
    retries: int,
    shards_per_worker: int,
    began: float,
) -> dict[str, Any]:
    """The body of :func:`run_cluster`, run while holding the output's lock."""
    previous = read_json(report_path(out))
    finished = options.resume and out.exists() and isinstance(previous, dict)
    finished = finished and bool(previous.get("complete"))
    if client is None and settings is not None and settings.kind in BATCH_KINDS and not finished:
        try:  # a job the scheduler refuses ends the run now, before any file is written
            check_submission(settings.kind, job_script(settings))
        except ClusterConfigError as exc:
            raise RunError(str(exc)) from exc
    run = _checked_run(options, catalog, data_dir, out, shard_size)
    if finished:
        if problem := finished_output_problem(out, previous, output_record(options, run.fmt)):
            raise RunError(problem)  # it kept the old format and said done
        return _rerun_report(run, previous, time.perf_counter() - began)
    done = {s.index for s in run.shards if _readable(run.parts / part_name(s.index))}
    todo = [s for s in run.shards if s.index not in done]
    try:
        with _interruptible(client):
            outcome = _compute_shards(run, todo, client, settings, retries, shards_per_worker)
    except Interrupted as exc:
        raise RunStopped(_stopped(run, f"interrupted by {exc}"), 128 + exc.signum) from None
    except RunAborted as exc:
        raise RunStopped(_stopped(run, str(exc)), 1) from None
    report = _merge_and_report(run)
    report |= _run_statistics(run, todo, done, outcome, time.perf_counter() - began)
    write_json(report_path(out), report)
    if not outcome.failures:
        shutil.rmtree(run.parts, ignore_errors=True)
        shutil.rmtree(run.work / "attempts", ignore_errors=True)
    if options.progress:
        print(_summary(report), file=sys.stderr, flush=True)
    return report


def _interruptible(client: Any) -> Any:
    """SIGINT/SIGTERM raise :class:`Interrupted` while the driver owns the cluster."""
    from rrnet.cluster.keeper import interruptible

    return interruptible() if client is None else nullcontext()


def _stopped(run: _Run, cause: str) -> str:
    """The one line of a run that stopped early: why, what is kept, how to go on."""
    kept = sum(1 for s in run.shards if _readable(run.parts / part_name(s.index)))
    return (
        f"{cause}; {kept}/{len(run.shards)} shards finished are kept in {run.parts}: "
        "rerun the same command with --resume to continue"
    )


def _rerun_report(run: _Run, previous: dict[str, Any], wall: float) -> dict[str, Any]:
    """A finished run resumed again: nothing computed, the report rewritten to say so."""
    report = {
        **previous,
        "shards_computed": 0,
        "shards_skipped": len(run.shards),
        "shards_retried": 0,
        "attempts": 0,
        "workers": 0,
        "wall_s": round(wall, 3),
        "rows_computed": 0,
        "spectra_per_s": None,
        "task_seconds_mean": None,
        "model_load_seconds_max": None,
        "rerun": True,
    }
    write_json(report_path(run.out), report)
    if run.options.progress:
        print(_summary(report), file=sys.stderr, flush=True)
    return report


@dataclass
class _Loop:
    """The shards of one call and what the driver loop needs to run them."""

    todo: list[Shard]
    job: Callable[[Shard], ShardJob]
    retries: int
    shards_per_worker: int
    outcome: _Outcome
    progress: Progress
    shards: int


POLL_SECONDS = 1.0
"""How often the driver loop looks at the workers while waiting for shards."""


def _execute(client: Any, keeper: Keeper, loop: _Loop) -> int:
    """Run ``loop.todo`` with a bounded number of futures in flight; return the most workers.

    The loop wakes every ``POLL_SECONDS`` so that the keeper can replace lost worker
    jobs and stop the run when no worker can come (never waiting forever).
    """
    from distributed import wait

    pending = iter(loop.todo)
    running: dict[Any, Shard] = {}
    seen, alive = 1, 0
    finished = loop.shards - len(loop.todo)

    def fill() -> None:
        nonlocal seen, alive
        alive = keeper.alive()
        seen = max(seen, alive)
        while len(running) < seen * loop.shards_per_worker:
            shard = next(pending, None)
            if shard is None:
                return
            future = client.submit(
                run_shard,
                loop.job(shard),
                key=f"rrnet-shard-{shard.index:06d}-{time.time_ns()}",
                retries=loop.retries,
                pure=False,
            )
            running[future] = shard

    fill()
    while running:
        with suppress(TimeoutError):
            wait(list(running), timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
        for future in [f for f in running if f.done()]:
            if not _collect(future, running[future], loop.outcome):
                continue  # its result was on a lost worker: Dask computes it again
            shard = running.pop(future)
            future.release()
            finished += 1
            loop.progress.note = _progress_note(finished, loop, alive)
            loop.progress.update(shard.rows)
        keeper.check()
        fill()
        loop.progress.note = _progress_note(finished, loop, alive)
        loop.progress.tick()  # a line every interval even while no shard finishes
    return seen


def _progress_note(finished: int, loop: _Loop, workers: int) -> str:
    """Shards done (and how many of them failed: they count as done) and workers."""
    failed = len(loop.outcome.failures)
    failed_text = f" ({failed} failed)" if failed else ""
    waiting = " (none yet: jobs pending or starting)" if workers == 0 else ""
    return (
        f", {finished}/{loop.shards} shards{failed_text}, "
        f"{workers} worker{'s' * (workers != 1)}{waiting}"
    )


def _collect(future: Any, shard: Shard, outcome: _Outcome) -> bool:
    """Record a finished shard's result or error (a task failure is reported, not fatal).

    False when the result cannot be fetched in time: the worker that held it is gone
    and Dask recomputes the task. Never blocking here keeps the keeper running.
    """
    try:
        outcome.results.append(future.result(timeout=5 * POLL_SECONDS))
    except TimeoutError:
        return False
    except Exception as exc:
        outcome.failures[shard.index] = _failure_text(exc)
        if is_machine_fault(exc):  # a full disk fails every shard: stop, resumable
            raise RunAborted(
                f"shard {shard.index}: {outcome.failures[shard.index]} (a fault of the "
                "machine, not of the data)"
            ) from exc
        log.warning("shard %d failed: %s", shard.index, outcome.failures[shard.index])
    return True


KILLED_WORKER_TEXT = (
    "KilledWorker: every worker that ran it died (most often memory: a worker over its "
    "--memory is restarted; raise --memory or lower --shard-size; --verbose or the job "
    "logs say why)"
)
"""A shard's failure when Dask gave up on it: its own text is ~400 characters of advice
on Dask's logs, and did not say memory (found by a user at --memory 600MiB)."""


def _failure_text(exc: BaseException) -> str:
    """One line: the error's type and its first line."""
    if type(exc).__name__ == "KilledWorker":
        return KILLED_WORKER_TEXT
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _merge_and_report(run: _Run) -> dict[str, Any]:
    """Merge parts (real, else failed) in shard order into ``out``; counts per status."""
    from rrnet.inference.columns import schema
    from rrnet.inference.models import label_sources
    from rrnet.inference.provenance import build_provenance
    from rrnet.inference.writers import merge_parts

    files, computed = [], []  # computed: parts a worker wrote (its models ran)
    by_status: dict[str, int] = {}
    no_ok = []
    for shard in run.shards:
        path = run.parts / part_name(shard.index)
        if path.exists():
            computed.append(path)
        else:
            path = run.parts / failed_part_name(shard.index)
        files.append(path)
        frame = pl.read_parquet(path, columns=["status", "reason"])
        for status, count in frame["status"].value_counts().iter_rows():
            by_status[status] = by_status.get(status, 0) + count
        if not (frame["status"] == "ok").any():
            reasons = frame["reason"].value_counts(sort=True).head(5).iter_rows()
            no_ok.append({**_span(shard), "reasons": {r: n for r, n in reasons}})
    from rrnet.models.checkpoint import software_versions

    provenance = build_provenance(
        input_name=os.path.abspath(run.name),
        input_kind="catalog",
        preprocessing=run.fingerprint,
        checkpoints=[c.describe(calibrate=run.options.calibrate) for c in run.checkpoints],
        label_sources=label_sources(run.checkpoints),
        thresholds=run.options.thresholds.to_dict(),
        quality_bits={bit.name: int(bit) for bit in QualityBit},
        environment={
            "versions": software_versions() | {"polars": pl.__version__},
            "device": _devices(computed, run.options.device),
            "device_requested": run.options.device,
            "precision": run.options.precision,
            "compile": run.options.compile,
        },
        reading=reading_provenance(run.data_dir, dict(run.options.preprocess)),
    )
    try:
        merge_parts(
            files,
            run.out,
            run.fmt,
            provenance,
            schema=schema(),
            column_style=run.options.column_style,
        )
    except ValueError as exc:  # e.g. a carried column clashing with a styled name
        raise RunError(str(exc)) from exc
    return {
        "format": REPORT_FORMAT,
        "out": str(run.out),
        "output": output_record(run.options, run.fmt),
        "rows_in": run.table.height,
        "rows_out": sum(by_status.values()),
        "rows_by_status": dict(sorted(by_status.items())),
        "shards_without_ok_rows": no_ok,
    }


def _devices(parts: list[Path], asked: str) -> str:
    """The devices the workers ran the models on (``auto`` resolves per worker), from the
    parts' metadata; ``asked`` for a part written before rrnet recorded it."""
    seen = {pl.read_parquet_metadata(path).get(PART_DEVICE_KEY, asked) for path in parts}
    return ", ".join(sorted(seen)) or asked


def _span(shard: Shard) -> dict[str, int]:
    return {"shard": shard.index, "start": shard.start, "stop": shard.stop}


def _count_lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _summary(report: dict[str, Any]) -> str:
    statuses = ", ".join(f"{k} {v}" for k, v in report["rows_by_status"].items())
    rate = report["spectra_per_s"]  # None when nothing was computed (a finished rerun)
    return (
        f"rrnet-run: {report['rows_out']}/{report['rows_in']} rows ({statuses}); "
        f"{report['shards_computed']} shards computed, {report['shards_skipped']} skipped, "
        f"{report['shards_retried']} retried, {len(report['failed_shards'])} failed; "
        f"{report['wall_s']:.1f} s" + (f", {rate} spectra/s" if rate is not None else "")
    )
