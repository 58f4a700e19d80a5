"""quality_bits / flag: each bit is set by exactly its documented condition."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rrnet.inference.quality import (
    DEFAULT_THRESHOLDS,
    QualityBit,
    describe,
    flag,
    member_disagreement,
    outside_range,
    quality_bits,
)

GOOD = dict(
    preprocess_ok=True,
    snr_blue=50.0,
    snr_red=40.0,
    n_outliers=3,
    max_outlier_run=2,
    cap_hit=False,
    ood_ratio=0.5,
    disagreement=0.2,
    out_of_range=False,
    inference_failed=False,
)

ONE_BAD = [
    ("preprocess_ok", False, QualityBit.PREPROCESS_FAILED),
    ("snr_blue", 9.99, QualityBit.LOW_SNR),
    ("snr_red", float("nan"), QualityBit.LOW_SNR),
    ("n_outliers", 101, QualityBit.OUTLIERS),
    ("max_outlier_run", 31, QualityBit.OUTLIERS),
    ("cap_hit", True, QualityBit.CONTINUUM_CAP),
    ("ood_ratio", 1.01, QualityBit.OUT_OF_DISTRIBUTION),
    ("disagreement", 1.5, QualityBit.MEMBERS_DISAGREE),
    ("out_of_range", True, QualityBit.LABEL_OUT_OF_RANGE),
    ("inference_failed", True, QualityBit.INFERENCE_FAILED),
]


def _bits(rows: list[dict]) -> np.ndarray:
    arrays = {k: np.array([r[k] for r in rows]) for k in GOOD}
    return quality_bits(**arrays, thresholds=DEFAULT_THRESHOLDS)


def test_each_condition_sets_only_its_bit() -> None:
    rows = [GOOD] + [{**GOOD, key: value} for key, value, _ in ONE_BAD]
    bits = _bits(rows)
    assert bits.dtype == np.int32
    assert bits[0] == 0
    for got, (_, _, bit) in zip(bits[1:], ONE_BAD, strict=True):
        assert got == int(bit)
    assert flag(bits).tolist() == [1] + [0] * len(ONE_BAD)


def test_thresholds_are_inclusive_at_the_paper_cuts() -> None:
    edge = {**GOOD, "snr_blue": 10.0, "snr_red": 10.0, "n_outliers": 100, "max_outlier_run": 30}
    assert _bits([edge]).tolist() == [0]


def test_bits_are_distinct_powers_of_two_and_described() -> None:
    values = [int(b) for b in QualityBit]
    assert len(set(values)) == len(values)
    assert all(v & (v - 1) == 0 for v in values)
    assert describe(0) == "ok"
    text = describe(int(QualityBit.LOW_SNR | QualityBit.OUTLIERS))
    assert text == "low S/N; too many or too long outlier runs"


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 30),
            st.floats(0, 30),
            st.integers(0, 200),
            st.integers(0, 60),
            st.floats(0, 2),
            st.floats(0, 2),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_bits_match_scalar_oracle(rows: list[tuple]) -> None:
    t = DEFAULT_THRESHOLDS
    full = [
        {**GOOD, "snr_blue": b, "snr_red": r, "n_outliers": n, "max_outlier_run": m}
        | {"ood_ratio": o, "disagreement": d}
        for b, r, n, m, o, d in rows
    ]
    expected = []
    for b, r, n, m, o, d in rows:
        bits = 0
        bits |= 2 if not (b >= t.min_snr and r >= t.min_snr) else 0
        bits |= 4 if (n > t.max_outliers or m > t.max_outlier_run) else 0
        bits |= 16 if o > 1 else 0
        bits |= 32 if d > t.max_disagreement else 0
        expected.append(bits)
    assert _bits(full).tolist() == expected


def test_member_disagreement_against_a_loop() -> None:
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(5, 7, 3))
    var = rng.uniform(0.1, 2.0, size=(5, 7, 3))
    got = member_disagreement(mu, var)
    for b in range(7):
        ratios = []
        for label in range(3):
            m = [mu[i, b, label] for i in range(5)]
            mean = sum(m) / 5
            spread = math.sqrt(sum((x - mean) ** 2 for x in m) / 5)
            sigma = math.sqrt(sum(var[i, b, label] for i in range(5)) / 5)
            ratios.append(spread / sigma)
        assert got[b] == np.float64(max(ratios)) or abs(got[b] - max(ratios)) < 1e-12


def test_single_member_never_disagrees() -> None:
    assert member_disagreement(np.ones((1, 4, 2)), np.ones((1, 4, 2))).tolist() == [0.0] * 4


def test_outside_range_nan_bounds_are_open() -> None:
    values = np.array([[5000.0, 4.0], [3000.0, 4.0], [5000.0, 6.0]])
    lo, hi = np.array([4000.0, np.nan]), np.array([7000.0, np.nan])
    assert outside_range(values, lo, hi).tolist() == [False, True, False]
