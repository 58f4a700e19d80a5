"""Planning a batch: its catalogue rows grouped by file (each file read once however many
of its spectra the batch names), with the rows that fail before any read (bad RV, a
file outside the data directory, ...) already marked."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from rrnet.preprocess import rv_policy


@dataclass
class BatchPlan:
    index: int
    start: int
    stop: int
    early: dict[int, tuple[str, str]]
    """Rows that fail before any file is read: row -> (status, reason)."""


@dataclass
class Job:
    """One file of one batch (args = (path, extnames)), or the end marker of a batch."""

    plan: BatchPlan
    args: tuple | None
    rows: list[tuple[int, str, str, float]] = field(default_factory=list)


def plan_batch(
    catalog: pl.DataFrame,
    index: int,
    batch_size: int,
    data_dir: Path,
    rv_column: str,
    correct_rv: bool,
    allow_outside: bool = False,
    rv_mode: str = "catalog",
) -> list[Job]:
    start = index * batch_size
    stop = min(start + batch_size, catalog.height)
    part = catalog.slice(start, stop - start)
    plan = BatchPlan(index, start, stop, {})
    by_file: dict[str, Job] = {}
    paths: dict[str, str | None] = {}
    said = _catalogue_says(part)
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
            plan.early[row] = _early("missing_file", "filename is empty", said[offset])
            continue
        if blue is None or red is None:
            which = "extname_blue" if blue is None else "extname_red"
            plan.early[row] = _early("missing_extension", f"{which} is empty", said[offset])
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
                f"{filename!r} lies outside the data directory (--allow-outside-data-dir reads it)",
            )
            continue
        job = by_file.setdefault(path, Job(plan, (path, [])))
        assert job.args is not None  # a file job (the batch's end marker has none)
        extnames = job.args[1]
        extnames.extend(e for e in dict.fromkeys((blue, red)) if e not in extnames)
        rv = (float(rv) if rv is not None else math.nan) if correct_rv else 0.0
        job.rows.append((row, blue, red, rv))
    if by_file and stop < catalog.height:
        _add_lookahead(catalog, stop, data_dir, by_file)
    return [*by_file.values(), Job(plan, None)]


FILE_STATUSES = frozenset({"missing_file", "bad_fits", "too_large", "missing_extension"})
"""rrnet-catalog statuses that are already a reading status: kept as the row's status."""


def _catalogue_says(part: pl.DataFrame) -> list[tuple[str | None, str | None]]:
    """``(catalog_status, catalog_reason)`` per row of an rrnet-catalog table (else Nones):
    why it could not name a file or an extension (a damaged file it scanned, one band)."""
    if not {"catalog_status", "catalog_reason"} <= set(part.columns):
        return [(None, None)] * part.height
    status = part.get_column("catalog_status").cast(pl.Utf8).to_list()
    reason = part.get_column("catalog_reason").cast(pl.Utf8).to_list()
    return list(zip(status, reason, strict=True))


def _early(status: str, reason: str, said: tuple[str | None, str | None]) -> tuple[str, str]:
    """A row without a file or extension name: the catalogue's reason where it gave one."""
    catalog_status, catalog_reason = said
    if not catalog_reason:
        return status, reason
    if catalog_status in FILE_STATUSES:  # e.g. a truncated file rrnet-catalog scan read
        return catalog_status, catalog_reason
    return status, f"{reason} (catalogue: {catalog_reason})"


LOOKAHEAD_ROWS = 256
"""Rows of the next batch checked for the file the batch ends with."""


def _add_lookahead(catalog: pl.DataFrame, stop: int, data_dir: Path, by_file: dict) -> None:
    """Ask the batch's last file also for the arms the next batch's leading rows
    want from it, so a file straddling two batches is read once (see
    :func:`ordered_prefetch`)."""
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
    directory are followed as usual). A name of the directory itself (``.``) is inside:
    its reading says it is a directory, not a file.
    """
    path = os.path.normpath(os.path.join(data_dir, filename))
    if allow_outside:
        return path
    root = os.path.normpath(os.path.abspath(data_dir))
    inside = os.path.normpath(os.path.abspath(path))
    if inside == root or inside.startswith(root.rstrip(os.sep) + os.sep):
        return path
    return None
