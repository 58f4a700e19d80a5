"""Read LAMOST MRS files in Rust (``rrnet._core``), with fitsio as the fallback.

The Rust reader inflates each ``.fits.gz`` in memory with libdeflate, walks the
HDUs and decodes the big-endian binary-table columns, one file per rayon task
with the GIL released; nothing is written to disk. It returns exactly what
:func:`rrnet.io.lamost.read_arms` returns (same arrays, same statuses; header
values go through the same card parser). Whatever it does not fully understand
(truncated or trailing bytes, scaled columns, ASCII tables, ambiguous extension
names, ...) it reports as unsupported, and that file is read with fitsio
instead; :attr:`FileRead.fallback` records why. A file with an HDU the Rust
reader cannot name (no EXTNAME card it reads, or leading blanks) is read by fitsio too:
cfitsio also matches HDUNAME, lower-case keywords and names with leading blanks.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rrnet import _core
from rrnet.io.lamost import (
    ARM_KEYS,
    DEFAULT_MAX_INFLATED,
    PRIMARY_KEYS,
    Arm,
    BadColumnsError,
    BadFitsError,
    LamostFile,
    LamostReadError,
    MissingExtensionError,
    MissingFileError,
    TooLargeError,
    _card_value,
    file_info,
    is_environment_fault,
    make_arm,
    read_arms,
)
from rrnet.utils.cores import kernel_threads

Reader = Literal["auto", "rust", "fitsio"]
"""``auto``: Rust, fitsio for what Rust does not support; ``fitsio``: fitsio only;
``rust``: Rust only (unsupported files become ``bad_fits``; for tests)."""

READERS: tuple[str, ...] = ("auto", "rust", "fitsio")

_ERRORS: dict[str, type[LamostReadError]] = {
    "missing_file": MissingFileError,
    "bad_fits": BadFitsError,
    "too_large": TooLargeError,
    "missing_extension": MissingExtensionError,
    "bad_columns": BadColumnsError,
}

_PRIMARY = sorted(PRIMARY_KEYS)
_ARM = sorted(ARM_KEYS)


@dataclass
class FileRead:
    """One file's outcome: ``error`` (the whole file failed) or ``info`` and ``arms``."""

    path: Path
    info: LamostFile | None = None
    arms: dict[str, Arm | LamostReadError] = field(default_factory=dict)
    error: LamostReadError | None = None
    fallback: str | None = None
    """Why fitsio read this file (None: the Rust reader did, or ``reader="fitsio"``)."""


def _cards(pairs: Iterable[tuple[str, str]]) -> dict[str, object]:
    return {key: _card_value(value) for key, value in pairs}


def _from_rust(path: Path, extnames: list[str], result: tuple) -> FileRead:
    status, why, primary, names, n_hdus, arms = result
    if status == "environment":  # the machine, not the file: stop the run
        raise OSError(errno.EIO, why)
    if status != "ok":
        return FileRead(path, error=_ERRORS.get(status, BadFitsError)(why))
    try:
        info = file_info(
            path,
            _cards(primary),
            tuple("" if n is None else n for n in names),
            n_hdus,
        )
    except LamostReadError as exc:
        return FileRead(path, error=exc)
    out: dict[str, Arm | LamostReadError] = {}
    for extname, arm in zip(dict.fromkeys(extnames), arms, strict=True):
        status, why, cards, loglam, flux, ivar, mask, ormask = arm
        if status != "ok":
            out[extname] = _ERRORS.get(status, BadFitsError)(why)
        else:
            out[extname] = make_arm(extname, _cards(cards), loglam, flux, ivar, mask, ormask)
    return FileRead(path, info=info, arms=out)


def _odd_names(read: FileRead) -> bool:
    """An HDU without an EXTNAME card the Rust reader reads, or one with leading blanks:
    cfitsio may still find it (HDUNAME, a lower-case keyword, blanks it ignores)."""
    names = read.info.extnames if read.info is not None else ()
    return any(not name or name != name.lstrip() for name in names)


def _from_fitsio(
    path: Path, extnames: list[str], max_inflated: int, fallback: str | None
) -> FileRead:
    try:
        info, arms = read_arms(path, extnames, max_inflated=max_inflated)
    except LamostReadError as exc:
        return FileRead(path, error=exc, fallback=fallback)
    except Exception as exc:  # cfitsio errors outside OSError (FITSFormatError): one file only
        if is_environment_fault(exc):  # the machine (disk, TMPDIR, memory): stop the run
            raise
        error = BadFitsError(f"unexpected error reading {path.name}: {exc!r}")
        return FileRead(path, error=error, fallback=fallback)
    return FileRead(path, info=info, arms=arms, fallback=fallback)


def read_many(
    files: Sequence[tuple[str | os.PathLike[str], Iterable[str]]],
    *,
    reader: Reader = "auto",
    max_inflated: int = DEFAULT_MAX_INFLATED,
    threads: int | None = None,
    masks: bool = True,
) -> list[FileRead]:
    """Read the named arms of many files, one :class:`FileRead` per file, in order.

    Rust reads the files in parallel on ``threads`` threads (default: all cores,
    or ``RRNET_NUM_THREADS``); fitsio fallbacks run in the calling thread.
    ``masks=False``: the Rust reader checks the mask columns as usual (same
    statuses) but does not decode them (``mask``/``ormask`` None; fitsio
    fallbacks still have them). Never raises for bad files.
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    jobs = [(Path(p), list(dict.fromkeys(e))) for p, e in files]
    if reader == "fitsio":
        return [_from_fitsio(p, e, max_inflated, None) for p, e in jobs]
    results = _core.read_lamost_batch(
        [str(p) for p, _ in jobs],
        [e for _, e in jobs],
        _PRIMARY,
        _ARM,
        int(max_inflated),
        threads=kernel_threads(threads),
        masks=masks,
    )
    out = []
    for (path, extnames), result in zip(jobs, results, strict=True):
        if result[0] != "unsupported":
            got = _from_rust(path, extnames, result)
            if reader == "auto" and _odd_names(got):
                why = "an HDU without a plain EXTNAME (HDUNAME, lower-case key, blanks)"
                got = _from_fitsio(path, extnames, max_inflated, why)
            out.append(got)
        elif reader == "auto":
            out.append(_from_fitsio(path, extnames, max_inflated, result[1]))
        else:
            out.append(FileRead(path, error=BadFitsError(f"unsupported: {result[1]}")))
    return out
