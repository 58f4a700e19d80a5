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
