"""The rrnet-eval command: report directory, index.html, metrics.json, one-line errors."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers import ISOCHRONES, needs_shared
from rrnet.cli.eval import main
from rrnet.evaluation.metrics import label_metrics
from rrnet.evaluation.report import markdown_table, pivot
from rrnet.evaluation.toy import toy_tables
from rrnet.io import write_table
from rrnet.labels import ALL_LABELS, SP_LABELS
from rrnet.models.xfe_skill import xfe_skill

pytestmark = needs_shared


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One full run with a checkpoint (split + history) and every figure."""
    root = tmp_path_factory.mktemp("eval")
    catalog, labels = toy_tables(40, seed=5)
    write_table(catalog, root / "cat.parquet")
    write_table(labels, root / "labels.csv")
    ckpt = root / "ckpt"
    ckpt.mkdir()
    stars = labels["star_id"].to_numpy()
    split = np.where(stars < 24, "train", np.where(stars < 30, "valid", "test"))
    pl.DataFrame({"star_id": stars, "split": split}).write_parquet(ckpt / "split.parquet")
    history = [
        {"epoch": e, "member": m, "train_loss": 1.0 / e, "valid_loss": 0.8 / e + 0.01 * m}
        for e in range(1, 4)
        for m in range(2)
    ]
    pl.DataFrame(history).write_parquet(ckpt / "history.parquet")
    args = ["--catalog", str(root / "cat.parquet"), "--labels", str(root / "labels.csv")]
    args += ["--out", str(root / "report"), "--checkpoint", str(ckpt), "--recalibrate"]
    args += ["--isochrones", str(ISOCHRONES)]
    assert main(args) == 0
    return {"root": root, "report": root / "report", "ckpt": ckpt}


@pytest.mark.slow
def test_a_gzipped_labels_table_gives_the_same_metrics(run) -> None:
    """``--labels labels.csv.gz`` (surveys ship them gzipped) was refused as an unknown
    table format '.gz'."""
    import gzip

    root = run["root"]
    (root / "labels.csv.gz").write_bytes(gzip.compress((root / "labels.csv").read_bytes()))
    args = ["--catalog", str(root / "cat.parquet"), "--labels", str(root / "labels.csv.gz")]
    assert main([*args, "--out", str(root / "gz"), "--checkpoint", str(run["ckpt"])]) == 0
    got = json.loads((root / "gz" / "metrics.json").read_text())
    args[-1] = str(root / "labels.csv")
    assert main([*args, "--out", str(root / "plain"), "--checkpoint", str(run["ckpt"])]) == 0
    assert got["metrics"] == json.loads((root / "plain" / "metrics.json").read_text())["metrics"]


@pytest.mark.slow
def test_index_html_embeds_every_figure_and_reads_headline_first(run) -> None:
    page = (run["report"] / "index.html").read_text()
    images = re.findall(r'<img src="(data:image/png;base64,[^"]+)"[^>]*data-file="([^"]+)"', page)
    names = {Path(rel).name for _, rel in images}
    expected = {"residuals.png", "sigma_vs_snr.png", "zscores.png", "coverage.png", "kiel.png"}
    expected |= {"xfe_giants.png", "xfe_dwarfs.png", "repeats.png", "loss_curves-ckpt.png"}
    assert expected <= names
    for uri, rel in images:
        assert not Path(rel).is_absolute()
        embedded = base64.b64decode(uri.split(",", 1)[1])
        assert embedded == (run["report"] / rel).read_bytes()  # the file on disk, embedded
    assert "<table>" in page and "Calibration" in page
    assert 'src="figures/' not in page  # self-contained: no relative image path left
    # headline first, then contents, key figures, and only then the (collapsed) tables
    assert page.index('id="headline"') < page.index('id="contents"') < page.index("<figure>")
    assert page.index("<figure>") < page.index("<details")
    assert "<table>" not in page[page.index('id="contents"') : page.index("<details")]
    assert "[C/H] [dex]" in page and "T_eff [K]" in page and "CH<" not in page
    assert re.search(r"errors too (small|large) by ×\d\.\d|errors calibrated", page)
    assert "<figcaption>Fig." not in page and "members of" not in page  # captions in words
    assert not re.search(r">-?\d+\.\d{5,}<", page)  # no 0.0001477 in any cell


