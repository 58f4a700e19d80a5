"""rrnet-infer: --resume checks the inputs even when the output is finished, --overwrite
deletes only what rrnet wrote, one process per output, and a failed start leaves nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pytest

import rrnet.inference.streaming as run_module
from helpers import REAL_FILE, build_world, needs_shared
from rrnet.cli.infer import main
from rrnet.inference import InferError, run_inference
from rrnet.inference.streaming import parts_dir, record_path
from rrnet.preprocess.pipeline import preprocess_catalog

pytestmark = needs_shared


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_world(tmp_path_factory.mktemp("checks"))


def _cli(world, out, *extra, model="sp", store=None):
    args = ["--store", str(store or world["store"]), "--model", str(world[model])]
    return main([*args, "--out", str(out), "--device", "cpu", "--no-progress", *extra])


def test_resume_of_a_finished_catalogue_checks_models_and_store(world, tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(world["store"], store)
    out = tmp_path / "cat.parquet"
    assert _cli(world, out, store=store) == 0
    before = out.read_bytes()
    assert record_path(out).is_file()
    capsys.readouterr()
    assert _cli(world, out, "--resume", model="ca", store=store) == 2  # other models
    err = capsys.readouterr().err
    assert "cannot resume" in err and "other checkpoints " in err and err.count("\n") == 1
    # the same store path, preprocessed again from another catalogue (fewer rows)
    table = pl.read_parquet(store / "manifest.parquet")
    table = table.select("filename", "extname_blue", "extname_red", "rv", "star_id").head(4)
    preprocess_catalog(
        table, REAL_FILE.parent, store, workers=0, shard_size=3, progress=False, overwrite=True
    )
    assert _cli(world, out, "--resume", store=store) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert _cli(world, out, "--resume") != 0  # another path is another input too


def test_resume_of_a_finished_output_without_record_is_refused(world, tmp_path):
    out = tmp_path / "cat.parquet"
    run_inference(models=[world["sp"]], store=world["store"], out=out, device="cpu")
    before = out.read_bytes()
    run_inference(models=[world["sp"]], store=world["store"], out=out, device="cpu", resume=True)
    assert out.read_bytes() == before  # its own inputs: reused as is
    record_path(out).unlink()
    with pytest.raises(InferError, match="cannot resume"):
        run_inference(models=[world["sp"]], store=world["store"], out=out, resume=True)


def test_overwrite_refuses_what_rrnet_did_not_write(world, tmp_path, capsys):
    foreign = tmp_path / "precious.parquet"
    foreign.write_text("not ours")
    assert _cli(world, foreign, "--overwrite") == 2
    assert "not written by rrnet-infer" in capsys.readouterr().err
    assert foreign.read_text() == "not ours"
    assert _cli(world, foreign) == 2  # not told to --overwrite what --overwrite refuses
    err = capsys.readouterr().err
    assert "not written by rrnet-infer: choose another --out" in err and "--resume" not in err
    folder = tmp_path / "dir.parquet"
    folder.mkdir()
    assert _cli(world, folder, "--overwrite") == 2
    assert "is a folder" in capsys.readouterr().err
    assert folder.is_dir()
    link = tmp_path / "null.parquet"
    link.symlink_to("/dev/null")
    assert _cli(world, link, "--overwrite") == 2
    assert link.is_symlink()
    out = tmp_path / "cat.parquet"
    assert _cli(world, out) == 0
    assert _cli(world, out, "--overwrite") == 0  # our own output is replaced
    capsys.readouterr()


def test_failed_start_leaves_no_parts_folder(world, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cat.parquet"

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device", str(parts_dir(out)))

    monkeypatch.setattr(run_module, "write_part", boom)
    assert _cli(world, out) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left" in err and "--resume" in err
    assert not parts_dir(out).exists() and not out.exists()
    monkeypatch.undo()
    assert _cli(world, out) == 0  # the rerun is not told the output "exists"


def test_ctrl_c_is_one_line_and_130(world, tmp_path, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "catalogue_chunk", interrupt)
    assert _cli(world, tmp_path / "cat.parquet") == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err


HOLD = textwrap.dedent(
    """
    import sys, time
    from rrnet.utils.lock import output_lock
    with output_lock(sys.argv[1], directory=False, what="catalogue"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def test_second_writer_fails_at_once_naming_the_holder(world, tmp_path, capsys):
    out = tmp_path / "cat.parquet"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _cli(world, out, "--resume") == 75  # EX_TEMPFAIL: retry later
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and err.count("\n") == 1
        assert not parts_dir(out).exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_overwrite_of_a_copied_catalogue_deletes_nothing_of_the_original(world, tmp_path):
    """A catalogue copied to another folder with its record (.NAME.rrnet.json, which lists
    the absolute paths its run wrote): --overwrite of the copy deleted the original."""
    import shutil

    first, copy = tmp_path / "a" / "cat.parquet", tmp_path / "b" / "cat.parquet"
    run = dict(models=[world["sp"]], store=world["store"], device="cpu", per_star=True)
    run_inference(**run, out=first)
    stars = first.with_name("cat.per_star.parquet")
    copy.parent.mkdir()
    for path in (first, record_path(first)):
        shutil.copy(path, copy.parent / path.name)
    run_inference(**run, out=copy, overwrite=True)
    assert first.is_file() and stars.is_file() and record_path(first).is_file()
    assert copy.is_file() and copy.with_name("cat.per_star.parquet").is_file()


def test_precision_is_recorded_and_a_resume_in_another_precision_is_refused(
    world, tmp_path, capsys
) -> None:
    """--precision bf16 (autocast; on a CPU too) stays within 0.05 of each row's sigma
    of the exact run, says so in the provenance, and its parts are never mixed with
    fp32 parts; fp32 runs keep the record they always had."""
    exact, fast = tmp_path / "fp32.parquet", tmp_path / "bf16.parquet"
    assert _cli(world, exact) == 0
    assert _cli(world, fast, "--precision", "bf16") == 0
    a, b = pl.read_parquet(exact), pl.read_parquet(fast)
    ok = (a["status"] == "ok").to_numpy()
    shift = (b["teff"] - a["teff"]).abs() / a["teff_err"]
    assert ok.any() and 0 < shift.filter(ok).max() <= 0.05  # bf16 did run, and stays close
    for path, precision in ((exact, "fp32"), (fast, "bf16")):
        env = json.loads(pl.read_parquet_metadata(path)["rrnet.environment"])
        assert env["precision"] == precision and env["compile"] is False
    assert "precision" not in json.loads(record_path(exact).read_text())
    capsys.readouterr()
    assert _cli(world, fast, "--resume") == 2  # fp32 on bf16 parts
    assert "cannot resume" in (err := capsys.readouterr().err) and "other precision " in err
    assert _cli(world, fast, "--resume", "--precision", "bf16") == 0


def test_an_unknown_precision_is_a_one_line_error(world, tmp_path, capsys) -> None:
    with pytest.raises(InferError, match="--precision must be one of fp32, tf32, bf16"):
        run_inference(
            models=[world["sp"]], store=world["store"], out=tmp_path / "c.parquet",
            device="cpu", precision="fp16",
        )  # fmt: skip
    assert _cli(world, tmp_path / "d.parquet", "--precision", "fp16") == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'fp16'" in err and err.count("\n") == 1


@pytest.mark.slow
def test_compiled_run_equals_the_eager_run(world, tmp_path) -> None:
    eager, compiled = tmp_path / "eager.parquet", tmp_path / "compiled.parquet"
    assert _cli(world, eager) == 0
    assert _cli(world, compiled, "--compile") == 0
    a, b = pl.read_parquet(eager), pl.read_parquet(compiled)
    assert json.loads(pl.read_parquet_metadata(compiled)["rrnet.environment"])["compile"]
    assert _cli(world, eager, "--resume", "--compile") == 2  # the provenance says one of them
    assert a["status"].to_list() == b["status"].to_list()
    for column in ("teff", "teff_err", "logg", "fe_h"):
        np.testing.assert_allclose(b[column].to_numpy(), a[column].to_numpy(), rtol=1e-5)


def test_resume_of_a_finished_catalogue_in_another_format_is_refused(world, tmp_path, capsys):
    """A finished Parquet catalogue under a name without suffix, resumed with --format
    csv: "done", then its summary read the Parquet file as CSV and failed on a missing
    sidecar, said as a fault of the machine. Now refused with one line; the same
    choices still resume (nothing to do), and a killed run may finish in any format."""
    out = tmp_path / "cat"
    assert _cli(world, out) == 0
    before = out.read_bytes()
    capsys.readouterr()
    for extra in (["--format", "csv"], ["--column-style", "paper"]):
        assert _cli(world, out, "--resume", *extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is finished, written as parquet" in err[0], err
        assert "--overwrite" in err[0]
    assert _cli(world, out, "--resume") == 0
    assert out.read_bytes() == before
    assert _cli(world, out, "--overwrite", "--format", "csv") == 0
    import io

    import polars as pl

    assert pl.read_csv(out).height == pl.read_parquet(io.BytesIO(before)).height  # CSV now


@pytest.mark.parametrize("fmt", ["parquet", "fits"])
def test_the_record_beside_a_catalogue_holds_its_counts(world, tmp_path, fmt):
    """A workflow manager learnt the outcome only from the human lines or by reading the
    catalogue: the record (.NAME.rrnet.json) now holds the run's counts, here checked
    against the catalogue itself, in any output format."""
    from rrnet.inference.summary import summarize
    from rrnet.inference.writers import read_catalogue

    out = tmp_path / f"cat.{fmt}"
    assert _cli(world, out) == 0
    doc = json.loads(record_path(out).read_text())["summary"]
    want = summarize(read_catalogue(out)[0])
    assert (doc["rows"], doc["ok"], doc["recommended"]) == (want.rows, want.ok, want.recommended)
    assert doc["flagged"] == want.flagged
    assert {k: tuple(v) for k, v in doc["failed"].items()} == want.failed


def test_an_existing_output_is_refused_before_the_models_load(world, tmp_path, monkeypatch):
    """The refusal of an existing --out without --resume/--overwrite came after loading the
    models and opening the input: 10 s of waiting for a one-line answer."""
    out = tmp_path / "cat.parquet"
    assert _cli(world, out) == 0

    def no_plan(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the models were loaded")

    monkeypatch.setattr(run_module, "_plan", no_plan)
    with pytest.raises(InferError, match="exists: pass --resume"):
        run_inference([world["sp"]], store=world["store"], out=out, device="cpu",
                      progress=False)  # fmt: skip
