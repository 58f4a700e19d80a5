"""Shards of whole files: the unit of work, retry and resume of a cluster run.

A shard is a range of consecutive catalogue rows. Its end is moved forward to
where ``filename`` changes, so the rows of one file listed together are never
split (each file is opened by one task). Boundaries depend only on the
catalogue and ``shard_size``, so a rerun plans the same shards; the plan is
written once into the run directory and checked on resume.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from rrnet.utils.atomic import changed_keys, read_json, write_json

PLAN_FORMAT = "rrnet-run-plan"


class PlanError(ValueError):
    """The run directory belongs to another run (one-line message)."""


@dataclass(frozen=True)
class Shard:
    """Catalogue rows ``start`` (inclusive) to ``stop`` (exclusive)."""

    index: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def plan_shards(catalog: pl.DataFrame, shard_size: int) -> list[Shard]:
    """Cut ``catalog`` into shards of about ``shard_size`` rows, never inside a run of one file."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    names = catalog.get_column("filename").cast(pl.Utf8).fill_null("")
    # Row i starts a new file run when its filename differs from row i-1's.
    starts = (names != names.shift(1)).fill_null(True).arg_true().to_list()
    run_starts = [*starts, catalog.height]
    shards: list[Shard] = []
    begin = 0
    for boundary in run_starts[1:]:
        if boundary - begin >= shard_size or boundary == catalog.height:
            shards.append(Shard(len(shards), begin, boundary))
            begin = boundary
    return shards


def part_name(index: int) -> str:
    """File name of a shard's part (``shard-000123.parquet``)."""
    return f"shard-{index:06d}.parquet"


def failed_part_name(index: int) -> str:
    """File name of the rows of a shard that failed every attempt (``failed-000123.parquet``):
    each row with its status, so that no row is lost from the catalogue."""
    return f"failed-{index:06d}.parquet"


def write_plan(path: Path, shards: list[Shard], identity: dict[str, Any]) -> None:
    """Write the plan once (atomically); on resume, refuse a plan of another run."""
    plan = {"format": PLAN_FORMAT, "run": identity, "shards": [asdict(s) for s in shards]}
    if path.exists():
        old = read_json(path)
        if old != plan:
            keys = changed_keys(old.get("run") if isinstance(old, dict) else None, identity)
            raise PlanError(
                f"cannot resume: {path} was written by a run with other "
                f"{', '.join(keys) or 'shards'} (--overwrite starts again, dropping its parts)"
            )
        return
    write_json(path, plan)


def read_plan(path: str | os.PathLike[str]) -> list[Shard]:
    """The shards of a written plan."""
    plan = read_json(path)
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise PlanError(f"not a readable run plan: {path}")
    return [Shard(**s) for s in plan["shards"]]
