"""z-score residuals against Teff, log g and [Fe/H] (paper Fig. 11), and z coverage."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib import colormaps
from scipy.special import erf

from rrnet.labels import TRUE_SUFFIX
from rrnet.plots.style import axis_label, display_name, new_figure, save_figure

AXES_LABELS: tuple[str, ...] = ("Teff[K]", "Logg", "FeH")


def _zscores(sample: pl.DataFrame, label: str) -> np.ndarray:
    pred = sample.get_column(label).cast(pl.Float64).to_numpy()
    true = sample.get_column(label + TRUE_SUFFIX).cast(pl.Float64).to_numpy()
    err = sample.get_column(f"{label}_err").cast(pl.Float64).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(err > 0, (pred - true) / err, np.nan)


def _running_median(x: np.ndarray, y: np.ndarray, nbins: int = 12):
    edges = np.quantile(x, np.linspace(0, 1, nbins + 1))
    centers, med, lo, hi = [], [], [], []
    for a, b in itertools.pairwise(edges):
        sel = (x >= a) & (x <= b)
        if sel.sum() >= 3:
            centers.append(np.median(x[sel]))
            q16, q50, q84 = np.percentile(y[sel], [16, 50, 84])
            med.append(q50)
            lo.append(q16)
            hi.append(q84)
    return np.array(centers), np.array(med), np.array(lo), np.array(hi)


def plot_zscores(
    sample: pl.DataFrame, labels: list[str] | tuple[str, ...], path: str | os.PathLike[str]
) -> Path:
    """Grid: rows = predicted label, columns = reference Teff, log g, [Fe/H]; z on y.

    Points are the z-scores ``(pred - true) / err``; the line is the running median
    and the band the 16th-84th percentiles, which should sit at 0 and +-1.
    """
    xs = [c for c in AXES_LABELS if c + TRUE_SUFFIX in sample.columns]
    fig, axes = new_figure(len(labels) * len(xs), ncols=len(xs), panel_size=(3.6, 2.6))
    axes = np.asarray(axes).reshape(len(labels), len(xs))
    for i, label in enumerate(labels):
        z = _zscores(sample, label)
        for j, xname in enumerate(xs):
            ax = axes[i, j]
            x = sample.get_column(xname + TRUE_SUFFIX).cast(pl.Float64).to_numpy()
            ok = np.isfinite(x) & np.isfinite(z)
            ax.scatter(x[ok], z[ok], s=2, color="0.5", alpha=0.5, rasterized=True)
            if ok.sum() >= 3:
                c, med, lo, hi = _running_median(x[ok], z[ok])
                ax.fill_between(c, lo, hi, color="tab:blue", alpha=0.3, linewidth=0)
                ax.plot(c, med, color="tab:blue")
            for level in (-1.0, 0.0, 1.0):
                ax.axhline(
                    level, color="black", linewidth=0.6, linestyle="-" if level == 0 else ":"
                )
            ax.set_ylim(-5, 5)
            ax.set_xlabel("reference " + axis_label(xname))
            ax.set_ylabel(f"z {display_name(label)}")
    fig.suptitle("z-score residuals (pred − ref) / σ_pred: line = median, band = 16–84%")
    return save_figure(fig, path)


def plot_coverage(
    sample: pl.DataFrame, labels: list[str] | tuple[str, ...], path: str | os.PathLike[str]
) -> Path:
    """Observed fraction of |z| <= k against the Gaussian expectation, one line per label.

    A calibrated model lies on the diagonal; below it the errors are too small.
    """
    k = np.linspace(0.0, 3.0, 61)
    expected = erf(k / np.sqrt(2.0))
    fig, axes = new_figure(1, ncols=1, panel_size=(5.5, 5.0))
    ax = axes[0]
    cmap = colormaps["tab20"]
    for i, label in enumerate(labels):
        z = np.abs(_zscores(sample, label))
        z = z[np.isfinite(z)]
        if z.size:
            observed = (z[None, :] <= k[:, None]).mean(axis=1)
            ax.plot(expected, observed, color=cmap(i % 20), label=display_name(label))
    ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=0.8)
    ax.set_xlabel("expected fraction within k σ (Gaussian)")
    ax.set_ylabel("observed fraction within k σ")
    ax.set_title("Calibration of the predicted uncertainties")
    ax.legend(fontsize=6, ncols=2, loc="lower right")
    return save_figure(fig, path)
