"""How many CPU cores this process may use: what thread pools are sized by."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


MAX_THREADS_PER_CORE = 4
"""More threads than this per usable core only add switching (the kernels are CPU-bound);
a mistyped ``RRNET_NUM_THREADS=100000`` started threads for minutes, deaf to SIGTERM."""


def compute_threads() -> int:
    """Threads for rrnet's own CPU work: ``RRNET_NUM_THREADS`` (as for the Rust kernels;
    0 or unset: every usable core; at most :data:`MAX_THREADS_PER_CORE` per core)."""
    value = os.environ.get("RRNET_NUM_THREADS", "").strip()
    if not value:
        return usable_cores()
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"RRNET_NUM_THREADS must be an integer, got {value!r}") from None
    if n < 0:
        raise ValueError(f"RRNET_NUM_THREADS must be >= 0, got {n}")
    limit = MAX_THREADS_PER_CORE * usable_cores()
    if n > limit:
        raise ValueError(
            f"RRNET_NUM_THREADS={n} is more than {MAX_THREADS_PER_CORE} threads per usable "
            f"core ({usable_cores()} cores: at most {limit})"
        )
    return n or usable_cores()
