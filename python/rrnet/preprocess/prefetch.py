"""Reading the files a catalogue names ahead of the kernels, in catalogue order.

Groups of files go to the Rust reader (:mod:`rrnet.io.lamost_fast`; one rayon task per
file) or, with ``reader="fitsio"``, one file per task to fitsio, on a few threads; their
results come back in job order, at most a fixed number of groups in flight, and a file
named again by one of the last reads is not read twice."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from rrnet.io.lamost import is_environment_fault
from rrnet.io.lamost_fast import READERS, FileRead, Reader, read_many

PREFETCH_PER_WORKER = 4
"""Files read ahead per reader thread (fitsio reader)."""

FILES_PER_READ = 32
"""Files per call of the Rust reader (one rayon task each)."""

RUST_READ_CALLS = 2
"""Calls of the Rust reader running at once (one more group waits in line)."""

NOTES_KEY = "_notes"
"""Key of a reader result's header dict holding the unconvertible-value notes per HDU."""


def _plain(read: FileRead) -> tuple[tuple[str, str] | None, dict, dict, str | None]:
    """One file's outcome as plain values: ``(file_error, header, arms, fallback)``.

    ``file_error`` is ``(status, reason)`` or None, ``arms`` maps extname to
    ``(loglam, flux, ivar, snr)`` or to ``(status, reason)``, ``fallback`` is
    why fitsio read the file (None: it was not a fallback).
    """
    if read.error is not None:
        return (read.error.status, str(read.error)), {}, {}, read.fallback
    info = read.info
    assert info is not None  # a read without an error has the file's information
    header = {"obsid": info.obsid, "ra": info.ra, "dec": info.dec, "desig": info.desig}
    notes: dict[str, tuple[str, ...]] = {"": info.notes}
    out: dict[str, tuple] = {}
    for extname, arm in read.arms.items():
        if isinstance(arm, Exception):
            out[extname] = (arm.status, str(arm))
        else:
            out[extname] = (arm.loglam, arm.flux, arm.ivar, arm.snr)
            notes[extname] = arm.notes
    return None, {**header, NOTES_KEY: notes}, out, read.fallback


def _read_files(
    files: list[tuple[str, list[str]]], reader: Reader, max_inflated: int, threads: int | None
) -> list[tuple]:
    """Reader task: read the named arms of several files (see :func:`_plain`)."""
    try:
        reads = read_many(
            files, reader=reader, max_inflated=max_inflated, threads=threads, masks=False
        )
    except Exception as exc:  # an unforeseen reader failure must not stop the batch
        if is_environment_fault(exc):  # the machine (disk, TMPDIR, memory): stop the run
            raise
        why = f"unexpected error reading files: {exc!r}"
        return [(("bad_fits", why), {}, {}, None) for _ in files]
    return [_plain(read) for read in reads]


class Immediate:
    """A finished Future look-alike for reading in this process (workers=0)."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


@contextmanager
def thread_pool(workers: int, name: str = "rrnet-read") -> Iterator[Callable[..., Any]]:
    """A ``submit(fn, *args)`` running on ``workers`` threads (0: synchronously).

    Threads suffice: decompression (zlib) and file reads release the GIL, and so
    do the Rust kernels running meanwhile in the calling thread. No process is
    forked, so the kernels' rayon pool is never copied into a child.
    """
    if workers <= 0:
        yield lambda fn, *args: Immediate(fn(*args))
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        try:
            yield pool.submit
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def ordered_prefetch(
    submit: Callable[..., Future | Immediate],
    read: Callable[[list], list],
    jobs: Iterable[Any],
    depth: int,
    group: int,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(job, result)`` in job order; jobs are read ``group`` at a time
    (one ``read(args_list)`` call each) with at most ``depth`` groups in flight.

    A file job whose path and arms were asked for by one of the last
    ``RECENT_FILES`` reads is not read again: it gets that read's result."""
    pending: deque = deque()
    asked: dict[str, set[str]] = {}  # path -> arms, of recent submitted reads
    done: dict[str, tuple] = {}  # path -> result, of recent finished reads
    reuse: set[int] = set()  # id() of jobs answered from `done`

    def results(chunk: list, future: Future | Immediate) -> Iterator[tuple[Any, Any]]:
        values = iter(future.result())
        for job in chunk:
            if job.args is None:
                yield job, None
            elif id(job) in reuse:
                reuse.discard(id(job))
                yield job, (*done[job.args[0]][:3], None)  # fallback already reported
            else:
                result = next(values)
                done.pop(job.args[0], None)  # re-inserted: most recent last
                done[job.args[0]] = result
                _trim(done, 2 * RECENT_FILES)
                yield job, result

    def flush(chunk: list) -> None:
        to_read = []
        for job in chunk:
            if job.args is None:
                continue
            path, extnames = job.args
            if set(extnames) <= asked.get(path, set()):
                reuse.add(id(job))
                continue
            asked.pop(path, None)  # re-inserted: most recent last
            asked[path] = set(extnames)
            _trim(asked, RECENT_FILES)
            to_read.append(job.args)
        pending.append((chunk, submit(read, to_read) if to_read else Immediate([])))

    chunk: list = []
    for job in jobs:
        chunk.append(job)
        if len(chunk) < group:
            continue
        flush(chunk)
        chunk = []
        if len(pending) >= depth:
            yield from results(*pending.popleft())
    if chunk:
        flush(chunk)
    while pending:
        yield from results(*pending.popleft())


RECENT_FILES = 64
"""Reads remembered for reuse by :func:`ordered_prefetch` (files straddling batches)."""


def _trim(recent: dict, size: int) -> None:
    """Drop the oldest entries beyond ``size`` (dicts keep insertion order)."""
    while len(recent) > size:
        del recent[next(iter(recent))]


def default_workers() -> int:
    """Reader threads: one per core (they mostly wait on zlib and I/O, outside the GIL)."""
    return max(1, os.cpu_count() or 1)


def read_plan(workers: int, reader: Reader, max_inflated: int) -> tuple[int, int, int, Callable]:
    """(Python reader threads, groups in flight, files per group, read function)."""
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    if max_inflated < 1:
        raise ValueError(f"max_inflated must be >= 1 byte, got {max_inflated}")
    if reader == "fitsio":  # one file per task, as many tasks as threads
        depth = max(2, PREFETCH_PER_WORKER * max(workers, 1))
        return workers, depth, 1, lambda args: _read_files(args, reader, max_inflated, None)
    # Rust: up to two Python threads hand groups to a rayon pool of `workers` threads,
    # so one group's conversion to Python values (GIL held) overlaps the next's read.
    threads = max(workers, 1)
    python_threads = min(workers, RUST_READ_CALLS)
    return (
        python_threads,
        max(2, python_threads + 1),
        FILES_PER_READ,
        (lambda args: _read_files(args, reader, max_inflated, threads)),
    )
