"""Keep freed heap memory in the process while training on CPU (glibc malloc).

A grouped training step allocates and frees ~1.4 GB of tensors of 10-90 MB each (fc1's
weights and gradient, the RNN's sequences, their gradients): above glibc's largest
mmap threshold (32 MB), so every one is a fresh ``mmap`` that the kernel zero-fills
page by page on first touch and unmaps on free, ~350,000 page faults per step
(measured, ``benchmarks/RESULTS.md``). Inside :func:`retained_heap`, malloc takes big
blocks from the heap instead of mmap, does not return freed memory to the system,
and serves every thread from one arena (a worker thread's own arena cannot hold
them and would be trimmed), so after the first step the same pages are reused and
the faults vanish. On exit the defaults come back and the free memory is returned.
Elsewhere than Linux/glibc it does nothing. Peak memory is the same; memory freed
by one step stays in the process until the context exits.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
"""``mallopt`` parameter numbers (glibc's malloc.h)."""

_RETAIN = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
_DEFAULT = (
    (_M_ARENA_MAX, 8 * (os.cpu_count() or 1)),
    (_M_MMAP_MAX, 65536),
    (_M_TRIM_THRESHOLD, 128 * 1024),
)
"""glibc's defaults (64-bit), restored on exit; the dynamic mmap threshold stays off."""

_LOCK = threading.Lock()
_DEPTH = 0


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _set(libc: ctypes.CDLL, options: tuple[tuple[int, int], ...]) -> None:
    for param, value in options:
        libc.mallopt(ctypes.c_int(param), ctypes.c_int(value))


@contextmanager
def retained_heap(enabled: bool = True) -> Iterator[bool]:
    """Within the block, freed memory stays in the process for reuse (module docstring);
    yields whether that is in effect. Nested and concurrent uses share one setting,
    restored when the outermost exits."""
    global _DEPTH
    libc = _libc() if enabled else None
    if libc is None:
        yield False
        return
    with _LOCK:
        if _DEPTH == 0:
            _set(libc, _RETAIN)
        _DEPTH += 1
    try:
        yield True
    finally:
        with _LOCK:
            _DEPTH -= 1
            if _DEPTH == 0:
                _set(libc, _DEFAULT)
                libc.malloc_trim(ctypes.c_size_t(0))
