"""Which folders a report may be written into: reports replace files of fixed names
(index.html, figures/*.png, summary.json), so a folder of the user's with an index.html of
its own must never be one of them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from rrnet.cli._args import folder_output_problem
from rrnet.utils.atomic import write_text
from rrnet.utils.lock import LOCK_NAME

MARK = ".rrnet-report"
"""The file naming the kind of report a folder holds (written when a report starts)."""

SIGNATURES = {
    "rrnet-eval": "metrics.json",
    "rrnet-eval overview": "summary.json",
    "rrnet-eval compare": "comparison.md",
}
"""The file each kind always writes: it marks a report written before the mark existed,
or through the Python API (the demo's report)."""


def report_folder_problem(out: Path, kind: str) -> str | None:
    """One line when ``out`` cannot take a ``kind`` report: not a writable folder
    (:func:`folder_output_problem`), or one holding files no earlier ``kind`` report wrote.
    A new or empty folder, or the same kind's report (rewritten in place), is fine."""
    if (problem := folder_output_problem(out)) is not None:
        return problem
    if not out.is_dir():
        return None
    names = {p.name for p in out.iterdir()} - {LOCK_NAME}
    if not names:
        return None
    mark = out / MARK
    if mark.is_file():
        try:
            held = mark.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            held = ""
        if held == kind:
            return None
        return f"--out {out} holds a {held or 'different'} report: give a new or empty folder"
    if SIGNATURES[kind] in names and not (names & (set(SIGNATURES.values()) - {SIGNATURES[kind]})):
        return None
    return (
        f"--out {out} is not empty and holds no {kind} report (its files would be "
        "replaced): give a new or empty folder"
    )


@contextlib.contextmanager
def marked_report_folder(out: Path, kind: str) -> Iterator[None]:
    """Record, for the ``with`` block, that ``out`` holds a ``kind`` report (use under the
    output's lock); a block that fails before writing anything else takes the mark back,
    so that a failed start still leaves nothing."""
    mark = write_text(out / MARK, kind + "\n")
    try:
        yield
    except BaseException:
        if not {p.name for p in out.iterdir()} - {MARK, LOCK_NAME}:
            mark.unlink(missing_ok=True)
        raise
