"""The evaluation report: metrics.json, metrics.md and a self-contained index.html.

index.html reads top down as a person needs it: a headline (sample, accuracy and
calibration of T_eff, log g and [Fe/H] in words, what to check), a table of
contents, the key figures, then the detail tables folded away. Its images are
embedded, so the one file can be mailed and still shows every figure.
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

from rrnet.evaluation.calibration import (
    COVERAGE_WINDOW,
    NEEDS_RECALIBRATION_TOLERANCE,
    coverage_off,
    errors_off,
    needs_recalibration,
)
from rrnet.evaluation.page import (
    Page,
    Section,
    figure_html,
    render,
    scrolling,
    table_html,
    table_markdown,
    with_unit,
)
from rrnet.labels import DISPLAY_UNITS, display_name
from rrnet.models import xfe_skill
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
    ood_by_snr: pl.DataFrame | None = None
    """OOD flag rate per S/N bin over the status-ok rows (whatever their flag)."""
    xfe_skill_by_snr: pl.DataFrame | None = None
    """Each abundance's [X/Fe] skill beyond [Fe/H] per S/N bin (rrnet.models.xfe_skill)."""
    figures: list[tuple[str, str]] = field(default_factory=list)
    """(relative PNG path, caption) pairs."""
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        """A line, not every table inlined (a notebook printed ~10 kB of them)."""
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        return (
            f"Report({self.title!r}: {counts}; {self.metrics.height} metric rows, "
            f"{len(self.figures)} figures; the tables are its attributes)"
        )


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


XFE_SKILL_HEADING = (
    "[X/Fe] skill beyond [Fe/H] per S/N bin (1: the star's own [X/Fe]; "
    "0: no better than [Fe/H] and a trend)"
)


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
    if report.ood_by_snr is not None and report.ood_by_snr.height:
        out.append(("OOD flag rate per S/N bin (status-ok rows, any flag)", report.ood_by_snr))
    if report.xfe_skill_by_snr is not None and report.xfe_skill_by_snr.height:
        out.append((XFE_SKILL_HEADING, pivot(report.xfe_skill_by_snr, "xfe_skill")))
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
        "ood_by_snr": None if report.ood_by_snr is None else report.ood_by_snr.to_dicts(),
        "xfe_skill_by_snr": None
        if report.xfe_skill_by_snr is None
        else report.xfe_skill_by_snr.to_dicts(),
        "figures": [{"path": p, "caption": c} for p, c in report.figures],
        "notes": report.notes,
    }
    return json.dumps(_clean(doc), indent=2, allow_nan=False) + "\n"


def to_markdown(report: Report) -> str:
    parts = [f"# {report.title}", ""]
    parts += [f"- {line}" for line in headline_lines(report)] + [""]
    parts += [f"- {k}: `{v}`" for k, v in report.inputs.items()]
    parts += ["", *(f"> {n}" for n in report.notes), ""]
    for heading, table, units, label_unit in _people_tables(report):
        parts += [
            f"## {heading}",
            "",
            table_markdown(table, units=units, label_unit=label_unit),
            "",
        ]
    if report.figures:
        parts += ["## Figures", ""]
        parts += [f"![{c}]({p})" + "\n" for p, c in report.figures]
    return "\n".join(parts)


KEY_FIGURES: tuple[tuple[str, str], ...] = (
    ("residuals", "Residuals against the reference labels"),
    ("kiel", "Kiel diagram"),
    ("sigma_vs_snr", "Errors against S/N"),
    ("coverage", "Calibration of the predicted errors"),
)
"""Figures shown right after the headline (file stem, section title), in this order."""

HEADLINE_LABELS: tuple[str, ...] = ("Teff[K]", "Logg", "FeH")


