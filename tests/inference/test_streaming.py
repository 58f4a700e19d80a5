"""rrnet-infer: catalogue values equal a direct ensemble call; schema; bad rows kept;
checkpoints combined; fingerprints checked; formats agree; per-star table; CLI errors."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import rrnet.inference.streaming as streaming
from helpers import (
    REAL_FILE,
    SPECTRA,
    build_world,
    input_catalogue,
    make_checkpoint,
    needs_shared,
)
from rrnet.inference import InferError, QualityBit, infer, read_catalogue, run_inference
from rrnet.inference.per_star import per_star_table
from rrnet.inference.provenance import FingerprintMismatch
from rrnet.labels import ALL_LABELS, CA_LABELS, SP_LABELS, styled_name
from rrnet.models.ensemble import Ensemble
from rrnet.store import open_store

pytestmark = needs_shared


# The paper's Table 3 (method §5), written out here as the independent oracle.
SPEC5 = [
    *("obsid", "filename", "ra", "dec", "extname_blue", "extname_red", "snr_blue", "snr_red"),
    *("Teff[K]", "Teff[K]_err", "Logg", "Logg_err", "CH", "CH_err", "NH", "NH_err"),
    *("OH", "OH_err", "MgH", "MgH_err", "AlH", "AlH_err", "SiH", "SiH_err", "SH", "SH_err"),
    *("KH", "KH_err", "CaH", "CaH_err", "TiH", "TiH_err", "CrH", "CrH_err", "MnH", "MnH_err"),
    *("FeH", "FeH_err", "NiH", "NiH_err", "CuH", "CuH_err", "flag"),
]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_world(tmp_path_factory.mktemp("infer"))


@pytest.fixture(scope="session")
def catalogue(world: dict) -> pl.DataFrame:
    out = world["root"] / "base" / "cat.parquet"
    return infer(
        [world["sp"], world["ca"]],
        store=world["store"],
        out=out,
        device="cpu",
        column_style="paper",
    )


def test_columns_order_and_dtypes(catalogue: pl.DataFrame) -> None:
    assert tuple(SPEC5[8:-1:2]) == ALL_LABELS
    assert catalogue.columns[: len(SPEC5)] == SPEC5
    assert catalogue.columns[len(SPEC5) : len(SPEC5) + 3] == ["status", "reason", "quality_bits"]
    assert "star_id" in catalogue.columns
    schema = catalogue.schema
    assert schema["obsid"] == pl.Int64
    assert schema["flag"] == pl.UInt8 and schema["quality_bits"] == pl.Int32
    for name in SPEC5[8:-1]:
        assert schema[name] == pl.Float32, name
    for name in ("filename", "extname_blue", "extname_red", "status", "reason"):
        assert schema[name] == pl.Utf8


def test_default_column_names_are_identifiers(world: dict, catalogue: pl.DataFrame) -> None:
    # The default style renames only the label columns, keeping order and values.
    default = infer([world["sp"], world["ca"]], store=world["store"], device="cpu")
    want = [styled_name(c, "identifier") for c in catalogue.columns]
    assert default.columns == want
    assert default.columns[8:12] == ["teff", "teff_err", "logg", "logg_err"]
    assert "fe_h" in default.columns and "cu_h_err" in default.columns
    assert all(c.isidentifier() for c in default.columns)
    assert default.rename(dict(zip(want, catalogue.columns, strict=True))).equals(catalogue)


def test_every_row_kept_in_input_order(world: dict, catalogue: pl.DataFrame) -> None:
    cat = input_catalogue()
    assert catalogue.height == cat.height
    assert catalogue["row"].to_list() == list(range(cat.height))
    for column in ("filename", "extname_blue", "extname_red", "star_id"):
        assert catalogue[column].to_list() == cat[column].to_list()
    manifest = open_store(world["store"]).manifest
    assert catalogue["status"].to_list() == manifest["status"].to_list()
    good = catalogue["status"] == "ok"
    assert good.sum() == 6
    bad = catalogue.filter(~good)
    assert bad["status"].to_list() == ["missing_file", "missing_extension", "bad_rv"]
    assert all(len(r) > 5 for r in bad["reason"].to_list())
    for label in ALL_LABELS:
        assert bad[label].null_count() == bad.height
        assert catalogue.filter(good)[label].null_count() == 0
    assert (bad["flag"] == 0).all()
    assert ((bad["quality_bits"] & int(QualityBit.PREPROCESS_FAILED)) != 0).all()
    assert catalogue.filter(good)["obsid"].null_count() == 0


def test_values_equal_direct_ensemble_call(world: dict, catalogue: pl.DataFrame) -> None:
    store = open_store(world["store"])
    rows = np.flatnonzero((catalogue["status"] == "ok").to_numpy())
    flux = store.read_flux(rows)
    for path, labels in ((world["sp"], SP_LABELS), (world["ca"], CA_LABELS)):
        direct = Ensemble.from_checkpoint(path, device="cpu").predict(flux)
        mean, std = np.asarray(direct.mean), np.asarray(direct.std)
        for j, label in enumerate(labels):
            got = catalogue[label].to_numpy()[rows]
            err = catalogue[f"{label}_err"].to_numpy()[rows]
            np.testing.assert_allclose(got, mean[:, j], rtol=1e-5, atol=1e-5 * abs(mean).max())
            np.testing.assert_allclose(err, std[:, j], rtol=1e-4, atol=1e-6)


def test_flag_is_quality_bits_zero_and_snr_bit(catalogue: pl.DataFrame) -> None:
    assert (catalogue["flag"] == (catalogue["quality_bits"] == 0).cast(pl.UInt8)).all()
    low = (catalogue["snr_blue"] < 10) | (catalogue["snr_red"] < 10)
    has_bit = (catalogue["quality_bits"] & int(QualityBit.LOW_SNR)) != 0
    assert (has_bit.filter(low.fill_null(True))).all()
    assert (~has_bit.filter(~low.fill_null(True))).all()


def test_provenance(world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from rrnet.models.checkpoint import checkpoint_hash

    out = world["root"] / "prov" / "cat.parquet"
    monkeypatch.chdir(world["sp"].parent)  # the SP checkpoint named relative to the run
    infer(
        [Path(world["sp"].name), world["ca"]],
        store=world["store"],
        out=out,
        device="cpu",
        column_style="paper",
    )
    meta = pl.read_parquet_metadata(out)
    assert meta["rrnet.checkpoint_hashes"] == ",".join(
        checkpoint_hash(p) for p in (world["sp"], world["ca"])
    )
    assert meta["rrnet.preprocessing_hash"] == world["fp"]["hash"]
    assert meta["rrnet.input"] == str(world["store"])
    environment = json.loads(meta["rrnet.environment"])  # what values depend on, to round-off
    import torch

    assert environment["versions"]["torch"] == torch.__version__
    assert environment["versions"]["polars"] == pl.__version__
    assert environment["device"] == "cpu" and environment["batch_size"] > 0
    assert environment["torch_threads"] == torch.get_num_threads()
    paths = [c["path"] for c in json.loads(meta["rrnet.checkpoints"])]
    assert paths == [str(world["sp"].absolute()), str(world["ca"].absolute())]
    sources = json.loads(meta["rrnet.label_sources"])
    assert {k for k, v in sources.items() if v == 0} == set(SP_LABELS)
    assert {k for k, v in sources.items() if v == 1} == set(CA_LABELS)
    import rrnet

    assert meta["rrnet.version"] == rrnet.__version__
    from rrnet.utils.revision import source_commit  # the code, not only its version

    assert meta.get("rrnet.commit") == source_commit()
    assert not (out.parent / "cat.parquet.parts").exists()


def test_formats_agree(world: dict, catalogue: pl.DataFrame) -> None:
    tables = {}
    for fmt in ("csv", "fits"):
        out = world["root"] / "fmt" / f"cat.{fmt}"
        run_inference(
            models=[world["sp"], world["ca"]], store=world["store"], out=out, device="cpu"
        )
        tables[fmt], provenance = read_catalogue(out)
        assert provenance["rrnet.checkpoint_hashes"].count(",") == 1
    for fmt, table in tables.items():
        assert table.columns == catalogue.columns, fmt
        assert table.schema == catalogue.schema, fmt
        assert table.equals(catalogue), fmt


def test_missing_labels_are_null_and_first_checkpoint_wins(world: dict) -> None:
    only_sp = infer(world["sp"], store=world["store"], device="cpu", column_style="paper")
    assert only_sp.columns[: len(SPEC5)] == SPEC5
    for label in CA_LABELS:
        assert only_sp[label].null_count() == only_sp.height
    assert only_sp["FeH"].null_count() == 3
    # A second checkpoint predicting Teff, Logg, FeH too: the first given wins.
    other = make_checkpoint(
        world["root"] / "SP2", SP_LABELS, members=2, seed=9, preprocessing=world["fp"]
    )
    first = infer([world["sp"], other], store=world["store"], device="cpu", column_style="paper")
    second = infer([other, world["sp"]], store=world["store"], device="cpu", column_style="paper")
    assert first.select(SP_LABELS).equals(only_sp.select(SP_LABELS))
    assert not second.select(SP_LABELS).equals(first.select(SP_LABELS))


def test_training_range_and_ood_bits(world: dict) -> None:
    training = {
        "label_ranges": {lab: {"min": -1e9, "max": -1e8, "n": 10} for lab in SP_LABELS},
        "ood": {
            "score": "mean_squared_z",
            "n_spectra": 10,
            "quantiles": {"0.5": 1e-9, "1.0": 2e-9},
        },
    }
    path = make_checkpoint(
        world["root"] / "SP_tight", SP_LABELS, members=3, seed=1, preprocessing=world["fp"],
        training=training,
    )  # fmt: skip
    table = infer(path, store=world["store"], device="cpu", column_style="paper")
    ok = table.filter(pl.col("status") == "ok")
    bits = ok["quality_bits"]
    assert ((bits & int(QualityBit.LABEL_OUT_OF_RANGE)) != 0).all()
    assert ((bits & int(QualityBit.OUT_OF_DISTRIBUTION)) != 0).all()
    assert (ok["ood_score"] > 1).all()
    assert (ok["flag"] == 0).all()
    assert all("label outside the training range" in r for r in ok["reason"].to_list())
    loose = infer(world["sp"], store=world["store"], device="cpu", column_style="paper")
    assert loose["ood_score"].null_count() == loose.height  # no OOD reference stored
    assert ((loose["quality_bits"] & int(QualityBit.LABEL_OUT_OF_RANGE)) == 0).all()


def test_the_api_without_out_checks_tmpdir_like_the_commands(
    world: dict, tmp_path, monkeypatch
) -> None:
    """``infer(..., out=None)`` writes its catalogue under TMPDIR: a TMPDIR that is not a
    folder stops it as the commands stop (it went to /tmp without a word)."""
    from rrnet.utils.faults import MachineFault

    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    with pytest.raises(MachineFault, match=r"TMPDIR=.*missing is not an existing folder"):
        infer(world["sp"], store=world["store"], device="cpu")


def test_inference_without_an_input_says_neither_was_given(world: dict, tmp_path) -> None:
    """It said "give either --store or --catalog ..., not both" when neither was given."""
    with pytest.raises(InferError, match=r"give one input, --store or --catalog .*; neither was"):
        run_inference(world["sp"], out=tmp_path / "c.parquet")
    with pytest.raises(InferError, match="; both were given"):
        run_inference(world["sp"], out=tmp_path / "c.parquet", store=world["store"],
                      catalog=tmp_path / "cat.csv")  # fmt: skip


def test_an_unfinished_run_is_called_unfinished(world: dict, tmp_path) -> None:
    """After an interrupted run only ``out.parts/`` exists; the refusal said "out exists"
    and named command-line flags alone (a notebook user passes resume=True)."""
    out = tmp_path / "c.parquet"
    (tmp_path / "c.parquet.parts").mkdir()
    with pytest.raises(InferError) as err:
        run_inference(world["sp"], out=out, store=world["store"])
    assert str(err.value) == (
        f"an unfinished run of {out} exists: pass --resume to continue it or --overwrite "
        "(resume=True or overwrite=True in Python)"
    )


def test_fingerprint_mismatch_refused(world: dict, caplog: pytest.LogCaptureFixture) -> None:
    wrong = dict(world["fp"], hash="0000000000000000", max_iter=7)
    bad = make_checkpoint(
        world["root"] / "bad_fp", SP_LABELS, members=1, seed=3, preprocessing=wrong
    )
    with pytest.raises(FingerprintMismatch, match="preprocessed with settings 0000000000000000"):
        infer(bad, store=world["store"], device="cpu")
    with pytest.raises(FingerprintMismatch, match=r"differ in max_iter: checkpoint 7, input \d+"):
        infer(bad, store=world["store"], device="cpu")  # names the setting, not just hashes
    table = infer(bad, store=world["store"], device="cpu", allow_fingerprint_mismatch=True)
    assert table.height == input_catalogue().height
    imported = make_checkpoint(
        world["root"] / "null_fp", SP_LABELS, members=1, seed=3, preprocessing=None
    )
    with caplog.at_level(logging.WARNING):
        table = infer(imported, store=world["store"], device="cpu", column_style="paper")
    assert "records no preprocessing fingerprint" in caplog.text
    assert table["Teff[K]"].null_count() == 3


def test_per_star_table(world: dict, catalogue: pl.DataFrame) -> None:
    out = world["root"] / "star" / "cat.parquet"
    run_inference(
        models=[world["sp"], world["ca"]], store=world["store"], out=out, device="cpu",
        per_star=True,
    )  # fmt: skip
    stars, provenance = read_catalogue(out.with_name("cat.per_star.parquet"))
    assert stars.equals(per_star_table(catalogue))
    assert stars["star_id"].to_list() == ["HIP96459", "ghost", "other"]
    assert provenance["rrnet.input"] == str(world["store"])
    # Its columns say what they hold: combined exposures, not one spectrum's values.
    import pyarrow.parquet as pq

    def described(path: Path, column: str) -> str:
        return pq.read_schema(path).field(column).metadata[b"description"].decode()

    per_star = out.with_name("cat.per_star.parquet")
    assert described(out, "teff").startswith("RRNet ensemble mean")
    assert "weighted mean" in described(per_star, "teff")
    assert "exposures' noise averaged" in described(per_star, "teff_err")
    assert "first exposure" in described(per_star, "ra")
    # in words, not the internal names ("weighted scatter of Teff[K]" in a table whose
    # column is teff_scatter)
    assert "effective temperature" in described(per_star, "teff_scatter")
    texts = [described(per_star, c) for c in pq.read_schema(per_star).names if "_" in c]
    assert not [t for t in texts if "Teff[K]" in t or "FeH" in t or "Logg" in t]


def test_per_star_error_floor_given_or_from_calibration(
    world: dict, catalogue: pl.DataFrame, tmp_path: Path
) -> None:
    """``error_floor`` reaches the per-star table: per label in either column style, or
    the floors stored in the checkpoints' calibration.json (with calibrated errors)."""
    import shutil

    out = tmp_path / "given" / "cat.parquet"
    run_inference(
        models=[world["sp"], world["ca"]], store=world["store"], out=out, device="cpu",
        per_star=True, error_floor={"teff": 30.0, "FeH": 0.02},
    )  # fmt: skip
    stars, provenance = read_catalogue(out.with_name("cat.per_star.parquet"))
    assert stars.equals(per_star_table(catalogue, floor={"Teff[K]": 30.0, "FeH": 0.02}))
    assert not stars.equals(per_star_table(catalogue))
    recorded = json.loads(provenance["rrnet.per_star"])  # which errors these are
    assert recorded["error_floor"] == {"Teff[K]": 30.0, "FeH": 0.02}
    assert recorded["error_floor_from"] == "given"
    # a finished run resumed with other per-star choices would keep the old table
    again = dict(models=[world["sp"], world["ca"]], store=world["store"], out=out,
                 device="cpu", per_star=True, resume=True)  # fmt: skip
    with pytest.raises(InferError, match="other per-star choices"):
        run_inference(**again)
    run_inference(**{**again, "per_star": False})  # not asked for: the run is done
    run_inference(**again, error_floor={"teff": 30.0, "FeH": 0.02})  # the same: done
    sp = tmp_path / "sp"
    shutil.copytree(world["sp"], sp)
    floors = {"Teff[K]": 25.0, "Logg": 0.04}
    doc = {
        "format": "rrnet-calibration", "version": 2,
        "labels": {k: {"a": 0.0, "b": 0.0, "floor": v} for k, v in floors.items()},
    }  # fmt: skip
    (sp / "calibration.json").write_text(json.dumps(doc))
    out = tmp_path / "cal" / "cat.parquet"
    run_inference(
        models=[sp, world["ca"]], store=world["store"], out=out, device="cpu",
        per_star=True, error_floor="calibration",
    )  # fmt: skip
    cat, _ = read_catalogue(out)
    stars, _ = read_catalogue(out.with_name("cat.per_star.parquet"))
    assert stars.equals(per_star_table(cat, floor=floors))
    # The default takes the calibration's floors too (the whole error averaging down gave
    # the demo's stars errors ~2x too small); "none" is the old behaviour.
    for floor, want in (("auto", per_star_table(cat, floor=floors)), ("none", None)):
        out = tmp_path / floor / "cat.parquet"
        kw = {} if floor == "auto" else {"error_floor": floor}
        run_inference(models=[sp, world["ca"]], store=world["store"], out=out, device="cpu",
                      per_star=True, **kw)  # fmt: skip
        stars, provenance = read_catalogue(out.with_name("cat.per_star.parquet"))
        assert stars.equals(want if want is not None else per_star_table(cat))
        source = json.loads(provenance["rrnet.per_star"])["error_floor_from"]
        assert source == ("calibration" if floor == "auto" else None)
    # Resuming compares the floors themselves: "calibration" finds the "auto" run done, a
    # run without a floor (None, as runs before the new default recorded) is "none"'s.
    again = dict(models=[sp, world["ca"]], store=world["store"], device="cpu", per_star=True,
                 resume=True)  # fmt: skip
    run_inference(out=tmp_path / "auto" / "cat.parquet", error_floor="calibration", **again)
    run_inference(out=tmp_path / "none" / "cat.parquet", error_floor=None, **again)
    with pytest.raises(InferError, match="--error-floor none gives"):
        run_inference(out=tmp_path / "none" / "cat.parquet", **again)  # the default differs
    # The calibrated error includes the floor: sqrt(err^2 + floor^2) with a = b = 0.
    ok = catalogue["Teff[K]_err"].is_not_null()
    np.testing.assert_allclose(
        cat.filter(ok)["Teff[K]_err"].to_numpy(),
        np.hypot(catalogue.filter(ok)["Teff[K]_err"].to_numpy(), 25.0),
        rtol=1e-6,
    )


