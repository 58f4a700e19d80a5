"""Which RV the pipeline uses (issue 16): the decision rules, and rrnet-preprocess --rv on a
synthesised official-layout catalogue (rrnet-synth -> rrnet-catalog from-lamost) against
the injected RVs of truth.csv."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest

from rrnet.cli.catalog import main as catalog_main
from rrnet.cli.preprocess import main as preprocess_main
from rrnet.inference.quality import DEFAULT_THRESHOLDS, QualityBit, quality_bits
from rrnet.preprocess import rv, rv_policy
from rrnet.store import open_store
from rrnet.synth.dataset import make_dataset
from rrnet.synth.lamost_writer import LAMOST_CATALOGUE_NAME

OFFSET_KMS = 30.0
KEY = ["filename", "extname_blue"]


# ------------------------------------------------------------------ the rules


def test_usable_catalogue_rv():
    for bad in (None, np.nan, np.inf, -9999.0, 3.0e5, -3.0e5):
        assert not rv_policy.usable(bad)
    for good in (0.0, -20.5, 599.0, -9998.0):
        assert rv_policy.usable(good)


def test_decide_per_mode():
    cat = np.array([10.0, -9999.0, np.nan, 10.0, -9999.0])
    cat_err = np.array([1.0, np.nan, np.nan, 1.0, np.nan])
    meas = np.array([10.5, 20.0, 30.0, np.nan, np.nan])
    meas_err = np.array([0.5, 0.5, 0.5, np.nan, np.nan])
    auto = rv_policy.decide("auto", cat, cat_err, meas, meas_err)
    np.testing.assert_array_equal(auto.used, [10.0, 20.0, 30.0, 10.0, np.nan])
    assert auto.source == ["catalog", "measured", "measured", "catalog", "none"]
    catalog = rv_policy.decide("catalog", cat, cat_err, meas, meas_err)
    np.testing.assert_array_equal(catalog.used, [10.0, np.nan, np.nan, 10.0, np.nan])
    assert catalog.source == ["catalog", "none", "none", "catalog", "none"]
    measure = rv_policy.decide("measure", cat, cat_err, meas, meas_err)
    np.testing.assert_array_equal(measure.used, [10.5, 20.0, 30.0, np.nan, np.nan])
    assert measure.source == ["measured", "measured", "measured", "none", "none"]
    for d in (auto, catalog, measure):  # nothing to compare on rows 1-4
        assert d.disagree.tolist() == [False] * 5
    with pytest.raises(ValueError, match="rv_mode"):
        rv_policy.decide("best", cat, cat_err, meas, meas_err)


def test_disagreement_threshold_is_errors_plus_floor():
    err_c, err_m = 3.0, 4.0  # hypot 5: allowed 3 * 5 + floor
    allowed = rv_policy.DISAGREE_NSIGMA * 5.0 + rv_policy.DISAGREE_FLOOR_KMS
    meas = np.array([allowed - 0.01, allowed + 0.01, -allowed - 0.01])
    n = meas.size
    d = rv_policy.decide("auto", np.zeros(n), np.full(n, err_c), meas, np.full(n, err_m))
    assert d.disagree.tolist() == [False, True, True]
    # a missing catalogue error counts as 0: only the measured error and the floor remain
    lim = rv_policy.DISAGREE_NSIGMA * err_m + rv_policy.DISAGREE_FLOOR_KMS
    d = rv_policy.decide(
        "auto", np.zeros(2), np.full(2, np.nan), np.array([lim - 0.01, lim + 0.01]), np.full(2, 4.0)
    )
    assert d.disagree.tolist() == [False, True]
    # so does LAMOST's -9999, any error <= 0 and an absurd one (it had allowed 3e4 km/s)
    for bad in (rv_policy.MISSING_RV, -1.0, 0.0, np.inf, 5000.0):
        meas = np.array([lim - 0.01, lim + 0.01])
        d = rv_policy.decide("auto", np.zeros(2), np.full(2, bad), meas, np.full(2, 4.0))
        assert d.disagree.tolist() == [False, True], bad


def test_quality_bit_follows_rv_disagree():
    n = 3
    zeros, ones = np.zeros(n), np.ones(n, dtype=bool)
    common = dict(
        preprocess_ok=ones,
        snr_blue=np.full(n, 50.0),
        snr_red=np.full(n, 50.0),
        n_outliers=zeros,
        max_outlier_run=zeros,
        cap_hit=~ones,
        ood_ratio=zeros,
        disagreement=zeros,
        out_of_range=~ones,
        inference_failed=~ones,
        thresholds=DEFAULT_THRESHOLDS,
    )
    assert quality_bits(**common).tolist() == [0, 0, 0]
    bits = quality_bits(**common, rv_disagree=np.array([False, True, False]))
    assert bits.tolist() == [0, int(QualityBit.RV_DISAGREE), 0]


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A synthesised data set whose official catalogue has -9999 rows and one wrong RV."""
    root = tmp_path_factory.mktemp("rvsynth")
    synth = make_dataset(
        6, root / "synth", snr_range=(25, 90), exposures=(1, 2), seed=16, workers=1, progress=False
    )
    raw = pl.read_csv(synth.root / LAMOST_CATALOGUE_NAME)
    rv_cols = [c for c in raw.columns if c.startswith("rv_") and not c.endswith("_flag")]
    obsids = raw["obsid"].unique(maintain_order=True).to_list()
    missing = pl.col("obsid").is_in(obsids[:2])
    wrong = (pl.col("obsid") == obsids[3]) & (pl.col("coadd") == 1)
    raw = raw.with_columns(
        [pl.when(missing).then(-9999.0).otherwise(pl.col(c)).alias(c) for c in rv_cols]
    ).with_columns(pl.when(wrong).then(pl.col("rv_br1") + OFFSET_KMS).otherwise(pl.col("rv_br1")))
    raw.write_csv(root / "mrs.csv")
    rr = root / "rr.csv"
    args = ["--quiet", "from-lamost", str(root / "mrs.csv"), "--out", str(rr), "--spectra", "all"]
    assert catalog_main(args) == 0
    truth = pl.read_csv(synth.truth).select(*KEY, pl.col("rv_true[km/s]").alias("rv_true"))
    return root, rr, synth.data_dir, truth


