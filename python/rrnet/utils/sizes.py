"""Byte counts as people read them, one style for every message (decimal units, as
``df`` and the docs' per-spectrum figures use)."""

from __future__ import annotations

UNITS = ("B", "kB", "MB", "GB", "TB")


def size_text(n_bytes: float) -> str:
    """``n_bytes`` in the largest decimal unit that keeps the number >= 1 (``63.7 MB``,
    ``2,975.0 TB`` beyond the last unit)."""
    value, unit = float(max(n_bytes, 0)), UNITS[0]
    for unit in UNITS:
        if value < 1000 or unit == UNITS[-1]:
            break
        value /= 1000
    return f"{value:,.1f} {unit}"
