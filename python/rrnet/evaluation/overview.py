"""``rrnet-eval overview``: one page about a catalogue that has no reference labels.

For a user who has just run a survey and has no truth: how many rows got labels,
how many are recommended and why the others are not, the Kiel diagram and
[X/Fe]-[Fe/H] of the recommended rows, predicted σ against S/N and the
distribution of every label. Written as one self-contained ``index.html`` (plus
the PNGs and ``summary.json`` beside it).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import polars as pl

from rrnet.evaluation.metrics import SNR_BINS, snr_bin_masks
from rrnet.evaluation.page import Page, Section, figure_html, render, table_html
from rrnet.evaluation.sample import add_snr, predicted_labels
from rrnet.inference.summary import RunSummary, summarize, summary_document
from rrnet.inference.writers import read_catalogue
from rrnet.io import read_table
from rrnet.labels import ALL_LABELS, SP_LABELS, display_name, internal_columns
from rrnet.models import xfe_skill
from rrnet.plots import abundances, kiel
from rrnet.plots import overview as plots
from rrnet.utils.atomic import write_text

FIGURE_DIR = "figures"


def _headline(summary: RunSummary, labels: list[str]) -> str:
    rows = max(summary.rows, 1)
    parts = [
        f"{summary.rows:,} catalogue rows",
        f"{summary.ok:,} with labels ({summary.ok / rows:.0%})",
    ]
    if summary.recommended is not None:
        parts.append(
            f"{summary.recommended:,} recommended, flag 1 ({summary.recommended / rows:.0%})"
        )
    text = f"<p>{html.escape(', '.join(parts))}; {len(labels)} labels.</p>"
    items = [
        f"not recommended because {why}: {n:,}" for why, n in list(summary.flagged.items())[:3]
    ]
    items += [
        f"failed ({status}): {n:,}, e.g. {ex}"
        for status, (n, ex) in list(summary.failed.items())[:3]
    ]
    if items:
        text += '<div class="worry"><b>Largest losses</b><ul>'
        text += "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul></div>"
    return text


def _count_tables(summary: RunSummary) -> str:
    counts = {"rows in": summary.rows, "with labels (status ok)": summary.ok}
    if summary.recommended is not None:
        counts["recommended (flag 1)"] = summary.recommended
    out = table_html(pl.DataFrame({"step": list(counts), "rows": list(counts.values())}))
    if summary.flagged:
        out += "<h3>Not recommended, by reason (a row can have several)</h3>"
        out += table_html(
            pl.DataFrame({"reason": list(summary.flagged), "rows": list(summary.flagged.values())})
        )
    if summary.failed:
        out += "<h3>No labels, by status</h3>"
        out += table_html(
            pl.DataFrame(
                {
                    "status": list(summary.failed),
                    "rows": [n for n, _ in summary.failed.values()],
                    "example": [ex for _, ex in summary.failed.values()],
                }
            )
        )
    return out


def _figures(
    catalog: pl.DataFrame, recommended: pl.DataFrame, labels: list[str], out: Path, iso_path
) -> list[tuple[str, str, str]]:
    """Draw the figures; (section title, relative path, caption)."""
    figs = []
    if set(SP_LABELS) <= set(labels) and recommended.height:
        iso = kiel.read_isochrones(iso_path or kiel.DEFAULT_ISOCHRONES)
        panels = snr_bin_masks(recommended.get_column("snr").to_numpy(), SNR_BINS)
        panels = {"all": panels.pop("all"), **{k: v for k, v in panels.items() if v.any()}}
        rel = f"{FIGURE_DIR}/kiel.png"
        kiel.plot_kiel(recommended, out / rel, panels=panels, isochrones=iso)
        cap = (
            "Kiel diagram (T_eff against log g, coloured by [Fe/H]) of the recommended rows, "
            "all together and per S/N bin, with MIST 7 Gyr isochrones."
        )
        figs.append(("Kiel diagram", rel, cap))
        ab = [lb for lb in labels if lb not in SP_LABELS]
        for giants, name in ((True, "xfe_giants"), (False, "xfe_dwarfs")):
            if not ab:
                break
            rel = f"{FIGURE_DIR}/{name}.png"
            abundances.plot_xfe(recommended, ab, out / rel, giants=giants)
            kind = "giants (log g < 4)" if giants else "dwarfs (log g ≥ 4)"
            figs.append(
                (
                    f"[X/Fe] against [Fe/H], {kind.split()[0]}",
                    rel,
                    f"Density of [X/Fe] against [Fe/H] of the recommended {kind}.",
                )
            )
    with_labels = (
        catalog.filter(pl.col("status").cast(pl.Utf8) == "ok")
        if "status" in catalog.columns
        else catalog
    )
    rel = f"{FIGURE_DIR}/sigma_vs_snr.png"
    plots.plot_sigma_vs_snr_catalogue(with_labels, labels, out / rel)
    figs.append(
        (
            "Predicted errors against S/N",
            rel,
            "Predicted 1σ error of every row with labels against its S/N, with the median "
            "in up to ten S/N quantiles (red); errors should fall as S/N rises.",
        )
    )
    rel = f"{FIGURE_DIR}/distributions.png"
    mask = (
        (with_labels.get_column("flag") == 1).to_numpy() if "flag" in with_labels.columns else None
    )
    plots.plot_distributions(with_labels, labels, out / rel, recommended=mask)
    figs.append(
        (
            "Distribution of every label",
            rel,
            "Histogram of each label over all rows with labels (grey) and the recommended "
            "rows (blue line).",
        )
    )
    return figs


def overview(
    catalog_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    snr: str = "snr_blue",
    isochrones: str | os.PathLike[str] | None = None,
) -> RunSummary:
    """Write ``out/index.html`` (self-contained), ``summary.json`` and PNGs; return the counts."""
    out = Path(out)
    try:  # an rrnet catalogue, with its provenance
        catalog, provenance = read_catalogue(catalog_path)
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError):
        catalog, provenance = read_table(catalog_path), {}  # any table of labels
    catalog = catalog.rename(internal_columns(catalog.columns))  # either column style
    labels = predicted_labels(catalog, ALL_LABELS)
    if not labels:
        raise ValueError(f"{catalog_path} has no label with a value and an _err column")
    summary = summarize(catalog)
    catalog = add_snr(catalog, snr)
    recommended = catalog.filter(pl.col("flag") == 1) if "flag" in catalog.columns else catalog
    skills = xfe_skill.catalogue_skill(provenance)  # in the labels' (periodic) order
    low_xfe = xfe_skill.low_skill_words({k: skills[k] for k in labels if k in skills})
    headline = _headline(summary, labels)
    if low_xfe:  # the [X/Fe] figures would otherwise look like the stars' own abundances
        drawn = recommended.height and set(SP_LABELS) < set(labels)
        what = "The [X/Fe] figures below then show" if drawn else "Its [X/Fe] then shows"
        headline += (
            f'<div class="worry"><b>[X/Fe]</b>: the checkpoints found, on their validation '
            f"split, {html.escape(low_xfe)}. {what} mostly [Fe/H] and a trend, not each "
            "star's own [X/Fe] (docs/evaluation.md).</div>"
        )
    page = Page(f"RRNet catalogue overview: {Path(catalog_path).name}", headline)
    page.sections.append(Section("Counts and flags", _count_tables(summary)))
    if not recommended.height:  # the Kiel and [X/Fe] figures show recommended rows only
        page.sections.append(
            Section(
                "Kiel diagram and [X/Fe]",
                "<p>Not drawn: no row is recommended (flag 1). The counts above say why; "
                "the figures below show every row with labels.</p>",
            )
        )
    for title, rel, cap in _figures(catalog, recommended, labels, out, isochrones):
        page.sections.append(Section(title, figure_html(out / rel, cap, source=rel)))
    names = ", ".join(display_name(lb) for lb in labels)
    page.sections.append(
        Section(
            "Inputs",
            f"<p>Catalogue <code>{html.escape(str(catalog_path))}</code>; S/N "
            f"<code>{html.escape(snr)}</code>; labels {html.escape(names)}.</p>",
            collapsed=True,
        )
    )
    summary.outputs = {"page": out / "index.html", "counts": out / "summary.json"}
    # relative to the report folder, which survives a move (absolute paths went stale)
    doc = summary_document(summary, out)
    write_text(out / "summary.json", json.dumps(doc, indent=2) + "\n")
    write_text(out / "index.html", render(page))
    return summary
