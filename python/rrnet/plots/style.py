"""Shared plot conventions: axis names with units, a readable style, atomic PNG saving."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from rrnet.utils.atomic import atomic_path

DPI = 110
"""Pixels per inch of saved PNGs: a 12 x 9 inch figure is 1320 x 990 pixels."""

_ELEMENT = re.compile(r"^([A-Z][a-z]?)H$")


def element(label: str) -> str | None:
    """Chemical symbol of an abundance label (``"MgH"`` -> ``"Mg"``), else None."""
    match = _ELEMENT.match(label)
    return match.group(1) if match else None


def display_name(label: str) -> str:
    """Name for a legend or panel title: ``T_eff``, ``log g``, ``[Mg/H]``."""
    if label == "Teff[K]":
        return r"$T_\mathrm{eff}$"
    if label == "Logg":
        return r"$\log g$"
    el = element(label)
    return f"[{el}/H]" if el else label


def unit(label: str) -> str:
    """Unit of a label: K for Teff, dex for log g and abundances."""
    return "K" if label == "Teff[K]" else "dex"


def axis_label(label: str, prefix: str = "") -> str:
    """Axis label with unit, e.g. ``"Δ T_eff [K]"`` for ``prefix="Δ "``."""
    return f"{prefix}{display_name(label)} [{unit(label)}]"


def marker_size(n: int) -> float:
    """Scatter points of 3 pt^2 for thousands of rows, up to 30 for a handful (3 hid them)."""
    return float(np.clip(3000.0 / max(n, 1), 3.0, 30.0))


def new_figure(n_panels: int, ncols: int = 4, panel_size: tuple[float, float] = (3.4, 2.7)):
    """A figure with a grid of ``n_panels`` axes (unused ones hidden); returns (fig, axes).

    A bare :class:`Figure`, not pyplot's: files need no backend, so the session's own
    (a notebook's inline one) is left as it is, and no figure is left open in pyplot.
    """
    ncols = max(1, min(ncols, n_panels))
    nrows = -(-n_panels // ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = axes.ravel()
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


class _PlainLogLocator(ticker.Locator):
    """Ticks at 1, 2 and 5 x 10^k; where fewer than two of those fall in the view (a
    range under a decade), at most four evenly spaced round numbers instead
    (matplotlib's own fallback puts one at every minor tick, and their labels overlap)."""

    def __init__(self) -> None:
        self._log = ticker.LogLocator(base=10.0, subs=(1.0, 2.0, 5.0))
        self._few = ticker.MaxNLocator(nbins=3, steps=[1, 2, 2.5, 5, 10])

    def __call__(self):
        assert self.axis is not None
        return self.tick_values(*self.axis.get_view_interval())

    def tick_values(self, vmin, vmax):
        lo, hi = sorted((float(vmin), float(vmax)))
        ticks = np.asarray(self._log.tick_values(lo, hi))
        positive = ticks[ticks > 0]
        mantissa = positive / 10.0 ** np.floor(np.log10(positive) + 1e-9)
        decadal = np.all(np.isclose(mantissa[:, None], [1.0, 2.0, 5.0]).any(axis=1))
        if decadal and ((positive >= lo) & (positive <= hi)).sum() >= 2:
            return ticks
        return self._few.tick_values(lo, hi)


def log_scale(ax: Axes, axis: str = "x") -> None:
    """A log axis labelled in plain numbers (``50``, ``200``; matplotlib's default
    labels a range under a decade as ``5x10^1``, ``6x10^1``, ... and those overlap)."""
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(_PlainLogLocator())
    target.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_locator(ticker.LogLocator(base=10.0, subs=tuple(range(1, 10))))
    target.set_minor_formatter(ticker.NullFormatter())


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Save as PNG atomically (figures are never reused)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(path)
