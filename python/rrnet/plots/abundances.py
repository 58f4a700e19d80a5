"""[X/Fe] against [Fe/H] densities for giants and dwarfs (paper Fig. 6)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.colors import LogNorm

from rrnet.plots.style import element, new_figure, save_figure

GIANT_LOGG_DEX: float = 4.0
"""Giants have log g < 4 dex, dwarfs log g >= 4 dex (paper Fig. 6)."""


MIN_WIDTH_IN: float = 6.5
"""A figure of one or two panels is made this wide, so that its title is not cut off."""


def plot_xfe(
    catalog: pl.DataFrame,
    abundance_labels: list[str] | tuple[str, ...],
    path: str | os.PathLike[str],
    *,
    giants: bool,
    feh_range: tuple[float, float] = (-1.5, 0.6),
) -> Path:
    """2-D histograms of [X/Fe] = [X/H] - [Fe/H] against [Fe/H], one panel per element.

    Every star of the N in the title is counted: the [Fe/H] axis spans ``feh_range``
    widened to hold every star, and [X/Fe] beyond its 0.5-99.5 percentiles (padded)
    falls in the edge bins.
    """
    logg = catalog.get_column("Logg").cast(pl.Float64).to_numpy()
    keep = logg < GIANT_LOGG_DEX if giants else logg >= GIANT_LOGG_DEX
    feh = catalog.get_column("FeH").cast(pl.Float64).to_numpy()[keep]
    finite_feh = feh[np.isfinite(feh)]
    if finite_feh.size:
        feh_range = (min(feh_range[0], finite_feh.min()), max(feh_range[1], finite_feh.max()))
    labels = [lb for lb in abundance_labels if lb != "FeH"]
    fig, axes = new_figure(len(labels), ncols=5, panel_size=(3.0, 2.5))
    fig.set_figwidth(max(fig.get_figwidth(), MIN_WIDTH_IN))
    for ax, label in zip(axes, labels, strict=True):
        xfe = catalog.get_column(label).cast(pl.Float64).to_numpy()[keep] - feh
        ok = np.isfinite(xfe) & np.isfinite(feh)
        if ok.sum() >= 2:
            lo, hi = np.percentile(xfe[ok], [0.5, 99.5])
            pad = max(0.1, 0.1 * (hi - lo))
            ax.hist2d(
                feh[ok],
                np.clip(xfe[ok], lo - pad, hi + pad),  # the tails in the edge bins
                bins=60,
                range=[feh_range, [lo - pad, hi + pad]],
                cmap="Greys",
                norm=LogNorm(),
                rasterized=True,
            )
        elif ok.any():  # one star: a point (a density of one is no picture)
            ax.scatter(feh[ok], xfe[ok], s=12, color="k")
            ax.set_xlim(*feh_range)
        else:
            ax.text(0.5, 0.5, "no stars", transform=ax.transAxes, ha="center")
        ax.axhline(0.0, color="tab:red", linewidth=0.6, linestyle=":")
        ax.set_xlabel("[Fe/H] [dex]")
        ax.set_ylabel(f"[{element(label)}/Fe] [dex]")
    kind = (
        f"giants (log g < {GIANT_LOGG_DEX:g})" if giants else f"dwarfs (log g ≥ {GIANT_LOGG_DEX:g})"
    )
    fig.suptitle(
        f"[X/Fe] against [Fe/H], {kind}, N = {int(keep.sum()):,}\n"
        "[X/Fe] beyond its 0.5-99.5 percentiles counted in the edge bins"
    )
    return save_figure(fig, path)
