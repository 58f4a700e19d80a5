"""PyTorch's first import, whole even if Ctrl-C comes meanwhile.

Interrupted half-way (a notebook user pressing stop during a first call's silent
seconds), torch refuses every later import in that process ("`torch` can only be
initialized once per process"), and every rrnet call failed until the kernel restarted.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading


def import_torch_whole() -> None:
    """Import torch if it is not yet; a Ctrl-C meanwhile is raised once it is done."""
    if "torch" in sys.modules:
        return
    if threading.current_thread() is not threading.main_thread():
        importlib.import_module("torch")  # signals reach the main thread only
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # a handler set outside Python: cannot be put back
        importlib.import_module("torch")
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        importlib.import_module("torch")
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
