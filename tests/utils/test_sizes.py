"""Byte counts in messages: decimal units, the largest that keeps the number >= 1."""

from __future__ import annotations

import pytest

from rrnet.utils.sizes import size_text


@pytest.mark.parametrize(("n", "text"), [
    (0, "0.0 B"), (999, "999.0 B"), (1000, "1.0 kB"), (63_700_000, "63.7 MB"),
    (22.7 * 2**30, "24.4 GB"), (2.975e15, "2,975.0 TB"),
])  # fmt: skip
def test_size_text(n, text):
    assert size_text(n) == text
