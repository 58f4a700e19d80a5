"""Streamed, resumable inference: a store or a raw catalogue in, one catalogue out.

The input is cut into chunks of consecutive rows with deterministic boundaries
(a store's shards; ``chunk_rows`` rows of a catalogue preprocessed on the fly).
Each chunk becomes one part file, written atomically into ``<out>.parts/``
beside the output; ``resume`` keeps finished parts and computes the rest, so a
run killed at any moment (``kill -9`` included) ends with the same catalogue as
an uninterrupted one. The parts are merged in input order into the final file
(atomically), then removed. Memory is bounded by one chunk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rrnet.inference import quality
from rrnet.inference.columns import CATALOGUE_COLUMNS, SPEC_LABELS, schema
from rrnet.inference.models import (
    LoadedCheckpoint,
    label_sources,
    load_checkpoints,
    predict,
)
from rrnet.inference.per_star import per_star_table
from rrnet.inference.provenance import build_provenance, check_fingerprint
from rrnet.inference.quality import DEFAULT_THRESHOLDS, QualityThresholds
from rrnet.inference.writers import (
    merge_parts,
    resolve_format,
    write_catalogue,
    write_part,
)
from rrnet.labels import COLUMN_STYLES, DEFAULT_COLUMN_STYLE
from rrnet.utils.atomic import read_json, write_text
from rrnet.utils.progress import Progress

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS: int = 4096
"""Catalogue rows per part file when preprocessing on the fly."""

RUN_FORMAT = "rrnet-infer-run"


class InferError(ValueError):
    """Unusable arguments or an inconsistent output directory (one-line message)."""


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
        return {"store": os.path.abspath(self.name), "fingerprint": self.fingerprint["hash"]}

    def chunks(self, skip: set[int]) -> Iterator[Chunk]:
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
    ) -> None:
        from rrnet.io.catalog import CatalogError, read_table
        from rrnet.preprocess.settings import PreprocessSettings

        try:
            table = catalog if isinstance(catalog, pl.DataFrame) else read_table(catalog)
        except CatalogError as exc:
            raise InferError(str(exc)) from exc
        if not Path(data_dir).is_dir():
            raise InferError(f"data directory not found: {data_dir}")
        self.table = table
        self.name = "<DataFrame>" if isinstance(catalog, pl.DataFrame) else str(catalog)
        self.data_dir = data_dir
        self.n_rows = table.height
        self.chunk_rows = chunk_rows
        self.workers = workers
        self.preprocess = preprocess
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
        }

    def chunks(self, skip: set[int]) -> Iterator[Chunk]:
        from rrnet.io.catalog import CatalogError
        from rrnet.preprocess.pipeline import iter_preprocessed

        try:
            for batch in iter_preprocessed(
                self.table,
                self.data_dir,
                batch_size=self.chunk_rows,
                workers=self.workers,
                skip_batches=skip,
                **self.preprocess,
            ):
                yield Chunk(batch.index, batch.manifest, batch.flux)
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


def catalogue_chunk(
    chunk: Chunk,
    checkpoints: list[LoadedCheckpoint],
    sources: dict[str, int],
    thresholds: QualityThresholds,
    batch_size: int | None,
    carried: Sequence[str],
) -> pl.DataFrame:
    """The catalogue rows of one chunk (one per manifest row, in order)."""
    manifest = chunk.manifest
    n = manifest.height
    status = np.array(_column(manifest, "status", pl.Utf8).fill_null("unknown").to_list(), object)
    reason = _column(manifest, "reason", pl.Utf8).to_list()
    values = np.full((n, len(SPEC_LABELS)), np.nan)
    errors = np.full_like(values, np.nan)
    ood_ratio, disagreement = np.full(n, np.nan), np.full(n, np.nan)
    out_of_range, failed = np.zeros(n, bool), np.zeros(n, bool)
    ok = np.flatnonzero(status == "ok")
    flux = np.asarray(chunk.flux[ok], dtype=np.float32) if ok.size else None
    if flux is not None:
        finite = np.isfinite(flux).all(axis=1)
        for i in ok[~finite]:
            status[i], reason[i] = "bad_flux", "preprocessed flux is not finite"
        ok, flux = ok[finite], flux[finite]
    if ok.size:
        result = predict(checkpoints, sources, flux, thresholds, batch_size)
        values[ok], errors[ok] = result.values, result.errors
        ood_ratio[ok], disagreement[ok] = result.ood_ratio, result.disagreement
        out_of_range[ok], failed[ok] = result.out_of_range, result.failed
    for i in np.flatnonzero(failed):
        status[i], reason[i] = "inference_failed", "a model returned a non-finite value"
    preprocess_ok = np.isin(status, ["ok", "inference_failed"])
    snr_blue = _column(manifest, "snr_blue", pl.Float64).to_numpy().astype(np.float64)
    snr_red = _column(manifest, "snr_red", pl.Float64).to_numpy().astype(np.float64)
    n_outliers = _column(manifest, "n_outliers", pl.Int32)
    max_run = _column(manifest, "max_outlier_run", pl.Int32)
    cap_hit = _column(manifest, "cap_hit", pl.Boolean)
    bits = quality.quality_bits(
        preprocess_ok=preprocess_ok,
        snr_blue=snr_blue,
        snr_red=snr_red,
        n_outliers=n_outliers.fill_null(0).to_numpy(),
        max_outlier_run=max_run.fill_null(0).to_numpy(),
        cap_hit=cap_hit.fill_null(False).to_numpy(),
        ood_ratio=ood_ratio,
        disagreement=disagreement,
        out_of_range=out_of_range,
        inference_failed=failed,
        thresholds=thresholds,
    )
    for i in np.flatnonzero(status == "ok"):
        reason[i] = "ok" if bits[i] == 0 else "not recommended: " + quality.describe(bits[i])
    data: dict[str, Any] = {
        "obsid": _column(manifest, "obsid", pl.Int64),
        "filename": _column(manifest, "filename", pl.Utf8),
        "ra": _column(manifest, "ra", pl.Float64),
        "dec": _column(manifest, "dec", pl.Float64),
        "extname_blue": _column(manifest, "extname_blue", pl.Utf8),
        "extname_red": _column(manifest, "extname_red", pl.Utf8),
        "snr_blue": snr_blue,
        "snr_red": snr_red,
    }
    for j, label in enumerate(SPEC_LABELS):
        data[label], data[f"{label}_err"] = values[:, j], errors[:, j]
    data |= {
        "flag": quality.flag(bits),
        "status": status.tolist(),
        "reason": reason,
        "quality_bits": bits,
        "row": _column(manifest, "row", pl.Int64),
        "n_outliers": n_outliers,
        "max_outlier_run": max_run,
        "cap_hit": cap_hit,
        "ood_score": ood_ratio,
        "disagreement": disagreement,
    }
    frame = pl.DataFrame(data).with_columns(
        [
            pl.col(c.name).cast(c.dtype).fill_nan(None)
            for c in CATALOGUE_COLUMNS
            if c.dtype.is_float()
        ]
        + [pl.col(c.name).cast(c.dtype) for c in CATALOGUE_COLUMNS if not c.dtype.is_float()]
    )
    return pl.concat([frame, manifest.select(carried)], how="horizontal")


# ----------------------------------------------------------------------------- progress


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


def _prepare(out: Path, run: dict[str, Any], resume: bool, overwrite: bool) -> set[int] | None:
    """Create or check the parts directory; the finished part indices (None: output done)."""
    work = parts_dir(out)
    if resume and out.exists() and not work.exists():
        return None
    if not resume and (out.exists() or work.exists()):
        if not overwrite:
            raise InferError(f"{out} exists: pass --resume to continue it or --overwrite")
        shutil.rmtree(work, ignore_errors=True)
        out.unlink(missing_ok=True)
    if not work.exists():
        work.mkdir(parents=True)
        write_text(work / "run.json", json.dumps(run, indent=1, sort_keys=True))
        return set()
    if read_json(work / "run.json") != run:
        raise InferError(
            f"cannot resume {out}: {work} was written by a run with other inputs, models "
            "or settings (use --overwrite to start again)"
        )
    done = set()
    for part in work.glob("part-*.parquet"):
        try:
            pl.read_parquet_schema(part)
        except (OSError, pl.exceptions.PolarsError):
            continue
        done.add(int(part.stem.split("-")[1]))
    return done


def run_inference(
    *,
    models: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    store: str | os.PathLike[str] | None = None,
    catalog: str | os.PathLike[str] | pl.DataFrame | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    fmt: str | None = None,
    batch_size: int | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    per_star: bool = False,
    star_column: str = "star_id",
    per_star_out: str | os.PathLike[str] | None = None,
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
    allow_fingerprint_mismatch: bool = False,
    workers: int | None = None,
    preprocess: dict[str, Any] | None = None,
    progress: bool = False,
    column_style: str = DEFAULT_COLUMN_STYLE,
) -> Path:
    """Write the catalogue of ``store`` (or of ``catalog`` + ``data_dir``) to ``out``.

    Returns the catalogue path. See :func:`rrnet.inference.infer` for the parameters.
    """
    out = Path(out)
    fmt = resolve_format(out, fmt)
    if not models:
        raise InferError("give at least one --model checkpoint")
    if (store is None) == (catalog is None):
        raise InferError("give either --store or --catalog (with --data-dir), not both")
    if (batch_size is not None and batch_size < 1) or chunk_rows < 1:
        raise InferError("--batch-size and --chunk-rows must be positive")
    _check_device(device)
    if column_style not in COLUMN_STYLES:
        raise InferError(f"--column-style must be one of {', '.join(COLUMN_STYLES)}")
    for path in models:
        if not (Path(path) / "config.json").is_file():
            raise InferError(f"not an rrnet checkpoint (no config.json): {path}")
    if store is not None:
        source: _StoreInput | _CatalogInput = _StoreInput(store)
    else:
        if data_dir is None:
            raise InferError("--catalog needs --data-dir")
        source = _CatalogInput(catalog, data_dir, chunk_rows, workers, preprocess or {})
    if per_star and store is not None and star_column not in source.store.manifest.columns:
        raise InferError(f"--per-star needs a {star_column!r} column in the input catalogue")
    if per_star and catalog is not None and star_column not in source.table.columns:
        raise InferError(f"--per-star needs a {star_column!r} column in the input catalogue")

    try:
        checkpoints = load_checkpoints(list(models), device=device, thresholds=thresholds)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InferError(f"cannot load checkpoint: {exc}") from exc
    for checkpoint in checkpoints:
        check_fingerprint(
            str(checkpoint.path),
            checkpoint.preprocessing,
            source.fingerprint,
            allow_mismatch=allow_fingerprint_mismatch,
        )
    sources = label_sources(checkpoints)
    missing = [label for label in SPEC_LABELS if label not in sources]
    if missing:
        log.warning("no checkpoint predicts %s: those columns stay null", ", ".join(missing))
    provenance = build_provenance(
        input_name=Path(source.name).name if source.kind == "catalog" else source.name,
        input_kind=source.kind,
        preprocessing=source.fingerprint,
        checkpoints=[c.describe() for c in checkpoints],
        label_sources=sources,
        thresholds=thresholds.to_dict(),
        quality_bits={bit.name: int(bit) for bit in quality.QualityBit},
    )
    run = {
        "format": RUN_FORMAT,
        "input": source.identity(),
        "chunk_rows": source.chunk_rows,
        "checkpoints": [c.hash for c in checkpoints],
        "thresholds": thresholds.to_dict(),
    }
    done = _prepare(out, run, resume, overwrite)
    work = parts_dir(out)
    if done is not None:
        n_chunks = math.ceil(source.n_rows / source.chunk_rows)
        finished = sum(min(source.chunk_rows, source.n_rows - i * source.chunk_rows) for i in done)
        bar = Progress(source.n_rows, initial=finished, enabled=progress, prefix="rrnet-infer")
        carried: list[str] | None = None
        try:
            for chunk in source.chunks(done):
                if carried is None:
                    carried = _carried(chunk.manifest)
                frame = catalogue_chunk(
                    chunk, checkpoints, sources, thresholds, batch_size, carried
                )
                write_part(frame, _part_path(work, chunk.index))
                bar.update(frame.height)
        finally:
            bar.close()
        parts = [_part_path(work, i) for i in range(n_chunks)]
        try:
            merge_parts(parts, out, fmt, provenance, schema=schema(), column_style=column_style)
            if per_star:
                table = per_star_table(pl.scan_parquet(parts), star_column=star_column)
                per_star_file = per_star_out or per_star_path(out)
                write_catalogue(table, per_star_file, fmt, provenance, column_style=column_style)
        except ValueError as exc:  # e.g. a carried column clashing with a styled name
            raise InferError(str(exc)) from exc
        shutil.rmtree(work, ignore_errors=True)
    return out


def _check_device(device: str) -> None:
    import torch

    from rrnet.models.ensemble import resolve_device

    try:
        resolved = resolve_device(device)
    except RuntimeError as exc:
        raise InferError(f"unknown device {device!r}: {exc}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InferError(f"device {device!r} requested but no CUDA GPU is available")


def _carried(manifest: pl.DataFrame) -> list[str]:
    """Input catalogue columns carried to the output (those not already in it)."""
    skip = set(schema()) | _pipeline_columns()
    return [c for c in manifest.columns if c not in skip]
