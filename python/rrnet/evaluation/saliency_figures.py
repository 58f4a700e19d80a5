"""Saliency figures (paper Fig. 4) for one checkpoint, from spectra in a preprocessed store.

Spectra are chosen among the evaluated rows (the test split when a checkpoint is
given) by reference Teff (predicted Teff if there is no reference): at most
``saliency_spectra`` random ones per class, cool 4000-4300 K and hot 6000-6300 K.
Catalogue rows are found in the store by ``filename``/``extname_blue``/``extname_red``
(or ``obsid``), which the store manifest carries from the input catalogue.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from rrnet.evaluation.options import EvalOptions
from rrnet.evaluation.saliency import (
    TEFF_CLASSES_K,
    average_gradient,
    ensemble_forward,
    select_by_teff,
)
from rrnet.models.checkpoint import load_checkpoint
from rrnet.models.normalization import FLUX_CLIP
from rrnet.models.registry import build_model
from rrnet.plots.saliency import plot_saliency
from rrnet.store import open_store

if TYPE_CHECKING:
    from rrnet.evaluation.report import Report

ID_COLUMNS: tuple[tuple[str, ...], ...] = (("filename", "extname_blue", "extname_red"), ("obsid",))


def store_rows(joined: pl.DataFrame, manifest: pl.DataFrame) -> pl.DataFrame:
    """``joined`` with the store row index ``row`` of each spectrum (unmatched rows dropped)."""
    for ids in ID_COLUMNS:
        if all(c in joined.columns and c in manifest.columns for c in ids):
            index = manifest.select([*ids, "row"]).unique(subset=list(ids), keep="first")
            index = index.with_columns([pl.col(c).cast(joined.schema[c]) for c in ids])
            return joined.join(index, on=list(ids), how="inner", maintain_order="left")
    raise ValueError("catalogue and store share no id columns (filename/extnames or obsid)")


def checkpoint_forward(checkpoint: Path):
    """Differentiable ensemble mean of a checkpoint, and the checkpoint itself."""
    ckpt = load_checkpoint(checkpoint)
    members = []
    for state in ckpt.member_state_dicts:
        model = build_model(ckpt.model_config)
        model.load_state_dict(state)
        members.append(model)
    norm = ckpt.normalization
    forward = ensemble_forward(
        members,
        flux_mean=norm.flux_mean,
        flux_std=norm.flux_std,
        label_mean=norm.label_mean,
        label_std=norm.label_std,
        clip=FLUX_CLIP,
    )
    return forward, ckpt


def compute_saliency(
    checkpoint: Path, store_path: Path, joined: pl.DataFrame, *, max_spectra: int = 200
) -> tuple[tuple[str, ...], dict[str, np.ndarray], dict[str, int]]:
    """``(labels, {class: [n_labels, 7200]}, {class: n_spectra})`` for one checkpoint.

    Classes without a usable spectrum are absent from both dicts.
    """
    forward, ckpt = checkpoint_forward(checkpoint)
    store = open_store(store_path)
    rows = store_rows(joined, store.manifest)
    teff_col = "Teff[K]_true" if "Teff[K]_true" in rows.columns else "Teff[K]"
    teff = rows.get_column(teff_col).cast(pl.Float64).to_numpy()
    store_index = rows.get_column("row").to_numpy()
    saliency, counts = {}, {}
    for cls, (lo, hi) in TEFF_CLASSES_K.items():
        pick = select_by_teff(teff, lo, hi, max_spectra=max_spectra)
        flux = store.read_flux(np.sort(store_index[pick]))
        usable = np.isfinite(flux).all(axis=1)
        if usable.any():
            saliency[cls] = average_gradient(forward, flux[usable])
            counts[cls] = int(usable.sum())
    return ckpt.labels, saliency, counts


def saliency_figures(
    checkpoint: Path,
    opts: EvalOptions,
    joined: pl.DataFrame,
    out: Path,
    figure_dir: str,
    report: Report,
) -> list[tuple[str, str]]:
    """One saliency PNG for ``checkpoint``: its outputs, cool and hot stars."""
    assert opts.store is not None
    labels, saliency, counts = compute_saliency(
        checkpoint, opts.store, joined, max_spectra=opts.saliency_spectra
    )
    name = Path(checkpoint).resolve().name
    for cls, (lo, hi) in TEFF_CLASSES_K.items():
        if cls not in saliency:
            report.notes.append(f"Saliency of {name}: no {cls} star ({lo:g}-{hi:g} K).")
    if not saliency:
        return []
    rel = f"{figure_dir}/saliency-{name}.png"
    plot_saliency(
        saliency,
        list(labels),
        out / rel,
        counts=counts,
        title=f"Average ∂output/∂flux, {name}",
    )
    caption = (
        f"Which wavelengths drive the labels of the checkpoint in {name}/: the average gradient "
        "of each label with respect to the flux (paper Fig. 4)."
    )
    return [(rel, caption)]
