"""Loss curves of the ensemble members (paper Fig. 10)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

from rrnet.plots.style import new_figure, save_figure

LOSS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("train_loss", "training", "tab:blue"),
    ("valid_loss", "validation", "tab:orange"),
)


def plot_history(history: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Mean loss over members per epoch (line) and its 1-sigma range (band).

    ``history`` has ``epoch``, ``member``, ``train_loss`` and ``valid_loss``, and
    optionally ``group`` (e.g. SP and CA ensembles): one panel per group.
    """
    groups = (
        history.get_column("group").unique(maintain_order=True).to_list()
        if ("group" in history.columns)
        else [None]
    )
    fig, axes = new_figure(len(groups), ncols=2, panel_size=(5.0, 3.6))
    for ax, group in zip(axes, groups, strict=True):
        rows = history if group is None else history.filter(pl.col("group") == group)
        n_members = rows.get_column("member").n_unique()
        for column, name, color in LOSS_COLUMNS:
            if column not in rows.columns:
                continue
            stats = (
                rows.group_by("epoch")
                .agg(pl.col(column).mean().alias("mean"), pl.col(column).std(ddof=0).alias("std"))
                .sort("epoch")
            )
            epoch = stats.get_column("epoch").to_numpy()
            mean = stats.get_column("mean").to_numpy()
            std = np.nan_to_num(stats.get_column("std").to_numpy())
            ax.plot(epoch, mean, color=color, label=f"{name} (mean of {n_members})")
            ax.fill_between(epoch, mean - std, mean + std, color=color, alpha=0.25, linewidth=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel("Gaussian NLL loss (standardised labels)")
        if group is not None:
            ax.set_title(group)
        ax.legend(fontsize=8, title="band: 1σ range of the members", title_fontsize=8)
    # one short line: the longer title was wider than a one-panel figure and cut off
    fig.suptitle("Training and validation loss")
    return save_figure(fig, path)
