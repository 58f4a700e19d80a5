"""The evaluation report: metrics.json, metrics.md and a static index.html.

index.html uses relative image paths only, so the report directory can be copied
or opened from disk (file://) and still shows every figure.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from rrnet.utils.atomic import write_text


@dataclass
class Report:
    """Everything one evaluation produced; tables are Polars frames."""

    title: str
    inputs: dict[str, Any]
    counts: dict[str, int]
    metrics: pl.DataFrame
    calibration: pl.DataFrame
    repeats: pl.DataFrame | None = None
    recalibration: dict[str, Any] | None = None
    calibration_by_snr: pl.DataFrame | None = None
    """z std and coverage per S/N bin with raw (eq. 3) and calibrated errors."""
    figures: list[tuple[str, str]] = field(default_factory=list)
    """(relative PNG path, caption) pairs."""
    notes: list[str] = field(default_factory=list)


def _clean(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def pivot(table: pl.DataFrame, value: str, *, index: str = "label", on: str = "snr_bin"):
    """Wide view of a long (label, S/N bin) table: one row per label, one column per bin."""
    order = list(dict.fromkeys(table.get_column(on).to_list()))
    wide = table.pivot(on=on, index=index, values=value, aggregate_function=None)
    return wide.select([index, *order])


def markdown_table(table: pl.DataFrame) -> str:
    """GitHub-flavoured Markdown table of a small DataFrame."""
    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in table.iter_rows()]
    return "\n".join([head, rule, *body])


def html_table(table: pl.DataFrame) -> str:
    """HTML table of a small DataFrame (values escaped)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in table.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _sections(report: Report) -> list[tuple[str, pl.DataFrame]]:
    """The tables of the report, in display order, as (heading, table)."""
    overall = report.metrics.filter(pl.col("snr_bin") == "all").drop("snr_bin")
    out = [
        (
            "Sample",
            pl.DataFrame({"step": list(report.counts), "rows": list(report.counts.values())}),
        ),
        ("Metrics per label (all S/N)", overall),
        ("MAE per S/N bin (paper eq. 4)", pivot(report.metrics, "mae")),
        ("Bias (pred − ref) per S/N bin", pivot(report.metrics, "bias")),
        ("Scatter σ(pred − ref) per S/N bin", pivot(report.metrics, "scatter")),
        ("Mean predicted σ per S/N bin", pivot(report.metrics, "sigma_mean")),
        ("z-score std per S/N bin (1 if calibrated)", pivot(report.metrics, "z_std")),
        ("Calibration of the predicted uncertainties", report.calibration),
    ]
    if report.calibration_by_snr is not None and report.calibration_by_snr.height:
        by_snr = report.calibration_by_snr
        for column, title in (
            ("z_std_raw", "z-score std per S/N bin BEFORE calibration (paper eq. 3 errors)"),
            ("z_std_calibrated", "z-score std per S/N bin AFTER calibration (calibration.json)"),
            ("coverage_1sigma_raw", "1-sigma coverage per S/N bin BEFORE calibration"),
            ("coverage_1sigma_calibrated", "1-sigma coverage per S/N bin AFTER calibration"),
        ):
            out.append((title, pivot(by_snr, column)))
    if report.repeats is not None and report.repeats.height:
        out.append(
            ("Repeat observations: σ_obs / σ_pred per S/N bin", pivot(report.repeats, "ratio"))
        )
        out.append(("Repeat observations: stars per S/N bin", pivot(report.repeats, "n_stars")))
    if report.recalibration:
        factors = report.recalibration.get("factors", {})
        out.append(
            (
                "Recalibration factors (fitted on the validation split)",
                pl.DataFrame({"label": list(factors), "factor": list(factors.values())}),
            )
        )
    return out


def to_json(report: Report) -> str:
    doc = {
        "title": report.title,
        "inputs": report.inputs,
        "counts": report.counts,
        "metrics": report.metrics.to_dicts(),
        "calibration": report.calibration.to_dicts(),
        "repeats": None if report.repeats is None else report.repeats.to_dicts(),
        "recalibration": report.recalibration,
        "calibration_by_snr": None
        if report.calibration_by_snr is None
        else report.calibration_by_snr.to_dicts(),
        "figures": [{"path": p, "caption": c} for p, c in report.figures],
        "notes": report.notes,
    }
    return json.dumps(_clean(doc), indent=2, allow_nan=False) + "\n"


def to_markdown(report: Report) -> str:
    parts = [f"# {report.title}", ""]
    parts += [f"- {k}: `{v}`" for k, v in report.inputs.items()]
    parts += ["", *(f"> {n}" for n in report.notes), ""]
    for heading, table in _sections(report):
        parts += [f"## {heading}", "", markdown_table(table), ""]
    if report.figures:
        parts += ["## Figures", ""]
        parts += [f"![{c}]({p})" + "\n" for p, c in report.figures]
    return "\n".join(parts)


_CSS = (
    "body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "th{background:#eee}td:first-child{text-align:left}"
    "figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}"
    "figcaption{font-size:0.9em;color:#555}.note{background:#ffd;padding:0.3em}"
)


def to_html(report: Report) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(report.title)}</h1><ul>",
        *(f"<li>{esc(k)}: <code>{esc(str(v))}</code></li>" for k, v in report.inputs.items()),
        "</ul>",
        *(f'<p class="note">{esc(n)}</p>' for n in report.notes),
        '<p>Tables: <a href="metrics.json">metrics.json</a>, '
        '<a href="metrics.md">metrics.md</a></p>',
    ]
    for heading, table in _sections(report):
        parts += [f"<h2>{esc(heading)}</h2>", html_table(table)]
    if report.figures:
        parts.append("<h2>Figures</h2>")
    for rel, caption in report.figures:
        parts.append(
            f'<figure><a href="{esc(rel)}"><img src="{esc(rel)}" alt="{esc(caption)}"></a>'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(report: Report, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write metrics.json, metrics.md and index.html into ``out_dir`` (each atomically)."""
    out = Path(out_dir)
    return {
        "json": write_text(out / "metrics.json", to_json(report)),
        "markdown": write_text(out / "metrics.md", to_markdown(report)),
        "html": write_text(out / "index.html", to_html(report)),
    }
