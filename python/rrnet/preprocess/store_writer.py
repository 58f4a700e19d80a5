"""Writing a store (:mod:`rrnet.store`): shard files written while the next shard is
computed, the manifest parts, ``store.json``, and what a resumed or overwritten run
finds and keeps; every file written atomically."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rrnet.grid import N_PIX
from rrnet.io.astro import text_widths
from rrnet.preprocess.batch_builder import ArrayPool, PreprocessedBatch
from rrnet.preprocess.shard_files import ShardFiles
from rrnet.store import (
    KINDS,
    SUMMARY_FILE,
    StoreError,
    read_store_info,
    shard_name,
    storage_array,
)
from rrnet.utils.atomic import TEMP_GLOB, atomic_path
from rrnet.utils.lock import LOCK_NAME


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


class ShardWriter:
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
        self.arrays = ArrayPool()
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

    def __enter__(self) -> ShardWriter:
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


def written_by() -> dict[str, str]:
    """This rrnet's version (and git commit, from a checkout): a store's ``written_by``,
    so that a store names the code that wrote it as catalogues and checkpoints do."""
    import rrnet
    from rrnet.utils.revision import source_commit

    commit = source_commit()
    return {"rrnet": rrnet.__version__, **({"commit": commit} if commit else {})}


def _write_info(out: Path, info: dict[str, Any], *, fsync: bool = True) -> None:
    text = json.dumps(info, indent=2, sort_keys=True) + "\n"
    _atomic_write(out / "store.json", lambda f: f.write(text.encode()), fsync=fsync)


def prepare_out(
    out: Path, info: dict[str, Any], *, resume: bool, overwrite: bool, catalog: pl.DataFrame
) -> set[int] | None:
    """Create or check the store directory; the set of complete shards (None: all done)."""
    exists = out.exists() and any(p.name != LOCK_NAME and not _skeleton(p) for p in out.iterdir())
    if exists and not resume:
        if not overwrite:
            raise StoreError(
                f"{out} is not empty: resume it (--resume) or replace it (--overwrite); "
                "resume=True or overwrite=True in Python"
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
    other_folder = StoreError(
        f"cannot resume {out}: it was begun with --data-dir {old.get('data_dir')}, now "
        f"{info.get('data_dir')} (its finished rows keep the first folder's statuses: "
        "give the same --data-dir, or --overwrite)"
    )
    moved = old.get("data_dir") not in (None, info.get("data_dir"))  # older stores: no record
    if moved:  # finished or not: its rows are the first folder's (a "done" was stale)
        raise other_folder
    # every rrnet that wrote rows of it, first first (a resume may be another version)
    earlier = [w for w in old.get("written_by", []) if w not in info["written_by"]]
    info["written_by"] = [*earlier, *info["written_by"]]
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


def _check_finished_catalog(
    out: Path, catalog: pl.DataFrame, other_folder: StoreError | None = None
) -> None:
    """A finished store is reused only for the catalogue it was made from.

    ``other_folder``: the error to give when the catalogues differ and the data folder
    changed too (with ``--find-files`` the file names follow the folder), as the cause
    the user can act on."""
    try:
        manifest = pl.scan_parquet(out / "manifest.parquet")
        names = manifest.collect_schema().names()
        same = all(c in names for c in catalog.columns) and (
            manifest.select(catalog.columns).collect().equals(catalog)
        )
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise StoreError(f"cannot resume {out}: its manifest is unreadable ({exc})") from exc
    if not same and other_folder is not None:
        raise other_folder
    if not same:
        raise StoreError(
            f"cannot resume {out}: it was made from another catalogue "
            "(use --overwrite to replace it, or another --out)"
        )


def _skeleton(path: Path) -> bool:
    """One of the store's own sub-folders, empty: all a first start leaves when the disk
    is full before ``store.json`` is written (the folder was then neither a store to
    resume nor one to replace)."""
    return path.name in ("shards", "parts") and path.is_dir() and not any(path.iterdir())


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
    listed = [out / "manifest.parquet", out / SUMMARY_FILE]
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


def finish_store(
    out: Path, info: dict[str, Any], n_shards: int, header_columns: list[str], *, fsync: bool
) -> None:
    """Concatenate the manifest parts into manifest.parquet, one part in memory at a time."""
    import pyarrow.parquet as pq  # only needed here; keeps streaming users light

    parts = [_part_path(out, shard) for shard in range(n_shards)]
    widths = text_widths(pl.scan_parquet(parts))  # astropy cannot read null text without

    def write(handle: Any) -> None:
        writer = None
        for path in parts:
            part = pq.read_table(path)
            if writer is None:
                schema = part.schema.with_metadata({**(part.schema.metadata or {}), **widths})
                writer = pq.ParquetWriter(handle, schema, write_statistics=False)
            writer.write_table(part)
        assert writer is not None  # a store has at least one shard (empty catalogues are refused)
        writer.close()

    _atomic_write(out / "manifest.parquet", write, fsync=fsync)
    _write_info(out, {**info, "complete": True, "header_columns": header_columns}, fsync=fsync)
    shutil.rmtree(out / "parts", ignore_errors=True)
