"""Model comparison bar chart (paper Fig. 3) and ablation chart (Table 1)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

from rrnet.plots.style import display_name, new_figure, save_figure


def plot_mae_bars(
    table: pl.DataFrame,
    path: str | os.PathLike[str],
    *,
    reference: str | None = None,
    title: str = "MAE on the test set",
) -> Path:
    """Grouped bars: one group per label, one bar per model, MAE relative to ``reference``.

    ``table`` has a ``model`` column and one MAE column per label. Labels have
    different units, so each MAE is divided by the reference model's MAE (the
    first model when ``reference`` is None): bars above 1 are worse than it.
    """
    models = table.get_column("model").to_list()
    labels = [c for c in table.columns if c != "model"]
    reference = reference or models[0]
    ref = table.filter(pl.col("model") == reference).select(labels).to_numpy()[0]
    fig, axes = new_figure(1, ncols=1, panel_size=(max(8.0, 0.7 * len(labels) * 1.4), 4.5))
    ax = axes[0]
    width = 0.8 / len(models)
    x = np.arange(len(labels))
    for k, model in enumerate(models):
        mae = table.filter(pl.col("model") == model).select(labels).to_numpy()[0]
        ax.bar(x + (k - (len(models) - 1) / 2) * width, mae / ref, width, label=model)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, [display_name(lb) for lb in labels], rotation=45, ha="right")
    ax.set_ylabel(f"MAE / MAE({reference})")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
