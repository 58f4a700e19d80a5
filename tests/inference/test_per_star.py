"""Per-star combination: inverse-variance means, scatter, chi2 and the variability flag."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from rrnet.inference.per_star import DEFAULT_CHI2_THRESHOLD, per_star_table

LABELS = ["Teff[K]", "Logg"]


def _catalogue(rng: np.random.Generator, n: int = 60) -> pl.DataFrame:
    stars = rng.integers(0, 12, size=n)
    return pl.DataFrame(
        {
            "star_id": [f"s{s}" for s in stars],
            "ra": rng.uniform(0, 360, n),
            "dec": rng.uniform(-10, 60, n),
            "status": rng.choice(["ok", "ok", "ok", "missing_file"], n).tolist(),
            "flag": rng.choice([0, 1, 1], n).astype(np.uint8),
            "Teff[K]": rng.normal(5500, 300, n).astype(np.float32),
            "Teff[K]_err": rng.uniform(30, 200, n).astype(np.float32),
            "Logg": rng.normal(4.0, 0.3, n).astype(np.float32),
            "Logg_err": rng.uniform(0.05, 0.3, n).astype(np.float32),
        }
    )


def _oracle(rows: list[dict], label: str) -> tuple:
    good = [
        r
        for r in rows
        if r["status"] == "ok" and r["flag"] == 1 and r[label] is not None and r[f"{label}_err"]
    ]
    if not good:
        return None, None, None, None, 0
    w = [1.0 / float(r[f"{label}_err"]) ** 2 for r in good]
    x = [float(r[label]) for r in good]
    sw = sum(w)
    mean = sum(wi * xi for wi, xi in zip(w, x, strict=True)) / sw
    chi2 = sum(wi * (xi - mean) ** 2 for wi, xi in zip(w, x, strict=True))
    if len(good) < 2:
        return mean, 1 / math.sqrt(sw), None, None, len(good)
    return mean, 1 / math.sqrt(sw), math.sqrt(chi2 / sw), chi2 / (len(good) - 1), len(good)


def test_matches_a_row_by_row_oracle() -> None:
    cat = _catalogue(np.random.default_rng(1))
    table = per_star_table(cat, labels=LABELS)
    order = list(dict.fromkeys(cat["star_id"].to_list()))
    assert table["star_id"].to_list() == order
    for star in table.iter_rows(named=True):
        rows = [r for r in cat.iter_rows(named=True) if r["star_id"] == star["star_id"]]
        variable, tested = False, False  # LABELS are the default variability labels
        for label in LABELS:
            mean, err, scatter, chi2r, n = _oracle(rows, label)
            assert star[f"{label}_n"] == n
            for got, want in [
                (star[label], mean),
                (star[f"{label}_err"], err),
                (star[f"{label}_scatter"], scatter),
                (star[f"{label}_chi2r"], chi2r),
            ]:
                assert (got is None) == (want is None)
                if want is not None:
                    assert got == pytest.approx(want, rel=1e-5)
            variable |= chi2r is not None and chi2r > DEFAULT_CHI2_THRESHOLD
            tested |= chi2r is not None
        assert star["variable"] == (int(variable) if tested else None)


def test_variable_and_constant_stars() -> None:
    n = 4
    cat = pl.DataFrame(
        {
            "star_id": ["const"] * n + ["var"] * n,
            "status": ["ok"] * 2 * n,
            "flag": [1] * 2 * n,
            "Teff[K]": [5000.0, 5010.0, 4990.0, 5000.0, 5000.0, 5600.0, 4400.0, 5300.0],
            "Teff[K]_err": [50.0] * 2 * n,
            "Logg": [4.0] * 2 * n,
            "Logg_err": [0.1] * 2 * n,
        }
    )
    table = per_star_table(cat, labels=LABELS)
    assert table["variable"].to_list() == [0, 1]
    assert table["n_exp"].to_list() == [n, n]
    assert table["Teff[K]_err"][0] == pytest.approx(50 / math.sqrt(n))


def test_a_small_scatter_far_from_the_catalogue_mean_is_not_lost_to_roundoff() -> None:
    # values 3000 K from the catalogue mean with a scatter of 1e-3 K keep their chi2r
    cat = pl.DataFrame(
        {
            "star_id": ["hot", "hot", "cool", "cool"],
            "status": ["ok"] * 4,
            "flag": [1] * 4,
            "Teff[K]": [8000.0, 8000.003, 2000.0, 2000.0015],
            "Teff[K]_err": [0.003] * 4,
            "Logg": [4.0] * 4,
            "Logg_err": [0.1] * 4,
        }
    )
    table = per_star_table(cat, labels=LABELS)
    # two values d apart with error e: chi2r = 2 (d/2)^2 / e^2
    assert table["Teff[K]_chi2r"].to_list() == pytest.approx([0.5, 0.125], rel=1e-5)
    assert table["Teff[K]_scatter"].to_list() == pytest.approx([0.0015, 0.00075], rel=1e-5)
    assert table["Logg_chi2r"].to_list() == [0.0, 0.0]


def test_a_far_low_weight_exposure_beside_precise_ones_keeps_the_exact_chi2r() -> None:
    # a sum of w x^2 centred on any one value lost 0.5 % of this chi2r (review, 2026-12-06)
    cat = pl.DataFrame(
        {
            "star_id": ["s"] * 4,
            "status": ["ok"] * 4,
            "flag": [1] * 4,
            "Teff[K]": [3000.0, 8000.0, 8000.001, 8000.0005],
            "Teff[K]_err": [1e4, 1e-4, 1e-4, 1e-4],
            "Logg": [4.0] * 4,
            "Logg_err": [0.1] * 4,
        }
    )
    mean, err, scatter, chi2r, n = _oracle(cat.to_dicts(), "Teff[K]")
    row = per_star_table(cat, labels=LABELS).row(0, named=True)
    assert (row["Teff[K]"], row["Teff[K]_err"]) == (pytest.approx(mean), pytest.approx(err))
    assert (row["Teff[K]_chi2r"], row["Teff[K]_n"]) == (pytest.approx(chi2r, rel=1e-6), n)
    assert row["Teff[K]_scatter"] == pytest.approx(scatter, rel=1e-6)


def test_lazy_input_and_unusable_star() -> None:
    cat = _catalogue(np.random.default_rng(2)).with_columns(
        pl.when(pl.col("star_id") == "s3").then(pl.lit("bad")).otherwise("status").alias("status")
    )
    eager = per_star_table(cat, labels=LABELS)
    lazy = per_star_table(cat.lazy(), labels=LABELS)
    assert eager.equals(lazy)
    s3 = eager.filter(pl.col("star_id") == "s3")
    assert s3.height == 1
    assert s3["n_exp"][0] == 0 and s3["Teff[K]"][0] is None


def test_a_catalogue_in_the_default_column_style_gives_the_same_stars() -> None:
    """rrnet-infer writes ``teff``/``teff_err`` by default: the same per-star values,
    named in that style; labels and floors may be given in either style."""
    cat = _catalogue(np.random.default_rng(5))
    paper = per_star_table(cat, labels=LABELS, floor={"Teff[K]": 20.0})
    styled = {"Teff[K]": "teff", "Teff[K]_err": "teff_err", "Logg": "logg", "Logg_err": "logg_err"}
    for labels in (LABELS, ["teff", "logg"]):
        got = per_star_table(
            cat.rename(styled), labels=labels, floor={"teff": 20.0}, variability_labels=labels
        )
        assert "teff_chi2r" in got.columns and "Teff[K]" not in got.columns
        assert got.equals(
            paper.rename(lambda c: c.replace("Teff[K]", "teff").replace("Logg", "logg"))
        )


def test_missing_star_column_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="star_id"):
        per_star_table(pl.DataFrame({"status": ["ok"]}), labels=LABELS)


def test_coadd_is_not_combined_with_its_own_exposures() -> None:
    """A file's coadd repeats its exposures' photons: only the exposures count; a file
    whose exposures are all unusable contributes its coadd (issue 17, item 3)."""
    rows = [  # star, file, blue extension, flag, Teff, err
        ("a", "f1", "COADD_B", 1, 5000.0, 10.0),
        ("a", "f1", "B-1", 1, 5100.0, 20.0),
        ("a", "f1", "B-2", 1, 5200.0, 20.0),
        ("a", "f2", "COADD_B", 1, 5300.0, 15.0),
        ("a", "f2", "B-3", 0, 9999.0, 20.0),
        ("b", "f3", "COADD_B", 1, 6000.0, 50.0),
    ]
    cat = pl.DataFrame(
        rows, schema=["star_id", "filename", "extname_blue", "flag", "Teff[K]", "Teff[K]_err"],
        orient="row",
    ).with_columns(status=pl.lit("ok"), flag=pl.col("flag").cast(pl.UInt8))  # fmt: skip
    table = per_star_table(cat, labels=["Teff[K]"], variability_labels=["Teff[K]"])
    a = table.row(0, named=True)
    used = [(5100.0, 20.0), (5200.0, 20.0), (5300.0, 15.0)]  # f1's exposures + f2's coadd
    w = np.array([1 / e**2 for _, e in used])
    x = np.array([v for v, _ in used])
    assert a["n_exp"] == 3 and a["Teff[K]_n"] == 3
    assert a["Teff[K]"] == pytest.approx(float((w * x).sum() / w.sum()), rel=1e-6)
    assert a["Teff[K]_err"] == pytest.approx(float(1 / np.sqrt(w.sum())), rel=1e-6)
    assert table.row(1, named=True)["n_exp"] == 1


def test_floor_splits_error_into_noise_and_shared_part_on_repeats() -> None:
    """Synthesised repeats with known truth: each star has a model error b ~ N(0, s)
    shared by its exposures plus independent noise ~ N(0, n_i); quoted errors are
    sqrt(n_i^2 + s^2). With the floor s the per-star chi2r averages ~1 and the
    combined error covers the truth (z std ~1); treating everything as noise gives
    chi2r << 1 and z std > 1 (issue 17, item 3)."""
    rng = np.random.default_rng(11)
    n_star, n_exp, s = 3000, 4, 50.0
    truth = rng.uniform(4000, 6500, n_star)
    bias = rng.normal(0.0, s, n_star)
    noise = rng.uniform(20.0, 120.0, (n_star, n_exp))
    x = truth[:, None] + bias[:, None] + rng.normal(0.0, noise)
    cat = pl.DataFrame(
        {
            "star_id": np.repeat(np.arange(n_star), n_exp),
            "status": "ok",
            "flag": np.ones(n_star * n_exp, np.uint8),
            "Teff[K]": x.ravel(),
            "Teff[K]_err": np.sqrt(noise**2 + s**2).ravel(),
        }
    )
    kw = {"labels": ["Teff[K]"], "variability_labels": ["Teff[K]"]}
    split = per_star_table(cat, floor={"Teff[K]": s}, **kw)
    naive = per_star_table(cat, **kw)
    z_split = (split["Teff[K]"].to_numpy() - truth) / split["Teff[K]_err"].to_numpy()
    z_naive = (naive["Teff[K]"].to_numpy() - truth) / naive["Teff[K]_err"].to_numpy()
    assert split["Teff[K]_chi2r"].mean() == pytest.approx(1.0, abs=0.05)
    assert np.std(z_split) == pytest.approx(1.0, abs=0.05)
    assert naive["Teff[K]_chi2r"].mean() < 0.8
    assert np.std(z_naive) > 1.3


def test_shared_error_fitted_on_repeats_makes_per_star_chi2r_one() -> None:
    """Exposures share a star's model error s = 0.05 on top of noise 0.02-0.12: the
    shared part recovered from the repeats' scatter alone is s, and with it as floor
    the per-star chi2r averages 1 and the combined value's z std is 1."""
    from rrnet.models.calibration import fit_shared_error

    rng = np.random.default_rng(11)
    n_star, n_exp, s = 3000, 4, 0.05
    star = np.repeat(np.arange(n_star), n_exp)
    noise = rng.uniform(0.02, 0.12, star.size)
    err = np.hypot(noise, s)
    x = np.repeat(rng.normal(0, s, n_star), n_exp) + rng.normal(0, noise)
    shared = fit_shared_error(x, err, star)
    assert shared == pytest.approx(s, rel=0.05)
    cat = pl.DataFrame({"star_id": star, "status": "ok", "flag": 1, "FeH": x, "FeH_err": err})
    table = per_star_table(cat, labels=["FeH"], variability_labels=["FeH"], floor={"FeH": shared})
    assert table["FeH_chi2r"].mean() == pytest.approx(1.0, abs=0.05)
    assert (table["FeH"] / table["FeH_err"]).std() == pytest.approx(1.0, abs=0.05)
    # Without repeats there is nothing to split; noise-only repeats give no shared part.
    assert fit_shared_error(x[::n_exp], err[::n_exp], star[::n_exp]) == 0.0
    assert fit_shared_error(rng.normal(0, noise), noise, star) == pytest.approx(0.0, abs=0.005)


