"""Training data larger than memory: rows streamed from the store's memory-mapped shards.

The in-memory path (the whole training flux read into RAM) is used when it fits in
``TrainSettings.ram_limit_gb``; otherwise training reads each batch from the shards
through :class:`StreamedRows`, which unmaps every shard after reading from it, so that
the pages it touched leave the process (peak RSS then depends on the batch, not the
store). The order each member sees in an epoch is then :func:`streamed_order`: the
shards in a shuffled order, and the rows shuffled within windows of ``buffer`` rows of
that sequence; consecutive batches thus read from a few shards at a time (sequential
I/O on disk), and the order is reproducible from ``(seed, epoch, member)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rrnet.grid import N_PIX

DEFAULT_BUFFER = 8192
"""Rows shuffled together in the streamed order (a window of the shard sequence)."""


class StreamedRows:
    """Row-indexable flux of selected store rows (``flux[i]`` = store row ``rows[i]``),
    read from the shards on demand; each shard's map is released after the read."""

    def __init__(self, store: Any, rows: np.ndarray, buffer: int = DEFAULT_BUFFER) -> None:
        self.store, self.rows, self.buffer = store, np.asarray(rows, dtype=np.int64), buffer
        self.shape = (self.rows.size, N_PIX)

    def shard_of(self, idx: np.ndarray) -> np.ndarray:
        """Shard number of training rows ``idx`` (positions in ``rows``)."""
        return self.rows[np.asarray(idx)] // self.store.shard_size

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        wanted = self.rows[np.asarray(idx)]
        out = self.store.read_flux(wanted)
        for shard in np.unique(wanted // self.store.shard_size):
            self.store.release(int(shard))
        return out


def streamed_order(
    train_rows: np.ndarray, shards: np.ndarray, rng: np.random.Generator, buffer: int
) -> np.ndarray:
    """``train_rows`` grouped by shard (``shards``: each row's shard), the shards in a
    random order, then shuffled within consecutive windows of ``buffer`` rows."""
    train_rows = np.asarray(train_rows)
    ids = np.unique(shards)
    rank = np.empty(ids.max() + 1, dtype=np.int64)
    rank[rng.permutation(ids)] = np.arange(ids.size)
    keys = rank[shards] * (train_rows.size + 1) + rng.permutation(train_rows.size)
    order = train_rows[np.argsort(keys, kind="stable")]
    for start in range(0, order.size, buffer):
        window = order[start : start + buffer]
        order[start : start + buffer] = window[rng.permutation(window.size)]
    return order