@pytest.mark.slow
def test_metrics_json_matches_an_independent_computation(run) -> None:
    doc = json.loads((run["report"] / "metrics.json").read_text())
    catalog, labels = toy_tables(40, seed=5)
    test = catalog.filter((pl.col("flag") == 1) & (pl.col("star_id") >= 30))
    truth = labels["Logg"].to_numpy()[test["star_id"].to_numpy()]
    expected = label_metrics(test["Logg"].to_numpy(), truth, test["Logg_err"].to_numpy())
    row = next(r for r in doc["metrics"] if r["label"] == "Logg" and r["snr_bin"] == "all")
    assert row["n"] == expected.n == doc["counts"]["in_test_split"]
    assert row["mae"] == pytest.approx(expected.mae)
    assert row["z_std"] == pytest.approx(expected.z_std)
    factors = doc["recalibration"]["factors"]
    assert set(factors) == set(ALL_LABELS) and all(0.5 < f < 2.0 for f in factors.values())
    assert (run["ckpt"] / "recalibration.json").is_file()
    assert "NaN" not in (run["report"] / "metrics.json").read_text()
    # [X/Fe] skill of [Mg/H] over all S/N, from the same rows (issue 17).
    feh = labels["FeH"].to_numpy()[test["star_id"].to_numpy()]
    mg = labels["MgH"].to_numpy()[test["star_id"].to_numpy()]
    want = xfe_skill(test["MgH"].to_numpy(), mg, test["FeH"].to_numpy(), feh)
    row = next(r for r in doc["xfe_skill_by_snr"] if r["label"] == "MgH" and r["snr_bin"] == "all")
    assert row["n"] == expected.n
    # (this toy split has fewer rows than a skill needs: NaN, written as null)
    got = row["xfe_skill"]
    assert got == pytest.approx(want) if math.isfinite(want) else got is None
    assert {r["label"] for r in doc["xfe_skill_by_snr"]} == set(ALL_LABELS) - set(SP_LABELS)


@pytest.mark.slow
def test_markdown_has_the_tables(run) -> None:
    text = (run["report"] / "metrics.md").read_text()
    headings = ("MAE per S/N bin", "Calibration", "Repeat observations", "Recalibration")
    for heading in (*headings, "[X/Fe] skill beyond [Fe/H]"):
        assert heading in text


def test_pivot_and_markdown_table() -> None:
    long = pl.DataFrame(
        {"label": ["a", "a", "b", "b"], "snr_bin": ["all", "10-20"] * 2, "mae": [1.0, 2, 3, None]}
    )
    wide = pivot(long, "mae")
    assert wide.columns == ["label", "all", "10-20"]
    assert markdown_table(wide).splitlines() == [
        "| label | all | 10-20 |",
        "|---|---|---|",
        "| a | 1 | 2 |",
        "| b | 3 | – |",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--catalog", "nope.parquet"], "not found"),
        (["--catalog", "cat.txt"], "unknown table format"),
        (["--recalibrate"], "needs --checkpoint"),
        (["--min-exposures", "1"], "must be >= 2"),
        (["--split", "dev"], "invalid choice"),
        (["--key", "gaia_id"], "key column"),
        (["--split", "valid"], "--split valid needs --checkpoint"),  # ignored before
        (["--repeat-key", "gaia_id"], "no repeat-key column 'gaia_id'"),  # only a note
    ],
)
def test_unusable_arguments_exit_2_with_one_line(run, capsys, extra, message) -> None:
    root = run["root"]
    args = ["--catalog", str(root / "cat.parquet"), "--labels", str(root / "labels.csv")]
    args += ["--out", str(root / "r2"), "--no-figures"]
    if extra[0] == "--catalog":
        args[1] = str(root / extra[1])
        extra = []
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("rrnet-eval: error: ") and message in err
    assert err.count("\n") == 1


def test_cli_counts_the_split_it_evaluates(run, capsys) -> None:
    """With --checkpoint the console names the rows of the evaluated split (it printed
    every labelled row, training stars included)."""
    catalog, _ = toy_tables(40, seed=5)
    test = catalog.filter((pl.col("flag") == 1) & (pl.col("star_id") >= 30))
    assert 0 < test.height < catalog.filter(pl.col("flag") == 1).height
    args = ["--catalog", str(run["root"] / "cat.parquet"), "--labels"]
    args += [str(run["root"] / "labels.csv"), "--out", str(run["root"] / "counted")]
    assert main([*args, "--checkpoint", str(run["ckpt"]), "--no-figures"]) == 0
    assert f"{test.height} spectra evaluated" in capsys.readouterr().err