def test_error_floor_from_calibration_prefers_the_shared_part(tmp_path) -> None:
    import json

    from rrnet.inference.options import InferError, InferOptions, resolve_error_floor

    first = {"FeH": {"a": 0, "b": 0, "floor": 0.01, "shared": 0.04}}
    second = {"FeH": {"a": 0, "b": 0, "floor": 0.5}, "Logg": {"a": 0, "b": 0, "floor": 0.03}}
    for name, labels in (("a", first), ("b", second)):
        (tmp_path / name).mkdir()
        doc = {"format": "rrnet-calibration", "version": 2, "labels": labels}
        (tmp_path / name / "calibration.json").write_text(json.dumps(doc))
    options = InferOptions([tmp_path / "a", tmp_path / "b"], error_floor="calibration")
    assert resolve_error_floor(options) == {"FeH": 0.04, "Logg": 0.03}
    given = InferOptions([tmp_path / "a"], error_floor={"fe_h": 0.02, "Teff[K]": 30})
    assert resolve_error_floor(given) == {"FeH": 0.02, "Teff[K]": 30.0}
    with pytest.raises(InferError, match="raw-errors"):
        resolve_error_floor(
            InferOptions([tmp_path / "a"], error_floor="calibration", calibrate=False)
        )


def test_a_blank_star_id_is_no_star_as_null_is_not() -> None:
    """'' (or blanks) made one star of every such row in a Parquet catalogue, while FITS,
    VOTable and ECSV write it as null, which makes none: the round trips differed."""
    cat = _catalogue(np.random.default_rng(4))
    blank = cat.with_columns(
        pl.when(pl.col("star_id") == "s3").then(pl.lit(" ")).otherwise("star_id").alias("star_id")
    )
    null = cat.with_columns(
        pl.when(pl.col("star_id") == "s3").then(None).otherwise("star_id").alias("star_id")
    )
    assert (cat["star_id"] == "s3").sum() > 1
    got = per_star_table(blank, labels=LABELS)
    assert got.equals(per_star_table(null, labels=LABELS))
    assert " " not in got["star_id"].to_list() and got.height == cat["star_id"].n_unique() - 1


