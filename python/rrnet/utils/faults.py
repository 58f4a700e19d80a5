"""Which errors are the machine's (disk, memory, network file system), never the data's.

A run that meets one stops (resumable) instead of recording a row, a file or a
checkpoint as bad: the same input would be fine on a healthy machine.
"""

from __future__ import annotations

import errno

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
