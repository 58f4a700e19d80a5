"""Kiel diagram (Teff - log g coloured by [Fe/H]) per S/N bin with MIST isochrones (Fig. 5)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from rrnet.plots.style import marker_size, new_figure, save_figure

ISOCHRONE_FEH: tuple[str, ...] = ("-0.5", "0", "0.5")
"""[Fe/H] suffixes of the columns of ``MIST_iso_7Gyr.csv`` (``teff_<feh>``, ``logg_<feh>``)."""


DEFAULT_ISOCHRONES = Path(__file__).resolve().parents[1] / "data" / "MIST_iso_7Gyr.csv"
"""MIST 7 Gyr isochrones at [Fe/H] = -0.5, 0, +0.5, shipped with the package."""


def read_isochrones(
    path: str | os.PathLike[str] = DEFAULT_ISOCHRONES,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{feh: (teff_K, logg_dex)}`` from the MIST CSV (log10 Teff is converted to K), each
    track cut at its lowest log g (the AGB tip): the post-AGB and white-dwarf phases
    after it ran to 10^5 K and were drawn as straight lines across the diagram.

    ValueError, naming the file, for anything else (a PNG, a CSV of other columns): the
    report failed at its end with "unexpected ColumnNotFoundError"."""
    wanted = [f"{q}_{feh}" for feh in ISOCHRONE_FEH for q in ("teff", "logg")]
    what = f"{path}: not a MIST isochrone CSV (columns {', '.join(wanted)}: log10 Teff, log g)"
    try:
        table = pl.read_csv(
            path, columns=wanted, schema_overrides=dict.fromkeys(wanted, pl.Float64)
        )
    except (pl.exceptions.PolarsError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(what) from exc
    out = {}
    for feh in ISOCHRONE_FEH:
        pair = table.select(pl.col(f"teff_{feh}"), pl.col(f"logg_{feh}")).drop_nulls().to_numpy()
        if pair.shape[0] < 2:
            raise ValueError(what)
        tip = int(np.argmin(pair[:, 1])) + 1
        out[feh] = (10.0 ** pair[:tip, 0], pair[:tip, 1])
    return out


TEFF_LIMITS: tuple[float, float] = (7000.0, 3500.0)
LOGG_LIMITS: tuple[float, float] = (5.5, 0.0)
"""The axes (reversed, as Kiel diagrams are drawn) at least; widened to hold every star."""


def covering(limits: tuple[float, float], values: np.ndarray, pad: float) -> tuple[float, float]:
    """Reversed axis limits: ``limits`` widened (by ``pad``) to hold every finite value,
    so that no star counted in a panel's N falls outside it."""
    finite = values[np.isfinite(values)]
    high, low = limits
    if finite.size:
        high, low = max(high, finite.max() + pad), min(low, finite.min() - pad)
    return high, low


def signed(value: float) -> str:
    """``+0.5``, ``-0.5``, ``0``: a metallicity reads with its sign."""
    return f"{value:+g}" if value else "0"


def plot_kiel(
    catalog: pl.DataFrame,
    path: str | os.PathLike[str],
    *,
    panels: Mapping[str, np.ndarray],
    isochrones: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    feh_range: tuple[float, float] = (-1.0, 0.5),
) -> Path:
    """Predicted Teff against log g, coloured by predicted [Fe/H], one panel per S/N bin.

    ``panels`` maps each panel's title (an S/N bin's name) to a boolean row mask of
    ``catalog``; the evaluation chooses the bins (``rrnet.evaluation.metrics``). Points
    are drawn above the isochrones; [Fe/H] beyond ``feh_range`` takes the end colours
    (arrows on the colour bar); the axes cover every star.
    """
    teff = catalog.get_column("Teff[K]").cast(pl.Float64).to_numpy()
    logg = catalog.get_column("Logg").cast(pl.Float64).to_numpy()
    feh = catalog.get_column("FeH").cast(pl.Float64).to_numpy()
    masks = dict(panels)
    fig, axes = new_figure(len(masks), ncols=len(masks), panel_size=(3.6, 3.6))
    mappable = None
    for ax, (name, mask) in zip(axes, masks.items(), strict=True):
        mappable = ax.scatter(
            teff[mask],
            logg[mask],
            c=feh[mask],
            s=marker_size(int(mask.sum())),
            cmap="viridis",
            vmin=feh_range[0],
            vmax=feh_range[1],
            rasterized=True,
            zorder=3,
        )
        for (feh_iso, (t_iso, g_iso)), style in zip(
            (isochrones or {}).items(), ("--", "-", ":"), strict=False
        ):
            ax.plot(
                t_iso,
                g_iso,
                style,
                color="black",
                linewidth=1.0,
                label=f"MIST 7 Gyr [Fe/H] = {signed(float(feh_iso))}",
                zorder=2,
            )
        ax.set_title(f"S/N {name} (N = {int(mask.sum())})")
        ax.set_xlim(*covering(TEFF_LIMITS, teff, 100.0))
        ax.set_ylim(*covering(LOGG_LIMITS, logg, 0.1))
        ax.set_xlabel(r"$T_\mathrm{eff}$ [K]")
        ax.set_ylabel(r"$\log g$ [dex]")
    if isochrones:
        axes[0].legend(fontsize=7, loc="best")
    fig.colorbar(mappable, ax=list(axes), label="[Fe/H] [dex]", shrink=0.9, extend="both")
    fig.suptitle("Kiel diagram of the predictions")
    return save_figure(fig, path)