def calibration_words(
    z_std: float,
    tolerance: float = NEEDS_RECALIBRATION_TOLERANCE,
    coverage: float | None = None,
    n: int | None = None,
    z_mean: float | None = None,
) -> str:
    """What the z-scores (and the 1σ coverage) say, in words: ``"errors too small
    by ×1.8"``.

    ``z = (pred - ref) / err``. The size of the errors is judged by the RMS of z (its
    spread and its mean together): the spread about the mean alone called errors 13x
    too large for five residuals all at -0.45σ. An RMS above 1 means the residuals are
    larger than the predicted errors (errors too small), below 1 that the errors are too
    large; a mean z off 0 by more than ``tolerance`` (and two standard errors) is named
    as a bias. An RMS near 1 with a 1σ coverage outside :data:`COVERAGE_WINDOW` is the
    right size on average only: the residuals are not Gaussian (heavy tails, or uniform
    ones).
    """
    if z_std is None or not math.isfinite(z_std) or z_std <= 0:
        return "not measurable"
    mean = z_mean if z_mean is not None and math.isfinite(z_mean) else 0.0
    size = z_rms(z_std, mean)
    biased = z_biased(z_std, mean, n, tolerance)
    bias = f"; residuals biased by {mean:+.2f}σ" if biased else ""
    if size > 1 + tolerance:
        return f"errors too small by ×{size:.1f}{bias}"
    if size < 1 - tolerance:
        return f"errors too large by ×{1 / size:.1f}{bias}"
    lo, hi = COVERAGE_WINDOW
    off = coverage_off(coverage, n) if n else coverage is not None and not lo <= coverage <= hi
    if coverage is not None and math.isfinite(coverage) and off:
        return (
            f"errors right on average (z spread {z_std:.2f}) but {coverage:.0%} within 1σ, "
            f"not 68%: residuals not Gaussian{bias}"
        )
    return f"errors calibrated (z spread {z_std:.2f}){bias}"


def z_biased(
    z_std: float,
    z_mean: float | None,
    n: int | None,
    tolerance: float = NEEDS_RECALIBRATION_TOLERANCE,
) -> bool:
    """A mean z off 0 by more than ``tolerance`` and two standard errors: a bias, which no
    error factor (``--recalibrate``) can fix."""
    if z_mean is None or not math.isfinite(z_mean):
        return False
    noise = 2 * z_std / math.sqrt(n) if n else 0.0
    return abs(z_mean) > max(tolerance, noise)


def verdict(r: dict[str, Any]) -> str:
    """:func:`calibration_words` of one metrics row."""
    return calibration_words(
        r["z_std"], coverage=r.get("coverage_1sigma"), n=_count(r), z_mean=r.get("z_mean")
    )


def _count(r: dict[str, Any]) -> int:
    """The z-scores behind a metrics row (``n_z``; ``n`` in tables without it)."""
    return int(r.get("n_z") or r.get("n") or 0)


def z_rms(z_std: float, z_mean: float | None) -> float:
    """RMS of z (spread and mean together): the size of the errors that the verdict
    judges; without a mean, the spread."""
    return math.hypot(z_std, z_mean) if z_mean is not None and math.isfinite(z_mean) else z_std


def _factor_calibrates(r: dict[str, Any]) -> bool:
    """Whether scaling the errors by the z spread (``--recalibrate``) leaves the RMS of z
    within tolerance: not when the residuals' bias is large next to their spread."""
    mean = r.get("z_mean")
    if mean is None or not math.isfinite(mean) or not r["z_std"] > 0:
        return True
    return math.hypot(1.0, mean / r["z_std"]) <= 1 + NEEDS_RECALIBRATION_TOLERANCE


def _off(r: dict[str, Any]) -> bool:
    return errors_off(z_rms(r["z_std"], r.get("z_mean")), r.get("coverage_1sigma"), _count(r))


BINS_SHOWN = 6
"""Label x S/N bins named in the "errors off in some S/N bins" line, the worst first."""


def _bins_off(report: Report) -> str:
    """Label x S/N bins whose z spread is off unity by more than 10 % and by more than
    two standard errors (``z_std / sqrt(2 n)``): an overall z spread of 1 can hide
    [Fe/H] errors 1.4x too small at S/N >= 100 and 1.3x too large at S/N 10-20."""
    found = []
    for r in report.metrics.filter(pl.col("snr_bin") != "all").iter_rows(named=True):
        z, n = r["z_std"], _count(r)
        if n < 10 or z is None or not math.isfinite(z) or z <= 0:
            continue
        if abs(z - 1.0) > max(NEEDS_RECALIBRATION_TOLERANCE, 2 * z / math.sqrt(2 * n)):
            found.append(
                (abs(math.log(z)), f"{display_name(r['label'])} at {r['snr_bin']} ({z:.2f})")
            )
    found.sort(key=lambda item: -item[0])
    shown = [text for _, text in found[:BINS_SHOWN]]
    more = f" and {len(found) - BINS_SHOWN} more" if len(found) > BINS_SHOWN else ""
    return ", ".join(shown) + more


