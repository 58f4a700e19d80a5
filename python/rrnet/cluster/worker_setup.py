"""Dask worker preload for local clusters: the worker processes ignore Ctrl-C.

A Ctrl-C in the terminal reaches the whole process group. The driver stops the run
and closes the cluster itself (finished shards kept); worker processes that also took
the SIGINT only printed their own tracebacks over its one-line message.
"""

from __future__ import annotations

import signal
from typing import Any


def dask_setup(worker: Any) -> None:
    """Called by Dask in each worker process at its start (main thread)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
