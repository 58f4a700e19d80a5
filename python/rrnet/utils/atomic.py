"""Atomic file writes: a temporary name in the target directory, then ``os.replace``.

Every output of rrnet is written this way, so a reader (a resumed run, a browser
opening index.html, a survey pipeline polling for a catalogue) never sees a
half-written file, and a run killed mid-write leaves the previous version in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rrnet.utils.faults import full_disk_error

TEMP_GLOB = ".*.tmp"
"""Matches every temporary file :func:`temp_beside` makes (what a resumed run removes)."""


def temp_beside(path: Path) -> tuple[int, Path]:
    """A new temporary file beside ``path`` (``.<name>.<random>.tmp``), open for writing:
    ``(fd, temporary path)``. Its directory is created if needed. It has the mode a plain
    ``open`` gives (0666 less the umask), not mkstemp's 0600: renamed into place, a store's
    shards must be readable by whoever may read its manifest (a survey's shared store)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
    except BaseException:
        os.close(fd)
        Path(name).unlink(missing_ok=True)
        raise
    return fd, Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary path does not exist when yielded (writers such as fitsio refuse to
    overwrite). With ``fsync`` the data reach the disk before the rename, so that a
    machine crash cannot leave a renamed but empty file (what resumable runs need).
    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    fd, tmp = temp_beside(Path(path))
    os.close(fd)
    tmp.unlink()
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        if (full := full_disk_error(path, exc)) is not None:
            raise full from exc  # a library's "malformed file" that is a full disk
        raise
    finally:
        tmp.unlink(missing_ok=True)


def umask() -> int:
    """This process's umask (read from /proc where Linux shows it, so not changed even
    for an instant; else set and restored)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_created(path: str | os.PathLike[str]) -> None:
    """Give a file the mode a plain ``open`` would (0666 less the umask): safetensors
    writes its files 0600, which hid checkpoints from the other users of a cluster."""
    os.chmod(path, 0o666 & ~umask())


def write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> Path:
    """Write bytes atomically and return the path."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = False) -> Path:
    """Write UTF-8 text atomically and return the path."""
    return write_bytes(path, text.encode("utf-8"), fsync=fsync)


def write_json(path: str | os.PathLike[str], data: Any, *, fsync: bool = False) -> Path:
    """Write ``data`` as indented JSON atomically and return the path (see :func:`read_json`)."""
    return write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n", fsync=fsync)


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON document at ``path``, or None where there is none that can be read.

    What a resumable run checks its earlier record with (a missing, unreadable or
    foreign file is never the same run).
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def changed_keys(before: Any, now: dict[str, Any]) -> list[str]:
    """The top-level keys whose values differ between an earlier record and ``now``
    (what a refused resume names); every key of ``now`` where ``before`` is no record."""
    before = before if isinstance(before, dict) else {}
    return sorted(k for k in {*now, *before} if before.get(k) != now.get(k))
