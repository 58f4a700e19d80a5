"""Writing the checkpoint directory during training: every file atomically.

Each file is written under a temporary name in the same directory and renamed into
place, so a kill leaves either the old or the new version, never half a file. The
checkpoint layout is the one of ``rrnet.models.checkpoint`` (config.json,
normalization.safetensors, member-{i}.safetensors); training adds history.parquet,
loss_curve.png, split.parquet, test_predictions.parquet and, while it runs,
train_state.pt (everything needed to resume).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rrnet.models.checkpoint import (
    CONFIG_FILE,
    HISTORY_FILE,
    TRAINING_STATE_FILE,
    save_checkpoint,
)
from rrnet.models.config import ModelConfig
from rrnet.models.normalization import Normalization
from rrnet.utils.atomic import atomic_path

STATE_FILE = TRAINING_STATE_FILE
LOSS_CURVE_FILE = "loss_curve.png"
TEST_PREDICTIONS_FILE = "test_predictions.parquet"
STAGING_DIR = ".staging"


def write_checkpoint(
    out: Path,
    *,
    model_config: ModelConfig,
    labels: Sequence[str],
    member_state_dicts: Sequence[Mapping[str, torch.Tensor]],
    normalization: Normalization,
    preprocessing: dict[str, Any] | None,
    training: dict[str, Any],
) -> None:
    """The inference-loadable part of the checkpoint (``models.checkpoint.save_checkpoint``).

    ``save_checkpoint`` replaces a whole directory, which would delete the training
    files beside it; so it writes a staging directory inside ``out`` whose files are
    then renamed into ``out`` one by one, members first and config.json last.
    """
    staging = out / STAGING_DIR
    save_checkpoint(
        staging,
        model_config=model_config,
        labels=labels,
        member_state_dicts=member_state_dicts,
        flux_mean=normalization.flux_mean,
        flux_std=normalization.flux_std,
        label_mean=normalization.label_mean,
        label_std=normalization.label_std,
        preprocessing=preprocessing,
        training=training,
    )
    names = sorted(p.name for p in staging.iterdir() if p.name != CONFIG_FILE)
    for name in [*names, CONFIG_FILE]:
        os.replace(staging / name, out / name)
    staging.rmdir()


def write_parquet(path: Path, columns: Mapping[str, Any]) -> None:
    """Atomic Parquet file from a dict of equal-length columns, with the text widths
    astropy reads (it warned "No table::len::star_id found in metadata")."""
    import polars as pl

    from rrnet.io.catalog import write_table

    write_table(pl.DataFrame(dict(columns)), path)


def write_history(out: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """history.parquet (one row per epoch and member) and the loss-curve PNG (Fig. 10)."""
    import polars as pl

    from rrnet.io.catalog import write_table
    from rrnet.plots.history import plot_history

    frame = pl.DataFrame(list(rows))
    write_table(frame, out / HISTORY_FILE)
    plot_history(frame, out / LOSS_CURVE_FILE)  # written atomically by rrnet.plots


def save_state(out: Path, state: dict[str, Any]) -> None:
    """train_state.pt, loadable with ``torch.load(weights_only=True)``."""
    with atomic_path(out / STATE_FILE) as tmp:
        torch.save(state, tmp)


def load_state(out: Path) -> dict[str, Any]:
    """Inverse of :func:`save_state` (safe loader: tensors and plain containers only)."""
    return torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)


def read_config(out: Path) -> dict[str, Any] | None:
    """config.json of a checkpoint directory, or None if there is none."""
    try:
        return json.loads((out / "config.json").read_text())
    except FileNotFoundError:
        return None
