"""From a catalogue of LAMOST spectra to preprocessed fluxes: the production pipeline.

The catalogue is cut into consecutive batches of catalogue rows (one batch = one
store shard). Within a batch, rows are grouped by file, so each file is opened
and decompressed once however many of its spectra the batch names. By default
files are read in Rust (:mod:`rrnet.io.lamost_fast`: in-memory libdeflate, one
rayon task per file on ``workers`` threads, fitsio for what it does not support)
in groups of :data:`FILES_PER_READ`; ``reader="fitsio"`` reads each file with
fitsio on ``workers`` threads. Either way the Rust kernels (GIL released) run
meanwhile on a compute thread, chunk by chunk, while the calling thread only
collects arms and results; :func:`preprocess_catalog` writes each shard on a
writer thread while the next is computed. At most a fixed number of files and
chunks is in flight, so memory stays flat however long the catalogue.

Every catalogue row yields exactly one manifest row with a ``status`` and, when
not ``ok``, a ``reason``. Nothing in a bad row stops the batch.

:func:`iter_preprocessed` streams batches (no files written);
:func:`preprocess_catalog` writes a resumable store (see :mod:`rrnet.store`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rrnet.grid import N_PIX
from rrnet.io.catalog import read_catalog, validate_catalog, write_table
from rrnet.io.lamost import DEFAULT_MAX_INFLATED, is_environment_fault
from rrnet.io.lamost_fast import READERS, FileRead, Reader, read_many
from rrnet.preprocess import Status, normalize_detailed, reason, resample_batch, rv_policy
from rrnet.preprocess.kernels import range_detail
from rrnet.preprocess.results import NormalizeResult, ResampleResult
from rrnet.preprocess.settings import PreprocessSettings
from rrnet.preprocess.shard_files import ShardFiles
from rrnet.store import (
    KINDS,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    Store,
    StoreError,
    check_store_dtype,
    open_store,
    read_store_info,
    shard_name,
    storage_array,
)
from rrnet.utils.atomic import TEMP_GLOB, atomic_path
from rrnet.utils.lock import LOCK_NAME, output_lock
from rrnet.utils.progress import Progress

log = logging.getLogger(__name__)

KERNEL_STATUS_NAMES: dict[Status, str] = {
    Status.OK: "ok",
    Status.NON_FINITE_FLUX: "bad_flux",
    Status.DEGENERATE_ARM: "degenerate_arm",
    Status.GRID_OUT_OF_RANGE: "grid_out_of_range",
    Status.BAD_WAVELENGTH: "bad_wavelength",
    Status.TOO_FEW_POINTS: "too_few_points",
    Status.LENGTH_MISMATCH: "bad_columns",
    Status.NONPOSITIVE_CONTINUUM: "nonpositive_continuum",
}
"""Manifest status for each kernel status code."""

COMPUTE_CHUNK = 256
"""Spectra handed to the Rust kernels per call (bounds the raw arrays held at once)."""

CHUNKS_IN_FLIGHT = 2
"""Kernel chunks a batch has out on the compute thread before it waits for the oldest."""

PREFETCH_PER_WORKER = 4
"""Files read ahead per reader thread (fitsio reader)."""

FILES_PER_READ = 32
"""Files per call of the Rust reader (one rayon task each)."""

RUST_READ_CALLS = 2
"""Calls of the Rust reader running at once (one more group waits in line)."""

MANIFEST_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "row": pl.Int64,
    "status": pl.Utf8,
    "reason": pl.Utf8,
    "snr_blue": pl.Float64,
    "snr_red": pl.Float64,
    "snr_blue_ivar": pl.Float64,
    "snr_red_ivar": pl.Float64,
    "n_outliers": pl.Int64,
    "max_outlier_run": pl.Int64,
    "continuum_iterations": pl.Int64,
    "continuum_iterations_blue": pl.Int64,
    "continuum_iterations_red": pl.Int64,
    "cap_hit": pl.Boolean,
    "rv_measured": pl.Float64,
    "rv_measured_err": pl.Float64,
    "rv_measured_status": pl.Utf8,
    "rv_template_teff": pl.Float64,
    "rv_template_logg": pl.Float64,
    "rv_template_feh": pl.Float64,
    "rv_used": pl.Float64,
    "rv_used_source": pl.Utf8,
    "rv_disagree": pl.Boolean,
    "quality_ok": pl.Boolean,
    "quality_reason": pl.Utf8,
    "shard": pl.Int64,
    "offset": pl.Int64,
}
"""Columns the pipeline appends to the catalogue's (``docs/store.md`` explains each)."""

HEADER_COLUMNS: dict[str, pl.DataType | type[pl.DataType]] = {
    "obsid": pl.Int64,
    "ra": pl.Float64,
    "dec": pl.Float64,
    "desig": pl.Utf8,
}
"""Taken from the FITS primary header when the catalogue does not have them."""

NOTES_KEY = "_notes"
"""Key of a reader result's header dict holding the unconvertible-value notes per HDU."""


@dataclass(frozen=True)
class QualityCuts:
    """The paper's selection, recorded in ``quality_ok`` and never applied destructively.

    A row passes if it preprocessed (status ``ok``), ``min(snr_blue, snr_red) >=
    min_snr``, ``n_outliers <= max_outliers`` and ``max_outlier_run <=
    max_outlier_run``. ``snr_*`` follow :func:`snr_rule`: the header SNR of the
    named extensions, the FLUX/IVAR estimate where a header has no finite one, and
    null (failing the cut) when the arm's IVAR has no usable pixel.
    """

    min_snr: float = 10.0
    max_outliers: int = 100
    max_outlier_run: int = 30


@dataclass(frozen=True)
class PreprocessedBatch:
    """Consecutive catalogue rows, preprocessed.

    Attributes
    ----------
    index : int
        Batch number (catalogue rows ``index * batch_size`` onwards).
    rows : int64 [n]
        Catalogue indices (0-based) of the rows.
    manifest : pl.DataFrame
        The catalogue rows plus the pipeline columns (:data:`MANIFEST_SCHEMA`).
    flux : float32 [n, 7200] or None
        Continuum-normalised flux, all NaN where status is not ``ok``; None (and
        ``resampled`` None) when the rows went to ``files`` as they were finished.
    resampled : float32 [n, 7200] or None
        Flux on the grid before normalisation (NaN where resampling failed);
        None unless requested.
    fallbacks : list of (path, reason)
        Files the Rust reader left to fitsio, and why.
    files : ShardFiles or None
        The shard's flux files, already written while it was computed (by
        :func:`preprocess_catalog` for float32 stores; to be committed), or None.
    """

    index: int
    rows: np.ndarray
    manifest: pl.DataFrame
    flux: np.ndarray | None
    resampled: np.ndarray | None
    fallbacks: list[tuple[str, str]] = field(default_factory=list)
    files: ShardFiles | None = field(default=None, repr=False, compare=False)


# --------------------------------------------------------------------------- reading


def _plain(read: FileRead) -> tuple[tuple[str, str] | None, dict, dict, str | None]:
    """One file's outcome as plain values: ``(file_error, header, arms, fallback)``.

    ``file_error`` is ``(status, reason)`` or None, ``arms`` maps extname to
    ``(loglam, flux, ivar, snr)`` or to ``(status, reason)``, ``fallback`` is
    why fitsio read the file (None: it was not a fallback).
    """
    if read.error is not None:
        return (read.error.status, str(read.error)), {}, {}, read.fallback
    info = read.info
    assert info is not None  # a read without an error has the file's information
    header = {"obsid": info.obsid, "ra": info.ra, "dec": info.dec, "desig": info.desig}
    notes: dict[str, tuple[str, ...]] = {"": info.notes}
    out: dict[str, tuple] = {}
    for extname, arm in read.arms.items():
        if isinstance(arm, Exception):
            out[extname] = (arm.status, str(arm))
        else:
            out[extname] = (arm.loglam, arm.flux, arm.ivar, arm.snr)
            notes[extname] = arm.notes
    return None, {**header, NOTES_KEY: notes}, out, read.fallback


