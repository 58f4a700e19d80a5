"""Where temporary files go: ``TMPDIR`` as the user set it, or a clear stop.

Python's :mod:`tempfile` falls back without a word to ``/tmp`` (or the working folder)
when ``TMPDIR`` names a folder that does not exist or cannot be written. At survey
scale a scratch copy is tens of GB (DR7's inflated MRS catalogue), which would then
fill a disk the user did not choose.
"""

from __future__ import annotations

import os

from rrnet.utils.faults import MachineFault


def scratch_root() -> str | None:
    """``TMPDIR`` when set, checked to be a folder this user can write (else a
    :class:`MachineFault`: the setting is wrong, not the data); None when unset
    (:mod:`tempfile`'s own choice)."""
    value = os.environ.get("TMPDIR")
    if not value:
        return None
    if not os.path.isdir(value):
        raise MachineFault(f"TMPDIR={value} is not an existing folder: set it to one")
    if not os.access(value, os.W_OK | os.X_OK):
        raise MachineFault(f"TMPDIR={value} is not writable by this user: set it to another")
    return value