def _store(official, mode: str | None) -> pl.DataFrame:
    root, rr, data_dir, truth = official
    out = root / f"store-{mode}"
    args = [str(rr), "--data-dir", str(data_dir), "--out", str(out), "--quiet", "--overwrite"]
    assert preprocess_main(args + ([] if mode is None else ["--rv", mode])) == 0
    return open_store(out).manifest.join(truth, on=KEY, how="left")


def test_auto_fills_every_missing_row_within_errors(official):
    m = _store(official, None)  # auto is the default
    no_rv = m.filter(pl.col("catalog_status") == "no_rv")
    assert no_rv.height >= 3  # two files' coadds and exposures
    assert no_rv["rv"].null_count() == no_rv.height
    assert no_rv["status"].to_list() == ["ok"] * no_rv.height
    assert no_rv["rv_used_source"].to_list() == ["measured"] * no_rv.height
    np.testing.assert_array_equal(no_rv["rv_used"], no_rv["rv_measured"])
    z = (no_rv["rv_used"] - no_rv["rv_true"]) / no_rv["rv_measured_err"]
    assert (z.abs() < 4.0).all(), z.to_list()
    assert ((no_rv["rv_used"] - no_rv["rv_true"]).abs() < 10.0).all()  # no catastrophe
    # rows with a catalogue RV keep it; only the one off by 30 km/s is flagged
    cat = m.filter(pl.col("catalog_status") == "ok")
    assert cat["rv_used_source"].to_list() == ["catalog"] * cat.height
    np.testing.assert_array_equal(cat["rv_used"], cat["rv"])
    wrong = (cat["rv"] - cat["rv_true"]).abs() > OFFSET_KMS / 2
    assert int(wrong.sum()) == 1
    assert cat["rv_disagree"].to_list() == wrong.to_list()
    assert no_rv["rv_disagree"].to_list() == [False] * no_rv.height
    # the measurement agrees with the truth for the flagged row too
    flagged = cat.filter(pl.col("rv_disagree"))
    row = flagged.row(0, named=True)
    assert abs(row["rv_measured"] - row["rv_true"]) < 4 * row["rv_measured_err"]


def test_catalog_mode_loses_the_missing_rows_and_measure_mode_uses_no_catalogue_rv(official):
    m = _store(official, "catalog")
    no_rv = m.filter(pl.col("catalog_status") == "no_rv")
    assert no_rv["status"].to_list() == ["bad_rv"] * no_rv.height
    assert no_rv["rv_used_source"].to_list() == ["none"] * no_rv.height  # as documented
    assert m["rv_measured"].null_count() == m.height
    assert m["rv_template_teff"].null_count() == m.height
    ok = m.filter(pl.col("status") == "ok")
    assert ok["rv_used_source"].to_list() == ["catalog"] * ok.height
    m = _store(official, "measure")
    assert m["status"].to_list() == ["ok"] * m.height
    # the best template's labels are one of the templates' (a by-product of the fit)
    got = m.select("rv_template_teff", "rv_template_logg", "rv_template_feh").to_numpy()
    templates = {tuple(x) for x in rv.default_templates().labels.astype(np.float64)}
    assert {tuple(x) for x in got} <= templates
    assert m["rv_used_source"].to_list() == ["measured"] * m.height
    z = ((m["rv_used"] - m["rv_true"]) / m["rv_measured_err"]).abs()
    # one S/N-17 exposure of this seed is 4.4 sigma (5.4 km/s) off: a tail of the kernel
    assert z.median() < 1.0 and (z < 5.0).all(), z.to_list()