def _read_files(
    files: list[tuple[str, list[str]]], reader: Reader, max_inflated: int, threads: int | None
) -> list[tuple]:
    """Reader task: read the named arms of several files (see :func:`_plain`)."""
    try:
        reads = read_many(
            files, reader=reader, max_inflated=max_inflated, threads=threads, masks=False
        )
    except Exception as exc:  # an unforeseen reader failure must not stop the batch
        if is_environment_fault(exc):  # the machine (disk, TMPDIR, memory): stop the run
            raise
        why = f"unexpected error reading files: {exc!r}"
        return [(("bad_fits", why), {}, {}, None) for _ in files]
    return [_plain(read) for read in reads]


class _Immediate:
    """A finished Future look-alike for reading in this process (workers=0)."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


@contextmanager
def _reader(workers: int, name: str = "rrnet-read") -> Iterator[Callable[..., Any]]:
    """A ``submit(fn, *args)`` running on ``workers`` threads (0: synchronously).

    Threads suffice: decompression (zlib) and file reads release the GIL, and so
    do the Rust kernels running meanwhile in the calling thread. No process is
    forked, so the kernels' rayon pool is never copied into a child.
    """
    if workers <= 0:
        yield lambda fn, *args: _Immediate(fn(*args))
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        try:
            yield pool.submit
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _ordered_prefetch(
    submit: Callable[..., Future | _Immediate],
    read: Callable[[list], list],
    jobs: Iterable[Any],
    depth: int,
    group: int,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(job, result)`` in job order; jobs are read ``group`` at a time
    (one ``read(args_list)`` call each) with at most ``depth`` groups in flight.

    A file job whose path and arms were asked for by one of the last
    ``RECENT_FILES`` reads is not read again: it gets that read's result."""
    pending: deque = deque()
    asked: dict[str, set[str]] = {}  # path -> arms, of recent submitted reads
    done: dict[str, tuple] = {}  # path -> result, of recent finished reads
    reuse: set[int] = set()  # id() of jobs answered from `done`

    def results(chunk: list, future: Future | _Immediate) -> Iterator[tuple[Any, Any]]:
        values = iter(future.result())
        for job in chunk:
            if job.args is None:
                yield job, None
            elif id(job) in reuse:
                reuse.discard(id(job))
                yield job, (*done[job.args[0]][:3], None)  # fallback already reported
            else:
                result = next(values)
                done.pop(job.args[0], None)  # re-inserted: most recent last
                done[job.args[0]] = result
                _trim(done, 2 * RECENT_FILES)
                yield job, result

    def flush(chunk: list) -> None:
        to_read = []
        for job in chunk:
            if job.args is None:
                continue
            path, extnames = job.args
            if set(extnames) <= asked.get(path, set()):
                reuse.add(id(job))
                continue
            asked.pop(path, None)  # re-inserted: most recent last
            asked[path] = set(extnames)
            _trim(asked, RECENT_FILES)
            to_read.append(job.args)
        pending.append((chunk, submit(read, to_read) if to_read else _Immediate([])))

    chunk: list = []
    for job in jobs:
        chunk.append(job)
        if len(chunk) < group:
            continue
        flush(chunk)
        chunk = []
        if len(pending) >= depth:
            yield from results(*pending.popleft())
    if chunk:
        flush(chunk)
    while pending:
        yield from results(*pending.popleft())


RECENT_FILES = 64
"""Reads remembered for reuse by :func:`_ordered_prefetch` (files straddling batches)."""


def _trim(recent: dict, size: int) -> None:
    """Drop the oldest entries beyond ``size`` (dicts keep insertion order)."""
    while len(recent) > size:
        del recent[next(iter(recent))]


# --------------------------------------------------------------------------- planning


@dataclass
class _BatchPlan:
    index: int
    start: int
    stop: int
    early: dict[int, tuple[str, str]]
    """Rows that fail before any file is read: row -> (status, reason)."""


@dataclass
class _Job:
    """One file of one batch (args = (path, extnames)), or the end marker of a batch."""

    plan: _BatchPlan
    args: tuple | None
    rows: list[tuple[int, str, str, float]] = field(default_factory=list)


def _plan_batch(
    catalog: pl.DataFrame,
    index: int,
    batch_size: int,
    data_dir: Path,
    rv_column: str,
    correct_rv: bool,
    allow_outside: bool = False,
    rv_mode: str = "catalog",
) -> list[_Job]:
    start = index * batch_size
    stop = min(start + batch_size, catalog.height)
    part = catalog.slice(start, stop - start)
    plan = _BatchPlan(index, start, stop, {})
    by_file: dict[str, _Job] = {}
    paths: dict[str, str | None] = {}
    for offset, (filename, blue, red, rv) in enumerate(
        zip(
            part.get_column("filename").to_list(),
            part.get_column("extname_blue").to_list(),
            part.get_column("extname_red").to_list(),
            part.get_column(rv_column).to_list()
            if correct_rv and rv_column in part.columns
            else [None] * part.height,
            strict=True,
        )
    ):
        row = start + offset
        if filename is None:
            plan.early[row] = ("missing_file", "filename is empty")
            continue
        if blue is None or red is None:
            which = "extname_blue" if blue is None else "extname_red"
            plan.early[row] = ("missing_extension", f"{which} is empty")
            continue
        if correct_rv and rv_mode == "catalog" and not rv_policy.usable(rv):
            why = (
                "is empty or not a number"
                if rv is None
                else f"is not a usable velocity: {rv!r} km/s"
            )
            plan.early[row] = ("bad_rv", f"{rv_column} {why}")
            continue
        if filename not in paths:  # a file's rows share one path check
            paths[filename] = data_path(data_dir, filename, allow_outside)
        path = paths[filename]
        if path is None:
            plan.early[row] = (
                "outside_data_dir",
                f"{filename!r} lies outside the data directory (allow_outside_data_dir to read it)",
            )
            continue
        job = by_file.setdefault(path, _Job(plan, (path, [])))
        assert job.args is not None  # a file job (the batch's end marker has none)
        extnames = job.args[1]
        extnames.extend(e for e in dict.fromkeys((blue, red)) if e not in extnames)
        rv = (float(rv) if rv is not None else math.nan) if correct_rv else 0.0
        job.rows.append((row, blue, red, rv))
    if by_file and stop < catalog.height:
        _add_lookahead(catalog, stop, data_dir, by_file)
    return [*by_file.values(), _Job(plan, None)]


LOOKAHEAD_ROWS = 256
"""Rows of the next batch checked for the file the batch ends with."""


def _add_lookahead(catalog: pl.DataFrame, stop: int, data_dir: Path, by_file: dict) -> None:
    """Ask the batch's last file also for the arms the next batch's leading rows
    want from it, so a file straddling two batches is read once (see
    :func:`_ordered_prefetch`)."""
    last_name = catalog.get_column("filename")[stop - 1]
    last = None if last_name is None else data_path(data_dir, last_name, True)
    if last not in by_file:
        return
    extnames = by_file[last].args[1]
    nxt = catalog.slice(stop, LOOKAHEAD_ROWS).select("filename", "extname_blue", "extname_red")
    for filename, blue, red in nxt.iter_rows():
        if filename is None or data_path(data_dir, filename, True) != last:
            break
        extnames.extend(e for e in (blue, red) if e is not None and e not in extnames)


