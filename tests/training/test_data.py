"""Training from a store + labels table through ``rrnet-train``: joins, filters, split, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from rrnet.cli.train import main
from rrnet.labels import SP_LABELS
from rrnet.store import open_store
from rrnet.training.data import select_rows
from rrnet.training.toy import toy_spectra

torch.set_num_threads(1)

N = 90


def _write_store(path: Path, flux: np.ndarray, manifest: pl.DataFrame) -> None:
    """A store directory in the documented layout (rrnet.store), written by hand."""
    (path / "shards").mkdir(parents=True)
    np.save(path / "shards" / "normalized-000000.npy", flux.astype(np.float32))
    manifest.write_parquet(path / "manifest.parquet")
    info = {
        "format": "rrnet-preprocessed-store",
        "format_version": 1,
        "complete": True,
        "n_rows": flux.shape[0],
        "shard_size": flux.shape[0],
        "kinds": ["normalized"],
        "fingerprint": {"hash": "toy0123456789abc", "correct_rv": True},
    }
    (path / "store.json").write_text(json.dumps(info))


@pytest.fixture(scope="module")
def store_and_labels(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("store")
    flux, labels = toy_spectra(N, n_pixels=7200, n_lines=40, seed=4)
    star = np.array([f"S{i // 3:03d}" for i in range(N)])  # three spectra per star
    status = np.where(np.arange(N) % 17 == 5, "resample failed", "ok")
    flux[status != "ok"] = np.nan
    quality = np.arange(N) % 13 != 7
    manifest = pl.DataFrame(
        {
            "row": np.arange(N),
            "obsid": 1000 + np.arange(N),
            "star_id": star,
            "rv": np.linspace(-30, 30, N),
            "status": status,
            "quality_ok": quality,
        }
    )
    _write_store(root / "store", flux, manifest)
    # Labels per star; one star has none, one has all missing, [Fe/H] partly missing.
    stars = np.unique(star)
    first = np.array([np.flatnonzero(star == s)[0] for s in stars])
    table = pl.DataFrame(
        {
            "star_id": stars,
            "Teff[K]": labels[first, 0],
            "Logg": labels[first, 1],
            "FeH": np.where(np.arange(stars.size) % 4 == 0, np.nan, labels[first, 2]),
        }
    )
    table = table.filter(pl.col("star_id") != "S001").with_columns(
        pl.when(pl.col("star_id") == "S002").then(None).otherwise(pl.col(c)).alias(c)
        for c in ("Teff[K]", "Logg", "FeH")
    )
    table.write_csv(root / "labels.csv")
    return root, manifest


ARGS = ["--arch", "resnet", "--members", "2", "--epochs", "2", "--batch-size", "16", "--quiet"]


@pytest.fixture
def small_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cheap network: the CLI builds the paper's ResNet; shrink it through the library."""
    from rrnet.training import api

    small = api.model_config_for
    monkeypatch.setattr(
        api,
        "model_config_for",
        lambda arch, mode, num_labels: small(
            arch, mode, num_labels, channels=(2, 2, 2, 2), hidden=(16, 8)
        ),
    )


