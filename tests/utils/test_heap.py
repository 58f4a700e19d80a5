"""retain_heap: after it, freed big blocks are reused without page faults; after
release_heap, malloc returns them to the system again (in a fresh interpreter, since
malloc's settings are per process)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

_PROBE = """
import ctypes, json, resource
from rrnet.utils.heap import release_heap, retain_heap

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def faults_of_reuse(n=4, size=64 * 2**20):
    # first-touch faults of n rounds of malloc + write + free of a 64 MB block (what
    # a tensor's life is to malloc), after one warm-up round (the heap's first use)
    def round_():
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)
        libc.free(p)
    round_()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        round_()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

out = {"default": faults_of_reuse()}
out["on"] = retain_heap() and retain_heap()  # idempotent
out["retained"] = faults_of_reuse()
release_heap()
out["after"] = faults_of_reuse()
print(json.dumps(out))
"""

PAGES = 4 * 16 * 2**20 * 4 // 4096
"""Page faults of the probe's four rounds when every round's block is a fresh mmap."""


def test_freed_blocks_are_reused_when_retained_and_returned_after_release() -> None:
    run = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["on"] is True
    assert out["default"] > 0.9 * PAGES  # each 64 MB block a fresh mapping
    assert out["retained"] < 0.01 * PAGES  # the same pages, no faults
    assert out["after"] > 0.9 * PAGES  # defaults back: freed blocks leave the process