def _overall(report: Report) -> dict[str, dict[str, Any]]:
    rows = report.metrics.filter(pl.col("snr_bin") == "all").to_dicts()
    return {r["label"]: r for r in rows}


def worries(report: Report) -> list[str]:
    """Short sentences on what a reader should check first (empty when nothing stands out)."""
    out: list[str] = []
    counts = report.counts
    n = counts.get("with_labels", 0)
    if 0 < n < 100:
        spectra = "1 spectrum has" if n == 1 else f"{n} spectra have"
        out.append(f"Only {spectra} reference labels: the statistics are rough.")
    total, ok, flag = (
        counts.get("catalog_rows", 0),
        counts.get("status_ok", 0),
        counts.get("flag_ok"),
    )
    if total and ok / total < 0.9:
        out.append(
            f"{total - ok:,} of {total:,} catalogue rows ({1 - ok / total:.0%}) have no labels."
        )
    reference, unmatched = (
        counts.get("labels_rows", 0),
        counts.get("labels_matching_no_catalogue_row", 0),
    )
    if reference and unmatched / reference >= 0.1:
        out.append(
            f"{unmatched:,} of the {reference:,} reference rows match no catalogue row: "
            "check --key and the ids (or the catalogue covers part of the labels)."
        )
    if ok and flag is not None and flag / ok < 0.5:
        out.append(f"Only {flag / ok:.0%} of the rows with labels are recommended (flag 1).")
    overall = _overall(report)
    off = [lb for lb, r in overall.items() if _off(r)]
    for label in [lb for lb in off if lb in HEADLINE_LABELS]:
        words = verdict(overall[label])
        out.append(f"{display_name(label)}: {words}.")
    rest = [display_name(lb) for lb in off if lb not in HEADLINE_LABELS]
    if rest:
        out.append(
            f"Errors off (RMS of z off 1 by more than 10 %, or 1σ coverage outside "
            f"{COVERAGE_WINDOW[0]:.0%}-{COVERAGE_WINDOW[1]:.0%}) for {len(rest)} abundances: "
            f"{', '.join(rest)}."
        )
    if bins := _bins_off(report):
        out.append(f"Errors off in some S/N bins (z spread): {bins}.")
    missing = report.inputs.get("labels without a reference column")
    if missing:
        names = ", ".join(display_name(lb) for lb in str(missing).split(", "))
        out.append(
            f"Not evaluated, no reference column: {names} (abundances are [X/H]; a survey's "
            "[X/Fe] needs + [Fe/H] first)."
        )
    # a factor fixes the z spread, not the coverage; checkpoints with calibration.json
    # (before/after tables) have their own, fitted on validation when they were trained
    # not where the bias would leave the errors off after the factor (the z spread):
    # the RMS of z is then hypot(1, z_mean / z_std)
    rescalable = [
        lb
        for lb in off
        if needs_recalibration(overall[lb]["z_std"]) and _factor_calibrates(overall[lb])
    ]
    if rescalable and not report.recalibration and report.calibration_by_snr is None:
        out.append("Fit error factors on the validation split: rrnet-eval --recalibrate.")
    elif off and report.recalibration:
        files = ", ".join(report.recalibration.get("files", []))
        out.append(f"Error factors fitted on the validation split were written to {files}.")
    if report.xfe_skill_by_snr is not None:
        everything = report.xfe_skill_by_snr.filter(pl.col("snr_bin") == "all")
        low = xfe_skill.low_skill_words(dict(everything.select("label", "xfe_skill").rows()))
        if low:
            out.append(f"{low[0].upper()}{low[1:]}.")
    for label, r in overall.items():
        bias, scatter = r["bias"], r["scatter"]
        if r["n"] >= 10 and math.isfinite(bias) and scatter > 0 and abs(bias) > 0.5 * scatter:
            unit = DISPLAY_UNITS.get(label, "")
            out.append(
                f"{display_name(label)} is biased by {with_unit(bias, unit)} "
                f"({abs(bias) / scatter:.1f} × its scatter)."
            )
    return out


