"""One writer per output: an exclusive lock held for the whole run.

Two processes writing the same store, catalogue, run folder, checkpoint folder or
report (a job array sharing ``--out``, a second ``--resume`` by mistake) would
interleave their files and leave an output marked complete whose rows point at
another spectrum's flux. Every rrnet command therefore takes :func:`output_lock`
on its output before it writes anything.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on a small lock file (inside a directory
output, beside a file output) that records who holds it: pid, host and start time.
The kernel drops an flock when its process dies (``kill -9`` included), so a lock
file left by a dead process is simply taken over; the recorded holder is only
what the refusal message names. Where the file system ignores flock (some NFS
mounts), the record still detects a live holder on the same host: a lock file
naming a running pid of this host that is not ours is refused, one naming a pid
that no longer runs, or now runs another process (started at another time), is stale
and is taken over.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".rrnet.lock"
"""Name of the lock file inside a directory output."""


class LockError(RuntimeError):
    """Another process holds the output (one-line message naming the holder)."""


def lock_path(out: str | os.PathLike[str], *, directory: bool) -> Path:
    """The lock file of an output: inside a directory, beside a file (``.NAME.lock``)."""
    out = Path(out)
    if directory:
        return out / LOCK_NAME
    return out.with_name(f".{out.name}.lock")


def _holder_text(record: dict) -> str:
    if not record:
        return "another process"
    if record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
        # two threads of one program writing the same output
        return f"another run in this process (pid {os.getpid()}) since {record.get('started', '?')}"
    return (
        f"pid {record.get('pid', '?')} on {record.get('host', '?')} "
        f"since {record.get('started', '?')}"
    )


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _pid_alive(pid: int) -> bool:
    """Whether a process of this host runs with this pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux ``/proc``; None
    where unknown): with the pid, what names one process, as pids are reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22, starttime
    except (OSError, ValueError, IndexError):
        return None


def _live_foreign_holder(record: dict) -> bool:
    """A record naming another live process of this host (flock-less file systems). A
    live pid that started at another time than the recorded holder is a reused pid:
    the holder has ended (on a busy node a killed run's pid is soon another's, and its
    ``--resume`` had waited for that unrelated process)."""
    pid = record.get("pid")
    if record.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    if pid == os.getpid() or not _pid_alive(pid):
        return False
    recorded, now = record.get("pid_start"), _process_start(pid)
    if isinstance(recorded, int):
        return now in (None, recorded)
    return not _started_after(now, record.get("started"))  # a record of rrnet < 2026-12-06


def _started_after(ticks: int | None, started: object) -> bool:
    """Whether a process that started ``ticks`` after boot began after the UTC time
    ``started`` (seconds resolution, 2 s of slack); False where either is unknown."""
    try:
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        when = _dt.datetime.strptime(str(started), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC)
    except (OSError, ValueError, StopIteration, IndexError):
        return False
    if ticks is None:
        return False
    return boot + ticks / os.sysconf("SC_CLK_TCK") > when.timestamp() + 2.0


def _in_use(what: str, out: object, record: dict) -> LockError:
    return LockError(
        f"{what} {out} is in use by {_holder_text(record)}: "
        "wait for it to finish (only one run at a time may write an output)"
    )


def _acquire(path: Path, out: object, what: str) -> int:
    """Open and flock the lock file; its descriptor. Retries if it was unlinked meanwhile."""
    while True:
        try:  # 0666 less the umask, as every output: a group may share its outputs
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:
            if not path.exists():  # the folder is not writable: not a lock question
                raise
            _take_over_foreign(path, out, what)  # another user's lock file
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise _in_use(what, out, _read_record(path)) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder released (and removed) it between our open and flock


def _take_over_foreign(path: Path, out: object, what: str) -> None:
    """A lock file this user cannot write (another user's): held, it is refused naming its
    holder; left by a run that ended, it is removed so that a new one can be made (the
    folder is writable: the output goes there). It was reported as a machine fault, and a
    stale one blocked every later run."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # released meanwhile: try again
    except PermissionError:
        raise LockError(
            f"{what} {out}: its lock file {path} belongs to another user and cannot be read; "
            "ask them to finish, or remove it"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise _in_use(what, out, _read_record(path)) from None
        if _live_foreign_holder(_read_record(path)):  # a file system without flock
            raise _in_use(what, out, _read_record(path))
        try:
            path.unlink()  # stale: its holder has ended
        except FileNotFoundError:
            pass
        except PermissionError:
            raise LockError(
                f"{what} {out}: a stale lock file {path} of another user cannot be removed "
                "here; remove it"
            ) from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def output_lock(
    out: str | os.PathLike[str], *, directory: bool, what: str = "output"
) -> Iterator[Path]:
    """Hold the exclusive lock of ``out`` for the ``with`` block; LockError if taken.

    ``directory``: the output is a directory (created if missing, lock inside it)
    or a file (lock beside it; its parent folder must exist or is created). The
    lock file is removed on release; a directory this call created is removed too
    when the block fails and leaves it empty (a failed start leaves nothing).
    """
    path = lock_path(out, directory=directory)
    created = [] if path.parent.exists() else [path.parent]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = _acquire(path, out, what)
    except BaseException:
        _remove_empty(created)
        raise
    record = _read_record(path)
    if _live_foreign_holder(record):  # a file system without flock: trust the record
        os.close(fd)
        raise _in_use(what, out, record)
    failed = True
    try:
        mine = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "pid_start": _process_start(os.getpid()),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(mine) + "\n").encode(), 0)
        yield path
        failed = False
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # before closing: a waiting opener retries on the new file
        os.close(fd)
        if failed:
            _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
