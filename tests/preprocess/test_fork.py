"""The Rust kernels in a forked child (``multiprocessing`` on Linux): the child inherits
the parent's cached thread pools but not their threads, and must not wait on them."""

from __future__ import annotations

import multiprocessing
import sys

import numpy as np
import pytest

import rrnet.preprocess as fast
from rrnet.grid import N_PIX

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork start method is Linux's")

ROWS = 1.0 + np.random.default_rng(3).random((6, N_PIX), dtype=np.float32)


def normalise_in_pools(_: int) -> list[np.ndarray]:
    """The rows normalised by the default pool and by a two-thread one."""
    return [fast.normalize(ROWS), fast.normalize(ROWS, threads=2)]


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")  # fork, 3.12+
def test_forked_child_gets_its_own_thread_pools():
    parent = normalise_in_pools(0)  # the parent's pools exist before the fork
    with multiprocessing.get_context("fork").Pool(2) as children:
        # before the fix each child waited forever on its inherited, threadless pool
        from_children = children.map_async(normalise_in_pools, range(2)).get(timeout=120)
    for child in from_children:
        for got, want in zip(child, parent, strict=True):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(normalise_in_pools(0)[1], parent[1])  # the parent's still work


FORK_DURING_FIRST_CALL = """
import os, signal, sys, threading, time
import numpy as np
import rrnet.preprocess as pp  # no kernel called yet in this process

flux = 1 + np.random.default_rng(0).random((2, 7200), dtype=np.float32)
hangs = 0
for trial in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:  # a process whose kernels were never called
        first = threading.Thread(target=lambda: [pp.normalize(flux, threads=k) for k in (1, 2, 3)])
        first.start()
        time.sleep(0.0002 * (trial % 10))  # fork at varied points of those first calls
        child = os.fork()
        if child == 0:
            signal.alarm(30)  # a hang ends in SIGALRM (a stall under load does not)
            pp.normalize(flux, threads=2)
            os._exit(0)
        _, status = os.waitpid(child, 0)
        first.join()
        os._exit(0 if status == 0 else 1)
    _, status = os.waitpid(pid, 0)
    hangs += status != 0
print(hangs)
"""


def test_a_fork_during_another_threads_first_kernel_call_does_not_hang():
    """The kernels' tables (grids, continuum bases), rust-numpy's C API and borrow
    checking and crossbeam's epoch collector were set up on first use: a process forked
    while another thread set one up inherited it half-done and waited forever (20 of 100
    forks; 0 of 3,000 once all are set up at import). A survey's prefetch thread and a
    process pool do exactly this."""
    import subprocess

    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", FORK_DURING_FIRST_CALL, "100"],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    assert run.stdout.strip() == "0", run.stdout + run.stderr