def test_a_floor_above_a_spectrums_error_never_inflates_the_star() -> None:
    """A calibrated error can fall below the shared part fitted over all stars (the demo:
    3-58 % of spectra): a star of one spectrum with [Ti/H] +-0.040 got +-0.171 and two
    exposures combined to more than the better one's error. The star's shared part is
    now capped at 0.99 of its smallest error squared (a direct NumPy computation here)."""
    errs = {1: [0.04], 2: [0.329, 0.143], 3: [0.30, 0.25, 0.20]}
    rows = [(star, 0.1 * star + 0.01 * i, e) for star, es in errs.items() for i, e in enumerate(es)]
    cat = pl.DataFrame(rows, schema=["star_id", "TiH", "TiH_err"], orient="row").with_columns(
        status=pl.lit("ok"), flag=pl.lit(1, pl.UInt8)
    )
    floor = 0.171
    table = per_star_table(cat, labels=["TiH"], variability_labels=["TiH"], floor={"TiH": floor})
    for star, es in errs.items():
        e = np.array(es)
        x = 0.1 * star + 0.01 * np.arange(e.size)
        s2 = min(floor**2, 0.99 * e.min() ** 2)
        w = 1.0 / np.maximum(e**2 - s2, 0.01 * e**2)
        got = table.filter(pl.col("star_id") == star).row(0, named=True)
        assert got["TiH_err"] == pytest.approx(np.sqrt(1.0 / w.sum() + s2), rel=1e-6)
        assert got["TiH"] == pytest.approx(np.sum(w * x) / w.sum(), rel=1e-6)
        assert got["TiH_err"] <= e.min() * (1 + 1e-6)
    assert table.filter(pl.col("star_id") == 1)["TiH_err"][0] == pytest.approx(0.04, rel=1e-6)


