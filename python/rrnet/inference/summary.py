"""What a finished run produced, in numbers a user checks first.

Rows in, rows with labels, recommended rows, the top reasons for ``flag = 0`` and the
failed rows by status with one example reason each. Shared by the end-of-run lines
of ``rrnet-infer`` / ``rrnet-preprocess`` and the ``rrnet-eval overview`` page.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from rrnet.inference.quality import BIT_TEXT, QualityBit

_FAILURE_BITS = (QualityBit.PREPROCESS_FAILED, QualityBit.INFERENCE_FAILED)


@dataclass
class RunSummary:
    """Counts of one catalogue (or store manifest); ``recommended`` is None without a flag."""

    rows: int
    ok: int
    recommended: int | None = None
    flagged: dict[str, int] = field(default_factory=dict)
    """Reason (in words) -> rows with labels but flag 0 for that reason, most frequent first."""
    failed: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Status -> (rows, one example reason), most frequent first."""
    outputs: dict[str, Path] = field(default_factory=dict)


def summary_document(summary: RunSummary, folder: Path | None = None) -> dict[str, Any]:
    """``summary`` as JSON-ready data for scripts and workflow managers (rows, ok,
    recommended, flagged reasons, failed statuses as ``[rows, example]``, outputs),
    output paths relative to ``folder`` (a folder moved with its files stays right)."""
    outputs = {
        k: os.path.relpath(v, folder) if folder is not None else str(v)
        for k, v in summary.outputs.items()
    }
    return asdict(summary) | {"outputs": outputs}


def summarize(table: pl.DataFrame | pl.LazyFrame) -> RunSummary:
    """Count a catalogue or manifest; reads only status, reason, flag and quality_bits."""
    lazy = table.lazy()
    names = lazy.collect_schema().names()
    cols = [c for c in ("status", "reason", "flag", "quality_bits") if c in names]
    frame = lazy.select(cols).collect()
    status = (
        frame.get_column("status").cast(pl.Utf8).fill_null("unknown")
        if "status" in cols
        else pl.Series("status", ["ok"] * frame.height)
    )
    frame = frame.with_columns(status.alias("status"))
    ok = frame.filter(pl.col("status") == "ok")
    out = RunSummary(rows=frame.height, ok=ok.height)
    if "flag" in cols:
        out.recommended = int((frame.get_column("flag") == 1).sum())
    if "quality_bits" in cols:
        bits = ok.get_column("quality_bits").fill_null(0).to_numpy()
        counts = {
            BIT_TEXT[bit]: int(((bits & int(bit)) != 0).sum())
            for bit in QualityBit
            if bit not in _FAILURE_BITS
        }
        out.flagged = dict(sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: -kv[1]))
    failed = frame.filter(pl.col("status") != "ok")
    if failed.height:
        reason = pl.col("reason").drop_nulls().first() if "reason" in cols else pl.lit("")
        groups = (
            failed.group_by("status")
            .agg(pl.len().alias("n"), reason.alias("example"))
            .sort(["n", "status"], descending=[True, False])
        )
        out.failed = {
            r["status"]: (int(r["n"]), str(r["example"] or ""))
            for r in groups.iter_rows(named=True)
        }
    return out


def summarize_file(path: str | Path, fmt: str | None = None) -> RunSummary:
    """:func:`summarize` of a written catalogue in format ``fmt`` (default: from the
    suffix, unknown suffixes being Parquet, as the writers decide); Parquet is scanned."""
    from rrnet.inference.writers import read_catalogue, resolve_format

    path = Path(path)
    fmt = resolve_format(path, fmt, writing=False)
    if fmt == "parquet":
        return summarize(pl.scan_parquet(path))
    return summarize(read_catalogue(path, fmt)[0])


def format_summary(summary: RunSummary, prog: str, *, top: int = 5) -> str:
    """The end-of-run lines: counts, top flag reasons, failures with an example, outputs."""
    pct = (lambda n: f" ({n / summary.rows:.0%})") if summary.rows else (lambda n: "")
    head = f"{prog}: {summary.rows:,} rows in, {summary.ok:,} ok{pct(summary.ok)}"
    if summary.recommended is not None:
        head += f", {summary.recommended:,} recommended (flag 1){pct(summary.recommended)}"
    lines = [head]
    if summary.flagged:
        shown = list(summary.flagged.items())[:top]
        text = "; ".join(f"{why} {n:,}" for why, n in shown)
        more = len(summary.flagged) - len(shown)
        lines.append(f"  not recommended, by reason: {text}" + (f"; {more} more" if more else ""))
    for status, (n, example) in list(summary.failed.items())[:top]:
        lines.append(f"  failed {status}: {n:,} rows" + (f", e.g. {example}" if example else ""))
    if len(summary.failed) > top:
        lines.append(f"  ... and {len(summary.failed) - top} more failure statuses")
    for what, path in summary.outputs.items():
        lines.append(f"  {what}: {path}")
    return "\n".join(lines)
