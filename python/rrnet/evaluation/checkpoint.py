"""What the evaluation reads from a training checkpoint directory: the split by star.

``rrnet-train`` writes ``split.parquet`` (columns ``row``, the star column, ``split``)
and names the star column in ``config.json`` under ``training.data.star_column``
(or ``training.split.by``); ``star_id`` when absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl

SPLIT_FILE = "split.parquet"
DEFAULT_STAR_COLUMN = "star_id"


def star_column(checkpoint: str | os.PathLike[str]) -> str:
    """The column the checkpoint's split is keyed by."""
    config = Path(checkpoint) / "config.json"
    if not config.is_file():
        return DEFAULT_STAR_COLUMN
    training = json.loads(config.read_text(encoding="utf-8")).get("training") or {}
    data, split = training.get("data") or {}, training.get("split") or {}
    return str(data.get("star_column") or split.get("by") or DEFAULT_STAR_COLUMN)


def split_keys(checkpoint: str | os.PathLike[str]) -> tuple[str, dict[str, list[object]]]:
    """``(star column, {"train": [...], "valid": [...], "test": [...]})`` of a checkpoint."""
    path = Path(checkpoint) / SPLIT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {SPLIT_FILE} in checkpoint {checkpoint}")
    column = star_column(checkpoint)
    table = pl.read_parquet(path)
    missing = [c for c in (column, "split") if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}")
    return column, {
        name: table.filter(pl.col("split") == name).get_column(column).unique().to_list()
        for name in ("train", "valid", "test")
    }