def test_shared_error_fit_uses_the_same_cap_as_the_table() -> None:
    """fit_shared_error's chi-square uses the per-star cap the table applies: with the
    fitted part as floor, the table's mean chi2r over stars with repeats is 1, also when
    some stars' errors are below it."""
    from rrnet.models.calibration import fit_shared_error

    rng = np.random.default_rng(5)
    n_star, n_exp = 2000, 3
    star = np.repeat(np.arange(n_star), n_exp)
    noise = rng.uniform(0.005, 0.1, star.size)
    err = np.hypot(noise, np.repeat(rng.choice([0.01, 0.15], n_star), n_exp))  # two kinds
    x = rng.normal(0, noise)
    shared = fit_shared_error(x, err, star)
    assert shared > 0 and (err < shared).any()
    cat = pl.DataFrame({"star_id": star, "status": "ok", "flag": 1, "FeH": x, "FeH_err": err})
    table = per_star_table(cat, labels=["FeH"], variability_labels=["FeH"], floor={"FeH": shared})
    assert table["FeH_chi2r"].mean() == pytest.approx(1.0, abs=1e-3)


def test_a_coadd_is_known_in_any_case_of_its_extension_name() -> None:
    """``rrnet-catalog scan`` keeps a file's own spelling of extension names: a coadd
    spelled ``coadd_b`` was combined with its own exposures (n_exp 3 instead of 2)."""
    rows = [("COADD_B", 5000.0, 50.0), ("B-1", 5010.0, 100.0), ("B-2", 4990.0, 100.0)]
    cat = pl.DataFrame(rows, schema=["extname_blue", "Teff[K]", "Teff[K]_err"], orient="row")
    cat = cat.with_columns(star_id=pl.lit(1), filename=pl.lit("f"), status=pl.lit("ok"), flag=1)
    upper = per_star_table(cat, labels=["Teff[K]"], variability_labels=["Teff[K]"])
    lower = per_star_table(
        cat.with_columns(pl.col("extname_blue").str.to_lowercase()),
        labels=["Teff[K]"],
        variability_labels=["Teff[K]"],
    )
    assert upper["n_exp"].to_list() == [2]
    assert lower.equals(upper)


