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
from types import FrameType


def import_torch_whole() -> None:
    """Import torch if it is not yet. A Ctrl-C meanwhile is held until the import is
    done, then given to the handler that was there before (raised as KeyboardInterrupt
    by default, ignored where it was ignored); a second Ctrl-C goes to it at once (an
    import stuck on a network disk can still be broken off)."""
    if "torch" in sys.modules:
        return
    previous = signal.getsignal(signal.SIGINT) if _main_thread() else None
    if previous is None:  # not the main thread, or a handler set outside Python
        importlib.import_module("torch")
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if caught:  # pressed again: the user means it now
            signal.signal(signal.SIGINT, previous)
            signal.raise_signal(signal.SIGINT)
        caught.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        importlib.import_module("torch")
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        signal.raise_signal(signal.SIGINT)


def _main_thread() -> bool:
    """Signal handlers can be set (and signals arrive) in the main thread only."""
    return threading.current_thread() is threading.main_thread()
