"""Thread counts for rrnet's own CPU work follow RRNET_NUM_THREADS, as the Rust kernels do."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from rrnet.preprocess import kernels
from rrnet.utils.cores import cgroup_cpu_limit, compute_threads, usable_cores


def test_usable_cores_is_the_affinity_mask_here(monkeypatch) -> None:
    """On the test machine (no SLURM job, no cgroup CPU quota, or one not below the mask)."""
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    if (cgroup_cpu_limit() or 1e9) < len(os.sched_getaffinity(0)):
        pytest.skip("a cgroup CPU quota below the affinity mask")
    assert usable_cores() == len(os.sched_getaffinity(0))


def test_a_fractional_quota_counts_whole_cpus_as_rust_does(monkeypatch) -> None:
    """``docker --cpus 1.5``: one core for Python's pools as for Rust's (it gave two)."""
    from rrnet.utils import cores

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(cores, "_CGROUP_LIMIT", (os.getpid(), 1.5))
    assert usable_cores() == 1
    monkeypatch.setattr(cores, "_CGROUP_LIMIT", (os.getpid(), 0.2))
    assert usable_cores() == 1  # never none


def test_a_slurm_job_without_binding_uses_its_cpus_per_task(monkeypatch) -> None:
    """A job of 1 CPU on a node whose cores it may all see: one thread per node core."""
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert usable_cores() == 1
    monkeypatch.setenv("RRNET_NUM_THREADS", "")
    assert compute_threads() == 1 and kernels._threads(None) == 1
    for junk in ("junk", "²", "-4", "2.5"):  # not a count: ignored
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", junk)
        assert usable_cores() == min(len(os.sched_getaffinity(0)), _quota_cores())


def _quota_cores() -> int:
    quota = cgroup_cpu_limit()
    return 10**6 if quota is None else max(1, math.floor(quota))


@pytest.mark.parametrize(("files", "want"), [
    ({"cpu.max": "max 100000"}, None),
    ({"cpu.max": "250000 100000"}, 2.5),  # docker --cpus 2.5
    ({"cpu.max": "max 100000", "job/cpu.max": "100000 100000"}, 1.0),
    ({"cpu.max": "200000 100000", "job/cpu.max": "max 100000"}, 2.0),  # a parent's quota
], ids=["none", "own", "child", "parent"])  # fmt: skip
def test_a_cgroup_v2_quota_caps_the_cores(tmp_path, files, want) -> None:
    for name, text in files.items():
        (tmp_path / "cg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cg" / name).write_text(text + "\n")
    (tmp_path / "self").write_text("0::/job\n")
    assert cgroup_cpu_limit(tmp_path / "cg", tmp_path / "self") == want


def test_a_cgroup_v1_quota_caps_the_cores(tmp_path) -> None:
    folder = tmp_path / "cg" / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("150000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "self").write_text("4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n")
    assert cgroup_cpu_limit(tmp_path / "cg", tmp_path / "self") == 1.5
    (folder / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert cgroup_cpu_limit(tmp_path / "cg", tmp_path / "self") is None
    assert cgroup_cpu_limit(tmp_path / "cg", tmp_path / "absent") is None


@pytest.mark.parametrize(("value", "want"), [(None, "all"), ("", "all"), ("0", "all"),
                                             ("1", 1), (" 3 ", 3)])  # fmt: skip
def test_compute_threads_follow_rrnet_num_threads(monkeypatch, value, want) -> None:
    if value is None:
        monkeypatch.delenv("RRNET_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("RRNET_NUM_THREADS", value)
    assert compute_threads() == (usable_cores() if want == "all" else want)
    # the Rust kernels read the same variable by the same rule (an empty value: unset)
    np.testing.assert_array_equal(kernels.running_median(np.ones((2, 5)), 3), np.ones((2, 5)))


@pytest.mark.parametrize("value", ["two", "-1", "1.5"])
def test_a_bad_rrnet_num_threads_is_one_clear_error(monkeypatch, value) -> None:
    monkeypatch.setenv("RRNET_NUM_THREADS", value)
    with pytest.raises(ValueError, match="RRNET_NUM_THREADS"):
        compute_threads()
    with pytest.raises(ValueError, match="RRNET_NUM_THREADS"):
        kernels.running_median(np.ones((2, 5)), 3)


def test_more_threads_than_four_per_core_are_refused_and_capped_in_the_kernels() -> None:
    """RRNET_NUM_THREADS=100000 started threads for minutes (14,000 after 13 minutes),
    deaf to SIGTERM: Python refuses it in one line, the Rust kernels use at most four
    per core (a library caller bypassing the check gets a working pool at once)."""
    import subprocess
    import sys

    from rrnet.utils.cores import MAX_THREADS_PER_CORE

    env = {**os.environ, "RRNET_NUM_THREADS": "100000"}
    code = (
        "import numpy as np, threading\n"
        "from rrnet.preprocess import kernels\n"
        "from rrnet.utils.cores import compute_threads\n"
        "try:\n    compute_threads()\nexcept ValueError as e:\n    print('refused', e)\n"
        "out = kernels.running_median(np.ones((64, 50)), 5)\n"
        "print('ok', bool((out == 1).all()))\n"
        "from rrnet import _core\n"
        "out = _core.running_median_rows(np.ones((64, 50)), 5, threads=None)\n"
        "print('rust', bool((out == 1).all()))\n"
        "import os; print('threads', len(os.listdir('/proc/self/task')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert "at most" in lines["refused"] and lines["ok"] == "True"
    assert lines["rust"] == "True"  # the Rust side's own cap, called directly
    assert int(lines["threads"]) <= MAX_THREADS_PER_CORE * len(os.sched_getaffinity(0)) + 16
