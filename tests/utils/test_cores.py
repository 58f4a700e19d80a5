"""Thread counts for rrnet's own CPU work follow RRNET_NUM_THREADS, as the Rust kernels do."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rrnet.preprocess import kernels
from rrnet.utils.cores import compute_threads, usable_cores


def test_usable_cores_is_the_affinity_mask() -> None:
    assert usable_cores() == len(os.sched_getaffinity(0))


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
        "import os; print('threads', len(os.listdir('/proc/self/task')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert "at most" in lines["refused"] and lines["ok"] == "True"
    assert int(lines["threads"]) <= MAX_THREADS_PER_CORE * len(os.sched_getaffinity(0)) + 16
