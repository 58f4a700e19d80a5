"""A float32 shard's flux files, written row run by row run while the shard is computed.

Written whole at the end, a shard's flux files (2 x 118 MB at 4,096 rows) cost a
page-cache copy and an fsync that nothing overlaps when the shard is a run's last
(measured: ~0.3 s of a 1.4 s run of 2,000 spectra, both cores idle). Here each run of
finished rows is written into a temporary file beside the final name as soon as its
chunk is done (on one background thread), with the kernel's writeback started at
once, so that committing the shard (fsync, rename: what :func:`rrnet.utils.atomic.
atomic_path` does) only waits for the last rows. With ``sync``, the written rows are
also flushed to the disk (``fdatasync``) on that thread every :data:`SYNC_BYTES` while
the shard is computed: the device's cache flush of 100+ MB at commit otherwise held
the run's end for 0.13-0.16 s on the project's VM (its disk flushes ~450 MB/s). The
files are byte-identical to ``np.save`` of the finished arrays; an aborted shard leaves
no file behind (a killed run leaves ``.*.tmp`` files, which a resumed run removes, as
before).
"""

from __future__ import annotations

import ctypes
import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from pathlib import Path

import numpy as np

from rrnet.grid import N_PIX
from rrnet.utils.atomic import temp_beside

ROW_BYTES = N_PIX * np.dtype(np.float32).itemsize
SYNC_BYTES = 16 << 20
"""Bytes of a file written between two early flushes (with ``sync``)."""


def npy_header(n: int) -> bytes:
    """The header ``np.save`` writes for a C-ordered little-endian float32 ``[n, 7200]``."""
    buf = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype("<f4"))
    header = {"descr": descr, "fortran_order": False, "shape": (n, N_PIX)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def row_runs(pos: np.ndarray, src: np.ndarray | None = None) -> list[tuple[int, int, int]]:
    """Rows ``src[k]`` of a buffer going to rows ``pos[k]`` of a file, as runs
    ``(file row, buffer row, count)`` of rows consecutive in both (``src``
    defaults to ``pos``: the buffer is laid out like the file)."""
    pos = np.asarray(pos, dtype=np.int64)
    src = pos if src is None else np.asarray(src, dtype=np.int64)
    if pos.shape != src.shape:
        raise ValueError(f"{pos.size} file rows but {src.size} buffer rows")
    if not pos.size:
        return []
    breaks = np.flatnonzero((np.diff(pos) != 1) | (np.diff(src) != 1)) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [pos.size]))
    return [(int(pos[a]), int(src[a]), int(b - a)) for a, b in zip(starts, stops, strict=True)]


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (a short write is continued)."""
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def _writeback_starter() -> Callable[[int, int, int], object] | None:
    """Linux's ``sync_file_range(fd, offset, n, SYNC_FILE_RANGE_WRITE)``: start writing
    dirty pages back without waiting (None where libc has no such call)."""
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return lambda fd, offset, n: call(fd, offset, n, 2)


_START_WRITEBACK = _writeback_starter()


class ShardFiles:
    """The flux files of one shard (``kind -> final path``), ``n`` float32 rows each.

    :meth:`write` is called (in one thread) with rows whose values are final; the
    bytes go out on ``submit``'s thread, in order. Every row must have been written
    once its last value is set before :meth:`commit`; :meth:`abort` removes the
    temporary files. Both wait for the writes handed over.
    """

    def __init__(
        self,
        paths: dict[str, Path],
        n: int,
        *,
        fsync: bool,
        submit: Callable[..., Future],
        sync: Callable[..., Future] | None = None,
    ) -> None:
        self.paths = dict(paths)
        self._fsync = fsync
        self._submit = submit
        self._sync = sync if fsync else None
        self._unsynced: dict[str, int] = {}
        """Bytes written per file since its last early flush was started."""
        self._header = npy_header(n)
        self._n = n
        self._fd: dict[str, int] = {}
        self._tmp: dict[str, Path] = {}
        self._futures: list[Future] = []
        self._lock = threading.Lock()
        try:
            for kind, path in self.paths.items():
                self._fd[kind], self._tmp[kind] = temp_beside(path)
                pwrite_all(self._fd[kind], memoryview(self._header), 0)
        except BaseException:
            self.abort()
            raise

    @property
    def pending(self) -> bool:
        """Neither committed nor aborted yet."""
        return bool(self._tmp)

    def write(
        self, kind: str, array: np.ndarray, pos: np.ndarray, src: np.ndarray | None = None
    ) -> list[Future]:
        """Hand over rows ``src`` (default ``pos``) of ``array`` (C-contiguous float32
        ``[m, 7200]``) as the file's rows ``pos``; the writes' futures (the rows must
        not change until they are done)."""
        if kind not in self._fd:
            return []
        assert array.ndim == 2 and array.shape[1] == N_PIX and array.dtype == np.float32
        assert array.flags.c_contiguous
        futures = []
        for dst, start, count in row_runs(pos, src):
            if not (dst >= 0 and dst + count <= self._n and 0 <= start <= len(array) - count):
                raise IndexError(f"rows {dst}..{dst + count} of {self._n} from buffer row {start}")
            rows = array[start : start + count].data.cast("B")
            offset = len(self._header) + dst * ROW_BYTES
            futures.append(self._submit(self._write_rows, kind, rows, offset))
        with self._lock:
            self._futures.extend(futures)
        return futures

    def _write_rows(self, kind: str, rows: memoryview, offset: int) -> None:
        fd = self._fd[kind]
        pwrite_all(fd, rows, offset)
        if self._fsync and _START_WRITEBACK is not None:
            _START_WRITEBACK(fd, offset, len(rows))  # an optimisation: the result is not needed
        if self._sync is None:
            return
        self._unsynced[kind] = self._unsynced.get(kind, 0) + len(rows)
        if self._unsynced[kind] >= SYNC_BYTES:  # this (rows) thread alone touches the counts
            self._unsynced[kind] = 0
            future = self._sync(os.fdatasync, fd)
            with self._lock:  # before this write's future completes: _drain sees it
                self._futures.append(future)

    def _drain(self) -> BaseException | None:
        """Wait for every write (and early flush) handed over; the first error, if any."""
        error = None
        while True:  # a write may start a flush before it completes
            with self._lock:
                futures, self._futures = self._futures, []
            if not futures:
                return error
            wait(futures)
            if error is None:
                error = next((f.exception() for f in futures if f.exception() is not None), None)

    def commit(self) -> None:
        """Wait for the writes, fsync (if asked) and rename each file onto its final name."""
        try:
            error = self._drain()
            if error is not None:
                raise error
            for kind, fd in list(self._fd.items()):
                if self._fsync:
                    os.fsync(fd)
                os.close(self._fd.pop(kind))
                os.replace(self._tmp[kind], self.paths[kind])
        finally:
            self.abort()  # what is left of a failed commit

    def abort(self) -> None:
        """Wait for the writes handed over, then close and remove the temporary files."""
        self._drain()
        for kind in list(self._fd):
            os.close(self._fd.pop(kind))
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)
        self._tmp = {}
