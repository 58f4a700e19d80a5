"""One self-contained HTML page: headline, table of contents, figures, collapsible tables.

Every image is embedded as a base64 ``data:`` URI, so the page is a single file that
can be mailed or opened from anywhere and still shows every figure. Numbers are
rounded for people (``85 K``, ``0.045 dex``, ``68 %``), never ``0.0001477``.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from rrnet.labels import DISPLAY_UNITS, display_name


@dataclass
class Section:
    """One part of the page: a heading (in the table of contents) and its HTML body."""

    title: str
    body: str
    anchor: str = ""
    collapsed: bool = False
    """Detail sections are ``<details>`` blocks, closed until clicked."""


@dataclass
class Page:
    """A page of sections under a title and a lead paragraph (the headline)."""

    title: str
    headline: str
    sections: list[Section] = field(default_factory=list)


def fmt_number(value: Any, unit: str = "") -> str:
    """A value rounded for people: K to whole kelvin, dex to 3 decimals, else 3 digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if unit == "K":
            text = f"{value:.0f}"
        elif unit == "dex":
            text = f"{value:.3f}"
        elif unit == "%":
            text = f"{100 * value:.0f}"
        elif abs(value) >= 100:
            text = f"{value:,.0f}"
        else:
            text = f"{value:.2f}"
        return "0" if re.fullmatch(r"-?0(\.0*)?", text) else text
    return str(value)


def with_unit(value: Any, unit: str) -> str:
    """``"85 K"``, ``"0.045 dex"``, ``"68 %"``; "–" alone for a missing value."""
    text = fmt_number(value, unit)
    return text if text == "–" else f"{text} {unit}".rstrip()


def table_cells(
    table: pl.DataFrame, *, units: dict[str, str] | None = None, label_unit: bool = True
) -> tuple[list[str], list[list[str]]]:
    """Header and cell texts of a table for people; a ``label`` column is shown by display
    name and sets the rounding of its row; ``units`` maps other columns to a fixed unit
    (e.g. ``"%"``: a fraction shown as a percentage with its sign, ``"63 %"``).
    ``label_unit=False`` for tables of unitless values (z-scores, coverage): "T_eff [K]"
    there claimed a unit they lack."""
    units = units or {}
    heads = ["" if c == "label" else c for c in table.columns]
    rows = []
    for row in table.iter_rows(named=True):
        label = row.get("label")
        row_unit = DISPLAY_UNITS.get(label, "") if isinstance(label, str) else ""
        cells = []
        for col, value in row.items():
            if col == "label" and isinstance(value, str):
                text = display_name(value, with_unit=label_unit)
            else:
                unit = units.get(col, row_unit)
                text = with_unit(value, unit) if unit == "%" else fmt_number(value, unit)
            cells.append(text)
        rows.append(cells)
    return heads, rows


def table_html(
    table: pl.DataFrame, *, units: dict[str, str] | None = None, label_unit: bool = True
) -> str:
    """HTML table of :func:`table_cells`."""
    heads, rows = table_cells(table, units=units, label_unit=label_unit)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in rows
    )
    return scrolling(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def scrolling(table: str) -> str:
    """A table in a box of its own that scrolls sideways: a 12-column table ran off a
    700 px window, and the whole page with it."""
    return f'<div class="scroll">{table}</div>'


def table_markdown(
    table: pl.DataFrame, *, units: dict[str, str] | None = None, label_unit: bool = True
) -> str:
    """Markdown table of :func:`table_cells`: metrics.md reads as the page does."""
    heads, rows = table_cells(table, units=units, label_unit=label_unit)
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def image_data_uri(path: str | Path) -> str:
    """The PNG at ``path`` as a ``data:image/png;base64,...`` URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def figure_html(path: str | Path, caption: str, *, source: str = "") -> str:
    """A figure with its image embedded; ``source`` (the PNG beside the page) is kept
    as ``data-file`` so tests and people can tell which file it shows."""
    esc = html.escape
    return (
        f'<figure><img src="{image_data_uri(path)}" alt="{esc(caption)}" '
        f'data-file="{esc(source)}" loading="eager">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def anchor_of(title: str) -> str:
    """A stable id for a heading: lower case, words joined by dashes."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:auto;padding:1em 1.5em;"
    "color:#222;line-height:1.4}"
    "h1{margin-bottom:0.2em}h2{border-bottom:1px solid #ddd;padding-bottom:0.2em;margin-top:1.6em}"
    ".headline{background:#f4f7fb;border:1px solid #cfd9e6;border-radius:6px;padding:0.6em 1em}"
    ".headline table{font-size:1em}.worry{background:#fff4e0;border-left:4px solid #e69500;"
    "padding:0.4em 0.8em}.worry li{margin:0.2em 0}.ok{color:#2a7a2a}.bad{color:#b34700}"
    "nav{font-size:0.95em}nav ol{columns:2 18em;column-gap:3em;margin:0.3em 0}"
    "nav li{break-inside:avoid}"
    ".scroll{overflow-x:auto;max-width:100%}"
    "table{border-collapse:collapse;margin:0.5em 0 1em;font-size:0.88em}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    "th{background:#eee}td:first-child{text-align:left}"
    "figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}"
    "figcaption{font-size:0.92em;color:#444;margin-top:0.3em}"
    "details{margin:0.4em 0}summary{cursor:pointer;font-weight:600}"
    ".note{color:#555;font-size:0.92em}code{font-size:0.9em}"
)


def render(page: Page) -> str:
    """The whole page as one HTML string (no external file, script or font)."""
    esc = html.escape
    for section in page.sections:
        section.anchor = section.anchor or anchor_of(section.title)
    toc = "".join(f'<li><a href="#{s.anchor}">{esc(s.title)}</a></li>' for s in page.sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(page.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(page.title)}</h1>",
        f'<div class="headline" id="headline">{page.headline}</div>',
        f'<nav><h2 id="contents">Contents</h2><ol>{toc}</ol></nav>',
    ]
    for s in page.sections:
        if s.collapsed:
            parts.append(
                f'<details id="{s.anchor}"><summary>{esc(s.title)}</summary>{s.body}</details>'
            )
        else:
            parts.append(f'<h2 id="{s.anchor}">{esc(s.title)}</h2>{s.body}')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
