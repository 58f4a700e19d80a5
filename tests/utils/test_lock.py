"""One writer per output: the lock of rrnet.utils.lock, across real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rrnet.utils.lock import LockError, lock_path, output_lock

HOLD = textwrap.dedent(
    """
    import sys, time
    from rrnet.utils.lock import output_lock
    with output_lock(sys.argv[1], directory=sys.argv[2] == "dir"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def _holder(out: Path, kind: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out), kind], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_second_process_is_refused_naming_the_holder(tmp_path: Path, kind: str) -> None:
    out = tmp_path / ("store" if kind == "dir" else "cat.parquet")
    proc = _holder(out, kind)
    try:
        with pytest.raises(LockError) as info, output_lock(out, directory=kind == "dir"):
            pass
        message = str(info.value)
        assert "\n" not in message
        assert f"pid {proc.pid}" in message and socket.gethostname() in message
        assert "since 20" in message
    finally:
        _stop(proc)


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "store"
    proc = _holder(out, "dir")
    _stop(proc)  # kill -9: no cleanup ran, the lock file and its record remain
    assert json.loads(lock_path(out, directory=True).read_text())["pid"] == proc.pid
    with output_lock(out, directory=True) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not lock_path(out, directory=True).exists()


def test_record_of_a_live_process_without_flock_is_respected(tmp_path: Path) -> None:
    """A file system that ignores flock: the record of a live pid of this host still wins."""
    out = tmp_path / "cat.csv"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"pid": sleeper.pid, "host": socket.gethostname(), "started": "x"}
        lock_path(out, directory=False).write_text(json.dumps(record))
        refused = pytest.raises(LockError, match=f"pid {sleeper.pid}")
        with refused, output_lock(out, directory=False):
            pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with output_lock(out, directory=False):  # dead now: stale, taken over
        pass


def test_a_killed_holders_pid_reused_by_another_process_is_stale(tmp_path: Path) -> None:
    """On a busy node the pid of a killed run is soon another process's: the record's pid
    was alive, so ``--resume`` waited for an unrelated process. The record now names the
    holder's start as well; a live pid that started at another time is not the holder.
    The same pid with its recorded start is still respected (a file system without flock)."""
    from rrnet.utils.lock import _process_start

    if _process_start(os.getpid()) is None:
        pytest.skip("needs /proc")
    out = tmp_path / "store"
    proc = _holder(out, "dir")
    record = json.loads(lock_path(out, directory=True).read_text())
    assert record["pid_start"] == _process_start(proc.pid)
    _stop(proc)  # kill -9 ...
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # ... and its pid now another process's
        lock = lock_path(out, directory=True)
        reused = {**record, "pid": sleeper.pid}
        lock.write_text(json.dumps(reused))
        with output_lock(out, directory=True):
            pass
        held = {**record, "pid": sleeper.pid, "pid_start": _process_start(sleeper.pid)}
        lock.write_text(json.dumps(held))
        with pytest.raises(LockError, match=f"pid {sleeper.pid}"), output_lock(out, directory=True):
            pass
        # a record of an older rrnet, without pid_start: judged by its start time
        old = {"pid": sleeper.pid, "host": record["host"], "started": "2001-01-01T00:00:00Z"}
        lock.write_text(json.dumps(old))
        with output_lock(out, directory=True):  # the sleeper began long after 2001
            pass
        lock.write_text(json.dumps({**old, "started": "2999-01-01T00:00:00Z"}))
        with pytest.raises(LockError), output_lock(out, directory=True):
            pass
    finally:
        sleeper.kill()
        sleeper.wait()


def test_failed_start_leaves_no_directory(tmp_path: Path) -> None:
    out = tmp_path / "new" / "store"
    with pytest.raises(RuntimeError), output_lock(out, directory=True):
        raise RuntimeError("start failed")
    assert not out.exists()


def test_released_lock_can_be_taken_again_quickly(tmp_path: Path) -> None:
    out = tmp_path / "report"
    for _ in range(3):
        start = time.monotonic()
        with output_lock(out, directory=True):
            pass
        assert time.monotonic() - start < 1


def _foreign(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make the existing lock file at ``path`` another user's: this process may read it
    but not open it for writing (what a non-root user meets; root ignores the mode)."""
    import errno

    from rrnet.utils import lock

    real_open = os.open

    def guarded(name, flags, *args):  # type: ignore[no-untyped-def]
        if Path(name) == path and flags & os.O_RDWR and path.exists():
            raise PermissionError(errno.EACCES, "Permission denied", str(name))
        return real_open(name, flags, *args)

    monkeypatch.setattr(lock.os, "open", guarded)


def test_another_users_lock_is_named_when_held_and_taken_over_when_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock file of another user: opening it for writing failed with EACCES, reported
    as a machine fault (exit 1, 'rerun with --resume'), and a stale one blocked every
    later run. Held, it names its holder; stale, it is replaced by this run's."""
    out = tmp_path / "cat.parquet"
    path = lock_path(out, directory=False)
    proc = _holder(out, "file")
    try:
        with monkeypatch.context() as patched:
            _foreign(patched, path)
            held = pytest.raises(LockError, match=f"in use by pid {proc.pid}")
            with held, output_lock(out, directory=False):
                pass
    finally:
        _stop(proc)  # killed: its lock file stays, stale
    assert path.exists()
    with monkeypatch.context() as patched:
        _foreign(patched, path)
        with output_lock(out, directory=False) as held:
            assert json.loads(held.read_text())["pid"] == os.getpid()
    assert not path.exists()


def test_lock_files_follow_the_umask(tmp_path: Path) -> None:
    """A group sharing its outputs (umask 002) shares their locks too (they were 0644)."""
    import stat

    previous = os.umask(0o002)
    try:
        with output_lock(tmp_path / "cat.parquet", directory=False) as path:
            assert stat.S_IMODE(path.stat().st_mode) == 0o664
    finally:
        os.umask(previous)


def test_a_folder_that_refuses_the_lock_file_is_an_error_not_a_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating the lock file fails with EACCES where the folder is not writable: that is
    raised as it is (the commands check their outputs first), never retried for ever."""
    import errno

    from rrnet.utils import lock

    out = tmp_path / "cat.parquet"
    real_open = os.open

    def no_create(name, flags, *args):  # type: ignore[no-untyped-def]
        if Path(name) == lock_path(out, directory=False):
            raise PermissionError(errno.EACCES, "Permission denied", str(name))
        return real_open(name, flags, *args)

    monkeypatch.setattr(lock.os, "open", no_create)
    with pytest.raises(PermissionError), output_lock(out, directory=False):
        pass


def test_a_second_run_in_the_same_process_is_told_so(tmp_path: Path) -> None:
    """Two threads of one program writing the same output: the refusal named the
    program's own pid and said "only one process", which it was."""
    import threading

    out = tmp_path / "catalogue.parquet"
    refused: list[str] = []

    def second() -> None:
        with pytest.raises(LockError) as info, output_lock(out, directory=False):
            pass
        refused.append(str(info.value))

    with output_lock(out, directory=False):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert len(refused) == 1
    assert f"in use by another run in this process (pid {os.getpid()})" in refused[0]
    assert "only one run at a time may write an output" in refused[0]
