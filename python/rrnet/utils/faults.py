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


def is_machine_fault(exc: BaseException) -> bool:
    """Out of memory, or an OS error whose errno is in :data:`MACHINE_FAULT_ERRNOS`."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, OSError) and exc.errno in MACHINE_FAULT_ERRNOS
    )
