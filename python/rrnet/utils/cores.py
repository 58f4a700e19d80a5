"""How many CPU cores this process may use: what thread pools are sized by."""

from __future__ import annotations

import math
import os
from pathlib import Path


def usable_cores() -> int:
    """The CPU cores this process may use: its affinity mask where the OS has one, capped
    by a cgroup CPU quota (``docker --cpus``, Kubernetes limits: the mask shows every
    core of the host) and by ``SLURM_CPUS_PER_TASK`` (a job without CPU binding sees the
    whole node): one thread per core of a 64-core node in a 4-CPU job only contends."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_limit_of_this_process()
    if quota is not None:  # whole CPUs, as Rust's available_parallelism counts them
        cores = min(cores, max(1, math.floor(quota)))
    try:
        slurm = int(os.environ.get("SLURM_CPUS_PER_TASK", "").strip())
    except ValueError:  # unset, or not a count
        slurm = 0
    if slurm > 0:
        cores = min(cores, slurm)
    return max(1, cores)


_CGROUP_LIMIT: tuple[int, float | None] | None = None
"""(pid, :func:`cgroup_cpu_limit`) once per process: it reads a few files, and the
thread count is asked at every kernel call."""


def _cgroup_limit_of_this_process() -> float | None:
    global _CGROUP_LIMIT
    if _CGROUP_LIMIT is None or _CGROUP_LIMIT[0] != os.getpid():
        _CGROUP_LIMIT = (os.getpid(), cgroup_cpu_limit())
    return _CGROUP_LIMIT[1]


def cgroup_cpu_limit(
    root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
) -> float | None:
    """CPUs the process's cgroups allow (quota / period, the tightest of its cgroup and
    their parents; cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None when none
    is set or none can be read (not Linux)."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        if controllers == "":  # v2, or the unified part of a hybrid mount
            bases = [root, root / "unified"]
            limits += [_v2_limit(d) for b in bases for d in _and_parents(b, path)]
        elif "cpu" in controllers.split(","):
            base = root / controllers
            limits += [_v1_limit(d) for d in _and_parents(base, path)]
    found = [x for x in limits if x is not None]
    return min(found) if found else None


def _and_parents(base: Path, path: str) -> list[Path]:
    parts = [p for p in path.strip().split("/") if p and p not in (".", "..")]
    return [base.joinpath(*parts[:k]) for k in range(len(parts), -1, -1)]


def _v2_limit(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


MAX_THREADS_PER_CORE = 4
"""More threads than this per usable core only add switching (the kernels are CPU-bound);
a mistyped ``RRNET_NUM_THREADS=100000`` started threads for minutes, deaf to SIGTERM."""


def _requested_threads() -> int:
    """``RRNET_NUM_THREADS`` (0 when unset or empty); ValueError when not a count."""
    value = os.environ.get("RRNET_NUM_THREADS", "").strip()
    if not value:
        return 0
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"RRNET_NUM_THREADS must be an integer, got {value!r}") from None
    if n < 0:
        raise ValueError(f"RRNET_NUM_THREADS must be >= 0, got {n}")
    return n


def compute_threads() -> int:
    """Threads for rrnet's own CPU work: ``RRNET_NUM_THREADS`` (as for the Rust kernels;
    0 or unset: every usable core; at most :data:`MAX_THREADS_PER_CORE` per core, more
    is refused)."""
    n = _requested_threads()
    limit = MAX_THREADS_PER_CORE * usable_cores()
    if n > limit:
        raise ValueError(
            f"RRNET_NUM_THREADS={n} is more than {MAX_THREADS_PER_CORE} threads per usable "
            f"core ({usable_cores()} cores: at most {limit})"
        )
    return n or usable_cores()


def kernel_threads(threads: int | None) -> int:
    """The thread count a Rust kernel call is given: ``threads``, else as
    :func:`compute_threads` but more than it allows is capped, not refused (the commands
    refuse it up front; a library call keeps working, as the Rust side's own cap did).
    Left to itself the Rust side sizes its pool by the affinity mask and the cgroup
    quota, not ``SLURM_CPUS_PER_TASK``."""
    if threads is not None:
        return int(threads)
    return min(_requested_threads(), MAX_THREADS_PER_CORE * usable_cores()) or usable_cores()