def test_bad_rv_mode_is_a_one_line_usage_error(official, capsys):
    root, rr, data_dir, _ = official
    args = [str(rr), "--data-dir", str(data_dir), "--out", str(root / "x"), "--rv", "best"]
    assert preprocess_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--rv" in err[0]


def test_scan_without_rv_table_is_usable_and_measured(official, capsys):
    root, _, data_dir, truth = official
    rr = root / "scan.csv"
    assert catalog_main(["scan", str(data_dir), "--out", str(rr)]) == 0
    err = capsys.readouterr().err
    assert "no_rv" in err and "rrnet-preprocess measures it" in err
    scanned = pl.read_csv(rr)
    assert scanned["catalog_status"].unique().to_list() == ["no_rv"]
    assert scanned["rv"].null_count() == scanned.height
    out = root / "store-scan"
    args = [str(rr), "--data-dir", str(data_dir), "--out", str(out), "--quiet"]
    assert preprocess_main(args) == 0
    m = open_store(out).manifest.join(truth, on=KEY, how="left")
    assert m.height == truth.height
    assert m["status"].to_list() == ["ok"] * m.height
    assert m["rv_used_source"].to_list() == ["measured"] * m.height
    z = ((m["rv_used"] - m["rv_true"]) / m["rv_measured_err"]).abs()
    assert z.median() < 1.0 and (z < 5.0).all(), z.to_list()


def test_a_named_rv_column_the_catalogue_lacks_is_said(tmp_path, caplog):
    """--rv auto measures every RV when the catalogue has no such column: allowed (scanned
    catalogues), but said, since a misspelt --rv-column would silently ignore real RVs."""
    import polars as pl

    from helpers import REAL_FILE
    from rrnet.preprocess.pipeline import preprocess_catalog

    catalog = pl.DataFrame(
        {"filename": [REAL_FILE.name], "extname_blue": ["COADD_B"], "extname_red": ["COADD_R"],
         "rv": [-20.0]}
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        preprocess_catalog(
            catalog, REAL_FILE.parent, tmp_path / "s", rv_column="nosuch", rv_mode="auto",
            progress=False,
        )  # fmt: skip
    assert caplog.text.count("no 'nosuch' column: every RV is measured") == 1  # was twice
    caplog.clear()
    with caplog.at_level("WARNING"):
        preprocess_catalog(
            catalog, REAL_FILE.parent, tmp_path / "t", rv_mode="auto", progress=False
        )
    assert "every RV is measured" not in caplog.text


def test_an_unusable_spectrum_without_catalogue_rv_says_why_and_the_batch_goes_on(tmp_path):
    """The RV measurement runs before the kernels' data checks: a zero-row arm table
    crashed the whole run (np.interp on nothing) and damaged flux was called a failed
    RV measurement (bad_rv "masked") instead of what is wrong with the spectrum."""
    from helpers import REAL_FILE, set_values, write_lamost_copy
    from rrnet.preprocess.pipeline import preprocess_catalog

    shutil.copy(REAL_FILE, tmp_path / "good.fits.gz")
    write_lamost_copy(tmp_path / "empty.fits", edit={"COADD_B": lambda d: d[:0]})

    def nan_pixels(flux):
        return np.where(np.arange(flux.size) % 50 == 0, np.nan, flux)

    write_lamost_copy(tmp_path / "nan.fits", edit={"COADD_B": set_values("FLUX", nan_pixels)})
    names = ["good.fits.gz", "empty.fits", "nan.fits", "good.fits.gz"]
    catalog = pl.DataFrame(
        {"filename": names, "extname_blue": ["COADD_B"] * 4, "extname_red": ["COADD_R"] * 4,
         "rv": [None, None, None, -20.0]}, schema_overrides={"rv": pl.Float64},
    )  # fmt: skip
    m = preprocess_catalog(
        catalog, tmp_path, tmp_path / "s", rv_mode="auto", progress=False
    ).manifest
    assert m["status"].to_list() == ["ok", "too_few_points", "bad_flux", "ok"]
    assert "RV" in m["reason"][1] and "fewer" in m["reason"][1]
    assert m["rv_used_source"].to_list() == ["measured", "none", "none", "catalog"]
