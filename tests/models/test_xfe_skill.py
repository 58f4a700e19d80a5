"""[X/Fe] skill beyond [Fe/H] (issue 17, honest per-star values): analytic cases."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrnet.labels import ALL_LABELS
from rrnet.models.xfe_skill import (
    LOW_SKILL,
    MIN_ROWS,
    abundance_labels,
    low_skill,
    low_skill_words,
    skills,
    xfe_skill,
)


def _stars(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[Fe/H], a cubic Galactic trend of [X/Fe] in it, and each star's own offset
    (uniform, as rrnet-synth draws it)."""
    rng = np.random.default_rng(seed)
    feh = rng.uniform(-1.5, 0.5, n)
    trend = 0.1 - 0.2 * feh + 0.05 * feh**2 - 0.02 * feh**3
    return feh, trend, rng.uniform(-0.3, 0.3, n)


def test_perfect_prediction_has_skill_one_and_trend_only_has_skill_zero() -> None:
    feh, trend, offset = _stars(20000)
    x_true = feh + trend + offset
    assert xfe_skill(x_true, x_true, feh, feh) == pytest.approx(1.0)
    # A network that predicts [Fe/H] exactly and [X/H] from it and the trend alone:
    # its [X/Fe] error is the offset, exactly what the cubic baseline leaves.
    assert xfe_skill(feh + trend, x_true, feh, feh) == pytest.approx(0.0, abs=0.01)


@settings(max_examples=30, deadline=None)
@given(k=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_half_recovered_offset_has_skill_one_minus_the_missing_variance(k: float, seed: int):
    """Predicted [X/Fe] = trend + k * offset: the error is (k - 1) * offset, so the skill
    is 1 - (1 - k)^2 (the cubic baseline explains the trend, not the offset)."""
    feh, trend, offset = _stars(20000, seed)
    got = xfe_skill(feh + trend + k * offset, feh + trend + offset, feh, feh)
    assert got == pytest.approx(1.0 - (1.0 - k) ** 2, abs=0.015)


def test_iron_errors_count_against_the_ratio_and_noise_goes_below_zero() -> None:
    feh, trend, offset = _stars(20000, 1)
    rng = np.random.default_rng(2)
    x_true = feh + trend + offset
    # [X/H] perfect but [Fe/H] off by 0.1 dex rms: the predicted [X/Fe] is off by as much.
    fe_pred = feh + rng.normal(0, 0.1, feh.size)
    want = 1 - 0.1**2 / np.var(offset)
    assert xfe_skill(x_true, x_true, fe_pred, feh) == pytest.approx(want, abs=0.02)
    # Trend plus noise as large as the offsets: worse than [Fe/H] alone.
    noisy = feh + trend + rng.normal(0, np.std(offset), feh.size)
    assert xfe_skill(noisy, x_true, feh, feh) == pytest.approx(-1.0, abs=0.05)


def test_too_few_rows_or_nothing_beyond_iron_give_nan() -> None:
    feh, trend, offset = _stars(MIN_ROWS - 1)
    assert math.isnan(xfe_skill(feh + trend + offset, feh + trend + offset, feh, feh))
    feh, trend, _ = _stars(500)
    # The reference [X/Fe] is exactly the cubic trend: no star has an [X/Fe] of its own.
    assert math.isnan(xfe_skill(feh + trend, feh + trend, feh, feh))
    feh, trend, offset = _stars(500)
    x = feh + trend + offset
    x[: 500 - MIN_ROWS + 1] = np.nan  # rows with a missing value are left out
    assert math.isnan(xfe_skill(x, x, feh, feh))


def test_skills_per_label_need_iron_among_the_labels() -> None:
    feh, trend, offset = _stars(3000, 4)
    labels = ["Teff[K]", "FeH", "MgH", "KH"]
    true = np.column_stack([np.full(feh.size, 5000.0), feh, feh + trend + offset, feh + offset])
    pred = true.copy()
    pred[:, 3] = feh  # [K/H] predicted as [Fe/H]: no [K/Fe] information
    got = skills(pred, true, labels)
    assert list(got) == ["MgH", "KH"]
    assert got["MgH"] == pytest.approx(1.0) and got["KH"] == pytest.approx(0.0, abs=0.02)
    assert skills(pred[:, [0, 2]], true[:, [0, 2]], ["Teff[K]", "MgH"]) == {}
    assert low_skill(got) == ["KH"] and low_skill({"KH": math.nan}) == []
    words = low_skill_words(got)
    assert words is not None and re.search(r"\[K/Fe\] -?0\.00$", words)
    assert f"skill < {LOW_SKILL:g}" in words
    assert low_skill_words({"MgH": 0.9}) is None


def test_abundance_labels_are_the_fifteen_minus_iron() -> None:
    got = abundance_labels(ALL_LABELS)
    assert len(got) == 14 and "FeH" not in got and "Teff[K]" not in got


def test_a_reference_set_at_one_or_two_metallicities_still_gets_a_skill() -> None:
    """[Fe/H] with fewer distinct values than the cubic needs: the baseline's degree
    drops (a constant at one [Fe/H]), without warnings; the skill keeps its meaning."""
    rng = np.random.default_rng(5)
    for values in ([-0.2], [-0.5, 0.1]):
        feh = rng.choice(values, 400)
        offset = rng.uniform(-0.3, 0.3, feh.size)
        x_true = feh + 0.1 * feh + offset
        assert xfe_skill(x_true, x_true, feh, feh) == pytest.approx(1.0)
        assert xfe_skill(feh + 0.1 * feh, x_true, feh, feh) == pytest.approx(0.0, abs=0.05)