def headline_lines(report: Report) -> list[str]:
    """The headline as plain lines (Markdown report, end-of-run summary of rrnet-eval)."""
    overall = _overall(report)
    lines = []
    for label in [lb for lb in HEADLINE_LABELS if lb in overall]:
        r, unit = overall[label], DISPLAY_UNITS.get(label, "")
        lines.append(
            f"{display_name(label)}: MAE {with_unit(r['mae'], unit)}, bias "
            f"{with_unit(r['bias'], unit)}, scatter {with_unit(r['scatter'], unit)}; "
            f"{verdict(r)}"
        )
    return lines + [f"check: {w}" for w in worries(report)]


def headline_html(report: Report) -> str:
    """Sample sizes, the main labels' accuracy and calibration, and what to worry about."""
    c = report.counts
    every = report.inputs.get("rows") == "status ok"  # --all-rows
    kept = "status ok (--all-rows)" if every else "recommended (flag 1)"
    parts = [
        f"{c.get('catalog_rows', 0):,} catalogue rows",
        f"{c.get('status_ok', 0):,} with predicted labels (status ok)",
        f"{c.get('flag_ok', 0):,} of them {kept}" if "flag_ok" in c and not every else "",
        f"{c.get('with_labels', 0):,} {kept} and matched to a reference row",
    ]
    split = report.inputs.get("split")
    if split and f"in_{split}_split" in c:
        parts.append(f"{c[f'in_{split}_split']:,} of those in the {split} split (evaluated)")
    sample = "Sample: " + "; ".join(p for p in parts if p) + "."
    overall = _overall(report)
    head = "<tr><th></th><th>N</th><th>MAE</th><th>bias</th><th>scatter</th><th>mean σ</th>"
    head += "<th>calibration</th></tr>"
    rows = []
    for label in [lb for lb in HEADLINE_LABELS if lb in overall]:
        r, unit = overall[label], DISPLAY_UNITS.get(label, "")
        words = verdict(r)
        cls = "bad" if _off(r) else "ok"
        cells = [with_unit(r[k], unit) for k in ("mae", "bias", "scatter", "sigma_mean")]
        rows.append(
            f"<tr><td>{html.escape(display_name(label))}</td><td>{r['n']:,}</td>"
            + "".join(f"<td>{html.escape(x)}</td>" for x in cells)
            + f'<td class="{cls}">{html.escape(words)}</td></tr>'
        )
    table = scrolling(f"<table>{head}{''.join(rows)}</table>") if rows else ""
    items = worries(report)
    worry = (
        '<div class="worry"><b>What to check</b><ul>'
        + "".join(f"<li>{html.escape(w)}</li>" for w in items)
        + "</ul></div>"
        if items
        else '<p class="ok">Nothing stands out: sample, bias and calibration look sound.</p>'
    )
    return f"<p>{html.escape(sample)}</p>{table}{worry}"


_PRETTY = {
    "n": "N",
    "mae": "MAE",
    "bias": "bias",
    "scatter": "scatter",
    "robust_scatter": "robust scatter",
    "sigma_mean": "mean σ",
    "n_z": "N (z)",
    "z_mean": "z mean",
    "z_std": "z spread",
    "coverage_1sigma": "within 1σ",
    "coverage_2sigma": "within 2σ",
    "expected_1sigma": "expected 1σ",
    "expected_2sigma": "expected 2σ",
    "snr_bin": "S/N",
    "n_ood": "flagged OOD",
    "ood_rate": "OOD rate",
    "ood_score_median": "median OOD score",
}
_STEPS = {
    "catalog_rows": "catalogue rows",
    "status_ok": "with predicted labels (status ok)",
    "flag_ok": "counted (flag 1 unless --all-rows)",
    "with_labels": "counted and matched to a reference row",
    "labels_rows": "rows of the reference labels table",
    "labels_matching_no_catalogue_row": "reference rows matching no catalogue row",
    "valid_rows_for_recalibration": "validation rows used for the error factors",
    "stars_with_repeats": "stars with repeat observations",
}
_UNITLESS = {"z mean": "", "z spread": "", "median OOD score": ""} | {
    k: "%" for k in ("within 1σ", "within 2σ", "expected 1σ", "expected 2σ", "OOD rate")
}


