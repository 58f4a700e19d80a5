"""From a catalogue of LAMOST spectra to preprocessed fluxes: the production pipeline.

The catalogue is cut into consecutive batches of catalogue rows (one batch = one
store shard). Within a batch, rows are grouped by file, so each file is opened
and decompressed once however many of its spectra the batch names
(:mod:`~rrnet.preprocess.planning`). By default files are read in Rust
(:mod:`rrnet.io.lamost_fast`: in-memory libdeflate, one rayon task per file on
``workers`` threads, fitsio for what it does not support) in groups of
:data:`~rrnet.preprocess.prefetch.FILES_PER_READ`; ``reader="fitsio"`` reads each file
with fitsio on ``workers`` threads (:mod:`~rrnet.preprocess.prefetch`). Either way the
Rust kernels (GIL released) run meanwhile on a compute thread, chunk by chunk, while
the calling thread only collects arms and results
(:mod:`~rrnet.preprocess.batch_builder`); :func:`preprocess_catalog` writes each shard
on a writer thread while the next is computed (:mod:`~rrnet.preprocess.store_writer`).
At most a fixed number of files and chunks is in flight, so memory stays flat however
long the catalogue.

Every catalogue row yields exactly one manifest row with a ``status`` and, when
not ``ok``, a ``reason``. Nothing in a bad row stops the batch.

:func:`iter_preprocessed` streams batches (no files written);
:func:`preprocess_catalog` writes a resumable store (see :mod:`rrnet.store`).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Container, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rrnet.io.catalog import read_catalog, validate_catalog, write_table
from rrnet.io.lamost import DEFAULT_MAX_INFLATED
from rrnet.io.lamost_fast import Reader
from rrnet.preprocess import rv_policy
from rrnet.preprocess.batch_builder import (
    HEADER_COLUMNS,
    MANIFEST_SCHEMA,
    ArrayPool,
    BatchBuilder,
    ChunkBuffers,
    PreprocessedBatch,
    QualityCuts,
    snr_rule,
)
from rrnet.preprocess.planning import data_path, plan_batch
from rrnet.preprocess.prefetch import default_workers, ordered_prefetch, read_plan, thread_pool
from rrnet.preprocess.settings import PreprocessSettings
from rrnet.preprocess.shard_files import ShardFiles
from rrnet.preprocess.store_writer import ShardWriter, finish_store, prepare_out, written_by
from rrnet.store import (
    KINDS,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    Store,
    StoreError,
    check_store_dtype,
    open_store,
)
from rrnet.utils.faults import MachineFault
from rrnet.utils.lock import output_lock
from rrnet.utils.progress import Progress

log = logging.getLogger(__name__)

__all__ = [
    "HEADER_COLUMNS",
    "MANIFEST_SCHEMA",
    "PreprocessedBatch",
    "QualityCuts",
    "data_path",
    "default_workers",
    "iter_preprocessed",
    "preprocess_catalog",
    "reserved_columns",
    "snr_rule",
    "write_selection",
]


def reserved_columns() -> tuple[str, ...]:
    """Column names the pipeline adds; a catalogue must not already have them."""
    return tuple(MANIFEST_SCHEMA)


def _load_catalog(
    catalog: pl.DataFrame | str | os.PathLike[str],
    rv_column: str,
    correct_rv: bool,
    rv_mode: str = rv_policy.DEFAULT_RV_MODE,
    *,
    warn: bool | None = None,
) -> pl.DataFrame:
    """The checked catalogue; ``warn`` (default: when read from a file) says once if
    every RV will be measured (a table handed over was checked, and said, already)."""
    require_rv = rv_policy.catalog_rv_required(correct_rv, rv_mode)
    options = {"rv_column": rv_column, "require_rv": require_rv, "reserved": reserved_columns()}
    if isinstance(catalog, pl.DataFrame):
        table = validate_catalog(catalog, **options)
    else:
        table = read_catalog(catalog, **options)
    if warn if warn is not None else not isinstance(catalog, pl.DataFrame):
        warn_missing_rv_column(table, rv_column, correct_rv)
    return table


def _folder_identity(folder: Path) -> tuple[int, int] | None:
    try:
        status = folder.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _check_folder(folder: Path, identity: tuple[int, int] | None) -> None:
    """Missing files because the data folder itself vanished or was unmounted mid-run
    are the machine's fault, not the rows': stop (resumable) instead of recording them.
    A folder that is not there at all is one too, whenever this process looked first: a
    cluster task started after the folder had gone (or on a node without the mount) had
    recorded every row ``missing_file`` in a run that exited 0 and could not resume. So
    is an empty one: unmounting leaves the mount point behind."""
    if identity is not None and _folder_identity(folder) != identity:
        raise MachineFault(
            errno.ENOENT,
            "the data folder vanished, was moved or was unmounted during the run",
            str(folder),
        )
    if not folder.is_dir():
        raise MachineFault(
            errno.ENOENT,
            "the data folder is not there (it vanished, was moved or unmounted before this "
            "process started, or is not mounted on this node)",
            str(folder),
        )
    with os.scandir(folder) as entries:
        empty = next(entries, None) is None
    if empty:  # an unmounted file system leaves its empty mount point behind
        raise MachineFault(
            errno.ENOENT,
            "the data folder is empty (an unmounted file system's mount point, or the wrong "
            "folder)",
            str(folder),
        )


def warn_missing_rv_column(table: pl.DataFrame, rv_column: str, correct_rv: bool) -> None:
    """Say (once per run: callers warn where they read the catalogue) that every RV is
    measured because the catalogue has no ``rv_column`` (allowed with --rv auto/measure;
    a misspelt --rv-column would otherwise silently ignore the catalogue's RVs)."""
    if correct_rv and rv_column not in table.columns:
        log.warning(
            "the catalogue has no %r column: every RV is measured from its spectrum "
            "(name the catalogue's RV column rv; rrnet-preprocess and rrnet-run also "
            "take --rv-column)",
            rv_column,
        )


def _rv_errors(
    catalog: pl.DataFrame, rv_column: str, correct_rv: bool, rv_mode: str
) -> tuple[str, np.ndarray] | None:
    """What :class:`BatchBuilder` needs to choose RVs (None without RV correction)."""
    if not correct_rv:
        return None
    column = rv_policy.error_column(rv_column, catalog.columns)
    if column is None:
        return rv_mode, np.full(catalog.height, np.nan)
    err = catalog.get_column(column).cast(pl.Float64, strict=False).fill_null(np.nan)
    return rv_mode, err.to_numpy().astype(np.float64)


def iter_preprocessed(
    catalog: pl.DataFrame | str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    batch_size: int = 1024,
    workers: int | None = None,
    rv_column: str = "rv",
    correct_rv: bool = True,
    rv_mode: str = rv_policy.DEFAULT_RV_MODE,
    max_iter: int = 100,
    keep_resampled: bool = False,
    quality: QualityCuts = QualityCuts(),
    skip_batches: Container[int] = (),
    progress: bool = False,
    reader: Reader = "auto",
    max_inflated: int = DEFAULT_MAX_INFLATED,
    allow_outside_data_dir: bool = False,
    _arrays: ArrayPool | None = None,
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
    # as rrnet-run's driver gives its shards the folder: the same reasons name the same paths
    data_dir = Path(os.path.realpath(data_dir))
    folder = _folder_identity(data_dir)
    workers = default_workers() if workers is None else workers
    threads, depth, group, read = read_plan(workers, reader, max_inflated)
    header_columns = [c for c in HEADER_COLUMNS if c not in catalog.columns]
    n_batches = -(-catalog.height // batch_size)
    todo = [i for i in range(n_batches) if i not in skip_batches]
    initial = catalog.height - sum(min(batch_size, catalog.height - i * batch_size) for i in todo)
    jobs = (
        job
        for i in todo
        for job in plan_batch(
            catalog, i, batch_size, data_dir, rv_column, correct_rv, allow_outside_data_dir, rv_mode
        )
    )
    bar = Progress(catalog.height, initial=initial, enabled=progress, prefix="rrnet-preprocess")
    builder: BatchBuilder | None = None
    buffers = ChunkBuffers() if _files is not None else None
    try:
        with (
            thread_pool(threads) as submit,
            thread_pool(min(workers, 1), "rrnet-compute") as compute,
        ):
            for job, result in ordered_prefetch(submit, read, jobs, depth, group):
                if builder is None or builder.plan is not job.plan:
                    plan = job.plan
                    files = _files(plan.index, plan.stop - plan.start) if _files else None
                    builder = BatchBuilder(
                        plan, settings, keep_resampled, rv_errors, compute, _arrays, files,
                        buffers,
                    )  # fmt: skip
                if job.args is not None:
                    builder.add(job, result)
                    continue
                batch = builder.finish(catalog, quality, header_columns)
                builder = None
                if (batch.manifest["status"] == "missing_file").any():
                    _check_folder(data_dir, folder)  # before any row is recorded missing
                yield batch
                bar.update(batch.rows.size)
                del batch  # let the consumer free it before the next batch is built
    finally:
        bar.close()


MAX_SHARD_SIZE = 1_000_000
"""Most spectra per flux shard: 57.6 GB of float32 at the default two flux kinds; a
larger (mistyped) size overflowed the readers' offsets."""


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
    rv_mode: str = rv_policy.DEFAULT_RV_MODE,
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
    catalog = _load_catalog(catalog, rv_column, correct_rv, rv_mode, warn=True)
    if not 1 <= shard_size <= MAX_SHARD_SIZE:
        raise ValueError(f"shard_size must lie in 1..{MAX_SHARD_SIZE:,}, got {shard_size}")
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
        "data_dir": os.path.realpath(data_dir),
        "written_by": [written_by()],
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
    done = prepare_out(out, info, resume=resume, overwrite=overwrite, catalog=catalog)
    if done is None:  # resuming a finished store made from the same inputs
        return
    writer = ShardWriter(out, fsync=fsync, dtype=info["dtype"], kinds=info["kinds"])
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
    finish_store(out, info, -(-catalog.height // shard_size), header_columns, fsync=fsync)


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
