"""Metrics against values computed by hand on small arrays."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from rrnet.evaluation.metrics import (
    GAUSS_COVERAGE_1SIGMA,
    GAUSS_COVERAGE_2SIGMA,
    label_metrics,
    metrics_table,
    snr_bin_masks,
)


def test_label_metrics_hand_computed() -> None:
    # residuals 1, 0, 2; errors 1, 2, 4 -> z = 1, 0, 0.5
    m = label_metrics(np.array([1.0, 2.0, 4.0]), np.array([0.0, 2.0, 2.0]), np.array([1.0, 2, 4]))
    assert m.n == 3 and m.n_z == 3
    assert m.mae == pytest.approx(1.0)
    assert m.bias == pytest.approx(1.0)
    assert m.scatter == pytest.approx(math.sqrt(2.0 / 3.0))
    # median residual 1, absolute deviations 0, 1, 1 -> MAD 1
    assert m.robust_scatter == pytest.approx(1.4826, abs=1e-4)
    assert m.sigma_mean == pytest.approx(7.0 / 3.0)
    assert m.z_mean == pytest.approx(0.5)
    assert m.z_std == pytest.approx(math.sqrt(1.0 / 6.0))
    assert m.coverage_1sigma == 1.0
    assert m.coverage_2sigma == 1.0


def test_mae_is_paper_eq4_with_signs() -> None:
    m = label_metrics(np.array([-1.0, 3.0]), np.array([1.0, 0.0]))
    assert m.mae == pytest.approx((2.0 + 3.0) / 2)
    assert m.bias == pytest.approx((-2.0 + 3.0) / 2)
    assert math.isnan(m.z_std) and m.n_z == 0


def test_coverage_counts_boundaries() -> None:
    # z = 0.5, 1.0, 1.5, 2.0, 3.0 -> within 1 sigma: 2/5; within 2: 4/5
    z = np.array([0.5, 1.0, 1.5, 2.0, 3.0])
    m = label_metrics(z, np.zeros(5), np.ones(5))
    assert m.coverage_1sigma == pytest.approx(0.4)
    assert m.coverage_2sigma == pytest.approx(0.8)


def test_missing_values_and_bad_errors_are_left_out() -> None:
    pred = np.array([1.0, np.nan, 3.0, 5.0])
    true = np.array([0.0, 0.0, np.nan, 4.0])
    err = np.array([0.5, 1.0, 1.0, 0.0])  # last error unusable for z
    m = label_metrics(pred, true, err)
    assert m.n == 2 and m.mae == pytest.approx(1.0)
    assert m.n_z == 1 and m.z_mean == pytest.approx(2.0)


def test_gaussian_coverage_constants() -> None:
    assert abs(GAUSS_COVERAGE_1SIGMA - 0.682689) < 1e-6
    assert abs(GAUSS_COVERAGE_2SIGMA - 0.954500) < 1e-6


def test_calibrated_gaussian_errors_have_expected_coverage() -> None:
    rng = np.random.default_rng(1)
    err = rng.uniform(0.5, 2.0, 200_000)
    pred = err * rng.standard_normal(err.size)
    m = label_metrics(pred, np.zeros_like(pred), err)
    assert m.z_std == pytest.approx(1.0, abs=0.01)
    assert m.coverage_1sigma == pytest.approx(GAUSS_COVERAGE_1SIGMA, abs=0.005)
    assert m.coverage_2sigma == pytest.approx(GAUSS_COVERAGE_2SIGMA, abs=0.005)


def test_snr_bins_are_lower_inclusive() -> None:
    masks = snr_bin_masks(np.array([5.0, 10.0, 19.99, 20.0, 99.9, 100.0, 500.0]))
    assert list(masks) == ["all", "10-20", "20-40", "40-60", "60-100", ">=100"]
    assert masks["all"].sum() == 7
    assert masks["10-20"].tolist() == [False, True, True, False, False, False, False]
    assert masks["20-40"].tolist() == [False, False, False, True, False, False, False]
    assert masks["60-100"].tolist() == [False, False, False, False, True, False, False]
    assert masks[">=100"].tolist() == [False, False, False, False, False, True, True]


def test_metrics_table_matches_per_bin_metrics() -> None:
    sample = pl.DataFrame(
        {
            "snr": [15.0, 15.0, 30.0, 150.0],
            "FeH": [0.1, -0.1, 0.3, 0.0],
            "FeH_err": [0.1, 0.1, 0.2, 0.05],
            "FeH_true": [0.0, 0.0, 0.0, 0.0],
        }
    )
    table = metrics_table(sample, ["FeH"])
    assert table.height == 6
    low = table.filter(pl.col("snr_bin") == "10-20").row(0, named=True)
    assert low["n"] == 2 and low["mae"] == pytest.approx(0.1) and low["bias"] == pytest.approx(0)
    assert low["z_std"] == pytest.approx(1.0)
    mid = table.filter(pl.col("snr_bin") == "20-40").row(0, named=True)
    assert mid["mae"] == pytest.approx(0.3) and mid["z_mean"] == pytest.approx(1.5)
    empty = table.filter(pl.col("snr_bin") == "40-60").row(0, named=True)
    assert empty["n"] == 0 and math.isnan(empty["mae"])
    overall = table.filter(pl.col("snr_bin") == "all").row(0, named=True)
    assert overall["mae"] == pytest.approx((0.1 + 0.1 + 0.3 + 0.0) / 4)


def test_xfe_skill_table_per_snr_bin_analytic() -> None:
    """[Mg/H] predicted exactly: skill 1 in every bin; [K/H] predicted as [Fe/H] plus the
    (linear) trend only: skill 0, up to the baseline's sampling in small bins."""
    from rrnet.evaluation.metrics import xfe_skill_table

    rng = np.random.default_rng(11)
    n = 4000
    feh = rng.uniform(-1.5, 0.5, n)
    mg = feh + 0.3 - 0.2 * feh + rng.uniform(-0.3, 0.3, n)
    k = feh + rng.uniform(-0.3, 0.3, n)
    sample = pl.DataFrame(
        {"snr": np.exp(rng.uniform(np.log(10), np.log(200), n)), "FeH": feh, "FeH_true": feh,
         "MgH": mg, "MgH_true": mg, "KH": feh, "KH_true": k}
    )  # fmt: skip
    table = xfe_skill_table(sample, ["FeH", "MgH", "KH"])
    assert table is not None
    assert table["snr_bin"].unique(maintain_order=True).to_list()[:2] == ["all", "10-20"]
    mg_rows = table.filter(pl.col("label") == "MgH")
    np.testing.assert_allclose(mg_rows["xfe_skill"].to_numpy(), 1.0)
    k_rows = table.filter(pl.col("label") == "KH")
    assert np.all(np.abs(k_rows["xfe_skill"].to_numpy()) < 0.03)
    assert k_rows.filter(pl.col("snr_bin") == "all")["n"].item() == n
    assert xfe_skill_table(sample, ["MgH", "KH"]) is None  # no [Fe/H]
    assert xfe_skill_table(sample, ["FeH"]) is None  # no other abundance


def test_an_snr_column_of_text_is_refused_and_an_empty_one_is_unknown() -> None:
    """--snr filename was a polars InvalidOperationError in the middle of a report."""
    from rrnet.evaluation.sample import SampleError, add_snr

    table = pl.DataFrame(
        {"filename": ["a.fits", "b.fits"], "empty": [None, None], "s": [12.0, None]},
        schema_overrides={"empty": pl.String},
    )
    with pytest.raises(SampleError, match="'filename' holds no numbers"):
        add_snr(table, "filename")
    assert add_snr(table, "empty")["snr"].is_null().all()  # unknown, not refused
    assert add_snr(table, "s")["snr"].to_list() == [12.0, None]
