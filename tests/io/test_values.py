"""The one conversion path for header and catalogue values: a corpus of damaged values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrnet.io.values import convert

GOOD = [
    (83555758, "int64", 83555758),
    ("83555758", "int64", 83555758),
    (1e3, "int64", 1000),
    (2**63 - 1, "int64", 2**63 - 1),
    (np.int64(7), "int64", 7),
    ("12.5", "float64", 12.5),
    ("1.5D2", "float64", 150.0),
    (np.float32(2.5), "float64", 2.5),
    (3, "float64", 3.0),
    (" HIP9645901 ", "str", "HIP9645901"),
    (12, "str", "12"),
]

DAMAGED = [
    (1e30, "int64", "64-bit integer range"),
    (2**63, "int64", "64-bit integer range"),
    (-(2**70), "int64", "64-bit integer range"),
    (float("inf"), "int64", "not an integer"),
    (float("nan"), "int64", "not an integer"),
    (1.5, "int64", "not an integer"),
    ("abc", "int64", "not a number"),
    (True, "int64", "not a number"),
    (float("nan"), "float64", "not a finite"),
    (float("-inf"), "float64", "not a finite"),
    ("NaN", "float64", "not a finite"),
    ("1e999", "float64", "not a finite"),
    (10**400, "float64", "out of the float64 range"),
    ("12:34:56.7", "float64", "not a number"),
    (False, "float64", "not a number"),
    (True, "str", "not text"),
]


@pytest.mark.parametrize(("value", "kind", "want"), GOOD)
def test_good_values_convert(value, kind, want):
    got, why = convert(value, kind)
    assert why is None and got == want and type(got) is type(want)


@pytest.mark.parametrize(("value", "kind", "words"), DAMAGED)
def test_damaged_values_become_null_with_a_reason(value, kind, words):
    got, why = convert(value, kind, "OBSID")
    assert got is None
    assert words in why and why.startswith("OBSID=") and "\n" not in why


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_is_not_damaged(value):
    assert convert(value, "int64") == (None, None)


class _Float(float):
    """A float that skips convert's fast path (exact type float only): the general path."""


class _Int(int):
    """An int that skips convert's fast path (exact type int only): the general path."""


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(st.floats(), st.integers(min_value=-(2**70), max_value=2**70)),
    st.sampled_from(["int64", "float64", "str"]),
)
def test_fast_path_equals_the_general_path(value, kind):
    got = convert(value, kind, "X")
    want = convert(_Int(value) if isinstance(value, int) else _Float(value), kind, "X")
    assert got == want  # same value (None included) and same reason
    assert got[0] is None or type(got[0]) is {"int64": int, "float64": float, "str": str}[kind]
