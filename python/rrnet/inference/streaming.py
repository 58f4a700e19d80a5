"""Streamed, resumable inference: a store or a raw catalogue in, one catalogue out.

The input is cut into chunks of consecutive rows with deterministic boundaries
(a store's shards; ``chunk_rows`` rows of a catalogue preprocessed on the fly).
Each chunk becomes one part file, written atomically into ``<out>.parts/``
beside the output; ``resume`` keeps finished parts and computes the rest, so a
run killed at any moment (``kill -9`` included) ends with the same catalogue as
an uninterrupted one. The parts are merged in input order into the final file
(atomically), then removed. Memory is bounded by one chunk (two with a catalogue:
the next chunk is preprocessed while the model predicts this one).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rrnet.inference import quality
from rrnet.inference.columns import (
    CATALOGUE_COLUMNS,
    SPEC_LABELS,
    catalogue_column_names,
    schema,
)
from rrnet.inference.models import (
    LoadedCheckpoint,
    Prediction,
    label_sources,
    predict,
)
from rrnet.inference.options import (
    DEFAULT_CHUNK_ROWS,
    InferError,
    InferOptions,
    PathLike,
    check_options,
    finished_output_problem,
    load_checked,
    output_record,
    resolve_error_floor,
)
from rrnet.inference.per_star import per_star_table
from rrnet.inference.provenance import build_provenance
from rrnet.inference.quality import QualityThresholds
from rrnet.inference.summary import summarize, summary_document
from rrnet.inference.writers import (
    merge_parts,
    per_star_meta,
    write_catalogue,
    write_part,
)
from rrnet.io.locate import located
from rrnet.models import xfe_skill
from rrnet.models.calibration import calibration_snr
from rrnet.preprocess.pipeline import warn_missing_rv_column
from rrnet.preprocess.rv_policy import DEFAULT_RV_MODE
from rrnet.utils.atomic import changed_keys, read_json, write_json
from rrnet.utils.background import ahead
from rrnet.utils.cores import usable_cores
from rrnet.utils.heap import retain_heap
from rrnet.utils.lock import output_lock
from rrnet.utils.progress import Progress

log = logging.getLogger(__name__)

RUN_FORMAT = "rrnet-infer-run"

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "Chunk",
    "InferError",
    "InferOptions",
    "carried_columns",
    "carried_name",
    "catalogue_chunk",
    "parts_dir",
    "per_star_path",
    "record_path",
    "run_inference",
]


@dataclass(frozen=True)
class Chunk:
    """Consecutive input rows: their manifest rows and a way to get their fluxes."""

    index: int
    manifest: pl.DataFrame
    flux: Any
    """float32 ``[n, 7200]`` array-like indexable by position within the chunk."""


# ----------------------------------------------------------------------------- inputs


class _StoreInput:
    """Chunks = the store's shards (their boundaries are fixed when the store is written)."""

    kind = "store"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from rrnet.store import StoreError, open_store

        try:
            self.store = open_store(path)
        except StoreError as exc:
            raise InferError(str(exc)) from exc
        self.name = str(path)
        self.n_rows = self.store.n_rows
        self.chunk_rows = self.store.shard_size
        self.fingerprint = self.store.fingerprint

    def identity(self) -> dict[str, Any]:
        return {
            "store": os.path.abspath(self.name),
            "fingerprint": self.fingerprint["hash"],
            "n_rows": self.n_rows,
            "manifest_hash": self.store.manifest_digest,  # another store at the same path
        }

    def reading(self) -> None:
        """Nothing is read from spectrum files (the store was made by rrnet-preprocess)."""
        return None

    def chunks(self, skip: set[int]) -> Generator[Chunk, None, None]:
        manifest = self.store.manifest
        for shard in range(self.store.n_shards):
            if shard in skip:
                continue
            start = shard * self.chunk_rows
            part = manifest.slice(start, self.chunk_rows)
            yield Chunk(shard, part, self.store.shard(shard))
            self.store.release(shard)


