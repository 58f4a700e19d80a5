"""Atomic writes: all or nothing, never a partial file under the final name."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrnet.utils.atomic import atomic_path, read_json, write_text


def test_success_replaces_and_leaves_no_temporary(tmp_path) -> None:
    target = tmp_path / "sub" / "out.txt"
    write_text(target, "old")
    with atomic_path(target, fsync=True) as tmp:
        assert not tmp.exists()  # writers that refuse to overwrite (fitsio) can create it
        assert tmp.parent == target.parent
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the rename
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_failure_keeps_the_previous_version(tmp_path) -> None:
    target = tmp_path / "out.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_read_json_is_none_unless_a_readable_document(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    assert read_json(path) is None  # missing
    path.write_text('{"a": [1, 2')  # truncated
    assert read_json(path) is None
    path.write_bytes(b"\xff\xfe\x00")  # not UTF-8
    assert read_json(path) is None
    write_text(path, '{"a": [1, 2]}')
    assert read_json(path) == {"a": [1, 2]}


@pytest.mark.parametrize("free_bytes", [0, 4096, 64 << 20])
def test_a_library_error_on_a_full_disk_is_said_as_the_disks(
    tmp_path, monkeypatch: pytest.MonkeyPatch, free_bytes: int
) -> None:
    """Polars and cfitsio report a full disk as a malformed file ("Invalid thrift:
    transport error", "tried to move past end of file"): with the file system full when
    the write failed, the error becomes ENOSPC naming the output (a fault of the
    machine: the run stops, resumable); with room left, the library's error stays."""
    import errno
    import os
    from types import SimpleNamespace

    import polars as pl

    from rrnet.utils.faults import is_machine_fault

    seen: list[bool] = []

    def statvfs(path):
        seen.append(any(p.name.endswith(".tmp") for p in tmp_path.iterdir()))
        blocks = free_bytes // 4096
        return SimpleNamespace(f_bfree=blocks, f_bavail=blocks, f_frsize=4096)

    monkeypatch.setattr(os, "statvfs", statvfs)
    target = tmp_path / "cat.parquet"
    library = pl.exceptions.ComputeError("parquet: Invalid thrift: transport error")
    with pytest.raises(Exception) as raised, atomic_path(target) as tmp:
        tmp.write_bytes(b"PAR1 half a file")
        raise library
    assert seen == [True]  # asked while the failed write still held its space
    if free_bytes < (1 << 20):
        assert isinstance(raised.value, OSError) and raised.value.errno == errno.ENOSPC
        assert raised.value.filename == os.fspath(target) and raised.value.__cause__ is library
        assert is_machine_fault(raised.value)
    else:
        assert raised.value is library
    assert not target.exists() and list(tmp_path.iterdir()) == []
    # an error already said as the machine's is left as it is
    with pytest.raises(OSError) as raised, atomic_path(target):
        raise OSError(errno.EROFS, "Read-only file system")
    assert raised.value.errno == errno.EROFS