def data_path(data_dir: Path, filename: str, allow_outside: bool = False) -> str | None:
    """The file a catalogue row names, or None when it lies outside ``data_dir``.

    A shared pipeline reads only below its data directory: an absolute name or
    one climbing out with ``..`` is refused (status ``outside_data_dir``) unless
    ``allow_outside``. The test is on the names (symbolic links inside the data
    directory are followed as usual).
    """
    path = os.path.normpath(os.path.join(data_dir, filename))
    if allow_outside:
        return path
    root = os.path.normpath(os.path.abspath(data_dir))
    inside = os.path.normpath(os.path.abspath(path))
    if inside != root and inside.startswith(root.rstrip(os.sep) + os.sep):
        return path
    return None


# --------------------------------------------------------------------------- computing


_FLOAT_COLUMNS = (
    "snr_blue", "snr_red", "snr_blue_ivar", "snr_red_ivar", "rv_measured", "rv_measured_err",
    "rv_template_teff", "rv_template_logg", "rv_template_feh", "rv_used",
)  # fmt: skip
"""Float manifest columns, held as float64 arrays while a batch is built (NaN: null)."""

_NORM_COLUMNS = (
    "n_outliers", "max_outlier_run", "continuum_iterations", "continuum_iterations_blue",
    "continuum_iterations_red",
)  # fmt: skip
"""Integer columns set for every normalised row (null elsewhere)."""

_TEXT_COLUMNS = ("status", "reason", "rv_measured_status", "rv_used_source")


