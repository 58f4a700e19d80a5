"""Predicted sigma against S/N with the scatter of repeat observations (paper Fig. 7)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

from rrnet.plots.style import display_name, new_figure, save_figure, unit


def plot_repeats(
    repeats: pl.DataFrame, labels: list[str] | tuple[str, ...], path: str | os.PathLike[str]
) -> Path:
    """Per label and S/N bin: mean predicted sigma (dot) and repeat scatter (segment).

    As in the paper, the segment centred on each dot has the length of sigma_obs;
    an open square marks sigma_obs itself so the two can be compared on one axis.
    ``repeats`` is :func:`rrnet.evaluation.repeats.repeat_table` output.
    """
    fig, axes = new_figure(len(labels))
    binned = repeats.filter(pl.col("snr_bin") != "all")
    for ax, label in zip(axes, labels, strict=True):
        rows = binned.filter(pl.col("label") == label)
        names = rows.get_column("snr_bin").to_list()
        x = np.arange(len(names))
        pred = rows.get_column("sigma_pred").to_numpy()
        obs = rows.get_column("sigma_obs").to_numpy()
        ax.errorbar(
            x,
            pred,
            yerr=obs / 2.0,
            fmt="o",
            color="tab:blue",
            capsize=3,
            label="σ_pred (bar: σ_obs)",
        )
        ax.plot(x, obs, "s", mfc="none", color="tab:orange", label="σ_obs (repeats)")
        for xi, n in zip(x, rows.get_column("n_stars").to_list(), strict=True):
            ax.annotate(
                f"{n}",
                (xi, 0),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=6,
                color="0.4",
            )
        ax.set_xticks(x, names, fontsize=8)
        ax.set_xlabel("S/N")
        ax.set_ylabel(f"σ {display_name(label)} [{unit(label)}]")
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        "Predicted uncertainty and scatter between repeat observations "
        "(grey numbers: stars per bin)"
    )
    return save_figure(fig, path)
