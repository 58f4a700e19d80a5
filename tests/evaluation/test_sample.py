"""Joining predictions to reference labels, row selection, and the repeat analysis."""

from __future__ import annotations

import math

import polars as pl
import pytest

from rrnet.evaluation.repeats import per_star, repeat_table
from rrnet.evaluation.sample import SampleError, add_snr, build_sample, predicted_labels


def _catalog() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "obsid": [1, 2, 3, 4, 5],
            "star_id": ["a", "a", "b", "c", "d"],
            "snr_blue": [30.0, 50.0, 12.0, 80.0, 200.0],
            "snr_red": [40.0, 10.0, 14.0, 90.0, 100.0],
            "FeH": [0.1, 0.2, -0.5, 0.0, 0.3],
            "FeH_err": [0.05] * 5,
            "flag": [1, 1, 0, 1, 1],
            "status": ["ok", "ok", "ok", "ok", "bad"],
        }
    )


def test_build_sample_counts_and_truth_columns() -> None:
    labels = pl.DataFrame({"star_id": ["a", "b", "c"], "FeH": [0.15, -0.4, 0.1]})
    sample, counts = build_sample(_catalog(), labels, ["FeH"])
    assert counts.to_dict() == {
        "catalog_rows": 5, "status_ok": 4, "flag_ok": 3, "with_labels": 3,
        "labels_rows": 3, "labels_matching_no_catalogue_row": 0,
    }  # fmt: skip
    assert sample["obsid"].to_list() == [1, 2, 4]
    assert sample["FeH_true"].to_list() == [0.15, 0.15, 0.1]
    assert sample["snr"].to_list() == [30.0, 50.0, 80.0]
    everything, counts = build_sample(_catalog(), labels, ["FeH"], all_rows=True)
    assert counts.flag_ok == 4 and sorted(everything["obsid"].to_list()) == [1, 2, 3, 4]


def test_text_keys_match_without_blanks_and_unmatched_rows_are_counted() -> None:
    """' a ' is star a (a table written with padding); ids of no catalogue row are counted,
    and a column of the labels table the catalogue lacks is carried when asked."""
    labels = pl.DataFrame(
        {"star_id": [" a ", "c", "zz"], "FeH": [0.15, 0.1, 0.0], "APOGEE_ID": ["A", "C", "Z"]}
    )
    sample, counts = build_sample(_catalog(), labels, ["FeH"], carry=("APOGEE_ID",))
    assert sample["obsid"].to_list() == [1, 2, 4]
    assert sample["APOGEE_ID"].to_list() == ["A", "A", "C"]
    assert (counts.labels_rows, counts.labels_matching_no_catalogue_row) == (3, 1)


def test_labels_per_spectrum_join_on_several_keys() -> None:
    cat = _catalog().with_columns(pl.col("obsid").cast(pl.Utf8).alias("ext"))
    labels = pl.DataFrame({"obsid": [2, 4], "ext": ["2", "9"], "FeH": [0.0, 0.0]})
    sample, _ = build_sample(cat, labels, ["FeH"], key=("obsid", "ext"))
    assert sample["obsid"].to_list() == [2]


def test_bad_inputs_are_reported() -> None:
    labels = pl.DataFrame({"star_id": ["a", "a"], "FeH": [0.0, 0.1]})
    with pytest.raises(SampleError, match="duplicated"):
        build_sample(_catalog(), labels, ["FeH"])
    with pytest.raises(SampleError, match="lacks column"):
        build_sample(_catalog(), labels.select("star_id"), ["FeH"])
    with pytest.raises(SampleError, match="key column"):
        build_sample(_catalog(), labels, ["FeH"], key=("gaia_id",))
    unflagged = _catalog().with_columns(flag=pl.lit(0))  # not "no row matches the labels"
    with pytest.raises(SampleError, match=r"no row has flag 1 .*--all-rows"):
        build_sample(unflagged, labels.unique("star_id"), ["FeH"])