def _finite(values: np.ndarray) -> np.ndarray:
    """float64 copy with every non-finite value NaN (NaN stands for null)."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values, np.nan)


class _ArrayPool:
    """Float32 ``[n, 7200]`` batch arrays for reuse, handed back once a shard is written.

    A fresh array costs its first writes a page fault and the kernel's zeroing of
    every page (measured: ~8% of the pipeline's CPU); a shard's arrays are free
    again once the writer has them on disk. Holds at most ``keep`` arrays.
    """

    def __init__(self, keep: int = 4) -> None:
        self._free: list[np.ndarray] = []
        self._keep = keep
        self._lock = threading.Lock()

    def take(self, n: int) -> np.ndarray:
        """An array of ``n`` rows (content undefined)."""
        with self._lock:
            for i, array in enumerate(self._free):
                if array.shape[0] == n:
                    return self._free.pop(i)
        return np.empty((n, N_PIX), dtype=np.float32)

    def give(self, *arrays: np.ndarray | None) -> None:
        """Arrays nothing refers to any more (None is skipped)."""
        with self._lock:
            self._free.extend(a for a in arrays if a is not None)
            del self._free[: max(0, len(self._free) - self._keep)]


class _ChunkSet:
    """One chunk's kernel outputs (``norm``, ``res``: float32 ``[rows, 7200]``) and the
    file writes still reading them."""

    def __init__(self, rows: int) -> None:
        self.norm = np.empty((rows, N_PIX), dtype=np.float32)
        self.res = np.empty((rows, N_PIX), dtype=np.float32)
        self.recorded = False
        self.writes: list[Future] = []

    def free(self) -> bool:
        return self.recorded and all(f.done() for f in self.writes)

    def release(self, writes: list[Future]) -> None:
        """The chunk is recorded; its buffers are free once ``writes`` are done."""
        self.writes, self.recorded = writes, True


class _ChunkBuffers:
    """Chunk-sized kernel outputs for batches whose rows go to :class:`ShardFiles` as
    they are finished: a few sets reused for the whole run, so the kernels write
    into pages touched once per run instead of fresh shard-sized arrays (whose
    first-touch zeroing was ~6 % of a one-shard run's CPU, perf)."""

    def __init__(self, rows: int, keep: int = CHUNKS_IN_FLIGHT + 2) -> None:
        self._rows = rows
        self._keep = keep
        self._sets: deque[_ChunkSet] = deque()

    def take(self) -> _ChunkSet:
        """A free set (waiting for the oldest recorded set's writes if all are busy)."""
        for i, chunk in enumerate(self._sets):
            if chunk.free():
                del self._sets[i]
                return self._use(chunk)
        if len(self._sets) < self._keep:
            return self._use(_ChunkSet(self._rows))
        oldest = next(c for c in self._sets if c.recorded)  # at most CHUNKS_IN_FLIGHT are not
        wait(oldest.writes)
        self._sets.remove(oldest)
        return self._use(oldest)

    def _use(self, chunk: _ChunkSet) -> _ChunkSet:
        chunk.recorded, chunk.writes = False, []
        self._sets.append(chunk)
        return chunk


class _BatchBuilder:
    """Collects the arms of one batch, runs the kernels in chunks, assembles the result.

    The manifest columns are numpy arrays filled a chunk at a time (float NaN and a
    validity mask stand for null); only failed rows are visited one by one.
    """

    def __init__(
        self,
        plan: _BatchPlan,
        settings: PreprocessSettings,
        keep_resampled: bool,
        rv_errors: tuple[str, np.ndarray] | None = None,
        submit: Callable[..., Future | _Immediate] = lambda fn, *args: _Immediate(fn(*args)),
        arrays: _ArrayPool | None = None,
        files: ShardFiles | None = None,
        buffers: _ChunkBuffers | None = None,
    ):
        n = plan.stop - plan.start
        if files is not None and buffers is None:
            raise ValueError("rows written to files as they are finished need chunk buffers")
        self.files = files
        """Where finished rows are written as they come (None: the caller writes the batch)."""
        self.buffers = buffers if files is not None else None
        """Chunk outputs reused across chunks (only with ``files``); None: shard arrays."""
        self.keep_resampled = keep_resampled
        self._submit = submit
        self._inflight: deque[Future | _Immediate] = deque()
        self.plan = plan
        self.settings = settings
        self.rv_errors = rv_errors
        """``(rv_mode, catalogue RV error of every catalogue row)``; None: no RV decision."""
        # Written by the compute thread row by row (first touch there); the rows no
        # kernel wrote are set to NaN by finish().
        arrays = arrays or _ArrayPool(0)
        compact = self.buffers is not None
        self.normalized = None if compact else arrays.take(n)
        self.resampled = arrays.take(n) if keep_resampled and not compact else None
        self.was_resampled = np.zeros(n, dtype=bool)
        self.floats = {name: np.full(n, np.nan) for name in _FLOAT_COLUMNS}
        self.ints = {name: np.zeros(n, dtype=np.int64) for name in _NORM_COLUMNS}
        self.cap_hit = np.zeros(n, dtype=bool)
        self.normed = np.zeros(n, dtype=bool)
        """Rows the normalisation ran on (their integer columns and cap_hit are set)."""
        self.disagree = np.zeros(n, dtype=bool)
        self.decided = np.zeros(n, dtype=bool)
        """Rows whose RV was decided (their rv_disagree is set)."""
        self.text = {name: np.full(n, None, dtype=object) for name in _TEXT_COLUMNS}
        self.text["status"][:] = "ok"
        self.headers: list[dict] = []
        """Header values of each file added, then an all-null one for rows without a file."""
        self.header_of = np.full(n, -1, dtype=np.int64)
        self._pending: list[tuple[int, tuple, tuple, float]] = []
        self.fallbacks: list[tuple[str, str]] = []
        for row, (status, why) in plan.early.items():
            self._fail(row - plan.start, status, why)

    def _fail(self, pos: int, status: str, why: str) -> None:
        self.text["status"][pos] = status
        self.text["reason"][pos] = why

    def add(self, job: _Job, result: tuple) -> None:
        file_error, header, arms, fallback = result
        assert job.args is not None  # a file job (the batch's end marker has none)
        if fallback is not None:
            self.fallbacks.append((job.args[0], fallback))
            log.warning("read %s with fitsio: %s", job.args[0], fallback)
        notes = header.get(NOTES_KEY, {})
        self.headers.append(header)
        file_index = len(self.headers) - 1
        snr_blue, snr_red = self.floats["snr_blue"], self.floats["snr_red"]
        for row, blue, red, rv in job.rows:
            pos = row - self.plan.start
            self.header_of[pos] = file_index
            if notes:
                why = [n for key in ("", blue, red) for n in notes.get(key, ())]
                if why:  # unconvertible header values: null, and said so on the row
                    self.text["reason"][pos] = "; ".join(why)
            if file_error is not None:
                self._fail(pos, *file_error)
                continue
            blue_arm, red_arm = arms[blue], arms[red]
            if len(blue_arm) == 4 and blue_arm[3] is not None:
                snr_blue[pos] = blue_arm[3]
            if len(red_arm) == 4 and red_arm[3] is not None:
                snr_red[pos] = red_arm[3]
            if len(blue_arm) == 2 or len(red_arm) == 2:
                self._fail(pos, *(blue_arm if len(blue_arm) == 2 else red_arm))
                continue
            self._pending.append((pos, blue_arm, red_arm, rv))
            if len(self._pending) >= COMPUTE_CHUNK:
                self._compute()

    def _compute(self) -> None:
        """Hand the pending spectra to the kernels (on the compute thread, if any).

        The main thread goes on reading while they run; at most
        :data:`CHUNKS_IN_FLIGHT` chunks are out, applied in the order submitted.
        """
        if not self._pending:
            return
        chunk, self._pending = self._pending, []
        buffers = self.buffers.take() if self.buffers is not None else None
        out = (self.normalized, self.resampled) if buffers is None else buffers
        args = (chunk, self.settings, self.rv_errors, self.plan.start, out)
        self._inflight.append(self._submit(_run_kernels, *args))
        while len(self._inflight) > CHUNKS_IN_FLIGHT:
            self._apply(self._inflight.popleft().result())

    def _apply(self, done: _ChunkResult) -> None:
        """Record a chunk's RV decision and kernel outputs in the batch (and hand its
        chunk buffers back once their rows are written)."""
        writes = self._record(done)
        if done.buffers is not None:
            done.buffers.release(writes)

    def _record(self, done: _ChunkResult) -> list[Future]:
        """:meth:`_apply`'s work; the file writes it started."""
        if done.rv is not None:
            self._apply_rv(done.pending, done.rv)
        res = done.resampled
        if res is None:
            return []
        kept = done.kept
        pos = np.array([p[0] for p in kept])
        self.was_resampled[pos] = True
        self.floats["snr_blue_ivar"][pos] = _finite(res.snr_blue)
        self.floats["snr_red_ivar"][pos] = _finite(res.snr_red)
        ok = res.status == Status.OK
        for i in np.flatnonzero(~ok):
            status, why = _kernel_status(res.status[i], "resampling")
            if res.status[i] == Status.GRID_OUT_OF_RANGE:
                _, b, r, rv = kept[i][:4]
                detail = range_detail(b[0], r[0], rv, self.settings.correct_rv)
                why = f"{why} ({detail})" if detail else why
            self._fail(pos[i], status, why)
        if done.normalized is not None:
            self._store_normalized(pos[ok], done.normalized, done.buffers)
        if self.files is None or done.buffers is None:
            return []
        # These rows' values are final: to the files (chunk buffers: kept spectrum i in
        # row i, the j-th normalised one in row j).
        chunk = done.buffers
        writes = []
        if self.keep_resampled:
            writes += self.files.write("resampled", chunk.res, pos, np.arange(pos.size))
        if done.normalized is not None:
            writes += self.files.write("normalized", chunk.norm, pos[ok], np.arange(int(ok.sum())))
        return writes

    def _apply_rv(self, pending: list[tuple], got: rv_policy.RvResult) -> None:
        """Record the RV measured and chosen for each spectrum; fail those without one."""
        assert self.rv_errors is not None  # RVs are decided only with rv_errors
        pos = np.array([p[0] for p in pending])
        d = got.decision
        f = self.floats
        f["rv_measured"][pos] = _finite(got.measured)
        f["rv_measured_err"][pos] = _finite(got.measured_err)
        for k, name in enumerate(("teff", "logg", "feh")):
            f[f"rv_template_{name}"][pos] = _finite(got.template_labels[:, k])
        f["rv_used"][pos] = _finite(d.used)
        self.text["rv_measured_status"][pos] = got.status
        self.text["rv_used_source"][pos] = d.source
        self.disagree[pos] = d.disagree
        self.decided[pos] = True
        for i in (i for i, source in enumerate(d.source) if source == "none"):
            why = f"no usable RV (catalogue {pending[i][3]!r} km/s, measurement {got.status[i]})"
            self._fail(pos[i], "bad_rv", f"{self.rv_errors[0]} RV: {why}")

    def _store_normalized(
        self, pos: np.ndarray, norm: NormalizeResult, buffers: _ChunkSet | None = None
    ) -> None:
        """Keep the statistics of the rows normalised at ``pos`` (their flux is in place:
        the batch's rows ``pos``, or rows ``0..pos.size`` of the chunk ``buffers``)."""
        iterations = np.asarray(norm.iterations, dtype=np.int64)
        self.ints["n_outliers"][pos] = norm.n_outliers
        self.ints["max_outlier_run"][pos] = norm.max_outlier_run
        self.ints["continuum_iterations_blue"][pos] = iterations[:, 0]
        self.ints["continuum_iterations_red"][pos] = iterations[:, 1]
        self.ints["continuum_iterations"][pos] = iterations.max(axis=1)
        self.cap_hit[pos] = norm.cap_hit
        self.normed[pos] = True
        for j in np.flatnonzero(norm.status != Status.OK):
            self._fail(pos[j], *_kernel_status(norm.status[j], "normalisation"))
            if buffers is not None:
                buffers.norm[j] = np.nan
            elif self.normalized is not None:
                self.normalized[pos[j]] = np.nan

    def finish(
        self, catalog: pl.DataFrame, quality: QualityCuts, header_columns: list[str]
    ) -> PreprocessedBatch:
        self._compute()
        while self._inflight:
            self._apply(self._inflight.popleft().result())
        if self.normalized is not None:
            self.normalized[~self.normed] = np.nan
        if self.resampled is not None:
            self.resampled[~self.was_resampled] = np.nan
        if self.files is not None:  # the rest of the rows (every other row is written)
            self._write_rest()
        plan = self.plan
        n = plan.stop - plan.start
        rows = np.arange(plan.start, plan.stop, dtype=np.int64)
        f = self.floats
        for name in ("snr_blue", "snr_red"):
            f[name] = snr_rule(f[name], f[f"{name}_ivar"])
        ok = self.text["status"] == "ok"
        passed, why = _quality(ok, self.text["status"], f, self.ints, quality)
        columns: dict[str, pl.Series] = {
            "row": pl.Series(rows),
            "shard": pl.Series(np.full(n, plan.index, dtype=np.int64)),
            "offset": pl.Series(np.arange(n, dtype=np.int64)),
            "cap_hit": _masked(self.cap_hit, self.normed),
            "rv_disagree": _masked(self.disagree, self.decided),
            "quality_ok": pl.Series(passed),
            "quality_reason": pl.Series(why, dtype=pl.Utf8),
        }
        columns |= {k: pl.Series(v, nan_to_null=True) for k, v in f.items()}
        columns |= {k: _masked(v, self.normed) for k, v in self.ints.items()}
        columns |= {k: pl.Series(v.tolist(), dtype=pl.Utf8) for k, v in self.text.items()}
        added = pl.DataFrame([columns[name].alias(name) for name in MANIFEST_SCHEMA]).cast(
            pl.Schema(MANIFEST_SCHEMA)
        )
        manifest = pl.concat(
            [catalog.slice(plan.start, n), self._header_frame(header_columns), added],
            how="horizontal",
        ).select(["row", *catalog.columns, *header_columns, *list(MANIFEST_SCHEMA)[1:]])
        return PreprocessedBatch(
            plan.index, rows, manifest, self.normalized, self.resampled, self.fallbacks, self.files
        )

    def _write_rest(self) -> None:
        """Write the rows no chunk wrote (all NaN) to the files."""
        assert self.files is not None
        rest = {"normalized": np.flatnonzero(~self.normed)}
        if self.keep_resampled:
            rest["resampled"] = np.flatnonzero(~self.was_resampled)
        nan = np.full((max(r.size for r in rest.values()), N_PIX), np.nan, dtype=np.float32)
        for kind, rows in rest.items():
            self.files.write(kind, nan, rows, np.arange(rows.size))

    def _header_frame(self, header_columns: list[str]) -> pl.DataFrame:
        """The primary-header columns of each row (null for rows without a file read)."""
        schema = {c: HEADER_COLUMNS[c] for c in header_columns}
        per_file = pl.DataFrame(
            {c: [h.get(c) for h in self.headers] + [None] for c in header_columns},
            schema=schema,
        )
        index = np.where(self.header_of < 0, len(self.headers), self.header_of)
        return per_file[index] if header_columns else pl.DataFrame(schema=schema)


@dataclass
class _ChunkResult:
    """What the kernels made of one chunk of pending spectra (see :func:`_run_kernels`)."""

    pending: list[tuple]
    rv: rv_policy.RvResult | None
    """RV measurement and decision of every pending spectrum (None: RVs not decided)."""
    kept: list[tuple]
    """The spectra resampled (those with an RV), each with the RV used."""
    resampled: ResampleResult | None
    normalized: NormalizeResult | None
    """Of the ``kept`` spectra that resampled OK, in order."""
    buffers: _ChunkSet | None = None
    """The chunk buffers the fluxes are in (None: in the batch's arrays)."""


def _run_kernels(
    pending: list[tuple],
    settings: PreprocessSettings,
    rv_errors: tuple[str, np.ndarray] | None,
    start: int,
    out: tuple[np.ndarray | None, np.ndarray | None] | _ChunkSet,
) -> _ChunkResult:
    """Decide RVs, resample and normalise a chunk, and write the fluxes of its rows
    into the batch's ``out = (normalized, resampled)`` arrays, or, given a
    :class:`_ChunkSet`, into its rows in order (resampled: kept spectrum i in row i;
    normalised: the j-th that resampled OK in row j). Runs on the compute thread,
    the kernels with the GIL released; no other batch state is touched."""
    buffers = out if isinstance(out, _ChunkSet) else None
    got, kept = None, pending
    if rv_errors is not None:
        mode, errors = rv_errors
        pos = np.array([p[0] for p in pending])
        got = rv_policy.resolve(
            mode,
            [(p[1][:3], p[2][:3]) for p in pending],
            np.array([p[3] for p in pending], dtype=np.float64),
            errors[pos + start],
        )
        used = got.decision.used.tolist()
        kept = [
            (*p[:3], float(used[i]))
            for i, p in enumerate(pending)
            if got.decision.source[i] != "none"
        ]
    if not kept:
        return _ChunkResult(pending, got, kept, None, None, buffers)
    pos = np.array([p[0] for p in kept])
    dest = (buffers.norm, buffers.res) if buffers is not None else out
    assert isinstance(dest, tuple)
    in_place = buffers.res[: pos.size] if buffers is not None else _run_rows(dest[1], pos)
    res = resample_batch(
        [p[1][0] for p in kept],
        [p[1][1] for p in kept],
        [p[2][0] for p in kept],
        [p[2][1] for p in kept],
        np.array([p[3] for p in kept], dtype=np.float64),
        blue_ivar=[p[1][2] for p in kept],
        red_ivar=[p[2][2] for p in kept],
        correct_rv=settings.correct_rv,
        out=in_place,
    )
    ok = res.status == Status.OK
    if dest[1] is not None and in_place is None:
        dest[1][pos] = res.flux
    norm = None
    if ok.any():
        ok_pos = pos if ok.all() else pos[ok]
        target = buffers.norm[: ok_pos.size] if buffers is not None else _run_rows(dest[0], ok_pos)
        norm = normalize_detailed(
            res.flux if ok.all() else res.flux[ok], max_iter=settings.max_iter, out=target
        )
        if target is None and dest[0] is not None:
            dest[0][ok_pos] = norm.flux
    return _ChunkResult(pending, got, kept, res, norm, buffers)


def _run_rows(dest: np.ndarray | None, pos: np.ndarray) -> np.ndarray | None:
    """``dest[pos]`` as a view when ``pos`` is a run of rows (the kernels then write
    the batch's rows in place, nothing allocated or copied), else None."""
    if dest is None or not pos.size or pos[-1] - pos[0] != pos.size - 1:
        return None
    if not np.all(np.diff(pos) == 1):
        return None
    return dest[pos[0] : pos[0] + pos.size]


def _masked(values: np.ndarray, valid: np.ndarray) -> pl.Series:
    """``values`` as a Series, null where not ``valid``."""
    return pl.Series(values).zip_with(pl.Series(valid), pl.Series([None] * values.size))


def snr_rule(header: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """The S/N of one arm that the quality cut uses (the one documented rule), per row.

    ``estimate`` is the FLUX/IVAR estimate (median ``FLUX*sqrt(IVAR)`` over pixels
    with finite positive IVAR); NaN when the arm has no such pixel. An arm whose
    IVAR is all zero, negative or NaN cannot be trusted whatever its header says:
    NaN. Otherwise the header SNR when it is a finite number >= 0, else the
    estimate. NaN (null in the manifest) fails the cut ("no usable S/N") and sets
    LOW_SNR downstream.
    """
    header = np.asarray(header, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(header) & (header >= 0)
    return np.where(np.isnan(estimate), np.nan, np.where(usable, header, estimate))


def _kernel_status(code: int, stage: str) -> tuple[str, str]:
    name = next((v for k, v in KERNEL_STATUS_NAMES.items() if k == int(code)), "bad_flux")
    return name, f"{stage}: {reason(code)}"


def _quality(
    ok: np.ndarray,
    status: np.ndarray,
    floats: dict[str, np.ndarray],
    ints: dict[str, np.ndarray],
    cuts: QualityCuts,
) -> tuple[np.ndarray, list[str | None]]:
    """``quality_ok`` and ``quality_reason`` of every row (reasons built for failing rows only)."""
    snr_b, snr_r = floats["snr_blue"], floats["snr_red"]
    n_out, run = ints["n_outliers"], ints["max_outlier_run"]
    no_snr = np.isnan(snr_b) | np.isnan(snr_r)
    low = ~no_snr & (np.fmin(snr_b, snr_r) < cuts.min_snr)
    bad = ~ok | (ok & (no_snr | low | (n_out > cuts.max_outliers) | (run > cuts.max_outlier_run)))
    reasons: list[str | None] = [None] * ok.size
    for i in np.flatnonzero(bad):
        if not ok[i]:
            reasons[i] = f"status {status[i]}"
            continue
        why = []
        if no_snr[i]:
            why.append("no usable S/N (IVAR all zero, negative or NaN)")
        elif low[i]:
            why.append(f"snr {min(snr_b[i], snr_r[i]):.1f} < {cuts.min_snr:g}")
        if n_out[i] > cuts.max_outliers:
            why.append(f"n_outliers {n_out[i]} > {cuts.max_outliers}")
        if run[i] > cuts.max_outlier_run:
            why.append(f"max_outlier_run {run[i]} > {cuts.max_outlier_run}")
        reasons[i] = "; ".join(why)
    return ~bad, reasons


# --------------------------------------------------------------------------- progress


# --------------------------------------------------------------------------- public API


def reserved_columns() -> tuple[str, ...]:
    """Column names the pipeline adds; a catalogue must not already have them."""
    return tuple(MANIFEST_SCHEMA)


def _load_catalog(
    catalog: pl.DataFrame | str | os.PathLike[str],
    rv_column: str,
    correct_rv: bool,
    rv_mode: str = "catalog",
) -> pl.DataFrame:
    require_rv = correct_rv and rv_policy.check_mode(rv_mode) == "catalog"
    options = {"rv_column": rv_column, "require_rv": require_rv, "reserved": reserved_columns()}
    if isinstance(catalog, pl.DataFrame):
        return validate_catalog(catalog, **options)
    return read_catalog(catalog, **options)


def _rv_errors(
    catalog: pl.DataFrame, rv_column: str, correct_rv: bool, rv_mode: str
) -> tuple[str, np.ndarray] | None:
    """What :class:`_BatchBuilder` needs to choose RVs (None without RV correction)."""
    if not correct_rv:
        return None
    column = rv_policy.error_column(rv_column, catalog.columns)
    if column is None:
        return rv_mode, np.full(catalog.height, np.nan)
    err = catalog.get_column(column).cast(pl.Float64, strict=False).fill_null(np.nan)
    return rv_mode, err.to_numpy().astype(np.float64)


def default_workers() -> int:
    """Reader threads: one per core (they mostly wait on zlib and I/O, outside the GIL)."""
    return max(1, os.cpu_count() or 1)


def _read_plan(workers: int, reader: Reader, max_inflated: int) -> tuple[int, int, int, Callable]:
    """(Python reader threads, groups in flight, files per group, read function)."""
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    if max_inflated < 1:
        raise ValueError(f"max_inflated must be >= 1 byte, got {max_inflated}")
    if reader == "fitsio":  # one file per task, as many tasks as threads
        depth = max(2, PREFETCH_PER_WORKER * max(workers, 1))
        return workers, depth, 1, lambda args: _read_files(args, reader, max_inflated, None)
    # Rust: up to two Python threads hand groups to a rayon pool of `workers` threads,
    # so one group's conversion to Python values (GIL held) overlaps the next's read.
    threads = max(workers, 1)
    python_threads = min(workers, RUST_READ_CALLS)
    return (
        python_threads,
        max(2, python_threads + 1),
        FILES_PER_READ,
        (lambda args: _read_files(args, reader, max_inflated, threads)),
    )


def iter_preprocessed(
    catalog: pl.DataFrame | str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    batch_size: int = 1024,
    workers: int | None = None,
    rv_column: str = "rv",
    correct_rv: bool = True,
    rv_mode: str = "catalog",
    max_iter: int = 100,
    keep_resampled: bool = False,
    quality: QualityCuts = QualityCuts(),
    skip_batches: Container[int] = (),
    progress: bool = False,
    reader: Reader = "auto",
    max_inflated: int = DEFAULT_MAX_INFLATED,
    allow_outside_data_dir: bool = False,
    _arrays: _ArrayPool | None = None,
    _files: Callable[[int, int], ShardFiles | None] | None = None,
) -> Iterator[PreprocessedBatch]:
    """Preprocess a catalogue batch by batch, in catalogue order, without writing files.

    (``_arrays``: where the batches' flux arrays come from; :func:`preprocess_catalog`
    passes one its writer returns them to. Default: fresh arrays. ``_files(index, n)``:
    the files a batch's rows are written to as they are finished, or None.)

    Parameters
    ----------
    catalog : DataFrame or path
        Columns ``filename`` (relative to ``data_dir``), ``extname_blue``,
        ``extname_red`` and ``rv_column`` [km/s]; others are carried through.
    batch_size : int
        Catalogue rows per yielded batch (the last may be shorter).
    workers : int, optional
        Reader threads; 0 reads in the calling thread. Default :func:`default_workers`.
    rv_mode : str
        ``catalog``, ``measure`` or ``auto`` (:mod:`rrnet.preprocess.rv_policy`): which
        RV shifts each spectrum; ``auto`` measures rows whose catalogue RV is missing.
    skip_batches : container of int
        Batch indices not to compute (used by ``resume``).
    reader : {"auto", "fitsio", "rust"}
        ``auto`` (default): the Rust reader, fitsio for the files it does not
        support; ``fitsio``: the reference reader only.
    max_inflated : int
        Largest inflated size of a ``.fits.gz`` file [bytes]; beyond: ``too_large``.
    allow_outside_data_dir : bool
        Read files named outside ``data_dir`` (absolute or ``..``); by default such
        rows get status ``outside_data_dir`` (see :func:`data_path`).

    Yields
    ------
    PreprocessedBatch
        One per batch not skipped, every catalogue row of it present.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    settings = PreprocessSettings(correct_rv=correct_rv, max_iter=max_iter)
    catalog = _load_catalog(catalog, rv_column, correct_rv, rv_mode)
    rv_errors = _rv_errors(catalog, rv_column, correct_rv, rv_mode)
    data_dir = Path(data_dir)
    workers = default_workers() if workers is None else workers
    threads, depth, group, read = _read_plan(workers, reader, max_inflated)
    header_columns = [c for c in HEADER_COLUMNS if c not in catalog.columns]
    n_batches = -(-catalog.height // batch_size)
    todo = [i for i in range(n_batches) if i not in skip_batches]
    initial = catalog.height - sum(min(batch_size, catalog.height - i * batch_size) for i in todo)
    jobs = (
        job
        for i in todo
        for job in _plan_batch(
            catalog, i, batch_size, data_dir, rv_column, correct_rv, allow_outside_data_dir, rv_mode
        )
    )
    bar = Progress(catalog.height, initial=initial, enabled=progress, prefix="rrnet-preprocess")
    builder: _BatchBuilder | None = None
    buffers = _ChunkBuffers(COMPUTE_CHUNK) if _files is not None else None
    try:
        with _reader(threads) as submit, _reader(min(workers, 1), "rrnet-compute") as compute:
            for job, result in _ordered_prefetch(submit, read, jobs, depth, group):
                if builder is None or builder.plan is not job.plan:
                    plan = job.plan
                    files = _files(plan.index, plan.stop - plan.start) if _files else None
                    builder = _BatchBuilder(
                        plan, settings, keep_resampled, rv_errors, compute, _arrays, files,
                        buffers,
                    )  # fmt: skip
                if job.args is not None:
                    builder.add(job, result)
                    continue
                batch = builder.finish(catalog, quality, header_columns)
                builder = None
                yield batch
                bar.update(batch.rows.size)
                del batch  # let the consumer free it before the next batch is built
    finally:
        bar.close()


def preprocess_catalog(
    catalog: pl.DataFrame | str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    workers: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    rv_column: str = "rv",
    correct_rv: bool = True,
    rv_mode: str = "catalog",
    max_iter: int = 100,
    keep_resampled: bool = True,
    shard_size: int = 4096,
    quality: QualityCuts = QualityCuts(),
    progress: bool = True,
    fsync: bool = True,
    reader: Reader = "auto",
    max_inflated: int = DEFAULT_MAX_INFLATED,
    allow_outside_data_dir: bool = False,
    dtype: str = "float32",
) -> Store:
    """Preprocess a catalogue into a store directory (see :mod:`rrnet.store`) and open it.

    The store is written shard by shard; each shard's flux files and manifest
    part are written atomically, the part last, so a run killed at any moment
    (``kill -9`` included) is continued with ``resume=True``: complete shards
    are kept, the rest recomputed, and the result is byte-identical to an
    uninterrupted run. ``reader`` and ``max_inflated`` are those of
    :func:`iter_preprocessed`. ``dtype="float16"`` stores the flux shards in half
    precision (half the disk; read back as float32; a shard with a value beyond
    float16's range stays float32, see :func:`rrnet.store.storage_array`).

    Raises
    ------
    StoreError
        ``out`` holds something else, or (with ``resume``) a store written with
        other settings, shard size or catalogue.
    """
    out = Path(out)
    settings = PreprocessSettings(correct_rv=correct_rv, max_iter=max_iter)
    catalog = _load_catalog(catalog, rv_column, correct_rv, rv_mode)
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    check_store_dtype(dtype)
    if catalog.height == 0:
        raise StoreError("the catalogue has no rows")
    kinds = list(KINDS) if keep_resampled else ["normalized"]
    info = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "n_rows": catalog.height,
        "shard_size": shard_size,
        "kinds": kinds,
        "dtype": dtype,
        "rv_column": rv_column,
        "rv_mode": rv_mode,
        "quality_cuts": asdict(quality),
        "fingerprint": settings.fingerprint(),
        "complete": False,
    }
    if out.exists() and not out.is_dir():
        raise StoreError(f"{out} exists and is not a directory; refusing to write a store there")
    with output_lock(out, directory=True, what="store"):
        _write_store(
            out, catalog, data_dir, info, resume=resume, overwrite=overwrite, workers=workers,
            rv_column=rv_column, correct_rv=correct_rv, max_iter=max_iter,
            keep_resampled=keep_resampled, quality=quality, progress=progress, fsync=fsync,
            allow_outside=allow_outside_data_dir, reader=reader, max_inflated=max_inflated,
            rv_mode=rv_mode,
        )  # fmt: skip
    return open_store(out)


def _write_store(
    out: Path,
    catalog: pl.DataFrame,
    data_dir: str | os.PathLike[str],
    info: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    workers: int | None,
    rv_column: str,
    correct_rv: bool,
    max_iter: int,
    keep_resampled: bool,
    quality: QualityCuts,
    progress: bool,
    fsync: bool,
    allow_outside: bool,
    reader: Reader,
    max_inflated: int,
    rv_mode: str,
) -> None:
    """The body of :func:`preprocess_catalog`, run while holding the store's lock."""
    shard_size = info["shard_size"]
    done = _prepare_out(out, info, resume=resume, overwrite=overwrite, catalog=catalog)
    if done is None:  # resuming a finished store made from the same inputs
        return
    writer = _ShardWriter(out, fsync=fsync, dtype=info["dtype"], kinds=info["kinds"])
    batches = iter_preprocessed(
        catalog,
        data_dir,
        batch_size=shard_size,
        workers=workers,
        rv_column=rv_column,
        correct_rv=correct_rv,
        rv_mode=rv_mode,
        max_iter=max_iter,
        keep_resampled=keep_resampled,
        quality=quality,
        skip_batches=done,
        progress=progress,
        reader=reader,
        max_inflated=max_inflated,
        allow_outside_data_dir=allow_outside,
        _arrays=writer.arrays,
        _files=writer.files,
    )
    with writer:
        for batch in batches:
            writer.submit(batch)
            del batch  # the writer holds it until written: at most two shards in memory
    header_columns = [c for c in HEADER_COLUMNS if c not in catalog.columns]
    _finish_store(out, info, -(-catalog.height // shard_size), header_columns, fsync=fsync)


def write_selection(store: Store, path: str | os.PathLike[str]) -> int:
    """Write the catalogue rows that pass the quality cuts (input columns only) to ``path``.

    Returns the number of rows written. The result is a valid input catalogue.
    """
    manifest = pl.scan_parquet(store.path / "manifest.parquet")
    dropped = set(MANIFEST_SCHEMA) | set(store.info.get("header_columns", []))
    columns = [c for c in manifest.collect_schema().names() if c not in dropped]
    selected = manifest.filter(pl.col("quality_ok")).select(columns).collect()
    write_table(selected, path)
    return selected.height


# --------------------------------------------------------------------------- store writing


def _atomic_write(path: Path, write: Callable[[Any], None], *, fsync: bool) -> None:
    """Write through ``write(file)`` atomically (see :mod:`rrnet.utils.atomic`)."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as handle:
        write(handle)


def _part_path(out: Path, shard: int) -> Path:
    return out / "parts" / f"manifest-{shard:06d}.parquet"


def _write_shard(
    out: Path,
    batch: PreprocessedBatch,
    *,
    fsync: bool,
    dtype: str = "float32",
    submit: Callable[..., Future] | None = None,
) -> None:
    """Write a shard's flux files, then its manifest part (which marks it complete).

    With ``submit`` (a thread pool's), the flux files after the first are written
    on it, each (copy to the page cache, fsync) alongside the first: a run's last
    shard is written while nothing else is left to overlap it. A batch with
    ``files`` has its flux files written already: they are committed (fsync, rename).
    """
    if batch.files is not None:
        batch.files.commit()
        _write_part(out, batch, fsync=fsync)
        return

    def flux_file(kind: str, flux: np.ndarray) -> None:
        stored = storage_array(flux, dtype)
        path = out / shard_name(kind, batch.index)
        _atomic_write(path, lambda f: np.save(f, stored), fsync=fsync)

    pairs = (("normalized", batch.flux), ("resampled", batch.resampled))
    kinds: list[tuple[str, np.ndarray]] = [(k, a) for k, a in pairs if a is not None]
    others = [submit(flux_file, *kind) for kind in kinds[1:]] if submit else []
    try:
        for kind in kinds[: 1 if submit else None]:
            flux_file(*kind)
    finally:  # never leave a file half written behind an error: wait, then raise
        wait(others)
    for other in others:
        other.result()
    _write_part(out, batch, fsync=fsync)


def _write_part(out: Path, batch: PreprocessedBatch, *, fsync: bool) -> None:
    """The shard's manifest part, written last: its presence marks the shard complete."""
    _atomic_write(
        _part_path(out, batch.index),
        lambda f: batch.manifest.write_parquet(f, statistics=False),
        fsync=fsync,
    )


class _ShardWriter:
    """Writes shards on one background thread while the next shard is computed.

    One shard is in flight at a time and shards are written in order, each through
    :func:`_write_shard` (flux files first, manifest part last), so the commit
    protocol and what a resumed run finds are those of writing in the calling
    thread. An error of the writer (a full or read-only disk) is raised in the
    calling thread at the next :meth:`submit` or on leaving the ``with`` block, so
    the run stops as before; leaving the block waits for the write in flight.
    """

    def __init__(
        self, out: Path, *, fsync: bool, dtype: str, kinds: Iterable[str] = ("normalized",)
    ) -> None:
        self.arrays = _ArrayPool()
        """Where the written batches' flux arrays go for reuse by later batches."""
        self._out, self._fsync, self._dtype, self._kinds = out, fsync, dtype, list(kinds)

        def write(batch: PreprocessedBatch) -> None:
            _write_shard(out, batch, fsync=fsync, dtype=dtype, submit=self._files.submit)
            self.arrays.give(batch.flux, batch.resampled)

        self._write = write
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rrnet-write")
        self._files = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rrnet-write-file")
        self._rows = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rrnet-write-rows")
        self._sync = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rrnet-sync")
        self._open: list[ShardFiles] = []
        self._pending: Future | None = None

    def files(self, index: int, n: int) -> ShardFiles | None:
        """Flux files for shard ``index`` of ``n`` rows, written as its rows are finished
        (float32 stores; a float16 shard's type is known only once it is complete: None)."""
        if self._dtype != "float32":
            return None
        paths = {kind: self._out / shard_name(kind, index) for kind in self._kinds}
        files = ShardFiles(
            paths, n, fsync=self._fsync, submit=self._rows.submit, sync=self._sync.submit
        )
        self._open = [f for f in self._open if f.pending] + [files]
        return files

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()  # re-raises the writer's exception here

    def submit(self, batch: PreprocessedBatch) -> None:
        """Write ``batch`` once the shard before it is written (raising that one's error)."""
        self._wait()
        self._pending = self._pool.submit(self._write, batch)

    def __enter__(self) -> _ShardWriter:
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> None:
        try:
            if kind is None:
                self._wait()
            elif self._pending is not None:  # the run failed: let the write finish, keep its error
                wait([self._pending])
        finally:
            self._pool.shutdown(wait=True)
            self._files.shutdown(wait=True)
            for files in self._open:  # shards never committed: no temporary file left
                files.abort()
            self._rows.shutdown(wait=True)
            self._sync.shutdown(wait=True)


def _write_info(out: Path, info: dict[str, Any], *, fsync: bool = True) -> None:
    text = json.dumps(info, indent=2, sort_keys=True) + "\n"
    _atomic_write(out / "store.json", lambda f: f.write(text.encode()), fsync=fsync)


def _prepare_out(
    out: Path, info: dict[str, Any], *, resume: bool, overwrite: bool, catalog: pl.DataFrame
) -> set[int] | None:
    """Create or check the store directory; the set of complete shards (None: all done)."""
    exists = out.exists() and any(p.name != LOCK_NAME for p in out.iterdir())
    if exists and not resume:
        if not overwrite:
            raise StoreError(
                f"{out} is not empty: resume it (--resume) or replace it (--overwrite)"
            )
        _remove_store(out)
        exists = False
    if not exists:
        (out / "shards").mkdir(parents=True, exist_ok=True)
        (out / "parts").mkdir(exist_ok=True)
        _write_info(out, info)
        return set()
    old = read_store_info(out)
    for key in ("n_rows", "shard_size", "kinds", "rv_column", "quality_cuts"):
        if old.get(key) != info[key]:
            raise StoreError(f"cannot resume {out}: {key} was {old.get(key)!r}, now {info[key]!r}")
    if old.get("rv_mode", "catalog") != info["rv_mode"]:  # stores before issue 16: catalog
        raise StoreError(f"cannot resume {out}: --rv was {old.get('rv_mode', 'catalog')!r}")
    if old.get("dtype", "float32") != info["dtype"]:  # stores before issue 20: float32
        raise StoreError(
            f"cannot resume {out}: its flux is stored as {old.get('dtype', 'float32')}, "
            f"now {info['dtype']} (--store-dtype)"
        )
    if old["fingerprint"]["hash"] != info["fingerprint"]["hash"]:
        raise StoreError(
            f"cannot resume {out}: it was preprocessed with other settings "
            f"(fingerprint {old['fingerprint']['hash']}, now {info['fingerprint']['hash']})"
        )
    if old.get("complete"):
        _check_finished_catalog(out, catalog)
        return None
    (out / "shards").mkdir(exist_ok=True)
    (out / "parts").mkdir(exist_ok=True)
    for folder in (out, out / "shards", out / "parts"):  # writes cut short by a kill
        for stale in folder.glob(TEMP_GLOB):
            stale.unlink(missing_ok=True)
    done = set()
    for part in sorted((out / "parts").glob("manifest-*.parquet")):
        shard = int(part.stem.split("-")[1])
        if _shard_complete(out, shard, info, catalog):
            done.add(shard)
    return done


def _check_finished_catalog(out: Path, catalog: pl.DataFrame) -> None:
    """A finished store is reused only for the catalogue it was made from."""
    try:
        manifest = pl.scan_parquet(out / "manifest.parquet")
        names = manifest.collect_schema().names()
        same = all(c in names for c in catalog.columns) and (
            manifest.select(catalog.columns).collect().equals(catalog)
        )
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise StoreError(f"cannot resume {out}: its manifest is unreadable ({exc})") from exc
    if not same:
        raise StoreError(
            f"cannot resume {out}: it was made from another catalogue "
            "(use --overwrite to replace it, or another --out)"
        )


def _remove_store(out: Path) -> None:
    """Delete what rrnet wrote in ``out`` (the files its store.json lists) and nothing else.

    A folder without rrnet's format marker is refused, and so is any listed name
    that is not a regular file (a device node or a link is never removed).
    """
    if not (out / "store.json").is_file():
        raise StoreError(f"{out} is not empty and not a store; refusing to overwrite it")
    try:
        old = read_store_info(out)
        n_shards = -(-int(old["n_rows"]) // int(old["shard_size"]))
        kinds = [k for k in old["kinds"] if k in KINDS]
    except (StoreError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise StoreError(
            f"{out} has a store.json that is not rrnet's; refusing to overwrite it"
        ) from exc
    listed = [out / "manifest.parquet"]
    listed += [out / shard_name(k, i) for k in kinds for i in range(n_shards)]
    listed += [_part_path(out, i) for i in range(n_shards)]
    listed += [p for d in (out, out / "shards", out / "parts") for p in d.glob(TEMP_GLOB)]
    for path in [*listed, out / "store.json"]:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise StoreError(f"{path} is not a regular file; refusing to overwrite {out}")
    for path in listed:
        path.unlink(missing_ok=True)
    (out / "store.json").unlink()  # the marker goes last: a cut-short removal is resumable
    for folder in (out / "parts", out / "shards"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _shard_complete(out: Path, shard: int, info: dict[str, Any], catalog: pl.DataFrame) -> bool:
    """A shard counts as done if its part, flux files and catalogue rows all check out."""
    start = shard * info["shard_size"]
    n = min(info["shard_size"], info["n_rows"] - start)
    if n <= 0:
        return False
    try:
        part = pl.read_parquet(_part_path(out, shard))
        for kind in info["kinds"]:
            flux = np.load(out / shard_name(kind, shard), mmap_mode="r")
            allowed = {np.dtype(np.float32), np.dtype(info.get("dtype", "float32"))}
            if flux.shape != (n, N_PIX) or flux.dtype not in allowed:
                return False
    except (OSError, ValueError, pl.exceptions.PolarsError):
        return False
    if part.height != n:
        return False
    if not part.select(catalog.columns).equals(catalog.slice(start, n)):
        raise StoreError(
            f"cannot resume {out}: catalogue rows {start}..{start + n - 1} differ from "
            "the interrupted run's"
        )
    return True


def _finish_store(
    out: Path, info: dict[str, Any], n_shards: int, header_columns: list[str], *, fsync: bool
) -> None:
    """Concatenate the manifest parts into manifest.parquet, one part in memory at a time."""
    import pyarrow.parquet as pq  # only needed here; keeps streaming users light

    def write(handle: Any) -> None:
        writer = None
        for shard in range(n_shards):
            part = pq.read_table(_part_path(out, shard))
            if writer is None:
                writer = pq.ParquetWriter(handle, part.schema, write_statistics=False)
            writer.write_table(part)
        writer.close()

    _atomic_write(out / "manifest.parquet", write, fsync=fsync)
    _write_info(out, {**info, "complete": True, "header_columns": header_columns}, fsync=fsync)
    shutil.rmtree(out / "parts", ignore_errors=True)
