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