def _people_tables(report: Report) -> list[tuple[str, pl.DataFrame, dict[str, str], bool]]:
    """The tables for people, as (heading, table, column units, whether the label rows
    carry their unit): display names, units per row, rounded values."""
    out = []
    for heading, table in _sections(report):
        units = {}
        unitless = True  # the rows' values are not in their label's unit
        if heading == XFE_SKILL_HEADING:  # the skill of [C/Fe], not of [C/H]
            names = [xfe_skill.xfe_name(lb) for lb in table.get_column("label")]
            table = table.with_columns(pl.Series("label", names))
            units = {c: "" for c in table.columns}
        elif heading == "Sample":
            steps = [_STEPS.get(k, k.replace("_", " ")) for k in table.get_column("step")]
            table = table.with_columns(pl.Series("step", steps))
        elif "z-score" in heading or "σ_obs" in heading:
            units = {c: "" for c in table.columns}
        elif "coverage" in heading:  # a fraction of residuals, in no label's unit
            units = {c: "%" for c in table.columns}
        else:
            counts = heading.endswith("stars per S/N bin")
            unitless = counts or bool({"needs_recalibration", "factor"} & set(table.columns))
        if "needs_recalibration" in table.columns:
            verdicts = [verdict(r) for r in table.iter_rows(named=True)]
            table = table.with_columns(pl.Series("verdict", verdicts, pl.Utf8)).drop(
                "needs_recalibration"
            )
        if "factor" in table.columns:
            units = {"factor": ""}
        table = table.rename({k: v for k, v in _PRETTY.items() if k in table.columns})
        out.append((heading, table, units | _UNITLESS, not unitless))
    return out


def _detail_sections(report: Report) -> list[Section]:
    """The tables, collapsed."""
    return [
        Section(f"Table: {heading}", table_html(t, units=u, label_unit=lu), collapsed=True)
        for heading, t, u, lu in _people_tables(report)
    ]


def html_page(report: Report, root: Path) -> Page:
    """The report as a :class:`Page`; ``root`` is where the figures' relative paths start."""
    page = Page(report.title, headline_html(report))
    by_stem = {Path(rel).stem: (rel, cap) for rel, cap in report.figures}
    for stem, title in KEY_FIGURES:
        if stem in by_stem:
            rel, cap = by_stem.pop(stem)
            page.sections.append(Section(title, figure_html(root / rel, cap, source=rel)))
    if by_stem:
        body = "".join(figure_html(root / r, c, source=r) for r, c in by_stem.values())
        page.sections.append(Section("More figures", body))
    page.sections += _detail_sections(report)
    inputs = "".join(
        f"<li>{html.escape(k)}: <code>{html.escape(str(v))}</code></li>"
        for k, v in report.inputs.items()
    )
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in report.notes)
    files = '<p class="note">Machine-readable: metrics.json, metrics.md (beside this page).</p>'
    page.sections.append(
        Section("Inputs and notes", f"<ul>{inputs}</ul>{notes}{files}", collapsed=True)
    )
    return page


def to_html(report: Report, root: str | os.PathLike[str] = ".") -> str:
    """One self-contained page: every figure is embedded, so the file can be mailed."""
    return render(html_page(report, Path(root)))


def write_report(report: Report, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write metrics.json, metrics.md and index.html into ``out_dir`` (each atomically)."""
    out = Path(out_dir)
    return {
        "json": write_text(out / "metrics.json", to_json(report)),
        "markdown": write_text(out / "metrics.md", to_markdown(report)),
        "html": write_text(out / "index.html", to_html(report, out)),
    }