class _CatalogInput:
    """Chunks = ``chunk_rows`` catalogue rows, preprocessed on the fly (nothing stored)."""

    kind = "catalog"

    def __init__(
        self,
        catalog: str | os.PathLike[str] | pl.DataFrame,
        data_dir: str | os.PathLike[str],
        chunk_rows: int,
        workers: int | None,
        preprocess: dict[str, Any],
        overlap: bool = True,
    ) -> None:
        from rrnet.io.catalog import CatalogError, read_table
        from rrnet.preprocess.settings import PreprocessSettings

        try:
            table = catalog if isinstance(catalog, pl.DataFrame) else read_table(catalog)
        except CatalogError as exc:
            raise InferError(str(exc)) from exc
        if not Path(data_dir).is_dir():
            raise InferError(f"data directory not found: {data_dir}")
        if table.height == 0:  # the answer rrnet-preprocess gives
            raise InferError("the catalogue has no rows")
        table, preprocess = located(table, data_dir, preprocess)
        warn_missing_rv_column(  # once here: each chunk is handed over as a table
            table, preprocess.get("rv_column", "rv"), preprocess.get("correct_rv", True)
        )
        self.table = table
        self.name = "<DataFrame>" if isinstance(catalog, pl.DataFrame) else str(catalog)
        self.data_dir = data_dir
        self.n_rows = table.height
        self.chunk_rows = chunk_rows
        self.workers = workers
        self.preprocess = preprocess
        self.overlap = overlap
        settings = {k: v for k, v in preprocess.items() if k in ("correct_rv", "max_iter")}
        self.fingerprint = PreprocessSettings(**settings).fingerprint()

    def identity(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for batch in self.table.iter_slices(65536):
            digest.update(batch.hash_rows().to_numpy().tobytes())
        return {
            "catalog": self.name,
            "rows_hash": digest.hexdigest()[:16],
            "data_dir": os.path.abspath(self.data_dir),
            "fingerprint": self.fingerprint["hash"],
            "rv_mode": self.preprocess.get("rv_mode", DEFAULT_RV_MODE),
        }

    def reading(self) -> dict[str, Any]:
        return reading_provenance(self.data_dir, self.preprocess)

    def chunks(self, skip: set[int]) -> Generator[Chunk, None, None]:
        """The chunks; with ``overlap`` each is preprocessed on a thread while the previous
        one is predicted (:func:`rrnet.utils.background.ahead`: same chunks, same order,
        two in memory), else in turn with the model (:func:`overlap_preprocessing`)."""
        from rrnet.io.catalog import CatalogError
        from rrnet.preprocess.pipeline import iter_preprocessed

        def preprocessed() -> Iterator[Chunk]:
            for batch in iter_preprocessed(
                self.table,
                self.data_dir,
                batch_size=self.chunk_rows,
                workers=self.workers,
                skip_batches=skip,
                **self.preprocess,
            ):
                yield Chunk(batch.index, batch.manifest, batch.flux)

        try:
            if self.overlap:
                yield from ahead(preprocessed, name="rrnet-preprocess")
            else:
                yield from preprocessed()
        except CatalogError as exc:
            raise InferError(str(exc)) from exc


# ----------------------------------------------------------------------------- one chunk


def _pipeline_columns() -> set[str]:
    from rrnet.preprocess.pipeline import reserved_columns

    return set(reserved_columns())


def _column(manifest: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Series:
    if name in manifest.columns:
        return manifest.get_column(name).cast(dtype, strict=False).alias(name)
    return pl.Series(name, [None] * manifest.height, dtype=dtype)


@dataclass(frozen=True)
class _Rows:
    """A chunk's rows after prediction: status, reason and labels (NaN where none)."""

    status: np.ndarray
    reason: list[Any]
    labels: Prediction


def _predict_rows(
    chunk: Chunk,
    checkpoints: list[LoadedCheckpoint],
    sources: dict[str, int],
    thresholds: QualityThresholds,
    batch_size: int | None,
    on_rows: Callable[[int], None] | None = None,
    calibrate: bool = True,
) -> _Rows:
    """Predict the rows preprocessed ``ok`` with finite flux; mark the others' status.

    ``on_rows(n)`` is called as rows finish (every slice of about a second), so that a
    progress bar moves within a chunk instead of jumping by a whole shard.
    ``calibrate``: scale errors by each checkpoint's stored calibration (at the row's S/N).
    """
    manifest = chunk.manifest
    n = manifest.height
    status = np.array(_column(manifest, "status", pl.Utf8).fill_null("unknown").to_list(), object)
    reason = _column(manifest, "reason", pl.Utf8).to_list()
    values = np.full((n, len(SPEC_LABELS)), np.nan)
    labels = Prediction(
        values=values,
        errors=np.full_like(values, np.nan),
        ood_ratio=np.full(n, np.nan),
        disagreement=np.full(n, np.nan),
        out_of_range=np.zeros(n, bool),
        failed=np.zeros(n, bool),
    )
    ok = np.flatnonzero(status == "ok")
    flux = np.asarray(chunk.flux[ok], dtype=np.float32) if ok.size else None
    if flux is not None:
        finite = np.isfinite(flux).all(axis=1)
        for i in ok[~finite]:
            status[i], reason[i] = "bad_flux", "preprocessed flux is not finite"
        ok, flux = ok[finite], flux[finite]
    arms = (
        _column(manifest, "snr_blue", pl.Float64).to_numpy().astype(np.float64)[ok],
        _column(manifest, "snr_red", pl.Float64).to_numpy().astype(np.float64)[ok],
    )
    snr = calibration_snr(*arms) if calibrate and ok.size else None
    start = 0
    slices = _predict_slices(checkpoints, sources, flux, thresholds, batch_size, snr, arms)
    for rows, result in slices:
        index = ok[start : start + rows]
        for name in ("values", "errors", "ood_ratio", "disagreement", "out_of_range", "failed"):
            getattr(labels, name)[index] = getattr(result, name)
        start += rows
        if on_rows is not None:
            on_rows(rows)
    if on_rows is not None and n - ok.size:
        on_rows(n - ok.size)  # rows without flux are done too
    for i in np.flatnonzero(labels.failed):
        status[i], reason[i] = "inference_failed", "a model returned a non-finite value"
    return _Rows(status, reason, labels)


def _quality(
    manifest: pl.DataFrame,
    rows: _Rows,
    thresholds: QualityThresholds,
    synthetic_domain: bool = False,
) -> np.ndarray:
    """The rows' quality bits; ``ok`` rows get their reason (``ok`` or the bits, spelled)."""
    bits = quality.quality_bits(
        preprocess_ok=np.isin(rows.status, ["ok", "inference_failed"]),
        snr_blue=_column(manifest, "snr_blue", pl.Float64).to_numpy().astype(np.float64),
        snr_red=_column(manifest, "snr_red", pl.Float64).to_numpy().astype(np.float64),
        n_outliers=_column(manifest, "n_outliers", pl.Int32).fill_null(0).to_numpy(),
        max_outlier_run=_column(manifest, "max_outlier_run", pl.Int32).fill_null(0).to_numpy(),
        cap_hit=_column(manifest, "cap_hit", pl.Boolean).fill_null(False).to_numpy(),
        ood_ratio=rows.labels.ood_ratio,
        disagreement=rows.labels.disagreement,
        out_of_range=rows.labels.out_of_range,
        inference_failed=rows.labels.failed,
        thresholds=thresholds,
        rv_disagree=_column(manifest, "rv_disagree", pl.Boolean).fill_null(False).to_numpy(),
        synthetic_domain=synthetic_domain,
    )
    for i in np.flatnonzero(rows.status == "ok"):
        said = "ok" if bits[i] == 0 else "not recommended: " + quality.describe(bits[i])
        notes = rows.reason[i]  # preprocessing's notes (a header OBSID that is no number)
        rows.reason[i] = f"{said}; {notes}" if notes else said
    return bits


def _catalogue_frame(
    manifest: pl.DataFrame, rows: _Rows, bits: np.ndarray, carried: Sequence[str]
) -> pl.DataFrame:
    """The catalogue's columns (schema order and types) followed by the carried ones."""
    data: dict[str, Any] = {
        "obsid": _column(manifest, "obsid", pl.Int64),
        "filename": _column(manifest, "filename", pl.Utf8),
        "ra": _column(manifest, "ra", pl.Float64),
        "dec": _column(manifest, "dec", pl.Float64),
        "extname_blue": _column(manifest, "extname_blue", pl.Utf8),
        "extname_red": _column(manifest, "extname_red", pl.Utf8),
        "snr_blue": _column(manifest, "snr_blue", pl.Float64).to_numpy().astype(np.float64),
        "snr_red": _column(manifest, "snr_red", pl.Float64).to_numpy().astype(np.float64),
    }
    for j, label in enumerate(SPEC_LABELS):
        data[label], data[f"{label}_err"] = rows.labels.values[:, j], rows.labels.errors[:, j]
    data |= {
        "flag": quality.flag(bits),
        "status": rows.status.tolist(),
        "reason": rows.reason,
        "quality_bits": bits,
        "row": _column(manifest, "row", pl.Int64),
        "n_outliers": _column(manifest, "n_outliers", pl.Int32),
        "max_outlier_run": _column(manifest, "max_outlier_run", pl.Int32),
        "cap_hit": _column(manifest, "cap_hit", pl.Boolean),
        "ood_score": rows.labels.ood_ratio,
        "disagreement": rows.labels.disagreement,
        "rv_used": _column(manifest, "rv_used", pl.Float64()),
        "rv_used_source": _column(manifest, "rv_used_source", pl.Utf8()),
        "rv_measured": _column(manifest, "rv_measured", pl.Float64()),
        "rv_measured_err": _column(manifest, "rv_measured_err", pl.Float64()),
    }
    frame = pl.DataFrame(data).with_columns(
        [
            pl.col(c.name).cast(c.dtype).fill_nan(None)
            for c in CATALOGUE_COLUMNS
            if c.dtype.is_float()
        ]
        + [pl.col(c.name).cast(c.dtype) for c in CATALOGUE_COLUMNS if not c.dtype.is_float()]
    )
    extra = manifest.select([pl.col(c).alias(carried_name(c)) for c in carried])
    return pl.concat([frame, extra], how="horizontal")


SLICE_SECONDS: float = 0.5
"""Target wall time of one prediction slice: progress moves about twice a second."""
FIRST_SLICE: int = 64
"""Rows of the first prediction slice of a chunk (then doubled while fast)."""


def _predict_slices(
    checkpoints: list[LoadedCheckpoint],
    sources: dict[str, int],
    flux: np.ndarray | None,
    thresholds: QualityThresholds,
    batch_size: int | None,
    snr: np.ndarray | None = None,
    arms: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[tuple[int, Prediction]]:
    """Predict ``flux`` in slices sized to take about :data:`SLICE_SECONDS` each.

    Rows are independent, so slicing changes no value; the slice starts at 64 rows
    and doubles (up to 65,536) while a slice finishes in under half the target time.
    """
    if flux is None or not len(flux):
        return
    size, start = FIRST_SLICE, 0
    while start < len(flux):
        t0 = time.perf_counter()
        part = flux[start : start + size]
        part_snr = None if snr is None else snr[start : start + size]
        part_arms = (
            None if arms is None else (arms[0][start : start + size], arms[1][start : start + size])
        )
        yield (
            len(part),
            predict(checkpoints, sources, part, thresholds, batch_size, part_snr, part_arms),
        )
        start += len(part)
        if time.perf_counter() - t0 < SLICE_SECONDS / 2:
            size = min(2 * size, 65_536)


def catalogue_chunk(
    chunk: Chunk,
    checkpoints: list[LoadedCheckpoint],
    sources: dict[str, int],
    thresholds: QualityThresholds,
    batch_size: int | None,
    carried: Sequence[str],
    on_rows: Callable[[int], None] | None = None,
    calibrate: bool = True,
    synthetic_domain: bool = False,
) -> pl.DataFrame:
    """The catalogue rows of one chunk (one per manifest row, in order)."""
    rows = _predict_rows(chunk, checkpoints, sources, thresholds, batch_size, on_rows, calibrate)
    bits = _quality(chunk.manifest, rows, thresholds, synthetic_domain)
    return _catalogue_frame(chunk.manifest, rows, bits, carried)


# ----------------------------------------------------------------------------- the run


def parts_dir(out: str | os.PathLike[str]) -> Path:
    """Where the part files of a run writing ``out`` live."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def per_star_path(out: str | os.PathLike[str]) -> Path:
    """Default per-star table path: ``cat.parquet`` -> ``cat.per_star.parquet``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.per_star{out.suffix}")


def _part_path(work: Path, index: int) -> Path:
    return work / f"part-{index:06d}.parquet"


def record_path(out: str | os.PathLike[str]) -> Path:
    """The record of a finished catalogue (``.NAME.rrnet.json`` beside it).

    It is rrnet's format marker for the output (``--overwrite`` removes only files
    that a record lists) and what ``--resume`` checks a finished output against.
    """
    out = Path(out)
    return out.with_name(f".{out.name}.rrnet.json")


def _refuse_resume(out: Path, where: Path, before: Any, run: dict[str, Any]) -> InferError:
    """The refusal, naming what differs (``input``, ``checkpoints``, ``precision``, ...)."""
    keys = [k for k in changed_keys(before, run) if k != "format"]
    known = isinstance(before, dict) and bool(before)
    what = ", ".join(keys) if keys and known else "inputs, models or settings"
    return InferError(
        f"cannot resume {out}: {where} was written by a run with other {what} "
        "(use --overwrite to start again)"
    )


def _check_target(path: Path) -> None:
    if path.exists() and (path.is_symlink() or not path.is_file()):
        raise InferError(f"{path} exists and is not a regular file; refusing to write there")


def _written_here(out: Path, work: Path) -> bool:
    """Whether rrnet-infer wrote ``out`` (its record beside it, or its parts folder)."""
    record = read_json(record_path(out))
    ours = isinstance(record, dict) and record.get("format") == RUN_FORMAT
    return ours or read_json(work / "run.json") is not None


def _listed_files(out: Path) -> list[str]:
    """The files the record beside ``out`` says its run wrote (the catalogue first, then a
    per-star table), or none when the record is not this catalogue's: a record copied
    with its catalogue to another folder lists the original's files, which an
    ``--overwrite`` of the copy deleted."""
    record = read_json(record_path(out))
    listed = record.get("files", []) if isinstance(record, dict) else []
    if not listed or listed[0] != os.path.abspath(out):
        return []
    return [str(name) for name in listed]


def _remove_previous(out: Path, work: Path) -> None:
    """``--overwrite``: delete what an earlier rrnet run wrote there, and nothing else."""
    listed = _listed_files(out)
    if out.exists() and not _written_here(out, work):
        raise InferError(
            f"{out} was not written by rrnet-infer (no record {record_path(out).name}); "
            "refusing to overwrite it"
        )
    for name in listed:
        _check_target(Path(name))
    if work.exists():
        if work.is_symlink() or not work.is_dir():
            raise InferError(f"{work} is not rrnet's parts folder; refusing to remove it")
        for child in work.iterdir():
            is_part = child.name == "run.json" or child.name.startswith(("part-", ".part-"))
            if not is_part or not child.is_file():
                raise InferError(f"{work} holds {child.name}, not rrnet's; refusing to remove it")
        shutil.rmtree(work)
    for name in listed:
        Path(name).unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    record_path(out).unlink(missing_ok=True)


def _floor_source(options: InferOptions, floor: dict[str, float] | None) -> str | None:
    """Where the per-star floor came from: "calibration", "given" or None (no floor)."""
    if not floor:
        return None
    return "calibration" if isinstance(options.error_floor, str) else "given"


def _per_star_record(options: InferOptions, out: Path) -> dict[str, Any] | None:
    """The per-star choices of a run (none without --per-star): a finished run resumed
    with other ones would keep a per-star table that is not the one asked for."""
    if not options.per_star:
        return None
    return {
        "star_column": options.star_column,
        # the floor itself ("auto" and "calibration" give the same table; a run finished
        # before the default became the calibration's recorded None, as "none" does)
        "error_floor": resolve_error_floor(options),
        "out": os.path.abspath(options.per_star_out or per_star_path(out)),
    }


def _refuse_taken(out: Path, overwrite: bool) -> None:
    """InferError when ``out`` (or an unfinished run of it) exists and a run without
    ``resume`` may not take it: not rrnet-infer's, or ``overwrite`` not given."""
    work = parts_dir(out)
    if not (out.exists() or work.exists()):
        return
    if out.exists() and not _written_here(out, work):  # neither flag would take it
        raise InferError(
            f"{out} exists and was not written by rrnet-infer: choose another --out "
            "(or remove it yourself)"
        )
    if not overwrite:
        what = f"{out} exists" if out.exists() else f"an unfinished run of {out} exists"
        raise InferError(
            f"{what}: pass --resume to continue it or --overwrite (resume=True or "
            "overwrite=True in Python)"
        )


def _prepare(
    out: Path,
    run: dict[str, Any],
    resume: bool,
    overwrite: bool,
    per_star: dict[str, Any] | None = None,
    output: dict[str, Any] | None = None,
) -> set[int] | None:
    """Create or check the parts directory; the finished part indices (None: output done).
    ``output``: how the catalogue is written (format, column style), which a finished
    run must match (it read a Parquet catalogue as CSV, failing on a missing sidecar)."""
    work = parts_dir(out)
    _check_target(out)
    record = read_json(record_path(out)) if resume and out.exists() else None
    finished = isinstance(record, dict) and record.get("run") == run
    if finished and work.exists():  # killed while removing the parts: the run is done
        shutil.rmtree(work, ignore_errors=True)
    if resume and out.exists() and not work.exists():
        if not isinstance(record, dict) or record.get("run") != run:
            where = record_path(out) if record else out
            raise _refuse_resume(out, where, record.get("run") if record else None, run)
        if per_star is not None and record.get("per_star") != per_star:
            raise InferError(
                f"{out} is finished, with other per-star choices ({record.get('per_star')}; "
                f"asked: {per_star}): use --overwrite to write both again (a table written "
                "before 2026-12-05 without --error-floor is the one --error-floor none gives)"
            )
        if output is not None and (problem := finished_output_problem(out, record, output)):
            raise InferError(problem)
        return None
    if not resume and (out.exists() or work.exists()):
        _refuse_taken(out, overwrite)
        _remove_previous(out, work)
    if not work.exists():
        work.mkdir(parents=True)
        write_json(work / "run.json", run)
        return set()
    before = read_json(work / "run.json")
    if before != run:
        raise _refuse_resume(out, work, before, run)
    done = set()
    for part in work.glob("part-*.parquet"):
        try:
            pl.read_parquet_schema(part)
        except (OSError, pl.exceptions.PolarsError):
            continue
        done.add(int(part.stem.split("-")[1]))
    return done


@dataclass(frozen=True)
class _Plan:
    """A checked run: its input, loaded checkpoints, provenance and identity record."""

    source: _StoreInput | _CatalogInput
    checkpoints: list[LoadedCheckpoint]
    sources: dict[str, int]
    provenance: dict[str, Any]
    run: dict[str, Any]
    synthetic_domain: bool = False


def _open_source(
    options: InferOptions,
    store: str | os.PathLike[str] | None,
    catalog: str | os.PathLike[str] | pl.DataFrame | None,
    data_dir: str | os.PathLike[str] | None,
    device_type: str,
) -> _StoreInput | _CatalogInput:
    """The input of the run (a store or a catalogue), checked for a per-star column;
    ``device_type`` (``cpu``, ``cuda``, ...) decides :func:`overlap_preprocessing`."""
    if store is not None:
        source: _StoreInput | _CatalogInput = _StoreInput(store)
        columns = source.store.manifest.columns
    else:
        if data_dir is None:
            raise InferError("--catalog needs --data-dir")
        source = _CatalogInput(
            catalog,
            data_dir,
            options.chunk_rows,
            options.workers,
            dict(options.preprocess),
            overlap=overlap_preprocessing(device_type),
        )
        columns = source.table.columns
    if options.per_star and options.star_column not in columns:
        known = [c for c in ("gp_id", "star_id", "designation", "desig", "uid") if c in columns]
        example = f"here --star-column {known[0]}" if known else "e.g. --star-column gp_id"
        raise InferError(
            f"--per-star needs a {options.star_column!r} column in the input catalogue "
            f"(name the star id column: {example})"
        )
    return source


def overlap_preprocessing(device_type: str) -> bool:
    """Whether ``--catalog`` preprocesses the next chunk while the model predicts this one.

    Why: the overlap hides preprocessing only where the model leaves cores idle (a GPU,
    or fewer PyTorch threads than usable cores). Where PyTorch's threads already fill
    every core, the two stages fight over them and the run is slower than one after the
    other (2-core VM, 6-member ensemble: 1.22x inference alone overlapped, 1.14x in
    turn; benchmarks/RESULTS.md, issue 20).
    """
    if device_type != "cpu":
        return True
    import torch

    return torch.get_num_threads() < usable_cores()


def _environment(options: InferOptions, checkpoints: list[LoadedCheckpoint]) -> dict[str, Any]:
    """What else a value depends on, to round-off: the libraries, the device, PyTorch's
    threads and the batch size (batches of another shape round differently)."""
    import torch

    from rrnet.models.checkpoint import software_versions
    from rrnet.models.ensemble import default_batch_size

    device = checkpoints[0].ensemble.device if checkpoints else torch.device("cpu")
    return {
        "versions": software_versions() | {"polars": pl.__version__},
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "batch_size": options.batch_size or default_batch_size(device),
        "precision": options.precision,
        "compile": options.compile,
    }


def _plan(options: InferOptions, source: _StoreInput | _CatalogInput) -> _Plan:
    """Load and check the checkpoints; the provenance and the record a resume must match."""
    checkpoints = load_checked(options, source.fingerprint, options.device)
    sources = label_sources(checkpoints)
    missing = [label for label in SPEC_LABELS if label not in sources]
    if missing:
        log.warning("no checkpoint predicts %s: those columns stay null", ", ".join(missing))
    thresholds = options.thresholds
    provenance = build_provenance(
        input_name=source.name if source.name == "<DataFrame>" else os.path.abspath(source.name),
        input_kind=source.kind,
        preprocessing=source.fingerprint,
        checkpoints=[c.describe(calibrate=options.calibrate) for c in checkpoints],
        label_sources=sources,
        thresholds=thresholds.to_dict(),
        quality_bits={bit.name: int(bit) for bit in quality.QualityBit},
        environment=_environment(options, checkpoints),
        reading=source.reading(),
    )
    run = {
        "format": RUN_FORMAT,
        "input": source.identity(),
        "chunk_rows": source.chunk_rows,
        "checkpoints": [c.hash for c in checkpoints],
        "thresholds": thresholds.to_dict(),
        "columns": catalogue_column_names(),  # parts of older versions lack columns
    }
    run.update(options.arithmetic_identity())
    return _Plan(
        source,
        checkpoints,
        sources,
        provenance,
        run,
        synthetic_domain(
            source.kind,
            source.name,
            checkpoints,
            manifest_digest=(
                source.store.manifest_digest if isinstance(source, _StoreInput) else None
            ),
            # a catalogue read on the fly has no content yet: never the training spectra
            spectra=(lambda: source.store.spectra_digest)
            if isinstance(source, _StoreInput)
            else None,
        ),
    )


def reading_provenance(
    data_dir: str | os.PathLike[str], preprocess: dict[str, Any]
) -> dict[str, Any]:
    """What of a catalogue's on-the-fly reading changes the values (the provenance's
    ``rrnet.reading``, rrnet-infer --catalog and rrnet-run alike: it was only in the
    run's hidden record)."""
    return {
        "data_dir": os.path.realpath(data_dir),
        "rv_mode": preprocess.get("rv_mode", DEFAULT_RV_MODE),
        "rv_column": preprocess.get("rv_column", "rv"),
        "correct_rv": bool(preprocess.get("correct_rv", True)),
    }


def warn_checkpoint_caveats(checkpoints: list[Any], calibrate: bool = True) -> None:
    """Warn (rrnet-infer and rrnet-run), once at the start, of abundances whose [X/Fe]
    the checkpoint measured as mostly [Fe/H] and a trend on its validation split
    (docs/catalogue.md), of an error calibration the default no longer fits, and (with
    ``calibrate``) of an rrnet-trained checkpoint without one."""
    from rrnet.models.calibration import CALIBRATION_FILE, superseded_default
    from rrnet.models.checkpoint import TRAINING_STATE_FILE

    for checkpoint in checkpoints:
        words = xfe_skill.low_skill_words(checkpoint.xfe_skill)
        if words:
            log.warning("checkpoint %s, validation split: %s", checkpoint.path, words)
        if checkpoint.calibration and (why := superseded_default(checkpoint.path)):
            log.warning("checkpoint %s: %s", checkpoint.path, why)
        training = checkpoint.config.get("training") or {}
        trained = training.get("status") == "complete"
        path = checkpoint.path
        if training.get("status") == "running":  # stopped mid-training (Ctrl-C, kill)
            log.warning(
                "checkpoint %s: its training stopped after epoch %s of %s, so these are the "
                "best weights so far, not the finished model's, and their errors are not "
                "calibrated; rrnet-train --resume finishes it",
                path,
                training.get("epochs_done", "?"),
                (training.get("settings") or {}).get("epochs", "?"),
            )
        if calibrate and trained and not (path / CALIBRATION_FILE).is_file():
            # imported releases have no status; their errors are raw by design
            remedy = (
                "its training stopped before calibrating: rrnet-train --resume finishes it"
                if (path / TRAINING_STATE_FILE).is_file()
                else "rrnet-eval --recalibrate fits error factors (docs/evaluation.md)"
            )
            log.warning(
                "checkpoint %s has no calibration.json, its errors are the raw eq. 3 ones; %s",
                path,
                remedy,
            )


def synthetic_domain(
    kind: str,
    name: str,
    checkpoints: list[Any],
    *,
    manifest_digest: str | None = None,
    spectra: Callable[[], str | None] | None = None,
) -> bool:
    """True (and a warning) when a checkpoint trained on synthesised spectra is applied
    to anything but its own training spectra (input ``kind`` "store" or "catalog", named
    ``name``; docs/catalogue.md, quality bit SYNTHETIC_DOMAIN). They are recognised by
    the input's ``spectra`` digest (:func:`rrnet.store.spectra_digest`, computed only
    when asked), whatever the store's layout or the route; checkpoints older than that
    record by their store's manifest digest, older still by its path."""
    foreign = False
    spectra_digest = functools.cache(spectra or (lambda: None))
    for checkpoint in checkpoints:
        domain = (checkpoint.config.get("training") or {}).get("domain") or {}
        if domain.get("labels") != "synthetic":
            continue
        own, own_digest = domain.get("store"), domain.get("store_manifest_digest")
        own_spectra = domain.get("store_spectra_digest")
        if own_spectra is not None:
            same = spectra_digest() == own_spectra
        elif own_digest is not None:
            same = kind == "store" and manifest_digest == own_digest
        else:
            same = kind == "store" and own is not None and _same_path(name, own)
        if not same:
            foreign = True
            log.warning(
                "checkpoint %s was trained on synthesised spectra (%s) only; applied to %s its "
                "labels and errors are untested: every row gets quality bit SYNTHETIC_DOMAIN",
                checkpoint.path,
                domain.get("source"),
                name,
            )
    return foreign


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _compute_parts(plan: _Plan, options: InferOptions, work: Path, done: set[int]) -> None:
    """Write the part file of every chunk not in ``done`` (each atomically)."""
    source = plan.source
    finished = sum(min(source.chunk_rows, source.n_rows - i * source.chunk_rows) for i in done)
    bar = Progress(source.n_rows, initial=finished, enabled=options.progress, prefix="rrnet-infer")
    carried: list[str] | None = None
    try:
        with closing(source.chunks(done)) as chunks:  # an error here stops a producer thread
            for chunk in chunks:
                if carried is None:
                    carried = _carried(chunk.manifest)
                frame = catalogue_chunk(
                    chunk,
                    plan.checkpoints,
                    plan.sources,
                    options.thresholds,
                    options.batch_size,
                    carried,
                    on_rows=bar.update,
                    calibrate=options.calibrate,
                    synthetic_domain=plan.synthetic_domain,
                )
                write_part(frame, _part_path(work, chunk.index))
    finally:
        bar.close()


def _merge(plan: _Plan, options: InferOptions, out: Path, fmt: str, work: Path) -> None:
    """Merge the parts in input order into ``out`` (and the per-star table); drop them."""
    n_chunks = math.ceil(plan.source.n_rows / plan.source.chunk_rows)
    parts = [_part_path(work, i) for i in range(n_chunks)]
    style = options.column_style
    files = [os.path.abspath(out)]
    try:
        merge_parts(parts, out, fmt, plan.provenance, schema=schema(), column_style=style)
        if options.per_star:
            floor = resolve_error_floor(options)
            table = per_star_table(
                pl.scan_parquet(parts), star_column=options.star_column, floor=floor
            )
            target = Path(options.per_star_out or per_star_path(out))
            _check_target(target)
            provenance = plan.provenance | {
                "rrnet.per_star": json.dumps(
                    {
                        "star_column": options.star_column,
                        "error_floor": floor,
                        "error_floor_from": _floor_source(options, floor),
                    }
                )
            }
            write_catalogue(table, target, fmt, provenance, meta=per_star_meta, column_style=style)
            files.append(os.path.abspath(target))
    except ValueError as exc:  # e.g. a carried column clashing with a styled name
        raise InferError(str(exc)) from exc
    record = {
        "format": RUN_FORMAT,
        "run": plan.run,
        "files": files,
        "per_star": _per_star_record(options, out),
        "output": output_record(options, fmt),
        # what a workflow manager checks without reading the catalogue
        "summary": summary_document(summarize(pl.scan_parquet(parts))),
    }
    write_json(record_path(out), record, fsync=True)
    shutil.rmtree(work, ignore_errors=True)


def run_inference(
    models: InferOptions | PathLike | Sequence[PathLike],
    *,
    out: PathLike,
    store: PathLike | None = None,
    catalog: PathLike | pl.DataFrame | None = None,
    data_dir: PathLike | None = None,
    **settings: Any,
) -> Path:
    """Write the catalogue of ``store`` (or of ``catalog`` + ``data_dir``) to ``out``.

    ``models`` is an :class:`InferOptions` or checkpoint paths; ``settings`` are
    :class:`InferOptions` fields (replacing those of given options). Returns the
    catalogue path. See :func:`rrnet.inference.infer` for the parameters.
    """
    options = InferOptions.of(models, **settings)
    out = Path(out)
    fmt = check_options(options, out)
    if (store is None) == (catalog is None):
        given = "both were" if store is not None else "neither was"
        raise InferError(
            f"give one input, --store or --catalog (with --data-dir) (store= or catalog= "
            f"in Python); {given} given"
        )
    if not options.resume:  # said before the models load (~10 s), and again under the lock
        _refuse_taken(out, options.overwrite)
    device_type = _check_device(options.device)
    if device_type == "cpu":  # model steps reuse freed memory (utils.heap)
        retain_heap()
    source = _open_source(options, store, catalog, data_dir, device_type)
    plan = _plan(options, source)
    _check_target(out)  # before the lock file is made beside it
    stars = Path(options.per_star_out or per_star_path(out)) if options.per_star else None
    with ExitStack() as locks:
        locks.enter_context(output_lock(out, directory=False, what="catalogue"))
        if stars is not None:
            _check_per_star_target(stars, out)
            locks.enter_context(output_lock(stars, directory=False, what="per-star table"))
        done = _prepare(
            out,
            plan.run,
            options.resume,
            options.overwrite,
            _per_star_record(options, out),
            output_record(options, fmt),
        )
        if done is not None:
            # once the output is known to be taken
            warn_checkpoint_caveats(plan.checkpoints, options.calibrate)
            work = parts_dir(out)
            try:
                _compute_parts(plan, options, work, done)
            except Exception:  # not Ctrl-C: that run is told to --resume, and can
                _drop_if_empty(work)
                raise
            _merge(plan, options, out, fmt, work)
    return out


def _check_per_star_target(stars: Path, out: Path) -> None:
    """The per-star table may replace only a table this catalogue's runs wrote: never
    the catalogue itself, nor a file of the user's (or of another catalogue's run)."""
    _check_target(stars)
    if os.path.abspath(stars) == os.path.abspath(out):
        raise InferError(f"--per-star-out {stars} is the catalogue itself: choose another path")
    if not stars.exists():
        return
    listed = _listed_files(out) if out.exists() else []
    started = parts_dir(out) / "run.json"  # a run killed between its merge's writes
    unfinished = started.exists() and stars.stat().st_mtime >= started.stat().st_mtime
    if os.path.abspath(stars) not in listed and not unfinished:
        raise InferError(
            f"{stars} exists and was not written by a run of {out}; refusing to replace it "
            "(remove it or choose another --per-star-out)"
        )


def _drop_if_empty(work: Path) -> None:
    """A run that failed before its first part leaves no parts folder behind."""
    try:
        if work.is_dir() and not any(work.glob("part-*.parquet")):
            shutil.rmtree(work)
    except OSError:
        pass


def _check_device(device: str) -> str:
    """The type of the device ``device`` names (``cpu``, ``cuda``, ...); InferError if
    it is unusable."""
    import torch

    from rrnet.models.ensemble import resolve_device

    try:
        resolved = resolve_device(device)
    except RuntimeError as exc:
        raise InferError(f"unknown device {device!r}: {exc}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InferError(f"device {device!r} requested but no CUDA GPU is available")
    return resolved.type


CARRIED_PREFIX = "input_"
"""Prefix of an input column carried under another name because the output has its name."""

_TAKEN_OVER: dict[str, tuple[str, ...]] = {
    "obsid": ("integer",),
    "ra": ("integer", "float"),
    "dec": ("integer", "float"),
    "filename": ("string",),
    "extname_blue": ("string",),
    "extname_red": ("string",),
}
"""Input columns the catalogue takes over as its own, when of a type it keeps unchanged."""


def _family(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "integer"
    if dtype.is_float():
        return "float"
    return "string" if dtype == pl.Utf8 else "other"


def carried_columns(schema_in: dict[str, pl.DataType]) -> list[str]:
    """Input columns carried to the output unchanged (see :func:`carried_name`).

    Every input column is kept with its values: one the catalogue also writes
    (``flag``, ``ood_score``, ``Teff[K]``...) is carried as ``input_<name>``, and
    so is an ``obsid``/``ra``/``dec`` the catalogue could not take over without
    changing it (text such as a sexagesimal ``ra``). Only the columns the
    preprocessing adds (``status``, ``snr_blue``...) are not carried.
    """
    skip = _pipeline_columns()
    carried = []
    for name, dtype in schema_in.items():
        if name in skip:
            continue
        if name in _TAKEN_OVER and _family(dtype) in _TAKEN_OVER[name]:
            continue
        carried.append(name)
    return carried


def carried_name(name: str) -> str:
    """The output name of a carried input column (prefixed where the output has the name)."""
    return CARRIED_PREFIX + name if name in schema() else name


def _carried(manifest: pl.DataFrame) -> list[str]:
    """Input catalogue columns carried to the output; renamed ones are said once."""
    carried = carried_columns(dict(manifest.schema))
    renamed = [c for c in carried if carried_name(c) != c]
    if renamed:
        log.warning(
            "input column(s) %s carried as %s (the catalogue has columns of those names)",
            ", ".join(renamed),
            ", ".join(carried_name(c) for c in renamed),
        )
    return carried
