"""Keep freed heap memory in the process for reuse while training or predicting on CPU
(glibc malloc).

A grouped training step allocates and frees ~1.4 GB of tensors of 10-90 MB each (fc1's
weights and gradient, the RNN's sequences, their gradients): above glibc's largest
mmap threshold (32 MB), so every one is a fresh ``mmap`` that the kernel zero-fills
page by page on first touch and unmaps on free, ~130,000 page faults per step at
~2.5 us each, and the unmaps of one thread stall the other's faults
(``benchmarks/RESULTS.md``). After :func:`retain_heap`, malloc takes big blocks from
the heap instead of mmap, does not return freed memory to the system, and serves
every thread from one arena (a worker thread's own arena cannot hold them and would
be unmapped), so the next step, or the next training run in the process, reuses the
same pages and the faults vanish. This is what jemalloc or tcmalloc do by default:
peak memory stays the same, but memory freed after training stays in the process
until :func:`release_heap`. Elsewhere than Linux/glibc both do nothing. Inference on CPU
(``run_inference``) retains too: a paper-size ensemble's activations (tens of MB per
batch) took ~1-3 million page faults per 2,048 spectra, ~20 % of the run and most of
its run-to-run spread.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
"""``mallopt`` parameter numbers (glibc's malloc.h)."""

_RETAIN = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
_DEFAULT = (
    (_M_ARENA_MAX, 8 * (os.cpu_count() or 1)),
    (_M_MMAP_MAX, 65536),
    (_M_TRIM_THRESHOLD, 128 * 1024),
)
"""glibc's defaults (64-bit), restored by :func:`release_heap`."""

_LOCK = threading.Lock()
_RETAINED = False


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


def retain_heap() -> bool:
    """Keep freed memory for reuse from now on (module docstring); idempotent. Returns
    whether it is in effect (False off glibc). Threads that already allocated keep
    their arena: call it before starting workers."""
    global _RETAINED
    libc = _libc()
    if libc is None:
        return False
    with _LOCK:
        if not _RETAINED:
            _set(libc, _RETAIN)
            _RETAINED = True
    return True


def release_heap() -> None:
    """Back to glibc's defaults (the dynamic mmap threshold stays off) and return the
    free memory to the system; a no-op unless :func:`retain_heap` is in effect."""
    global _RETAINED
    libc = _libc()
    with _LOCK:
        if libc is not None and _RETAINED:
            _set(libc, _DEFAULT)
            libc.malloc_trim(ctypes.c_size_t(0))
            _RETAINED = False