def test_cli_trains_from_a_store_with_the_row_rules(store_and_labels, small_networks) -> None:
    root, manifest = store_and_labels
    out = root / "ckpt"
    code = main(["--store", str(root / "store"), "--labels", str(root / "labels.csv"),
                 "--out", str(out), *ARGS])  # fmt: skip
    assert code == 0
    split = pl.read_parquet(out / "split.parquet")
    used = set(split.get_column("row").to_list())
    m = manifest
    assert not used & set(m.filter(pl.col("status") != "ok").get_column("row").to_list())
    assert not used & set(m.filter(~pl.col("quality_ok")).get_column("row").to_list())
    no_labels = m.filter(pl.col("star_id").is_in(["S001", "S002"])).get_column("row").to_list()
    assert not used & set(no_labels)
    expected = m.filter(
        (pl.col("status") == "ok")
        & pl.col("quality_ok")
        & ~pl.col("star_id").is_in(["S001", "S002"])
    )
    assert used == set(expected.get_column("row").to_list())  # partly missing labels are kept
    per_star = split.group_by("star_id").agg(pl.col("split").n_unique())
    assert per_star.get_column("split").max() == 1
    config = json.loads((out / "config.json").read_text())
    training = config["training"]
    assert config["preprocessing"]["hash"] == "toy0123456789abc"
    assert training["variant"] == "c"
    assert training["data"]["row_counts"]["used"] == len(used)
    assert set(training["label_ranges"]) == {"Teff[K]", "Logg", "FeH"}
    # the training store by its absolute path and its manifest's digest (its identity)
    assert training["domain"]["store"] == str((root / "store").resolve())
    assert training["domain"]["store_manifest_digest"] == open_store(root / "store").manifest_digest
    # and which spectra it holds, whatever its layout (rrnet.store.spectra_digest)
    assert training["domain"]["store_spectra_digest"] == open_store(root / "store").spectra_digest
    pred = pl.read_parquet(out / "test_predictions.parquet")
    test_rows = split.filter(pl.col("split") == "test").get_column("row").to_list()
    assert sorted(pred.get_column("row").to_list()) == sorted(test_rows)
    assert {"obsid", "star_id", "Teff[K]", "Teff[K]_err", "Teff[K]_true"} <= set(pred.columns)
    assert (out / "loss_curve.png").stat().st_size > 1000
    # no snr_blue/snr_red in this manifest: no subspace OOD test (the older score stays)
    assert not (out / "ood_subspace.safetensors").exists()
    # RRNet-ur: rv becomes a fourth label, taken from the manifest
    out_ur = root / "ckpt-ur"
    assert main(["--store", str(root / "store"), "--labels", str(root / "labels.csv"),
                 "--out", str(out_ur), "--predict-rv", "--calibration-form", "scale",
                 *ARGS]) == 0  # fmt: skip
    # the calibration's form: "auto" picks "const" on this small split; as asked otherwise
    forms = [json.loads((o / "calibration.json").read_text()) for o in (out, out_ur)]
    assert [(f["form"], f["form_requested"]) for f in forms] == [
        ("const", "auto"), ("scale", "scale")
    ]  # fmt: skip
    config = json.loads((out_ur / "config.json").read_text())
    assert config["labels"] == ["Teff[K]", "Logg", "FeH", "rv"]
    assert config["training"]["variant"] == "c-r"


