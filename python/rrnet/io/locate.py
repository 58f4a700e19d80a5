"""Finding a catalogue's files in a survey's sub-folders: one index, built once.

LAMOST's files are distributed in sub-folders (per night, per plan, ...) that a
catalogue's ``filename`` does not name. :func:`index_files` walks the folder once
and maps each file name to its path; :func:`locate_files` then resolves every row
by a dictionary look-up, never by a search per row.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl


def index_files(root: str | os.PathLike[str]) -> dict[str, str]:
    """File name -> path relative to ``root`` (POSIX), for every file under ``root``.

    Where two sub-folders hold the same name, the first in sorted path order wins.
    """
    root = Path(root)
    index: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        rel = Path(folder).relative_to(root)
        for name in sorted(files):
            index.setdefault(name, (rel / name).as_posix())
    return index


def _resolve(name: str | None, root: Path, index: dict[str, str]) -> str | None:
    if name is None or (root / name).is_file():
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
    Returns the catalogue and the number of rows whose name was rewritten.
    """
    root = Path(root)
    index = index_files(root)
    names = catalog.get_column(column).cast(pl.Utf8).to_list()
    found = [_resolve(n.strip() if n else None, root, index) for n in names]
    changed = sum(a != b for a, b in zip(names, found, strict=True))
    return catalog.with_columns(pl.Series(column, found, dtype=pl.Utf8)), changed