@pytest.mark.parametrize("overlap", [True, False], ids=["overlapped", "in-turn"])
def test_on_the_fly_equals_store(
    world: dict, catalogue: pl.DataFrame, overlap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both ways of running --catalog (next chunk preprocessed on a thread, or in turn
    # with the model) give the store's catalogue, whichever the machine would choose.
    monkeypatch.setattr(streaming, "overlap_preprocessing", lambda device_type: overlap)
    csv = world["root"] / "input.csv"
    input_catalogue().write_csv(csv)
    table = infer(
        [world["sp"], world["ca"]],
        catalog=csv,
        data_dir=REAL_FILE.parent,
        chunk_rows=4,
        workers=0,
        device="cpu",
        column_style="paper",
        preprocess={"rv_mode": "catalog"},
    )  # fmt: skip (the store's RV mode)
    exact = [*SPEC5, "status", "quality_bits", "rv_used", "rv_used_source"]
    exact = [c for c in exact if c not in ALL_LABELS]
    exact = [c for c in exact if not c.endswith("_err")]
    assert table.select(exact).equals(catalogue.select(exact))
    # Another chunking means other batch shapes: equal to float32 round-off.
    for label in ALL_LABELS:
        for column in (label, f"{label}_err"):
            assert table[column].is_null().equals(catalogue[column].is_null())
            np.testing.assert_allclose(
                table[column].to_numpy(), catalogue[column].to_numpy(), rtol=2e-6, atol=1e-7
            )


def test_on_the_fly_provenance_says_where_and_with_which_rvs(world: dict) -> None:
    """The data folder and the RV mode change the values of a --catalog run, but were
    only in its hidden run record; a store's catalogue has no such entry."""
    csv = world["root"] / "input-reading.csv"
    input_catalogue().write_csv(csv)
    out = world["root"] / "reading" / "cat.parquet"
    run_inference(models=[world["sp"]], catalog=csv, data_dir=REAL_FILE.parent, out=out,
                  device="cpu", workers=0, preprocess={"rv_mode": "catalog"})  # fmt: skip
    reading = json.loads(pl.read_parquet_metadata(out)["rrnet.reading"])
    assert reading == {"data_dir": str(REAL_FILE.parent.resolve()), "rv_mode": "catalog",
                       "rv_column": "rv", "correct_rv": True}  # fmt: skip
    stored = world["root"] / "reading-store" / "cat.parquet"
    run_inference(models=[world["sp"]], store=world["store"], out=stored, device="cpu")
    assert "rrnet.reading" not in pl.read_parquet_metadata(stored)


def test_cli_catalog_finds_files_in_sub_folders_with_find_files(
    world: dict, tmp_path: Path
) -> None:
    """LAMOST downloads come in sub-folders: rrnet-infer --catalog had no --find-files
    (rrnet-preprocess has), so every such file was missing_file."""
    from rrnet.cli.infer import main

    (tmp_path / "data" / "20170928").mkdir(parents=True)
    shutil.copy(REAL_FILE, tmp_path / "data" / "20170928" / REAL_FILE.name)
    csv = tmp_path / "input.csv"
    input_catalogue().write_csv(csv)
    args = ["--catalog", str(csv), "--data-dir", str(tmp_path / "data"), "--model",
            str(world["sp"]), "--model", str(world["ca"]), "--device", "cpu",
            "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "plain.parquet")]) == 3  # no row labelled
    plain = pl.read_parquet(tmp_path / "plain.parquet")
    assert set(plain["status"]) == {"missing_file"}
    assert main([*args, "--find-files", "--out", str(tmp_path / "found.parquet")]) == 0
    found = pl.read_parquet(tmp_path / "found.parquet")
    flat = [*args[:2], "--data-dir", str(REAL_FILE.parent), *args[4:]]  # as if unpacked
    assert main([*flat, "--out", str(tmp_path / "flat.parquet")]) == 0
    oracle = pl.read_parquet(tmp_path / "flat.parquet")
    assert (found["status"] == "ok").sum() == (oracle["status"] == "ok").sum() > 0
    assert found.drop("filename", "reason").equals(oracle.drop("filename", "reason"))
    assert found["filename"][0] == f"20170928/{REAL_FILE.name}"


def test_cli_catalog_files_default_to_the_catalogues_folder(world: dict, tmp_path: Path) -> None:
    """As rrnet-preprocess: without --data-dir the filenames are relative to the
    catalogue's folder (rrnet-infer --catalog refused to run without it)."""
    from rrnet.cli.infer import main

    shutil.copy(REAL_FILE, tmp_path / REAL_FILE.name)
    input_catalogue().write_csv(tmp_path / "input.csv")
    out = tmp_path / "cat.parquet"
    args = ["--catalog", str(tmp_path / "input.csv"), "--model", str(world["sp"]),
            "--device", "cpu", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert (pl.read_parquet(out)["status"] == "ok").sum() > 0


def test_cli_exits_1_when_no_row_could_be_labelled(world: dict, tmp_path: Path, capsys) -> None:
    """Every file missing (a wrong --data-dir): rrnet-infer exited 0 with '0 ok', where
    rrnet-preprocess exits 1; the catalogue is still written, for inspection."""
    from rrnet.cli.infer import main

    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "notes.txt").write_text("not the spectra")
    csv = tmp_path / "input.csv"
    input_catalogue().write_csv(csv)
    out = tmp_path / "cat.parquet"
    args = ["--catalog", str(csv), "--data-dir", str(tmp_path / "wrong"), "--model",
            str(world["sp"]), "--device", "cpu", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(args) == 3  # the data's fault: the same input fails again
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("rrnet-infer: error: none of 9 rows could be labelled")
    assert set(pl.read_parquet(out)["status"]) == {"missing_file"}
    # an empty folder is an unmounted file system's mount point: the machine's fault,
    # one line, resumable, no row recorded missing
    (tmp_path / "empty").mkdir()
    out.unlink()
    args[args.index(str(tmp_path / "wrong"))] = str(tmp_path / "empty")
    assert main(args) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "data folder is empty" in last and not out.exists()


def test_a_missing_rv_column_is_said_once_not_per_chunk(
    world: dict, caplog: pytest.LogCaptureFixture
) -> None:
    csv = world["root"] / "input.csv"
    input_catalogue().write_csv(csv)
    with caplog.at_level(logging.WARNING):
        infer(
            [world["sp"]], catalog=csv, data_dir=REAL_FILE.parent, chunk_rows=2, workers=0,
            device="cpu", preprocess={"rv_column": "nosuch", "rv_mode": "auto"},
        )  # fmt: skip
    assert caplog.text.count("no 'nosuch' column: every RV is measured") == 1


def test_overlap_only_where_the_model_leaves_cores_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setattr(streaming, "usable_cores", lambda: 4)
    try:
        torch.set_num_threads(4)  # PyTorch fills every core: in turn on a CPU
        assert not streaming.overlap_preprocessing("cpu")
        assert streaming.overlap_preprocessing("cuda")  # the CPU is free while a GPU works
        torch.set_num_threads(2)  # two cores idle while the model runs
        assert streaming.overlap_preprocessing("cpu")
    finally:
        torch.set_num_threads(threads)


def test_cpu_inference_keeps_freed_memory_for_reuse(
    world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CPU the model steps run with utils.heap.retain_heap in effect (no page faults of
    fresh big activations per batch), set before any chunk is predicted; its effect on
    malloc is tested in tests/utils/test_heap.py."""
    import rrnet.inference.streaming as streaming

    calls: list[str] = []
    monkeypatch.setattr(streaming, "retain_heap", lambda: calls.append("retain") or True)
    real = streaming.catalogue_chunk
    monkeypatch.setattr(
        streaming, "catalogue_chunk", lambda *a, **k: (calls.append("chunk"), real(*a, **k))[1]
    )
    infer([world["sp"]], store=world["store"], out=tmp_path / "cat.parquet", device="cpu")
    assert calls[0] == "retain" and calls.count("retain") == 1 and "chunk" in calls


def test_per_star_table_replaces_only_its_own_runs_table(world: dict, tmp_path: Path) -> None:
    """The per-star path may hold a user's file or the catalogue itself: neither is
    replaced, and another writer of the same table is refused like one of the catalogue."""
    from rrnet.utils.lock import LockError, output_lock

    run = dict(models=[world["sp"]], store=world["store"], device="cpu", per_star=True)
    mine = tmp_path / "stars.parquet"
    mine.write_bytes(b"the user's own table")
    with pytest.raises(InferError, match="not written by a run of"):
        run_inference(**run, out=tmp_path / "a.parquet", per_star_out=mine)
    assert mine.read_bytes() == b"the user's own table"
    assert not (tmp_path / "a.parquet").exists()
    with pytest.raises(InferError, match="is the catalogue itself"):
        run_inference(**run, out=tmp_path / "b.parquet", per_star_out=tmp_path / "b.parquet")
    out, stars = tmp_path / "c.parquet", tmp_path / "c_stars.parquet"
    run_inference(**run, out=out, per_star_out=stars)
    first = stars.stat().st_mtime_ns
    run_inference(**run, out=out, per_star_out=stars, overwrite=True)  # its own: replaced
    assert stars.stat().st_mtime_ns >= first and read_catalogue(stars)[0].height > 0
    with pytest.raises(InferError, match="not written by a run of"):  # another catalogue's
        run_inference(**run, out=tmp_path / "d.parquet", per_star_out=stars)
    with (
        output_lock(tmp_path / "e_stars.parquet", directory=False),
        pytest.raises(LockError, match="per-star table"),
    ):
        run_inference(**run, out=tmp_path / "e.parquet", per_star_out=tmp_path / "e_stars.parquet")


def test_refuses_to_clobber_and_bad_arguments(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "cat.parquet"
    run_inference(models=[world["sp"]], store=world["store"], out=out, device="cpu")
    with pytest.raises(InferError, match="--resume"):
        run_inference(models=[world["sp"]], store=world["store"], out=out, device="cpu")
    run_inference(models=[world["sp"]], store=world["store"], out=out, device="cpu", overwrite=True)
    with pytest.raises(InferError, match="not an rrnet checkpoint"):
        run_inference(models=[tmp_path], store=world["store"], out=tmp_path / "x.parquet")
    with pytest.raises(InferError, match="star_id2"):
        run_inference(
            models=[world["sp"]], store=world["store"], out=tmp_path / "y.parquet",
            per_star=True, star_column="star_id2",
        )  # fmt: skip


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rrnet.cli.infer", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_cli_errors_are_one_line(world: dict, tmp_path: Path) -> None:
    cases = [
        ["--store", tmp_path / "nostore", "--model", world["sp"], "--out", tmp_path / "a.parquet"],
        ["--store", world["store"], "--model", tmp_path, "--out", tmp_path / "b.parquet"],
        ["--store", world["store"], "--out", tmp_path / "c.parquet"],
        ["--catalog", tmp_path / "none.csv", "--model", world["sp"], "--out", tmp_path / "d.csv"],
        ["--store", world["store"], "--model", world["sp"], "--device", "warp-drive", "--out", "e"],
        ["--store", world["store"], "--model", world["sp"], "--ood-quantile", "2", "--out", "f"],
        [
            "--catalog",
            world["root"] / "input.csv",
            "--data-dir",
            tmp_path / "nowhere",
            "--model",
            world["sp"],
            "--out",
            tmp_path / "h.parquet",
        ],
    ]
    input_catalogue().write_csv(world["root"] / "input.csv")
    import torch

    if not torch.cuda.is_available():  # asking for a GPU the machine lacks: exit 2 too
        cases.append(
            ["--store", world["store"], "--model", world["sp"], "--device", "cuda", "--out", "g"]
        )
    for args in cases:
        result = cli(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rrnet-infer: error: "), result.stderr


@pytest.mark.slow
def test_cli_writes_fits_with_progress_lines(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "cat.fits"
    result = cli("--store", world["store"], "--model", world["sp"], "--model", world["ca"],
                 "--out", out, "--device", "cpu", "--batch-size", "4")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "spectra/s" in result.stderr
    assert "rows in" in result.stderr and f"catalogue: {out}" in result.stderr  # the summary
    table, _ = read_catalogue(out)
    assert table.height == input_catalogue().height


def test_cli_column_style_paper_votable(world: dict, tmp_path: Path, catalogue) -> None:
    from astropy.io.votable import parse

    from rrnet.cli.infer import main

    out = tmp_path / "cat.vot"
    args = ["--store", str(world["store"]), "--model", str(world["sp"]), "--model"]
    args += [str(world["ca"]), "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main([*args, "--column-style", "paper"]) == 0
    names = [field.name for field in parse(str(out)).get_first_table().fields]
    assert names == catalogue.columns  # Table 3's names and order
    table, _ = read_catalogue(out)
    assert table.equals(catalogue)
    assert main([*args, "--column-style", "vo", "--overwrite"]) == 2


def test_progress_counts_spectra_as_they_are_done(world: dict, tmp_path: Path, monkeypatch) -> None:
    """The bar moves within a chunk (slices of spectra), not once per 4,096-row shard."""
    from rrnet.inference import streaming

    updates: list[int] = []

    class Recorder:
        def __init__(self, total: int, **_: object) -> None:
            self.total = total

        def update(self, n: int = 1) -> None:
            updates.append(n)

        def close(self) -> None:
            pass

    monkeypatch.setattr(streaming, "Progress", Recorder)
    monkeypatch.setattr(streaming, "FIRST_SLICE", 2)
    monkeypatch.setattr(streaming, "SLICE_SECONDS", 0.0)  # never grow: slices of 2
    out = tmp_path / "p.parquet"
    run_inference(models=[world["sp"]], store=world["store"], out=out, device="cpu")
    n = open_store(world["store"]).n_rows
    ok = pl.read_parquet(out).filter(pl.col("status") == "ok").height
    assert sum(updates) == n
    assert len(updates) >= ok // 2 and max(updates) <= max(2, n - ok)


def _column_ci(data, name: str) -> np.ndarray:
    (match,) = [c for c in data.columns.names if c.upper() == name]
    return np.asarray(data[match], dtype=np.float64).ravel()


def test_snr_and_outlier_columns_hold_what_they_describe(catalogue: pl.DataFrame) -> None:
    """snr_blue/snr_red are the header SNR (read here with astropy); n_outliers and
    max_outlier_run are the bad pixels counted by the NumPy reference on the
    resampled flux (issue 17, item 4)."""
    from astropy.io import fits

    from rrnet.inference.columns import COLUMNS_BY_NAME
    from rrnet.preprocess import reference

    assert "header keyword SNR" in COLUMNS_BY_NAME["snr_blue"].description
    assert "bad pixels" in COLUMNS_BY_NAME["n_outliers"].description
    rv = input_catalogue()["rv"]
    ok = catalogue.filter(pl.col("status") == "ok")
    assert ok.height >= 3
    with fits.open(REAL_FILE) as hdul:
        for row in ok.iter_rows(named=True):
            blue, red = hdul[row["extname_blue"]], hdul[row["extname_red"]]
            assert row["snr_blue"] == pytest.approx(float(blue.header["SNR"]), rel=1e-6)
            assert row["snr_red"] == pytest.approx(float(red.header["SNR"]), rel=1e-6)
            flux = reference.resample_spectrum(
                _column_ci(blue.data, "LOGLAM"),
                _column_ci(blue.data, "FLUX"),
                _column_ci(red.data, "LOGLAM"),
                _column_ci(red.data, "FLUX"),
                rv[row["row"]],
            )
            ref = reference.normalize_detailed(flux[None].astype(np.float32))
            assert row["n_outliers"] == int(ref.n_outliers[0])
            assert row["max_outlier_run"] == int(ref.max_outlier_run[0])


def test_synthetic_domain_checkpoint_on_other_spectra_warns_and_sets_a_bit(
    world: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17: a checkpoint trained on rrnet-synth labels, applied to a store other
    than its training store, warns once at the start and sets SYNTHETIC_DOMAIN."""
    domain = {"labels": "synthetic", "source": "rrnet-synth", "store": str(tmp_path / "synth")}
    ckpt = make_checkpoint(
        tmp_path / "syn", SP_LABELS, members=2, seed=3, preprocessing=world["fp"],
        training={"domain": domain},
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        table = infer(ckpt, store=world["store"], device="cpu")
    assert any("synthesised spectra" in r.getMessage() for r in caplog.records)
    ok = table.filter(pl.col("status") == "ok")
    assert ok.height > 0
    assert ((ok["quality_bits"] & int(QualityBit.SYNTHETIC_DOMAIN)) != 0).all()
    assert (ok["flag"] == 0).all()
    _, provenance = read_catalogue(
        run_inference(models=[ckpt], store=world["store"], out=tmp_path / "c.parquet",
                      device="cpu") or tmp_path / "c.parquet"
    )  # fmt: skip
    assert json.loads(provenance["rrnet.checkpoints"])[0]["domain"] == domain
    domain_own = {**domain, "store": str(world["store"])}
    own = make_checkpoint(
        tmp_path / "own", SP_LABELS, members=2, seed=3, preprocessing=world["fp"],
        training={"domain": domain_own},
    )  # fmt: skip
    table = infer(own, store=world["store"], device="cpu")
    assert ((table["quality_bits"] & int(QualityBit.SYNTHETIC_DOMAIN)) == 0).all()


def test_the_own_training_store_is_known_by_its_manifest_wherever_it_is(
    world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's checkpoint records its store as "demo-output/store": read from another
    folder, every row of its own store was flagged SYNTHETIC_DOMAIN (0 recommended)."""
    from rrnet.store import open_store

    domain = {
        "labels": "synthetic",
        "source": "rrnet-synth",
        "store": "demo-output/store",  # relative, as an older demo wrote it
        "store_manifest_digest": open_store(world["store"]).manifest_digest,
    }
    ckpt = make_checkpoint(
        tmp_path / "syn", SP_LABELS, members=2, seed=3, preprocessing=world["fp"],
        training={"domain": domain},
    )  # fmt: skip
    moved = tmp_path / "elsewhere" / "store"
    shutil.copytree(world["store"], moved)
    monkeypatch.chdir(tmp_path)  # neither the recorded path nor the store's own folder
    table = infer(ckpt, store=moved, device="cpu")
    assert ((table["quality_bits"] & int(QualityBit.SYNTHETIC_DOMAIN)) == 0).all()
    (tmp_path / "demo-output").mkdir()
    shutil.copytree(world["store"], tmp_path / "demo-output" / "store")
    manifest = tmp_path / "demo-output" / "store" / "manifest.parquet"
    pl.read_parquet(manifest).with_columns(pl.col("row") + 0).write_parquet(
        manifest, compression="uncompressed"
    )  # another store at the recorded path: foreign
    table = infer(ckpt, store=tmp_path / "demo-output" / "store", device="cpu")
    ok = table.filter(pl.col("status") == "ok")
    assert ((ok["quality_bits"] & int(QualityBit.SYNTHETIC_DOMAIN)) != 0).all()


def test_the_own_training_spectra_are_known_whatever_the_store_layout(
    world: dict, tmp_path: Path
) -> None:
    """A synthetic checkpoint's own spectra, preprocessed again with another shard size
    and row order, got SYNTHETIC_DOMAIN on every row: the store was known by its manifest
    file's bytes (found by a reproducibility audit). Spectra under the same file names
    with other content (rrnet-synth names files by seed and visit) are not its own, and a
    catalogue read on the fly, whose content is not known at the start, never is."""
    from rrnet.preprocess.pipeline import preprocess_catalog
    from rrnet.store import open_store, spectra_digest

    own = open_store(world["store"])
    domain = {"labels": "synthetic", "source": "rrnet-synth", "store": "elsewhere",
              "store_manifest_digest": own.manifest_digest,
              "store_spectra_digest": own.spectra_digest}  # fmt: skip
    ckpt = make_checkpoint(
        tmp_path / "syn", SP_LABELS, members=2, seed=3, preprocessing=world["fp"],
        training={"domain": domain},
    )  # fmt: skip
    catalog = input_catalogue()
    reshard = preprocess_catalog(
        catalog.reverse(), REAL_FILE.parent, tmp_path / "s7", workers=0, shard_size=7,
        progress=False, rv_mode="catalog",
    )  # fmt: skip
    assert reshard.manifest_digest != own.manifest_digest  # another layout and order
    bit = int(QualityBit.SYNTHETIC_DOMAIN)
    table = infer(ckpt, device="cpu", store=reshard.path)
    assert ((table["quality_bits"] & bit) == 0).all()
    shifted = preprocess_catalog(  # the same names, other spectra (shifted by another RV)
        catalog.with_columns(pl.col("rv") + 30.0), REAL_FILE.parent, tmp_path / "rv30",
        workers=0, shard_size=3, progress=False, rv_mode="catalog",
    )  # fmt: skip
    assert spectra_digest(shifted.manifest.select("filename", "extname_blue", "extname_red")) == (
        spectra_digest(own.manifest.select("filename", "extname_blue", "extname_red"))
    )
    for kwargs in (
        {"store": shifted.path},
        {"catalog": catalog, "data_dir": REAL_FILE.parent, "preprocess": {"rv_mode": "catalog"}},
    ):
        table = infer(ckpt, device="cpu", workers=0, **kwargs)
        ok = table.filter(pl.col("status") == "ok")
        assert ok.height > 0 and ((ok["quality_bits"] & bit) != 0).all(), kwargs


@pytest.mark.parametrize(
    ("name", "fmt"), [("cat.txt", None), ("results", "fits"), ("cat.dat", "votable")]
)
def test_cli_output_suffix_need_not_name_the_format(
    world: dict, tmp_path: Path, catalogue: pl.DataFrame, capsys, name: str, fmt: str | None
) -> None:
    """An unknown suffix writes Parquet, ``--format`` any name; the end-of-run summary
    reads the file in the format written (it read it by suffix and failed after the
    catalogue was written)."""
    from rrnet.cli.infer import main

    out = tmp_path / name
    args = ["--store", str(world["store"]), "--model", str(world["sp"]), "--model"]
    args += [str(world["ca"]), "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main([*args, *(["--format", fmt] if fmt else [])]) == 0
    assert f"{catalogue.height} rows in" in capsys.readouterr().err
    table, _ = read_catalogue(out, fmt or "parquet")
    assert table.equals(catalogue)


def test_cli_per_star_summary_counts_stars(
    world: dict, tmp_path: Path, catalogue: pl.DataFrame, capsys
) -> None:
    """The end of the run says how many stars the per-star table has and how many have a
    usable exposure (an empty-looking table is not a silent exit 0)."""
    from rrnet.cli.infer import main

    out = tmp_path / "cat.fits"
    args = ["--store", str(world["store"]), "--model", str(world["sp"]), "--model"]
    args += [str(world["ca"]), "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main([*args, "--per-star"]) == 0
    stars = per_star_table(catalogue)
    usable = int((stars["n_exp"] > 0).sum())
    assert 0 < usable < stars.height  # the oracle has both kinds of star
    err = capsys.readouterr().err
    assert f"({stars.height} stars, {usable} with a usable exposure)" in err, err


def test_the_rv_used_is_the_manifests(world: dict, catalogue: pl.DataFrame) -> None:
    """The catalogue says by which RV each spectrum was shifted and where it came from:
    the store manifest's decision, row for row (null where none was usable)."""
    manifest = open_store(world["store"]).manifest.sort("row")
    assert catalogue["rv_used"].dtype == pl.Float32
    want = manifest["rv_used"].cast(pl.Float32)
    assert catalogue["rv_used"].is_null().equals(want.is_null())
    assert catalogue["rv_used"].drop_nulls().equals(want.drop_nulls())
    assert catalogue["rv_used_source"].to_list() == manifest["rv_used_source"].to_list()
    assert {"catalog"} <= set(catalogue["rv_used_source"].drop_nulls())
    # and rrnet's own measurement with its error (a measured rv_used had come without one)
    for name in ("rv_measured", "rv_measured_err"):
        want = manifest[name].cast(pl.Float32).fill_nan(None)
        assert catalogue[name].dtype == pl.Float32
        assert catalogue[name].to_list() == want.to_list(), name


def test_the_measured_rv_and_its_error_are_in_the_catalogue(world: dict, tmp_path: Path) -> None:
    """A spectrum shifted by rrnet's own RV had no RV error in the catalogue, only in the
    store manifest (found by a user). Oracle: the measurement of the same arms, direct."""
    from rrnet.io.lamost import read_arm
    from rrnet.preprocess import rv

    csv = tmp_path / "input.csv"
    input_catalogue().head(5).with_columns(pl.lit(None, pl.Float64).alias("rv")).write_csv(csv)
    cat = infer(
        [world["sp"]], catalog=csv, data_dir=REAL_FILE.parent, workers=0, device="cpu",
        preprocess={"rv_mode": "auto"},
    )  # fmt: skip
    arms = [[read_arm(REAL_FILE, e) for e in pair] for pair in SPECTRA]
    want = rv.measure_spectra([tuple((a.loglam, a.flux, a.ivar) for a in pair) for pair in arms])
    assert cat["rv_used_source"].to_list() == ["measured"] * 5
    np.testing.assert_allclose(cat["rv_measured"], want.rv[:, 2], rtol=1e-6)
    np.testing.assert_allclose(cat["rv_measured_err"], want.err[:, 2], rtol=1e-6)
    np.testing.assert_allclose(cat["rv_used"], cat["rv_measured"])


def test_a_compressed_output_name_is_refused_and_a_gzipped_fits_reads_back(
    world: dict, tmp_path: Path, capsys
) -> None:
    """``--out cat.fits.gz`` wrote uncompressed Parquet under that name; it is refused in
    one line. A FITS catalogue gzipped afterwards reads back as FITS."""
    import gzip

    from rrnet.cli.infer import main

    args = ["--store", str(world["store"]), "--model", str(world["sp"]), "--device", "cpu"]
    for name in ("cat.fits.gz", "cat.parquet.zst", "cat.csv.bz2"):
        assert main([*args, "--out", str(tmp_path / name), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "written uncompressed" in err, err
        assert not (tmp_path / name).exists()
    out = tmp_path / "cat.fits"
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    (tmp_path / "cat.fits.gz").write_bytes(gzip.compress(out.read_bytes()))
    table, provenance = read_catalogue(tmp_path / "cat.fits.gz")
    assert table.equals(read_catalogue(out)[0]) and provenance == read_catalogue(out)[1]


def test_checkpoints_on_one_gpu_share_one_transfer_with_the_same_values(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU the rows go to the device once for all checkpoints (predict takes a
    tensor then); on a CPU they stay NumPy. The tensor path gives the same numbers."""
    import torch

    from rrnet.inference import models
    from rrnet.inference.quality import DEFAULT_THRESHOLDS

    checkpoints = models.load_checkpoints([world["sp"], world["ca"]], device="cpu")
    sources = models.label_sources(checkpoints)
    flux = open_store(world["store"]).read_flux(np.arange(6))
    assert models._model_input(flux, checkpoints) is flux  # CPU: as it is
    for checkpoint in checkpoints:  # as if both ensembles sat on one GPU
        monkeypatch.setattr(checkpoint.ensemble, "device", torch.device("meta"))
    read_only = flux.copy()
    read_only.flags.writeable = False
    sent = models._model_input(read_only, checkpoints)
    assert sent.device.type == "meta" and sent.shape == flux.shape and sent.dtype == torch.float32
    assert models._model_input(flux, checkpoints[:1]) is flux  # one checkpoint: nothing shared
    monkeypatch.undo()
    as_numpy = models.predict(checkpoints, sources, flux, DEFAULT_THRESHOLDS)
    monkeypatch.setattr(models, "_model_input", lambda f, _: torch.from_numpy(f))
    as_tensor = models.predict(checkpoints, sources, flux, DEFAULT_THRESHOLDS)
    np.testing.assert_array_equal(as_tensor.values, as_numpy.values)
    np.testing.assert_array_equal(as_tensor.errors, as_numpy.errors)
    np.testing.assert_array_equal(as_tensor.disagreement, as_numpy.disagreement)
