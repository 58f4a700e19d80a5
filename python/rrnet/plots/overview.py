"""Figures of a catalogue without reference labels: predicted σ against S/N, label histograms."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import polars as pl

from rrnet.plots.style import (
    display_name,
    log_scale,
    marker_size,
    new_figure,
    save_figure,
    unit,
)


def _column(catalog: pl.DataFrame, name: str) -> np.ndarray:
    return catalog.get_column(name).cast(pl.Float64).to_numpy()


def plot_sigma_vs_snr_catalogue(
    catalog: pl.DataFrame,
    labels: list[str] | tuple[str, ...],
    path: str | os.PathLike[str],
    *,
    snr: str = "snr",
) -> Path:
    """Per label: predicted σ of every row against S/N (log axes) and its running median."""
    fig, axes = new_figure(len(labels), ncols=5, panel_size=(3.0, 2.5))
    s = _column(catalog, snr)
    for ax, label in zip(axes, labels, strict=True):
        err = _column(catalog, f"{label}_err")
        ok = np.isfinite(s) & np.isfinite(err) & (s > 0) & (err > 0)
        ax.set_xlabel("S/N")
        ax.set_ylabel(f"σ {display_name(label)} [{unit(label)}]")
        if not ok.any():  # a label no row has (a checkpoint without it): no log axes
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
            continue
        n = int(ok.sum())  # thousands of rows: faint dots; a handful: plain ones
        alpha = 0.3 if n > 1000 else 0.8
        ax.scatter(s[ok], err[ok], s=marker_size(n), alpha=alpha, color="tab:blue", rasterized=True)
        bins = min(10, int(ok.sum()) // 2)  # a few rows still get a median line
        if bins >= 2:
            edges = np.quantile(s[ok], np.linspace(0, 1, bins + 1))
            centre, median = [], []
            for lo, hi in itertools.pairwise(edges):
                sel = ok & (s >= lo) & (s <= hi)
                if sel.any():
                    centre.append(np.median(s[sel]))
                    median.append(np.median(err[sel]))
            ax.plot(centre, median, "o-", color="tab:red", markersize=3, label="median")
        log_scale(ax, "x")
        log_scale(ax, "y")
    fig.suptitle("Predicted uncertainty against S/N")
    return save_figure(fig, path)


def plot_distributions(
    catalog: pl.DataFrame,
    labels: list[str] | tuple[str, ...],
    path: str | os.PathLike[str],
    *,
    recommended: np.ndarray | None = None,
) -> Path:
    """Histogram of every label; recommended rows (flag 1) drawn over all rows with labels."""
    fig, axes = new_figure(len(labels), ncols=5, panel_size=(3.0, 2.3))
    for ax, label in zip(axes, labels, strict=True):
        x = _column(catalog, label)
        finite = np.isfinite(x)
        if not finite.any():
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center")
        else:
            lo, hi = np.percentile(x[finite], [0.5, 99.5])
            if hi <= lo:  # one value (or all equal): a window around it
                half = max(0.05 * abs(lo), 0.05)
                lo, hi = lo - half, hi + half
            bins = np.linspace(lo, hi, 50)
            x = np.clip(x, lo, hi)  # the tails counted in the edge bins, not dropped
            ax.hist(x[finite], bins=bins, color="lightgrey", label="all with labels")
            if recommended is not None and (finite & recommended).any():
                ax.hist(
                    x[finite & recommended],
                    bins=bins,
                    histtype="step",
                    color="tab:blue",
                    label="recommended",
                )
        ax.set_xlabel(f"{display_name(label)} [{unit(label)}]")
        ax.set_ylabel("spectra")
    with_entries = [ax for ax in axes if ax.get_legend_handles_labels()[0]]
    if with_entries:  # an empty legend box otherwise
        with_entries[0].legend(fontsize=7)
    fig.suptitle(
        "Distribution of every label (values beyond the 0.5-99.5 percentiles counted "
        "in the edge bins)"
    )
    return save_figure(fig, path)
