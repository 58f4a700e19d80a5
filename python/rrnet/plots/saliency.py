"""Saliency maps: average partial derivatives against wavelength, lines marked (Fig. 4)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rrnet.grid import BLUE_GRID, GRID, RED_GRID
from rrnet.plots.style import display_name, new_figure, save_figure, unit

LINES_AIR_A: tuple[tuple[str, float], ...] = (
    ("Fe I", 5012.07),
    ("Mg b", 5167.32),
    ("Mg b", 5172.68),
    ("Mg b", 5183.60),
    ("Fe I", 5227.19),
    ("Fe I", 5232.94),
    ("Fe I", 5269.54),
    ("Fe I", 6400.00),
    ("Ca I", 6439.08),
    ("Fe I", 6494.98),
    ("Hα", 6562.80),
    ("Fe I", 6677.99),
)
"""Strong lines in the two MRS windows, air wavelengths [Angstrom] (NIST)."""

CLASS_COLORS: dict[str, str] = {"cool": "tab:red", "hot": "tab:blue"}


def air_to_vacuum(wavelength_air_a: np.ndarray | float) -> np.ndarray:
    """Vacuum wavelength [A] from air wavelength [A] (Morton 2000 / VALD inverse formula).

    The spectra are on vacuum wavelengths (LAMOST convention), the line lists in air.
    """
    lam = np.asarray(wavelength_air_a, dtype=np.float64)
    s2 = (1e4 / lam) ** 2
    n = (
        1.0
        + 8.336624212083e-5
        + 2.408926869968e-2 / (130.1065924522 - s2)
        + 1.599740894897e-4 / (38.92568793293 - s2)
    )
    return lam * n


def plot_saliency(
    saliency: dict[str, np.ndarray],
    labels: list[str] | tuple[str, ...],
    path: str | os.PathLike[str],
    *,
    counts: dict[str, int] | None = None,
    title: str = "Average partial derivatives of the outputs",
) -> Path:
    """Rows = outputs, columns = blue and red arm; one line per star class.

    ``saliency`` maps a class name (``"cool"``, ``"hot"``) to ``[len(labels), 7200]``
    gradients in label units per unit of normalised flux.
    """
    fig, axes = new_figure(2 * len(labels), ncols=2, panel_size=(7.0, 2.2))
    axes = np.asarray(axes).reshape(len(labels), 2)
    arms = ((BLUE_GRID, slice(0, BLUE_GRID.size)), (RED_GRID, slice(BLUE_GRID.size, GRID.size)))
    lines = [(name, float(air_to_vacuum(lam))) for name, lam in LINES_AIR_A]
    for i, label in enumerate(labels):
        for j, (grid, cols) in enumerate(arms):
            ax = axes[i, j]
            for cls, grad in saliency.items():
                n = f" (N = {counts[cls]})" if counts and cls in counts else ""
                ax.plot(
                    grid,
                    grad[i, cols],
                    linewidth=0.6,
                    color=CLASS_COLORS.get(cls),
                    label=f"{cls}{n}",
                )
            ax.axhline(0.0, color="0.7", linewidth=0.5)
            for name, lam in lines:
                if grid[0] <= lam <= grid[-1]:
                    ax.axvline(lam, color="0.5", linewidth=0.6, linestyle=":")
                    if i == 0:
                        ax.text(
                            lam,
                            1.0,
                            name,
                            transform=ax.get_xaxis_transform(),
                            rotation=90,
                            fontsize=6,
                            va="bottom",
                            ha="center",
                        )
            ax.set_xlim(grid[0], grid[-1])
            ax.set_ylabel(f"∂{display_name(label)}/∂flux [{unit(label)}]", fontsize=8)
            if i == len(labels) - 1:
                ax.set_xlabel("vacuum wavelength [Å]")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    return save_figure(fig, path)
