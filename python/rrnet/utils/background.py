"""Run a producing iterator on a thread, one item ahead of its consumer.

``rrnet-infer --catalog`` preprocesses chunk k+1 (reading and Rust kernels, which
release the GIL) while the model predicts chunk k (PyTorch, which releases it
too), instead of one after the other. Items arrive in the producer's order, so
the consumer sees exactly what iterating in its own thread would give.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_POLL_S = 0.1
"""How often a waiting producer checks whether its consumer has gone."""


def ahead(make: Callable[[], Iterator[T]], *, name: str = "rrnet-ahead") -> Iterator[T]:
    """Yield the items of ``make()``, computed on a thread one item ahead.

    The producer starts item k+1 only when the consumer takes item k, so at most
    two items exist at once (the one being used and the next). An exception of the
    producer is raised in the consumer at the position it occurred; when the
    consumer stops early (``close()``, an error of its own, Ctrl-C), the producer
    stops after the item it is computing, its iterator is closed on its thread, and
    the consumer returns when that is done.
    """
    ready: queue.Queue = queue.Queue(maxsize=1)
    go = threading.Semaphore(1)  # one token: the producer may compute one item
    stop = threading.Event()

    def wait_for_token() -> bool:
        while not stop.is_set():
            if go.acquire(timeout=_POLL_S):
                return True
        return False

    def produce() -> None:
        try:
            items = make()
            try:
                while wait_for_token():
                    try:
                        item = next(items)
                    except StopIteration:
                        ready.put((False, None))
                        return
                    ready.put((True, item))
                    del item  # the consumer holds it now
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put((False, exc))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            more, item = ready.get()
            if not more:
                if item is not None:
                    raise item
                return
            go.release()  # compute the next item while this one is used
            yield item
            del item
    finally:
        stop.set()
        _drain(ready)
        # Wait for the item being computed (native code a thread cannot interrupt: at
        # most one chunk's preprocessing), so no thread is left inside it at exit. A
        # second Ctrl-C interrupts this wait.
        thread.join()


def _drain(ready: queue.Queue) -> None:
    """Drop a finished item nobody will take (frees its memory; unblocks the producer)."""
    try:
        while True:
            ready.get_nowait()
    except queue.Empty:
        pass