def test_a_run_stopped_while_calibrating_is_finished_by_resume(
    store_and_labels, small_networks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Killed after its last epoch, in the calibration: --resume had said 'already
    complete; nothing to do', leaving a checkpoint without calibration for good."""
    from rrnet.training import api

    root, _ = store_and_labels
    base = ["--store", str(root / "store"), "--labels", str(root / "labels.csv"), *ARGS]
    assert main([*base, "--out", str(tmp_path / "clean")]) == 0
    real = api.calibrate_checkpoint

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "calibrate_checkpoint", killed)
    stopped = tmp_path / "stopped"
    assert main([*base, "--out", str(stopped)]) == 130
    assert not (stopped / "calibration.json").exists()
    monkeypatch.setattr(api, "calibrate_checkpoint", real)
    assert main([*base, "--out", str(stopped), "--resume"]) == 0
    clean = json.loads((tmp_path / "clean" / "calibration.json").read_text())
    assert json.loads((stopped / "calibration.json").read_text()) == clean
    assert not (stopped / "train_state.pt").exists()  # gone once everything is written
    capsys.readouterr()
    assert main([*base, "--out", str(stopped), "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--lr", "inf"], "lr must be a finite number > 0"),
        (["--lr", "1e30"], "non-finite training loss in epoch"),  # diverges: said so
        (["--rv-shift", "1e9"], "the speed of light"),
        (["--noise-sigma", "nan"], "noise_sigma must be a finite number"),
        (["--device", "bogus"], "--device"),
        (["--key", ""], "key names no column"),
        (["--group", "Teff[K],Nope"], "no column for Nope"),
        (["--key", "obsid_missing"], "no column(s) obsid_missing"),
        (["--split-fractions", "7:0:3"], "--split-fractions '7:0:3'"),
        (["--split-fractions", "a:b:c"], "give three shares"),
        (["--split-fractions", "7:1"], "give three shares"),
        (["--label-norm", "checkpoint"], "--label-norm checkpoint needs --init"),  # ignored
        (["--init", "ckpt", "--freeze", "conv,rnn,head,out"], "freezes every group"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(
    store_and_labels, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    root, _ = store_and_labels
    argv = ["--store", str(root / "store"), "--labels", str(root / "labels.csv"),
            "--out", str(tmp_path / "x"), "--quiet", *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rrnet-train: error: ") and message in err[0]
    if extra[0] in ("--label-norm", "--init"):  # refused before anything is written
        assert not (tmp_path / "x").exists()


def test_a_missing_label_is_named_as_a_survey_would_spell_it(
    store_and_labels, tmp_path: Path
) -> None:
    """A survey's table (TEFF, LOGG, no [Fe/H]) is told which label it lacks in the
    spellings rrnet accepts, and shown its own column names, not rrnet's internal ones."""
    root, _ = store_and_labels
    table = pl.read_csv(root / "labels.csv")
    survey = table.rename({"Teff[K]": "TEFF", "Logg": "LOGG"}).drop("FeH")
    with pytest.raises(ValueError, match=r"no column for FeH \(or fe_h, FE_H\)") as err:
        select_rows(pl.read_parquet(root / "store" / "manifest.parquet"), survey, SP_LABELS)
    listed = str(err.value).split("it has: ")[1]
    assert "TEFF" in listed and "Teff[K]" not in listed
    # with every label present under survey names, the same table is accepted
    rows = select_rows(
        pl.read_parquet(root / "store" / "manifest.parquet"),
        table.rename({"Teff[K]": "TEFF", "Logg": "LOGG", "FeH": "FE_H"}),
        SP_LABELS,
    )
    assert rows.label_names == list(SP_LABELS)


def test_cli_missing_store_is_one_line_error(tmp_path: Path, capsys) -> None:
    code = main(["--store", str(tmp_path / "nope"), "--labels", str(tmp_path / "l.csv"),
                 "--out", str(tmp_path / "o"), "--quiet"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rrnet-train: error: ")


def test_cli_usage_error_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    assert main(["--store", "s", "--labels", "l", "--out", "o", "--arch", "transformer"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rrnet-train: error: " in err[0] and "invalid choice" in err[0]


def test_store_rows_are_the_store_fluxes(store_and_labels) -> None:
    """The lazily read flux (data larger than the RAM limit) equals read_flux."""
    from rrnet.training.stream import StreamedRows

    root, _ = store_and_labels
    store = open_store(root / "store")
    rows = np.array([3, 0, 8])
    view = StreamedRows(store, rows)
    np.testing.assert_array_equal(view[np.array([2, 0])], store.read_flux(rows[[2, 0]]))


def test_label_columns_in_either_style_and_any_case_train_the_catalogue_labels(
    store_and_labels,
) -> None:
    """A labels table named like an rrnet catalogue (``teff``) or a survey (``LOGG``,
    ``FE_H``) selects the same rows and values as the paper's names; rrnet-infer then
    finds the labels (under other names it would ignore them)."""
    from rrnet.training.data import resolve_labels, select_rows

    root, manifest = store_and_labels
    table = pl.read_csv(root / "labels.csv")
    want = select_rows(manifest, table, resolve_labels("SP"))
    styled = table.rename({"Teff[K]": "teff", "Logg": "LOGG", "FeH": "Fe_H"})
    for group in ("SP", "teff,logg,FE_H", ["TEFF", "Logg", "fe_h"], "TEFF[K],LOGG,FEH"):
        got = select_rows(manifest, styled, resolve_labels(group))
        assert got.label_names == ["Teff[K]", "Logg", "FeH"]
        np.testing.assert_array_equal(got.rows, want.rows)
        np.testing.assert_array_equal(got.labels, want.labels)
    paper_upper = table.rename({"Teff[K]": "TEFF[K]", "Logg": "LOGG", "FeH": "FEH"})
    got = select_rows(manifest, paper_upper, resolve_labels("SP"))  # the paper's, upper case
    np.testing.assert_array_equal(got.labels, want.labels)
    both = table.with_columns(pl.col("Teff[K]").alias("teff"))
    with pytest.raises(ValueError, match="2 columns for Teff"):
        select_rows(manifest, both, resolve_labels("SP"))
    with pytest.raises(ValueError, match="duplicate"):
        resolve_labels("teff,Teff[K]")
    assert resolve_labels("vsini,teff") == ["vsini", "Teff[K]"]  # other names stay
    assert resolve_labels("SP,MgH") == [*resolve_labels("SP"), "MgH"]  # a group in a list
    with pytest.raises(ValueError, match="duplicate"):
        resolve_labels("SP,teff")


def test_cli_warns_of_labels_the_catalogue_cannot_hold(
    store_and_labels, small_networks, caplog, tmp_path: Path
) -> None:
    """``--group TEFF,vsini``: TEFF trains the catalogue's Teff; vsini trains too, with a
    warning that rrnet-infer will not write it (it ignores labels it has no column for)."""
    root, _ = store_and_labels
    table = pl.read_csv(root / "labels.csv").rename({"Teff[K]": "TEFF"})
    table = table.with_columns((pl.col("Logg") * 3.0).alias("vsini"))
    table.write_csv(tmp_path / "labels.csv")
    out = tmp_path / "ckpt"
    with caplog.at_level("WARNING"):
        code = main(["--store", str(root / "store"), "--labels", str(tmp_path / "labels.csv"),
                     "--out", str(out), "--group", "TEFF,vsini", *ARGS])  # fmt: skip
    assert code == 0
    assert json.loads((out / "config.json").read_text())["labels"] == ["Teff[K]", "vsini"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("vsini not catalogue labels") for m in warned), warned


def test_label_columns_renames_any_case_and_refuses_two_columns_for_one_label() -> None:
    from rrnet.labels import label_columns

    columns = ["star_id", "TEFF", "logg", "Fe_H", "teff_err", "vsini"]
    assert label_columns(columns) == {"TEFF": "Teff[K]", "logg": "Logg", "Fe_H": "FeH"}
    assert label_columns(columns, wanted=["Logg"]) == {"logg": "Logg"}
    assert label_columns(["teff", "x"], keep=["teff"]) == {}  # a join key stays
    with pytest.raises(ValueError, match="2 columns for FeH: FeH, fe_h"):
        label_columns(["FeH", "fe_h"])
    # a label of the user's own, asked in another case than its column's (--group VSINI)
    assert label_columns(columns, wanted=["VSINI", "Logg"]) == {"vsini": "VSINI", "logg": "Logg"}
    with pytest.raises(ValueError, match="2 columns for VSINI"):
        label_columns(["vsini", "VSini"], wanted=["VSINI"])
    assert label_columns(["VSINI", "vsini"], wanted=["VSINI"]) == {}  # the exact one is used


def test_minus_9999_labels_are_missing_not_values(store_and_labels) -> None:
    """Surveys write -9999 for "not measured": it is masked like an empty cell (a
    -9999 K Teff trained as a value would wreck the network), and counted."""
    from rrnet.training.data import describe_counts, resolve_labels, select_rows

    root, manifest = store_and_labels
    table = pl.read_csv(root / "labels.csv")
    # -9999, and -9999 after a user's arithmetic ([X/Fe] + [Fe/H] of a missing [X/Fe])
    fills = {"Teff[K]": -9999.0, "Logg": -9999.0, "FeH": -9999.0 - 0.31}
    sentinel = table.with_columns(pl.col(c).fill_nan(v).fill_null(v) for c, v in fills.items())
    want = select_rows(manifest, table, resolve_labels("SP"))
    got = select_rows(manifest, sentinel, resolve_labels("SP"))
    np.testing.assert_array_equal(got.rows, want.rows)
    np.testing.assert_array_equal(got.labels, want.labels)  # NaN where -9999
    assert int((sentinel["FeH"] < -9999.0).sum()) > 0
    # every empty cell became -9999 here: the count is the used rows' missing values
    # (S002's rows, all labels missing, are not used and not counted)
    assert got.counts["missing_sentinels"] == int(np.isnan(got.labels).sum()) >= 1
    assert "read as missing" in describe_counts(got.counts)


def test_split_kept_from_another_checkpoint_and_by_init(store_and_labels, small_networks) -> None:
    """A CA-like checkpoint trained with --split-from an SP-like one of the same labels
    (fewer stars: [Fe/H] is partly missing) puts every common star where SP did, and so
    does fine-tuning with --init by default: no training star becomes a test star."""
    root, _ = store_and_labels
    base = ["--store", str(root / "store"), "--labels", str(root / "labels.csv"), *ARGS]
    sp, ca, ft = root / "split-sp", root / "split-ca", root / "split-ft"
    assert main([*base, "--out", str(sp), "--group", "Teff[K],Logg", "--split-seed", "1"]) == 0
    assert main([*base, "--out", str(ca), "--group", "FeH", "--split-seed", "2",
                 "--split-from", str(sp)]) == 0  # fmt: skip
    assert main([*base, "--out", str(ft), "--group", "Teff[K],Logg", "--split-seed", "3",
                 "--init", str(sp), "--epochs", "1"]) == 0  # fmt: skip

    def assignment(ckpt: Path) -> dict[str, str]:
        table = pl.read_parquet(ckpt / "split.parquet")
        return dict(zip(table["star_id"], table["split"], strict=True))

    want = assignment(sp)
    for other in (ca, ft):
        got = assignment(other)
        common = want.keys() & got.keys()
        assert len(common) > 10
        assert all(got[s] == want[s] for s in common), other
    assert len(assignment(ca)) < len(want)  # CA's own star set is smaller
    config = json.loads((ca / "config.json").read_text())
    assert config["training"]["split"]["kept_from"] == str(sp)
    # without keeping it, another seed puts some SP training stars into the test split
    free = root / "split-free"
    assert main([*base, "--out", str(free), "--group", "FeH", "--split-seed", "2"]) == 0
    moved = [s for s, name in assignment(free).items() if name == "test" and want[s] == "train"]
    assert moved
    anew = root / "split-anew"  # --split-from none: --init's split is not kept
    assert main([*base, "--out", str(anew), "--group", "Teff[K],Logg", "--split-seed", "3",
                 "--init", str(sp), "--epochs", "1", "--split-from", "none"]) == 0  # fmt: skip
    assert assignment(anew) != want


def test_survey_tables_join_and_fail_helpfully(store_and_labels, tmp_path: Path, capsys) -> None:
    """A survey's labels table: an upper-case key (OBSID for --key obsid) joins, the star
    column may come from the labels table (--star-column APOGEE_ID), [X/Fe] columns where
    [X/H] is needed get a conversion hint, and a missing labels file or an existing --out
    is named before any spectrum is read."""
    from rrnet.training.data import resolve_labels, select_rows

    root, manifest = store_and_labels
    table = pl.read_csv(root / "labels.csv")
    per_obsid = manifest.select("obsid", "star_id").join(table, on="star_id")
    survey = per_obsid.rename({"obsid": "OBSID", "star_id": "APOGEE_ID"})
    want = select_rows(manifest, per_obsid, resolve_labels("SP"), key=("obsid",))
    got = select_rows(
        manifest, survey, resolve_labels("SP"), key=("obsid",), star_column="APOGEE_ID"
    )
    np.testing.assert_array_equal(got.rows, want.rows)
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.star_ids, want.star_ids)  # the same stars, by name
    xfe = table.with_columns(pl.col("FeH").alias("MG_FE"))
    with pytest.raises(
        ValueError, match=r"\[X/Fe\] columns \(MG_FE\).*\[X/H\] = \[X/Fe\] \+ \[Fe/H\]"
    ):
        select_rows(manifest, xfe, resolve_labels("MgH"))
    with pytest.raises(ValueError, match=r"MG_FE reads as \[Mg/Fe\].*ask for MgH"):
        select_rows(manifest, table, resolve_labels("Teff[K],MG_FE"))  # --group MG_FE
    base = ["--store", str(root / "store"), "--quiet", *ARGS]
    assert main([*base, "--labels", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "labels table not found" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main([*base, "--labels", str(root / "labels.csv"), "--out", str(tmp_path / "full")]) == 2
    assert "--resume continues it (TrainOptions(resume=True) in Python)" in capsys.readouterr().err


def test_what_the_labels_table_loses_is_counted_and_ids_are_matched_as_meant(
    store_and_labels,
) -> None:
    """A user's labels table: ids with blanks and float ids (3.0 for 3) match; rows without
    an id, ids of no store row, ids that are not of the store's type and cells that are no
    number (``n/a``) are counted and said in the log line, never lost without a word."""
    from rrnet.training.data import describe_counts, resolve_labels, select_rows

    root, manifest = store_and_labels
    table = pl.read_csv(root / "labels.csv")
    want = select_rows(manifest, table, resolve_labels("SP"))
    padded = table.with_columns(pl.format(" {} ", pl.col("star_id")).alias("star_id"))
    extra = pl.DataFrame(
        {"star_id": [None, "", "NOPE1", "NOPE2"], "Teff[K]": [5000.0] * 4,
         "Logg": [4.0] * 4, "FeH": [0.0] * 4}
    )  # fmt: skip
    messy = pl.concat([padded, extra]).with_columns(
        pl.when(pl.col("star_id").str.strip_chars() == "S003")
        .then(pl.lit("n/a"))
        .otherwise(pl.col("Teff[K]").cast(pl.String))
        .alias("Teff[K]")
    )
    got = select_rows(manifest, messy, resolve_labels("SP"))
    np.testing.assert_array_equal(got.rows, want.rows)
    s003 = np.isin(got.star_ids, ["S003"])
    assert np.isnan(got.labels[s003, 0]).all() and not np.isnan(want.labels[s003, 0]).any()
    np.testing.assert_array_equal(got.labels[~s003], want.labels[~s003])
    assert got.counts["labels_without_key"] == 2 and got.counts["labels_unmatched"] == 2
    assert got.counts["non_numeric"] == {"Teff[K]": 1}
    line = describe_counts(got.counts)
    assert "2 have no key" in line and "2 match no store row" in line
    assert "no number, read as missing: Teff[K] 1" in line
    assert f"Teff[K] {int(np.isnan(got.labels[:, 0]).sum())}" in line  # missing per label
    # obsid keys written as floats (a FITS or pandas round trip) match the integer ids;
    # ids that are not whole numbers are counted as of the wrong type.
    per_obsid = manifest.select("obsid", "star_id").join(table, on="star_id")
    want = select_rows(manifest, per_obsid, resolve_labels("SP"), key=("obsid",))
    floats = per_obsid.with_columns(pl.col("obsid").cast(pl.Float64))
    floats = pl.concat([floats, floats.head(1).with_columns(pl.lit(1.5).alias("obsid"))])
    got = select_rows(manifest, floats, resolve_labels("SP"), key=("OBSID",))  # any case
    np.testing.assert_array_equal(got.rows, want.rows)
    assert got.counts["labels_bad_key"] == 1
    strings = per_obsid.with_columns(pl.format("x{}", pl.col("obsid")).alias("obsid"))
    with pytest.raises(ValueError, match=r"not of the store's types \(obsid: Int64\), e.g. \('x"):
        select_rows(manifest, strings, resolve_labels("SP"), key=("obsid",))
    other = table.with_columns(pl.format("T{}", pl.col("star_id")).alias("star_id"))
    with pytest.raises(ValueError, match=r"is no store row's .*'S000'"):
        select_rows(manifest, other, resolve_labels("SP"))


def test_split_fractions_and_what_training_warns_of(
    store_and_labels, small_networks, caplog, tmp_path: Path
) -> None:
    """--split-fractions 4:4:2 cuts the stars so; a small validation split and a label in
    other units (Teff in kK) are warned of; a label with one value (up to round-off) is
    refused."""
    from rrnet.training.split import split_by_star

    root, _ = store_and_labels
    table = pl.read_csv(root / "labels.csv")
    kk = table.with_columns(pl.col("Teff[K]") / 1000.0)
    kk.write_csv(tmp_path / "kk.csv")
    out = tmp_path / "ckpt"
    base = ["--store", str(root / "store"), *ARGS]
    with caplog.at_level("WARNING"):
        code = main([*base, "--labels", str(tmp_path / "kk.csv"), "--out", str(out),
                     "--split-fractions", "4:4:2"])  # fmt: skip
    assert code == 0
    split = pl.read_parquet(out / "split.parquet")
    stars = split.unique("star_id", maintain_order=True)
    want = split_by_star(stars["star_id"].to_numpy(), fractions=(0.4, 0.4, 0.2), seed=0)
    assert (stars["split"] == "valid").sum() == want.valid.size
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "Teff[K] has median" in warned and "not the catalogue's units" in warned
    assert "the validation split has" in warned and "rough below 50 stars" in warned
    assert "--split-fractions 4:4:2" not in warned  # it is the setting already
    constant = table.with_columns(pl.lit(4.37).alias("Logg"))  # its mean is off by round-off
    constant.write_csv(tmp_path / "constant.csv")
    code = main([*base, "--labels", str(tmp_path / "constant.csv"), "--out", str(tmp_path / "c")])
    assert code == 2


def test_members_that_cannot_fit_are_refused_before_any_work(
    store_and_labels, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All members train at once: asking for more than the machine holds was killed by
    the kernel without a word. The lower bound (weights, gradients, Adam's moments) is
    the parameter count of the built network times 16 bytes; a run over what is
    available exits 2 with one line and leaves no checkpoint folder."""
    import torch

    from rrnet.models import ModelConfig, build_model
    from rrnet.training import memory

    config = ModelConfig(num_labels=3)
    n_params = sum(p.numel() for p in build_model(config).parameters())
    assert memory.member_state_bytes(config) == 16 * n_params
    frozen_first = memory.member_state_bytes(config, lambda name: name.startswith("fc1."))
    first = sum(
        p.numel() for n, p in build_model(config).named_parameters() if n.startswith("fc1.")
    )
    assert first > 0 and frozen_first == 16 * n_params - 12 * first
    # a real machine: the default six members fit, a hundred thousand do not
    cpu = torch.device("cpu")
    memory.check_member_memory(config, 6, cpu)
    with pytest.raises(ValueError, match="100,000 members need at least"):
        memory.check_member_memory(config, 100_000, cpu)

    root, _ = store_and_labels
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10 * 2**20)
    argv = ["--store", str(root / "store"), "--labels", str(root / "labels.csv"),
            "--out", str(tmp_path / "x"), "--quiet", "--members", "3", "--epochs", "1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 members need at least" in err[0] and "at most 0 members" in err[0]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("flag", "message"), [
    ("--init", "nockpt is not an rrnet checkpoint"),
    ("--split-from", "no split.parquet there to keep"),
])  # fmt: skip
def test_init_and_split_from_are_checked_before_the_join(
    store_and_labels, tmp_path: Path, capsys, flag: str, message: str
) -> None:
    """Checked after the labels were joined, the join's count line came first and the
    error second: two lines (without --quiet)."""
    root, _ = store_and_labels
    argv = ["--store", str(root / "store"), "--labels", str(root / "labels.csv"),
            "--out", str(tmp_path / "x"), flag, str(tmp_path / "nockpt")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rrnet-train: error: ") and message in err[0], err
    assert not (tmp_path / "x").exists()


def test_key_messages_speak_the_tables_own_names(store_and_labels, tmp_path: Path) -> None:
    """A survey table without the key was described under rrnet's renamed label names
    (it has: APOGEE_ID, Teff[K], ...) though it says TEFF; a repeated key was shown as a
    Python tuple."""
    root, manifest = store_and_labels
    table = pl.read_csv(root / "labels.csv")
    survey = table.rename({"star_id": "APOGEE_ID", "Teff[K]": "TEFF", "Logg": "LOGG"})
    with pytest.raises(ValueError, match=r"no column\(s\) star_id") as err:
        select_rows(manifest, survey, SP_LABELS)
    listed = str(err.value).split("it has: ")[1]
    assert "TEFF" in listed and "APOGEE_ID" in listed and "Teff[K]" not in listed
    repeated = pl.concat([table, table.head(1)])
    first = table["star_id"][0]
    with pytest.raises(ValueError) as err:
        select_rows(manifest, repeated, SP_LABELS)
    assert (
        str(err.value) == f"the labels table has 2 rows with a repeated key (star_id = '{first}')"
    )
