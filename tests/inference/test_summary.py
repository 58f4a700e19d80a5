"""End-of-run summaries: counts, flag reasons decoded from quality_bits, failures."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from rrnet.inference.quality import QualityBit
from rrnet.inference.summary import format_summary, summarize


def _table() -> pl.DataFrame:
    low, ood = int(QualityBit.LOW_SNR), int(QualityBit.OUT_OF_DISTRIBUTION)
    return pl.DataFrame(
        {
            "status": ["ok", "ok", "ok", "ok", "read_error", "rv_placeholder", "read_error"],
            "reason": [None, None, None, None, "file missing: a.fits", "rv -9999", "bad HDU"],
            "flag": [1, 0, 0, 0, 0, 0, 0],
            "quality_bits": [0, low, low | ood, low, 1, 1, 1],
        }
    )


def test_counts_by_hand() -> None:
    s = summarize(_table())
    assert (s.rows, s.ok, s.recommended) == (7, 4, 1)
    assert s.flagged == {"low S/N": 3, "spectrum far from the training set": 1}
    assert list(s.flagged) == ["low S/N", "spectrum far from the training set"]  # top first
    assert s.failed == {
        "read_error": (2, "file missing: a.fits"),
        "rv_placeholder": (1, "rv -9999"),
    }


def test_summary_text_names_reasons_failures_and_outputs() -> None:
    s = summarize(_table().lazy())
    s.outputs = {"catalogue": Path("cat.parquet")}
    text = format_summary(s, "rrnet-infer")
    lines = text.splitlines()
    assert lines[0] == "rrnet-infer: 7 rows in, 4 ok (57%), 1 recommended (flag 1) (14%)"
    assert "low S/N 3; spectrum far from the training set 1" in lines[1]
    assert "  failed read_error: 2 rows, e.g. file missing: a.fits" in lines
    assert lines[-1] == "  catalogue: cat.parquet"


def test_manifest_without_flag_columns() -> None:
    s = summarize(pl.DataFrame({"status": ["ok", "bad_snr"], "reason": [None, "S/N < 1"]}))
    assert (s.rows, s.ok, s.recommended, s.flagged) == (2, 1, None, {})
    assert "recommended" not in format_summary(s, "rrnet-preprocess")
