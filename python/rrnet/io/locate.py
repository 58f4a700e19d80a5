"""Finding a catalogue's files in a survey's sub-folders: one index, built once.

LAMOST's files are distributed in sub-folders (per night, per plan, ...) that a
catalogue's ``filename`` does not name. :func:`index_files` walks the folder once
and maps each file name to its path; :func:`locate_files` then resolves every row
by a dictionary look-up, never by a search per row.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import polars as pl

log = logging.getLogger(__name__)


def index_files(
    root: str | os.PathLike[str], others: dict[str, list[str]] | None = None
) -> dict[str, str]:
    """File name -> path relative to ``root`` (POSIX), for every file under ``root``.

    Where two sub-folders hold the same name, the first in sorted path order wins;
    ``others`` (if given) receives, per such name, the paths that lost. Folders that
    cannot be listed are skipped, and so are paths that are not valid UTF-8 (no
    catalogue can name them).
    """
    root = Path(root)
    index: dict[str, str] = {}
    unlisted: list[OSError] = []
    for folder, dirs, files in os.walk(root, onerror=unlisted.append):
        dirs.sort()
        rel = Path(folder).relative_to(root)
        for name in sorted(files):
            path = (rel / name).as_posix()
            if is_utf8(path):
                if name in index and others is not None:
                    others.setdefault(name, []).append(path)
                index.setdefault(name, path)
    warn_unlisted(unlisted, root, "files there are not found")
    return index


def warn_unlisted(errors: list[OSError], root: str | os.PathLike[str], consequence: str) -> None:
    """Say once which folders under ``root`` could not be listed (os.walk's errors), and
    what it means: a search that skipped them would otherwise say nothing."""
    if not errors:
        return
    first = errors[0]
    where = os.fsdecode(first.filename) if first.filename else str(root)
    log.warning(
        "%d folder(s) under %s could not be listed (%s), e.g. %s: %s",
        len(errors), root, first.strerror or first, where, consequence,
    )  # fmt: skip


def unlisted_folders(root: str | os.PathLike[str]) -> list[OSError]:
    """The errors of the folders under ``root`` that cannot be listed (no permission)."""
    errors: list[OSError] = []
    for _ in os.walk(root, onerror=errors.append):
        pass
    return errors


def is_utf8(text: str) -> bool:
    """Whether a name from the file system is valid UTF-8 (no surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes (surrogate escapes) in a name
        return False
    return True


def _exists(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a folder on the way this user cannot search: look in the index
        return False


def _resolve(name: str | None, root: Path, index: dict[str, str]) -> str | None:
    if name is None or _exists(root / name):
        return name
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    # the header FILENAME lacks the .gz of the distributed file
    for candidate in (base, base + ".gz", base.removesuffix(".gz")):
        if candidate in index:
            return index[candidate]
    return name


def locate_files(
    catalog: pl.DataFrame, root: str | os.PathLike[str], column: str = "filename"
) -> tuple[pl.DataFrame, int]:
    """Rewrite ``column`` to paths relative to ``root`` where the named path does not exist.

    A name found nowhere is left as it is (the pipeline then records ``missing_file``).
    Returns the catalogue and the number of files found elsewhere (distinct names).
    """
    root = Path(root)
    others: dict[str, list[str]] = {}
    index = index_files(root, others)
    names = catalog.get_column(column).cast(pl.Utf8).to_list()
    found = [_resolve(n.strip() if n else None, root, index) for n in names]
    moved = {b for a, b in zip(names, found, strict=True) if a != b and b is not None}
    _warn_ambiguous(sorted(b for b in moved if b.rsplit("/", 1)[-1] in others), others)
    changed = len({a for a, b in zip(names, found, strict=True) if a != b})
    return catalog.with_columns(pl.Series(column, found, dtype=pl.Utf8)), changed


def _warn_ambiguous(chosen: list[str], others: dict[str, list[str]]) -> None:
    """Say that a found name stands in several folders, and which one was taken (it was
    chosen without a word: the other file could be the one meant)."""
    if not chosen:
        return
    example = chosen[0]
    rest = others[example.rsplit("/", 1)[-1]]
    log.warning(
        "%d file name(s) the catalogue names stand in several folders; the first in sorted "
        "path order is read, e.g. %s (also %s)",
        len(chosen), example, ", ".join(rest[:3]) + (" ..." if len(rest) > 3 else ""),
    )  # fmt: skip


FOUND_ELSEWHERE = (
    "%d file(s) found under %s at another path than the catalogue's "
    "(in a sub-folder, or with or without .gz)"
)
"""What --find-files reports (count, data folder): not always a sub-folder."""

FIND_FILES = "find_files"
"""Preprocessing-options key (``rrnet-infer --catalog``, ``rrnet-run``): locate the
catalogue's files under the data folder before reading (:func:`locate_files`)."""


def located(
    table: pl.DataFrame, data_dir: str | os.PathLike[str], preprocess: dict[str, Any]
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """``table`` with its files found under ``data_dir`` when ``preprocess`` asks for it,
    and the options without that key (the readers do not take it)."""
    options = dict(preprocess)
    if options.pop(FIND_FILES, False) and "filename" in table.columns:
        table, moved = locate_files(table, data_dir)
        if moved:
            log.info(FOUND_ELSEWHERE, moved, data_dir)
    return table, options