def test_snr_choices() -> None:
    cat = _catalog()
    assert add_snr(cat, "min")["snr"].to_list() == [30.0, 10.0, 12.0, 80.0, 100.0]
    assert add_snr(cat, "mean")["snr"].to_list() == [35.0, 30.0, 13.0, 85.0, 150.0]
    with pytest.raises(SampleError):
        add_snr(cat, "snr_u")


def test_predicted_labels_need_value_and_error() -> None:
    cat = _catalog().with_columns(pl.lit(1.0).alias("Logg"))
    assert predicted_labels(cat, ("Teff[K]", "Logg", "FeH")) == ["FeH"]


def test_repeat_scatter_hand_computed() -> None:
    cat = pl.DataFrame(
        {
            "star_id": [1, 1, 1, 2, 2, 3, 4, 4],
            "snr": [30.0, 30, 30, 25, 35, 30, 150, 150],
            "FeH": [1.0, 2.0, 3.0, 0.0, 2.0, 9.0, 0.0, 0.0],
            "FeH_err": [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 0.1, 0.3],
        }
    )
    stars = per_star(cat, ["FeH"])
    assert stars["star_id"].to_list() == [1, 2, 4]  # star 3 has one exposure
    assert stars["FeH_var_obs"].to_list() == pytest.approx([1.0, 2.0, 0.0])
    assert stars["FeH_sigma_pred"].to_list() == pytest.approx([0.5, 1.0, 0.2])
    table = repeat_table(stars, ["FeH"])
    row = table.filter(pl.col("snr_bin") == "20-40").row(0, named=True)
    assert row["n_stars"] == 2 and row["n_spectra"] == 5
    assert row["sigma_obs"] == pytest.approx(math.sqrt(1.5))
    assert row["sigma_pred"] == pytest.approx(0.75)
    assert row["ratio"] == pytest.approx(math.sqrt(1.5) / 0.75)
    high = table.filter(pl.col("snr_bin") == ">=100").row(0, named=True)
    assert high["sigma_obs"] == 0.0 and high["ratio"] == 0.0
    empty = table.filter(pl.col("snr_bin") == "10-20").row(0, named=True)
    assert empty["n_stars"] == 0 and math.isnan(empty["ratio"])
    with pytest.raises(ValueError, match="min_exposures"):
        per_star(cat, ["FeH"], min_exposures=1)


def test_repeat_scatter_leaves_out_a_coadd_of_the_stars_own_exposures() -> None:
    """A file's coadd is made of its exposures: counted beside them it shrank the scatter
    (the demo's 'repeats' were mostly one coadd and its own exposures)."""
    cat = pl.DataFrame(
        {
            "star_id": [1, 1, 1, 2, 2, 3, 3],
            "filename": ["a", "a", "a", "b", "c", "d", "d"],
            "extname_blue": ["COADD_B", "B-1", "B-2", "COADD_B", "COADD_B", "COADD_B", "B-7"],
            "snr": [30.0] * 7,
            "FeH": [1.5, 1.0, 2.0, 0.0, 2.0, 5.0, 4.0],
            "FeH_err": [0.5] * 7,
        }
    )
    stars = per_star(cat, ["FeH"])
    # star 1: its two exposures; star 2: coadds of two files (independent); star 3: one
    assert stars["star_id"].to_list() == [1, 2]
    assert stars["n_exp"].to_list() == [2, 2]
    assert stars["FeH_var_obs"].to_list() == pytest.approx([0.5, 2.0])


def test_a_key_given_as_one_string_is_one_column() -> None:
    """EvalOptions(key="star_id") and TrainOptions(key="star_id") were split into the
    characters s, t, a, ... ("no key column(s) s, t, a, r, _, i, d")."""
    from rrnet.evaluation.options import EvalOptions
    from rrnet.training.settings import TrainOptions

    for make in (lambda k: EvalOptions("c", "l", "o", key=k), lambda k: TrainOptions(key=k)):
        assert make("star_id").key == ("star_id",)
        assert make("obsid, extname_blue").key == ("obsid", "extname_blue")
        assert make(["obsid", "extname_blue"]).key == ("obsid", "extname_blue")