def test_checkpoint_split_by_a_column_of_the_labels_table(run, tmp_path: Path, capsys) -> None:
    """A catalogue without the split's star column (say from LAMOST's catalogue, keyed by
    obsid) evaluates the checkpoint's test stars when the labels table has the column, as
    training allows (--star-column from the labels table)."""
    catalog, labels = toy_tables(40, seed=5)
    per_spectrum = catalog.select("obsid", "star_id").join(labels, on="star_id")
    write_table(catalog.drop("star_id"), tmp_path / "cat.parquet")
    write_table(per_spectrum, tmp_path / "labels.csv")
    test = catalog.filter((pl.col("flag") == 1) & (pl.col("star_id") >= 30))
    args = ["--catalog", str(tmp_path / "cat.parquet"), "--labels", str(tmp_path / "labels.csv")]
    args += ["--key", "obsid", "--out", str(tmp_path / "r"), "--no-figures"]
    assert main([*args, "--checkpoint", str(run["ckpt"])]) == 0
    assert f"{test.height} spectra evaluated" in capsys.readouterr().err


def test_reports_never_replace_a_users_files(run, tmp_path: Path, capsys) -> None:
    """A report replaces index.html and figures of fixed names: --out may be new, empty,
    or an earlier report of the same kind, never a folder of the user's (its index.html
    was replaced) nor another kind's report; a refused run leaves the folder as it was."""
    root = run["root"]
    mine = tmp_path / "website"
    mine.mkdir()
    (mine / "index.html").write_text("<p>my page</p>")
    evaluate = ["--catalog", str(root / "cat.parquet"), "--labels", str(root / "labels.csv")]
    store = tmp_path / "store"
    store.mkdir()
    compare = ["compare", "--store", str(store), "--labels", str(root / "labels.csv")]
    commands = {
        "eval": [*evaluate, "--no-figures", "--out"],
        "overview": ["overview", str(root / "cat.parquet"), "--out"],
        "compare": [*compare, "--out"],
    }
    for name, argv in commands.items():
        assert main([*argv, str(mine)]) == 2, name
        err = capsys.readouterr().err
        assert "holds no rrnet-eval" in err and err.count("\n") == 1, (name, err)
    assert sorted(p.name for p in mine.iterdir()) == ["index.html"]
    assert (mine / "index.html").read_text() == "<p>my page</p>"
    # the module's report (written by an earlier run of the same kind) is rewritten in
    # place; an overview is not written over it
    assert main([*commands["eval"], str(run["report"])]) == 0
    assert main([*commands["overview"], str(run["report"])]) == 2
    assert "holds a rrnet-eval report" in capsys.readouterr().err
    overview_dir = tmp_path / "overview"
    assert main([*commands["overview"], str(overview_dir)]) == 0
    assert main([*commands["overview"], str(overview_dir)]) == 0
    assert main([*commands["eval"], str(overview_dir)]) == 2
    # an empty folder is a new one
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*commands["eval"], str(empty)]) == 0
    assert (empty / "index.html").is_file()


