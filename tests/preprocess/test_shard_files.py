"""rrnet.preprocess.shard_files: row runs written as they come give np.save's file, and
an aborted or failed shard leaves nothing behind."""

from __future__ import annotations

import errno
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rrnet.grid import N_PIX
from rrnet.preprocess import shard_files
from rrnet.preprocess.shard_files import ShardFiles, npy_header, row_runs


def _saved(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize("n", [1, 7, 4096])
def test_header_is_np_saves(n):
    header = npy_header(n)
    assert _saved(np.zeros((n, N_PIX), dtype=np.float32))[: len(header)] == header
    assert len(header) % 64 == 0


def test_row_runs():
    assert row_runs(np.array([], dtype=np.int64)) == []
    # (file row, buffer row, count), consecutive in both; order kept, nothing merged
    assert row_runs(np.array([5, 0, 1, 2, 7, 6, 9])) == [
        (5, 5, 1), (0, 0, 3), (7, 7, 1), (6, 6, 1), (9, 9, 1)
    ]  # fmt: skip
    pos, src = np.array([3, 4, 5, 9, 10, 2]), np.arange(6)
    assert row_runs(pos, src) == [(3, 0, 3), (9, 3, 2), (2, 5, 1)]
    assert row_runs(np.array([3, 4]), np.array([7, 5])) == [(3, 7, 1), (4, 5, 1)]
    with pytest.raises(ValueError):
        row_runs(np.array([1, 2]), np.array([1]))


@pytest.mark.parametrize("fsync", [True, False])
def test_rows_in_any_order_give_np_saves_file(tmp_path, fsync):
    rng = np.random.default_rng(1)
    n = 9
    final = rng.normal(size=(n, N_PIX)).astype(np.float32)
    work = np.full_like(final, np.nan)
    paths = {"a": tmp_path / "shards" / "a.npy", "b": tmp_path / "shards" / "b.npy"}
    with ThreadPoolExecutor(1) as pool:
        files = ShardFiles(paths, n, fsync=fsync, submit=pool.submit)
        assert files.pending
        for rows in ([4, 2, 3], [0], [8, 7], [1, 5, 6]):
            work[rows] = final[rows]
            files.write("a", work, np.array(rows))
        files.write("b", final, np.arange(n))
        files.write("b", final, np.array([3, 4]))  # written twice: the same bytes
        files.write("c", final, np.arange(n))  # a kind without a file: ignored
        with pytest.raises(IndexError):
            files.write("a", final, np.array([n]))
        files.commit()
    assert not files.pending
    assert paths["a"].read_bytes() == _saved(final) == paths["b"].read_bytes()
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["a.npy", "b.npy"]
    np.testing.assert_array_equal(np.load(paths["a"]), final)


def test_abort_leaves_nothing(tmp_path):
    with ThreadPoolExecutor(1) as pool:
        files = ShardFiles({"a": tmp_path / "a.npy"}, 3, fsync=True, submit=pool.submit)
        files.write("a", np.zeros((3, N_PIX), dtype=np.float32), np.arange(3))
        files.abort()
        files.abort()  # twice: nothing more to do
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_is_raised_at_commit_and_leaves_nothing(tmp_path, monkeypatch):
    real = shard_files.pwrite_all

    def full_disk(fd, data, offset):
        if offset > 0:
            raise OSError(errno.ENOSPC, "injected", "x")
        real(fd, data, offset)

    monkeypatch.setattr(shard_files, "pwrite_all", full_disk)
    with ThreadPoolExecutor(1) as pool:
        files = ShardFiles({"a": tmp_path / "a.npy"}, 3, fsync=True, submit=pool.submit)
        files.write("a", np.zeros((3, N_PIX), dtype=np.float32), np.array([0, 2]))
        with pytest.raises(OSError, match="injected"):
            files.commit()
    assert list(tmp_path.iterdir()) == []


def test_rows_from_a_buffer_laid_out_otherwise(tmp_path):
    """Buffer rows ``src`` go to file rows ``pos`` (chunk buffers: kept spectrum i in row i)."""
    rng = np.random.default_rng(2)
    n = 8
    final = rng.normal(size=(n, N_PIX)).astype(np.float32)
    order = np.array([6, 7, 0, 3, 4, 5, 1, 2])  # rows in chunk order, not file order
    with ThreadPoolExecutor(1) as pool:
        files = ShardFiles({"a": tmp_path / "a.npy"}, n, fsync=False, submit=pool.submit)
        for part in (order[:5], order[5:]):
            buffer = final[part].copy()  # compact: row i of the buffer is file row part[i]
            writes = files.write("a", buffer, part, np.arange(part.size))
            assert writes and all(hasattr(w, "done") for w in writes)
        files.commit()
    assert (tmp_path / "a.npy").read_bytes() == _saved(final)


def test_rows_are_flushed_while_written_and_a_failed_flush_is_raised(tmp_path, monkeypatch):
    """With ``sync``, fdatasync runs on that thread every SYNC_BYTES of a file, before
    commit (which still fsyncs), and a flush error stops the commit like a write error."""
    monkeypatch.setattr(shard_files, "SYNC_BYTES", 2 * shard_files.ROW_BYTES)
    flushed: list[int] = []
    monkeypatch.setattr(shard_files.os, "fdatasync", flushed.append)
    final = np.arange(5 * N_PIX, dtype=np.float32).reshape(5, N_PIX)
    with ThreadPoolExecutor(1) as rows, ThreadPoolExecutor(1) as sync:
        files = ShardFiles(
            {"a": tmp_path / "a.npy"}, 5, fsync=True, submit=rows.submit, sync=sync.submit
        )
        for row in range(5):
            files.write("a", final, np.array([row]))
        files.commit()
    assert len(flushed) == 2  # after rows 2 and 4 (2 rows each), not after the fifth
    assert (tmp_path / "a.npy").read_bytes() == _saved(final)

    def broken(fd):
        raise OSError(errno.EIO, "injected flush error")

    monkeypatch.setattr(shard_files.os, "fdatasync", broken)
    with ThreadPoolExecutor(1) as rows, ThreadPoolExecutor(1) as sync:
        files = ShardFiles(
            {"a": tmp_path / "b.npy"}, 5, fsync=True, submit=rows.submit, sync=sync.submit
        )
        files.write("a", final, np.arange(5))
        with pytest.raises(OSError, match="injected flush"):
            files.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def test_no_early_flush_without_fsync(tmp_path, monkeypatch):
    monkeypatch.setattr(shard_files, "SYNC_BYTES", 1)
    monkeypatch.setattr(shard_files.os, "fdatasync", lambda fd: pytest.fail("flushed"))
    with ThreadPoolExecutor(1) as rows, ThreadPoolExecutor(1) as sync:
        files = ShardFiles(
            {"a": tmp_path / "a.npy"}, 2, fsync=False, submit=rows.submit, sync=sync.submit
        )
        files.write("a", np.zeros((2, N_PIX), dtype=np.float32), np.arange(2))
        files.commit()
