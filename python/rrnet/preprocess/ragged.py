"""Ragged batches: many 1-D arrays of different lengths as one flat array + offsets.

Spectrum ``i`` is ``values[offsets[i]:offsets[i + 1]]``; ``offsets`` has ``n + 1``
int64 entries starting at 0. This is what the Rust batch kernels borrow without
copying (the same layout as Arrow list arrays).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_ragged(
    arrays: Sequence[np.ndarray] | np.ndarray,
    offsets: np.ndarray | None,
    dtype: type,
) -> tuple[np.ndarray, np.ndarray]:
    """Flat C-contiguous ``values`` of ``dtype`` and int64 ``offsets``.

    With ``offsets=None``, ``arrays`` is a sequence of 1-D arrays to concatenate;
    otherwise it is already the flat values array (no copy if dtype and layout fit).
    """
    if offsets is None:
        parts = [np.ravel(a) for a in arrays]
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([p.size for p in parts], out=offsets[1:])
        # One pass converts dtype and byte order (FITS is big-endian) while concatenating.
        values = np.concatenate(parts, dtype=dtype) if parts else np.empty(0, dtype=dtype)
        return values, offsets
    values = np.ascontiguousarray(arrays, dtype=dtype)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    check_offsets(values.size, offsets)
    return values, offsets


def check_offsets(n_values: int, offsets: np.ndarray) -> None:
    """Raise ValueError unless ``offsets`` is 1-D, starts at 0, never decreases, ends in range."""
    if offsets.ndim != 1 or offsets.size < 1:
        raise ValueError("offsets must be a 1-D array of n + 1 entries")
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] > n_values:
        raise ValueError(
            f"offsets must start at 0, never decrease and end <= {n_values} (the values length)"
        )


def split_ragged(values: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """The list of per-spectrum views of a ragged batch."""
    return [values[offsets[i] : offsets[i + 1]] for i in range(offsets.size - 1)]
