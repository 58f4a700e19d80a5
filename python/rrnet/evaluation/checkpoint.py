"""What the evaluation reads from a training checkpoint directory: the split by star."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from rrnet.io import read_table

SPLIT_FILES: tuple[str, ...] = ("split.parquet", "split.csv")
"""Where ``rrnet-train`` stores the split: one row per star (or spectrum) with
``star_id`` and ``split`` ("train"/"valid"/"test")."""


def split_keys(checkpoint: str | os.PathLike[str]) -> dict[str, list[object]]:
    """``{"train": [...], "valid": [...], "test": [...]}`` star ids of a checkpoint."""
    for name in SPLIT_FILES:
        path = Path(checkpoint) / name
        if path.is_file():
            table = read_table(path)
            break
    else:
        raise FileNotFoundError(f"no split file ({' or '.join(SPLIT_FILES)}) in {checkpoint}")
    missing = [c for c in ("star_id", "split") if c not in table.columns]
    if missing:
        raise ValueError(f"split file in {checkpoint} lacks column(s) {', '.join(missing)}")
    return {
        name: table.filter(pl.col("split") == name).get_column("star_id").unique().to_list()
        for name in ("train", "valid", "test")
    }
