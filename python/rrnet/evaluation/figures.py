"""Which figures an evaluation run draws, with their captions (paths relative to the report)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from rrnet.evaluation.metrics import OOD_SNR_BINS, SNR_BINS, snr_bin_masks
from rrnet.evaluation.options import EvalOptions
from rrnet.evaluation.saliency_figures import saliency_figures
from rrnet.models.checkpoint import HISTORY_FILE
from rrnet.plots import abundances, history, kiel, repeats, residuals, zscore

if TYPE_CHECKING:
    from rrnet.evaluation.report import Report

FIGURE_DIR = "figures"


def make_all(
    opts: EvalOptions,
    *,
    joined: pl.DataFrame,
    usable: pl.DataFrame,
    labels: list[str],
    report: Report,
) -> list[tuple[str, str]]:
    """Draw every figure the inputs allow; return (relative path, caption) pairs.

    Figures whose inputs are absent (no checkpoint history, no repeats, no store)
    are skipped with a note in the report.
    """
    out = Path(opts.out)
    figs: list[tuple[str, str]] = []

    def rel(name: str) -> str:
        return f"{FIGURE_DIR}/{name}"

    residuals.plot_residuals(joined, labels, out / rel("residuals.png"), metrics=report.metrics)
    figs.append(
        (
            rel("residuals.png"),
            "Histogram of prediction minus reference label, one panel per label, with "
            "the bias (mu_r), scatter (sigma_r), mean predicted error and N in each panel "
            "(paper Fig. 2a); residuals beyond the 0.5-99.5 percentiles are counted in the "
            "edge bins.",
        )
    )
    residuals.plot_sigma_vs_snr(report.metrics, labels, out / rel("sigma_vs_snr.png"))
    figs.append(
        (
            rel("sigma_vs_snr.png"),
            "How the errors shrink with S/N: the scatter and |bias| of the residuals "
            "and the mean predicted σ in each S/N bin (paper Fig. 2b).",
        )
    )
    sp = [lb for lb in ("Teff[K]", "Logg", "FeH") if lb in labels]
    if sp:
        zscore.plot_zscores(joined, sp, out / rel("zscores.png"))
        figs.append(
            (
                rel("zscores.png"),
                "z-scores (residual / predicted σ) against the reference T_eff, log g and "
                "[Fe/H]: a calibrated label scatters within ±1 in 68 % of the stars "
                "(paper Fig. 11).",
            )
        )
    zscore.plot_coverage(joined, labels, out / rel("coverage.png"))
    figs.append(
        (
            rel("coverage.png"),
            "Calibration: the fraction of stars within k predicted σ of the "
            "reference, observed against the Gaussian expectation; below the line means "
            "errors too small.",
        )
    )
    if {"Teff[K]", "Logg", "FeH"} <= set(labels):
        iso = kiel.read_isochrones(opts.isochrones or kiel.DEFAULT_ISOCHRONES)
        # --all-rows keeps S/N < 10 rows: they get a panel of their own, not silently none
        bins = OOD_SNR_BINS if opts.all_rows else SNR_BINS
        panels = snr_bin_masks(usable.get_column("snr").to_numpy(), bins)
        panels.pop("all")
        kiel.plot_kiel(usable, out / rel("kiel.png"), panels=panels, isochrones=iso)
        rows = "status-ok rows (--all-rows)" if opts.all_rows else "recommended rows (flag 1)"
        unbinned = usable.height - sum(int(m.sum()) for m in panels.values())
        missing = f"; {unbinned:,} rows without S/N are not drawn" if unbinned else ""
        figs.append(
            (
                rel("kiel.png"),
                f"Kiel diagram (T_eff against log g, coloured by [Fe/H]) of the {rows} in each "
                f"S/N bin{missing}, with MIST 7 Gyr isochrones (paper Fig. 5).",
            )
        )
        ab = [lb for lb in labels if lb not in ("Teff[K]", "Logg", "FeH")]
        if ab:
            for giants, name in ((True, "xfe_giants.png"), (False, "xfe_dwarfs.png")):
                abundances.plot_xfe(usable, ab, out / rel(name), giants=giants)
                kind = "giants (log g < 4)" if giants else "dwarfs (log g ≥ 4)"
                figs.append(
                    (rel(name), f"Density of [X/Fe] against [Fe/H] for {kind} (paper Fig. 6).")
                )
    if report.repeats is not None and report.repeats.filter(pl.col("n_stars") > 0).height:
        repeats.plot_repeats(report.repeats, labels, out / rel("repeats.png"))
        figs.append(
            (
                rel("repeats.png"),
                "Predicted σ against S/N compared with the scatter between "
                "repeat observations of the same star (paper Fig. 7).",
            )
        )
    elif report.repeats is not None:
        report.notes.append(
            "No star has repeat observations: the repeat-scatter figure is skipped."
        )
    for ckpt in opts.checkpoints:
        figs += checkpoint_history(ckpt, out, FIGURE_DIR, report)
    if opts.checkpoints and opts.store is not None:
        for ckpt in opts.checkpoints:
            figs += saliency_figures(ckpt, opts, joined, out, FIGURE_DIR, report)
    return figs


def checkpoint_history(
    checkpoint: Path, out: Path, figure_dir: str, report: Report
) -> list[tuple[str, str]]:
    """Fig. 10 from ``<checkpoint>/history.parquet`` if present, else a note."""
    source = Path(checkpoint) / HISTORY_FILE
    if not source.is_file():
        report.notes.append(f"No {HISTORY_FILE} in the checkpoint: the loss curves are skipped.")
        return []
    name = Path(checkpoint).resolve().name
    rel = f"{figure_dir}/loss_curves-{name}.png"
    history.plot_history(pl.read_parquet(source), out / rel)
    return [
        (
            rel,
            f"Training and validation loss per epoch of each ensemble model in "
            f"the checkpoint in {name}/ (paper Fig. 10).",
        )
    ]
