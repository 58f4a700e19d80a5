"""A fingerprint mismatch names the settings that differ, not only two hashes."""

from __future__ import annotations

import pytest

from rrnet.inference.provenance import FingerprintMismatch, check_fingerprint, fingerprint_diff


def test_diff_names_each_differing_setting() -> None:
    ckpt = {"correct_rv": True, "max_iter": 100, "hash": "a"}
    data = {"correct_rv": False, "max_iter": 100, "keep_resampled": True, "hash": "b"}
    assert fingerprint_diff(ckpt, data) == [
        "correct_rv: checkpoint True, input False",
        "keep_resampled: checkpoint (not recorded), input True",
    ]
    assert fingerprint_diff({"x": 1, "hash": "a"}, {"x": 1, "hash": "b"}) == [
        "the wavelength grid values (same description, different hash)"
    ]


def test_refusal_message_names_the_setting() -> None:
    with pytest.raises(
        FingerprintMismatch, match="differ in correct_rv: checkpoint True, input False"
    ):
        check_fingerprint(
            "ckpt", {"correct_rv": True, "hash": "a"}, {"correct_rv": False, "hash": "b"}
        )
