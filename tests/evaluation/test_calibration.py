"""Recalibration of the predicted errors: fitted on validation stars, never on test stars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from rrnet.evaluation.calibration import (
    RECALIBRATION_FILE,
    apply_recalibration,
    calibration_table,
    fit_recalibration,
    read_recalibration,
    restrict_to_split,
    sigma_scale,
    write_recalibration,
)
from rrnet.evaluation.evaluate import EvalOptions, evaluate
from rrnet.evaluation.metrics import metrics_table
from rrnet.evaluation.toy import toy_tables
from rrnet.io import write_table


def test_sigma_scale_hand_computed() -> None:
    # residuals +-2 with err 1: z = +-2, std 2 -> factor 2
    factor, n = sigma_scale(np.array([2.0, -2, 2, -2]), np.zeros(4), np.ones(4))
    assert n == 4 and factor == pytest.approx(2.0)


def test_fit_recalibration_restores_unit_z_std() -> None:
    sample = pl.DataFrame(
        {"FeH": [0.2, -0.2, 0.4, -0.4], "FeH_err": [0.1, 0.1, 0.2, 0.2], "FeH_true": [0.0] * 4}
    )
    fitted = fit_recalibration(sample, ["FeH"])["FeH"]
    assert fitted["factor"] == pytest.approx(2.0)  # z = +-2 everywhere
    assert fitted["coverage_1sigma_before"] == 0.0
    assert fitted["coverage_1sigma_after"] == 1.0
    fixed = apply_recalibration(sample, {"FeH": fitted["factor"]})
    z = (fixed["FeH"] - fixed["FeH_true"]) / fixed["FeH_err"]
    assert float(z.std(ddof=0)) == pytest.approx(1.0)


def test_recalibration_applies_to_either_column_style() -> None:
    """rrnet-infer writes ``fe_h_err`` by default; the factors are keyed ``FeH``."""
    factors = {"FeH": 2.0, "Teff[K]": 0.5, "NH": 3.0}  # NH: not in this catalogue
    for names in (("fe_h_err", "teff_err"), ("FeH_err", "Teff[K]_err")):
        catalog = pl.DataFrame({names[0]: [0.1, 0.2], names[1]: [50.0, 80.0], "x_err": [1.0, 1.0]})
        fixed = apply_recalibration(catalog, factors)
        assert fixed[names[0]].to_list() == pytest.approx([0.2, 0.4])
        assert fixed[names[1]].to_list() == pytest.approx([25.0, 40.0])
        assert fixed["x_err"].to_list() == [1.0, 1.0]
    with pytest.raises(ValueError, match="no error column of the recalibrated labels"):
        apply_recalibration(pl.DataFrame({"x_err": [1.0]}), factors)


def test_recalibration_file_round_trip(tmp_path: Path) -> None:
    fitted = {"Logg": {"factor": 1.5, "n": 10, "coverage_1sigma_before": 0.5,
                       "coverage_1sigma_after": 0.68}}  # fmt: skip
    write_recalibration(tmp_path, fitted, source="cat.parquet")
    assert read_recalibration(tmp_path) == {"Logg": 1.5}
    doc = json.loads((tmp_path / RECALIBRATION_FILE).read_text())
    assert doc["split"] == "valid" and doc["n"] == {"Logg": 10}
    (tmp_path / RECALIBRATION_FILE).write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a rrnet-recalibration"):
        read_recalibration(tmp_path)


def test_restrict_to_split_keeps_only_listed_stars() -> None:
    table = pl.DataFrame({"star_id": [1, 2, 2, 3], "x": [0, 1, 2, 3]})
    assert restrict_to_split(table, [2, 3])["x"].to_list() == [1, 2, 3]


def test_calibration_table_flags_miscalibrated_labels() -> None:
    sample = pl.DataFrame(
        {
            "snr": [50.0] * 4,
            "Logg": [0.1, -0.1, 0.1, -0.1],
            "Logg_err": [0.1] * 4,  # z = +-1: calibrated
            "Logg_true": [0.0] * 4,
            "FeH": [0.3, -0.3, 0.3, -0.3],
            "FeH_err": [0.1] * 4,  # z = +-3: errors 3x too small
            "FeH_true": [0.0] * 4,
        }
    )
    table = calibration_table(metrics_table(sample, ["Logg", "FeH"]))
    flags = dict(zip(table["label"], table["needs_recalibration"], strict=True))
    assert flags == {"Logg": False, "FeH": True}


def _recalibrate(tmp_path: Path, catalog: pl.DataFrame, labels: pl.DataFrame, split) -> dict:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir(exist_ok=True)
    write_table(catalog, tmp_path / "cat.parquet")
    write_table(labels, tmp_path / "labels.parquet")
    opts = EvalOptions(
        catalog=tmp_path / "cat.parquet",
        labels=tmp_path / "labels.parquet",
        out=tmp_path / "report",
        checkpoints=(ckpt,),
        recalibrate=True,
        figures=False,
    )
    report = evaluate(opts, split_loader=lambda _: ("star_id", split))
    assert report.counts["in_test_split"] > 0
    return read_recalibration(ckpt)


def test_test_rows_never_influence_the_factor(tmp_path: Path) -> None:
    catalog, labels = toy_tables(40, seed=3, error_scale=2.0)
    stars = labels["star_id"].to_list()
    split = {"train": stars[:20], "valid": stars[20:30], "test": stars[30:]}
    clean = _recalibrate(tmp_path, catalog, labels, split)
    assert clean["FeH"] == pytest.approx(2.0, rel=0.3)  # toy errors are 2x too small

    def corrupt(ids: list[int]) -> pl.DataFrame:
        hit = pl.col("star_id").is_in(ids)
        return catalog.with_columns(
            pl.when(hit).then(pl.col("FeH") + 5.0).otherwise(pl.col("FeH")).alias("FeH"),
            pl.when(hit).then(pl.col("Logg_err") * 100).otherwise(pl.col("Logg_err")),
        )

    assert _recalibrate(tmp_path, corrupt(split["test"]), labels, split) == clean
    assert _recalibrate(tmp_path, corrupt(split["train"]), labels, split) == clean
    # the same corruption on validation stars does change it: the check can fail
    changed = _recalibrate(tmp_path, corrupt(split["valid"]), labels, split)
    assert changed["FeH"] > 5 * clean["FeH"]
    assert changed["Logg"] < clean["Logg"] / 5


def test_split_keys_reads_the_training_split_file(tmp_path: Path) -> None:
    from rrnet.models.checkpoint import split_keys

    pl.DataFrame(
        {"row": [0, 1, 2, 3], "gaia": [7, 7, 8, 9], "split": ["train", "train", "valid", "test"]}
    ).write_parquet(tmp_path / "split.parquet")
    (tmp_path / "config.json").write_text(
        json.dumps({"training": {"data": {"star_column": "gaia"}}})
    )
    column, split = split_keys(tmp_path)
    assert column == "gaia"
    assert split == {"train": [7], "valid": [8], "test": [9]}


def test_a_damaged_split_or_config_is_named_not_taken_for_no_split(tmp_path: Path) -> None:
    """A cut split.parquet was an "unexpected ComputeError" naming no file; a broken
    config.json made --split-from say "no split.parquet there to keep"."""
    from rrnet.models.checkpoint import split_keys
    from rrnet.training.split import checkpoint_assignment

    good = pl.DataFrame({"row": [0], "star_id": ["a"], "split": ["train"]})
    good.write_parquet(tmp_path / "split.parquet")
    (tmp_path / "config.json").write_text("{x")
    with pytest.raises(ValueError, match=r"config.json is not a readable checkpoint config"):
        checkpoint_assignment(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert checkpoint_assignment(str(tmp_path)) == {"a": "train"}
    cut = (tmp_path / "split.parquet").read_bytes()[:100]
    (tmp_path / "split.parquet").write_bytes(cut)
    with pytest.raises(ValueError, match=r"split.parquet is not a readable Parquet file"):
        split_keys(tmp_path)
    with pytest.raises(ValueError, match=r"split.parquet is not a readable Parquet file"):
        checkpoint_assignment(str(tmp_path))


def test_before_after_per_snr_bin_undoes_and_applies_the_stored_scale() -> None:
    """Errors 2x too large before, unit z after; works from either kind of catalogue."""
    from rrnet.evaluation.calibration import before_after_table, catalogue_errors_calibrated

    rng = np.random.default_rng(7)
    n = 4000
    snr = rng.uniform(10, 150, n)
    err_raw = rng.uniform(0.05, 0.2, n)
    params = {"FeH": {"a": float(np.log(0.5)), "b": 0.0}}
    true = rng.normal(0, 0.3, n)
    pred = true + rng.normal(0.0, 0.5 * err_raw)
    raw = pl.DataFrame(
        {"FeH": pred, "FeH_true": true, "FeH_err": err_raw, "snr_blue": snr, "snr_red": snr,
         "snr": snr}
    )  # fmt: skip
    cal = raw.with_columns(pl.col("FeH_err") * 0.5)
    t_raw = before_after_table(raw, ["FeH"], params, calibrated=False)
    t_cal = before_after_table(cal, ["FeH"], params, calibrated=True)
    for t in (t_raw, t_cal):
        rows = t.filter(pl.col("n_z") > 100)
        assert rows.height >= 5
        np.testing.assert_allclose(rows["z_std_raw"].to_numpy(), 0.5, atol=0.05)
        np.testing.assert_allclose(rows["z_std_calibrated"].to_numpy(), 1.0, atol=0.1)
        np.testing.assert_allclose(rows["coverage_1sigma_calibrated"].to_numpy(), 0.683, atol=0.06)
    np.testing.assert_allclose(t_raw["z_std_raw"].to_numpy(), t_cal["z_std_raw"].to_numpy())
    entry = [{"errors": "calibrated (calibration.json, ...)"}]
    assert catalogue_errors_calibrated({"rrnet.checkpoints": json.dumps(entry)})
    assert not catalogue_errors_calibrated({"rrnet.checkpoints": json.dumps([{"path": "x"}])})


def test_several_checkpoints_evaluate_the_stars_all_call_test(tmp_path: Path) -> None:
    """SP and CA checkpoints with different star sets but one assignment: the test stars
    are those either calls test; a star one calls train and the other test is left out
    of every split (and counted), never evaluated."""
    catalog, labels = toy_tables(40, seed=3)
    stars = labels["star_id"].to_list()
    sp = {"train": stars[:20], "valid": stars[20:30], "test": stars[30:]}
    ca = {"train": stars[:18], "valid": stars[20:28], "test": [*stars[32:], stars[5]]}
    splits = {"sp": sp, "ca": ca}
    write_table(catalog, tmp_path / "cat.parquet")
    write_table(labels, tmp_path / "labels.parquet")
    opts = EvalOptions(
        catalog=tmp_path / "cat.parquet",
        labels=tmp_path / "labels.parquet",
        out=tmp_path / "report",
        checkpoints=(tmp_path / "sp", tmp_path / "ca"),
        figures=False,
    )
    report = evaluate(opts, split_loader=lambda ckpt: ("star_id", splits[Path(ckpt).name]))
    test_stars = set(stars[30:])  # stars[5] is SP's training star: left out
    want = catalog.filter(pl.col("star_id").is_in(test_stars) & (pl.col("flag") == 1)).height
    assert report.counts["in_test_split"] == want > 0
    assert report.counts["stars_in_different_splits_left_out"] == 1