def test_a_spectrum_listed_twice_counts_once() -> None:
    """A file named twice (two overlapping input lists, or found in two folders under
    another case or compression) is one observation: it had given ``n_exp`` 8 for a file
    of four exposures and an error sqrt(2) too small."""
    rows = [  # star, file, blue extension, Teff, err
        ("a", "n1/f1.fits.gz", "B-1", 5100.0, 20.0),
        ("a", "n1/f1.fits.gz", "B-2", 5200.0, 30.0),
        ("a", "n1/f1.fits.gz", "B-1", 5100.0, 20.0),  # the same list again
        ("a", "copy/F1.FITS", "b-2", 5200.0, 30.0),  # the same file elsewhere
        ("b", "n1/f1.fits.gz", "B-1", 5100.0, 20.0),  # another star's id: its own
        ("a", "n2/f2.fits.gz", "B-1", 5300.0, 25.0),  # another file, same extension
    ]
    cat = pl.DataFrame(
        rows, schema=["star_id", "filename", "extname_blue", "Teff[K]", "Teff[K]_err"],
        orient="row",
    ).with_columns(status=pl.lit("ok"), flag=pl.lit(1, pl.UInt8))  # fmt: skip
    table = per_star_table(cat, labels=["Teff[K]"], variability_labels=["Teff[K]"])
    a, b = table.row(0, named=True), table.row(1, named=True)
    used = [(5100.0, 20.0), (5200.0, 30.0), (5300.0, 25.0)]
    w = np.array([1 / e**2 for _, e in used])
    x = np.array([v for v, _ in used])
    assert a["n_exp"] == 3 and a["Teff[K]_n"] == 3
    assert a["Teff[K]"] == pytest.approx(float((w * x).sum() / w.sum()), rel=1e-6)
    assert a["Teff[K]_err"] == pytest.approx(float(1 / np.sqrt(w.sum())), rel=1e-6)
    assert b["n_exp"] == 1


def test_a_failed_first_listing_does_not_hide_a_good_second_one() -> None:
    """The dedupe ranked every row, usable or not: a file missing in its first folder and
    found in its second gave the star no spectrum. Rows without a file name are never
    taken for one another, and a coadd listed from another folder than its exposures
    is still the same file's coadd (it counted beside them)."""
    rows = [  # star, file, blue extension, status, Teff, err
        ("a", "old/f1.fits.gz", "B-1", "missing_file", None, None),
        ("a", "new/f1.fits.gz", "B-1", "ok", 5100.0, 20.0),
        ("b", None, "B-1", "ok", 6000.0, 30.0),
        ("b", None, "B-1", "ok", 6100.0, 30.0),
        ("c", "n1/f3.fits.gz", "B-1", "ok", 4000.0, 20.0),
        ("c", "n1/f3.fits.gz", "B-2", "ok", 4100.0, 20.0),
        ("c", "copy/F3.fits", "COADD_B", "ok", 4050.0, 10.0),
    ]
    cat = pl.DataFrame(
        rows, schema=["star_id", "filename", "extname_blue", "status", "Teff[K]", "Teff[K]_err"],
        orient="row",
    ).with_columns(flag=pl.lit(1, pl.UInt8))  # fmt: skip
    table = per_star_table(cat, labels=["Teff[K]"], variability_labels=["Teff[K]"])
    n = dict(zip(table["star_id"], table["n_exp"], strict=True))
    assert n == {"a": 1, "b": 2, "c": 2}
    assert table.row(0, named=True)["Teff[K]"] == pytest.approx(5100.0)
