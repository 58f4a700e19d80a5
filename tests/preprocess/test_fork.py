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


def test_forked_child_gets_its_own_thread_pools():
    parent = normalise_in_pools(0)  # the parent's pools exist before the fork
    with multiprocessing.get_context("fork").Pool(2) as children:
        # before the fix each child waited forever on its inherited, threadless pool
        from_children = children.map_async(normalise_in_pools, range(2)).get(timeout=120)
    for child in from_children:
        for got, want in zip(child, parent, strict=True):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(normalise_in_pools(0)[1], parent[1])  # the parent's still work