def test_isochrones_that_are_no_mist_table_are_refused_before_any_work(
    run, tmp_path: Path, capsys
) -> None:
    """A PNG or a CSV of other columns as --isochrones failed at the report's end with
    "unexpected ColumnNotFoundError"; now one line, exit 2, before anything is written."""
    png = tmp_path / "kiel.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    other = tmp_path / "iso.csv"
    other.write_text("teff,logg\n3.7,4.5\n3.6,4.6\n")
    root = run["root"]
    evaluate = ["--catalog", str(root / "cat.parquet"), "--labels", str(root / "labels.csv")]
    for bad in (png, other):
        for argv in (
            [*evaluate, "--out", str(tmp_path / "r")],
            ["overview", str(root / "cat.parquet"), "--out", str(tmp_path / "o")],
        ):
            assert main([*argv, "--isochrones", str(bad)]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "not a MIST isochrone CSV" in err and str(bad) in err
            assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists()
    assert main(["overview", str(root / "cat.parquet"), "--out", str(tmp_path / "o"),
                 "--isochrones", str(ISOCHRONES)]) == 0  # fmt: skip


def test_one_spectrum_gives_a_report_with_no_spread(tmp_path: Path) -> None:
    """One spectrum crashed the residual histogram ("Too many bins for data range") and,
    with --no-figures, reported scatter 0 and z std 0: one value has no spread."""
    catalog, labels = toy_tables(3, seed=1)
    one = catalog.filter(pl.col("snr_blue") >= 10).head(1)
    write_table(one, tmp_path / "cat.parquet")
    write_table(labels, tmp_path / "labels.csv")
    args = ["--catalog", str(tmp_path / "cat.parquet"), "--labels", str(tmp_path / "labels.csv")]
    args += ["--all-rows", "--isochrones", str(ISOCHRONES), "--out", str(tmp_path / "r")]
    assert main(args) == 0
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    star = int(one["star_id"][0])
    for row in (r for r in doc["metrics"] if r["n"] == 1):
        resid = one[row["label"]][0] - labels[row["label"]][star]
        assert row["bias"] == pytest.approx(resid) and row["mae"] == pytest.approx(abs(resid))
        assert row["scatter"] is None and row["robust_scatter"] is None
        assert row["z_std"] is None
    assert "Only 1 spectrum has reference labels" in (tmp_path / "r" / "index.html").read_text()


def test_a_star_column_from_the_labels_table_keeps_every_output_to_the_split(
    run, tmp_path: Path, monkeypatch
) -> None:
    """With the split's star column in the labels table only, the metrics covered the
    test stars but the Kiel and [X/Fe] figures and the OOD table every row (train too)."""
    from rrnet.plots import abundances, kiel

    drawn: dict[str, int] = {}

    def spy(name: str, real):
        def call(cat: pl.DataFrame, *args, **kwargs):
            drawn[name] = cat.height
            return real(cat, *args, **kwargs)

        return call

    monkeypatch.setattr(kiel, "plot_kiel", spy("kiel", kiel.plot_kiel))
    monkeypatch.setattr(abundances, "plot_xfe", spy("xfe", abundances.plot_xfe))
    catalog, labels = toy_tables(40, seed=5)
    catalog = catalog.with_columns(quality_bits=(pl.col("obsid") % 3 == 0).cast(pl.Int64) * 16)
    per_spectrum = catalog.select("obsid", "star_id").join(labels, on="star_id")
    write_table(catalog.drop("star_id"), tmp_path / "cat.parquet")
    write_table(per_spectrum, tmp_path / "labels.csv")
    args = ["--catalog", str(tmp_path / "cat.parquet"), "--labels", str(tmp_path / "labels.csv")]
    args += ["--key", "obsid", "--out", str(tmp_path / "r"), "--isochrones", str(ISOCHRONES)]
    assert main([*args, "--checkpoint", str(run["ckpt"])]) == 0
    test = catalog.filter(pl.col("star_id") >= 30)  # the checkpoint's test stars
    recommended = test.filter(pl.col("flag") == 1).height
    assert drawn == {"kiel": recommended, "xfe": recommended}
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    everything = next(r for r in doc["ood_by_snr"] if r["snr_bin"] == "all")
    assert everything["n"] == test.height < catalog.height
    assert everything["n_ood"] == int((test["quality_bits"] == 16).sum())


def test_kiel_under_all_rows_draws_every_row_and_says_which(tmp_path: Path, monkeypatch) -> None:
    """--all-rows: the caption said "recommended rows" and rows with S/N < 10 fell out of
    every panel."""
    from rrnet.plots import kiel

    drawn: list[int] = []
    real = kiel.plot_kiel

    def spy(cat: pl.DataFrame, *args, panels, **kwargs):
        drawn.append(sum(int(m.sum()) for m in panels.values()))
        return real(cat, *args, panels=panels, **kwargs)

    monkeypatch.setattr(kiel, "plot_kiel", spy)
    catalog, labels = toy_tables(30, seed=2)
    assert (catalog["snr_blue"] < 10).any()
    write_table(catalog, tmp_path / "cat.parquet")
    write_table(labels, tmp_path / "labels.csv")
    args = ["--catalog", str(tmp_path / "cat.parquet"), "--labels", str(tmp_path / "labels.csv")]
    args += ["--isochrones", str(ISOCHRONES)]
    assert main([*args, "--all-rows", "--out", str(tmp_path / "all")]) == 0
    assert main([*args, "--out", str(tmp_path / "flag1")]) == 0
    assert drawn == [catalog.height, int((catalog["flag"] == 1).sum())]
    docs = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("all", "flag1")]
    captions = [
        next(f["caption"] for f in doc["figures"] if f["path"].endswith("kiel.png")) for doc in docs
    ]
    assert "recommended" not in captions[0] and "--all-rows" in captions[0]
    assert "recommended rows (flag 1)" in captions[1]


def test_a_checkpoint_named_checkpoint_is_not_named_twice(tmp_path: Path) -> None:
    """The loss-curve caption of the demo's checkpoint read "in checkpoint checkpoint"."""
    from rrnet.evaluation.figures import checkpoint_history
    from rrnet.evaluation.report import Report

    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    rows = [{"epoch": e, "member": 0, "train_loss": 1.0 / e, "valid_loss": 1.1 / e} for e in (1, 2)]
    pl.DataFrame(rows).write_parquet(ckpt / "history.parquet")
    (tmp_path / "figures").mkdir()
    report = Report("t", {}, {}, pl.DataFrame(), pl.DataFrame())
    ((_, caption),) = checkpoint_history(ckpt, tmp_path, "figures", report)
    assert "checkpoint checkpoint" not in caption and "checkpoint/" in caption
