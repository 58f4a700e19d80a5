"""Which errors are the machine's (disk, memory, network file system), never the data's.

A run that meets one stops (resumable) instead of recording a row, a file or a
checkpoint as bad: the same input would be fine on a healthy machine.
"""

from __future__ import annotations

import errno
import os

MACHINE_FAULT_ERRNOS: frozenset[int] = frozenset(
    {
        *(errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT, errno.ENOMEM, errno.EMFILE),
        *(errno.ENFILE, errno.EFBIG, errno.ESTALE, errno.ETIMEDOUT),
    }
)
"""EFBIG: a file-size limit (``ulimit -f``); ESTALE, ETIMEDOUT: a network disk."""


class MachineFault(OSError):
    """A fault of the machine recognised by rrnet itself (e.g. the data folder vanished
    mid-run): it stops the run like a full disk, whatever its errno."""


_FAULT_TEXTS = (
    "No space left on device",
    "Disk quota exceeded",
    "File too large",
    "Read-only file system",
    "Input/output error",
    "Stale file handle",
    "Cannot allocate memory",
)
"""OS messages inside errors that wrap them as text (Polars, Arrow, Dask tasks)."""


def is_machine_fault(exc: BaseException) -> bool:
    """Out of memory, an OS error whose errno is in :data:`MACHINE_FAULT_ERRNOS`, a
    :class:`MachineFault`, or another library's error quoting such an OS error."""
    if isinstance(exc, MemoryError | MachineFault):
        return True
    if isinstance(exc, OSError):
        return exc.errno in MACHINE_FAULT_ERRNOS
    return machine_fault_text(str(exc)) is not None


def machine_fault_text(text: str) -> str | None:
    """The OS message a wrapped error quotes (``... No space left on device (os error
    28)``), or None."""
    return next((t for t in _FAULT_TEXTS if t in text), None)


FULL_DISK_BYTES = 1 << 20
"""Free space under which a failed write is taken to have filled its disk."""


def full_disk_error(path: str | os.PathLike[str], exc: BaseException) -> OSError | None:
    """ENOSPC for ``path`` when a write that raised ``exc`` left its file system full,
    else None: Polars (a Parquet footer: "Invalid thrift: transport error") and cfitsio
    ("tried to move past end of file") report a full disk as a malformed file. Ask
    before the failed write's temporary file is removed (that frees the space again)."""
    if is_machine_fault(exc):
        return None  # already said as the machine's
    try:
        stats = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return None
    blocks = stats.f_bfree if os.geteuid() == 0 else stats.f_bavail  # root may use reserve
    if blocks * stats.f_frsize >= FULL_DISK_BYTES:
        return None
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
