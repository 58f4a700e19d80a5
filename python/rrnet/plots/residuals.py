"""Residual distributions and their dependence on S/N (paper Fig. 2)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

from rrnet.labels import TRUE_SUFFIX
from rrnet.plots.style import axis_label, display_name, new_figure, save_figure, unit

HEADROOM: float = 2.2
"""The y axis of a residual histogram reaches this times its highest bar: the four lines
of statistics in the top left corner stood on the bars."""


def _hist_range(values: np.ndarray) -> tuple[float, float]:
    """The 0.5-99.5 percentiles plus 5 % each side; a window around the value when all
    values are equal (one spectrum gave a 1e-12-wide range, and matplotlib refused it)."""
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    span = hi - lo if hi > lo else max(abs(lo), 1.0)
    return lo - 0.05 * span, hi + 0.05 * span


def _stat(value: float | None, u: str) -> str:
    """A statistic for a panel: "–" where it is undefined (the scatter of one value)."""
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.3g} {u}"


def plot_residuals(
    sample: pl.DataFrame,
    labels: list[str] | tuple[str, ...],
    path: str | os.PathLike[str],
    *,
    metrics: pl.DataFrame,
) -> Path:
    """One histogram of ``pred - true`` per label, annotated with mu_r, sigma_r, mean sigma;
    residuals beyond the range (the 0.5-99.5 percentiles, padded) fall in the edge bins,
    so the bars add up to the N printed in the panel.

    The annotations are the ``snr_bin == "all"`` rows of ``metrics``
    (:func:`rrnet.evaluation.metrics.metrics_table` of the same ``sample``): the
    evaluation computes the statistics, the figure only shows them.
    """
    overall = metrics.filter(pl.col("snr_bin") == "all")
    fig, axes = new_figure(len(labels), panel_size=(3.4, 3.2))
    for ax, label in zip(axes, labels, strict=True):
        pred = sample.get_column(label).cast(pl.Float64).to_numpy()
        true = sample.get_column(label + TRUE_SUFFIX).cast(pl.Float64).to_numpy()
        resid = pred - true
        resid = resid[np.isfinite(resid)]
        m = overall.filter(pl.col("label") == label).row(0, named=True)
        if resid.size:
            lo, hi = _hist_range(resid)
            counts, _, _ = ax.hist(
                np.clip(resid, lo, hi),  # the tails counted in the edge bins, not dropped
                bins=50,
                range=(lo, hi),
                histtype="step",
                color="black",
                linewidth=1.2,
            )
            ax.set_ylim(0, HEADROOM * max(counts.max(), 1))  # the statistics sit above the bars
        ax.axvline(0.0, color="0.6", linewidth=0.8, linestyle=":")
        u = unit(label)
        ax.text(
            0.03,
            0.97,
            f"$\\mu_r$ = {_stat(m['bias'], u)}\n$\\sigma_r$ = {_stat(m['scatter'], u)}\n"
            f"$\\hat\\sigma_m$ = {_stat(m['sigma_mean'], u)}\nN = {m['n']}",
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize=8,
        )
        ax.set_xlabel(axis_label(label, prefix="Δ "))
        ax.set_ylabel("spectra")
        ax.set_title(display_name(label))
    fig.suptitle(
        "Residuals: prediction − reference (beyond the 0.5-99.5 percentiles counted in "
        "the edge bins)"
    )
    return save_figure(fig, path)


def plot_sigma_vs_snr(
    metrics: pl.DataFrame, labels: list[str] | tuple[str, ...], path: str | os.PathLike[str]
) -> Path:
    """Per label and S/N bin: residual scatter, |bias| and mean predicted sigma.

    ``metrics`` is :func:`rrnet.evaluation.metrics.metrics_table` output.
    """
    fig, axes = new_figure(len(labels))
    binned = metrics.filter(pl.col("snr_bin") != "all")
    for ax, label in zip(axes, labels, strict=True):
        rows = binned.filter(pl.col("label") == label)
        names = rows.get_column("snr_bin").to_list()
        x = np.arange(len(names))
        ax.plot(
            x, rows.get_column("scatter").to_numpy(), "o-", color="tab:blue", label="σ of residuals"
        )
        ax.plot(
            x,
            rows.get_column("sigma_mean").to_numpy(),
            "s--",
            color="tab:red",
            label="mean predicted σ",
        )
        ax.plot(
            x, np.abs(rows.get_column("bias").to_numpy()), "^:", color="tab:green", label="|bias|"
        )
        ax.set_xticks(x, names, fontsize=8)
        ax.set_xlabel("S/N")
        ax.set_ylabel(f"{display_name(label)} [{unit(label)}]")
        ax.set_ylim(bottom=0)
    # outside the panels: inside, it hid a bin's point in small samples
    fig.legend(
        *axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8
    )
    fig.suptitle("Accuracy and predicted uncertainty against S/N")
    return save_figure(fig, path)
