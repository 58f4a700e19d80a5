"""rrnet-run on a 2-worker LocalCluster against the single-machine ``rrnet.infer`` oracle:
equal row for row; a killed worker still gives every row exactly once; a finished rerun
does nothing; a shard that keeps failing is reported and resumed; an all-bad shard is
reported with reasons; shards never split a file; CLI errors are one line."""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers import EXPOSURES, REAL_FILE, make_checkpoint, needs_shared
from rrnet.cli.run import main
from rrnet.cluster import RunError, plan_shards, report_path, run_cluster, run_dir
from rrnet.cluster.task import FAULT_AFTER_WRITE_ENV, FAULT_ENV, FAULT_RAISE_ENV
from rrnet.inference import infer
from rrnet.labels import CA_LABELS, SP_LABELS
from rrnet.preprocess.settings import PreprocessSettings

pytestmark = needs_shared

pytest.importorskip("distributed")

N_FILES = 48
SHARD = 40
# Torch CPU kernels round differently for different batch shapes; one spectrum per forward
# call makes both sides bit-identical whatever the shard boundaries.
BATCH = 1


def catalogue(data_dir: Path) -> pl.DataFrame:
    """N_FILES copies of the real file (5 spectra each, varied rv) and a run of bad files."""
    rows = []
    for k in range(N_FILES):
        name = f"med-{k:03d}.fits.gz"
        shutil.copy(REAL_FILE, data_dir / name)
        arms = [("COADD_B", "COADD_R")] + [(f"B-{i}", f"R-{i}") for i in EXPOSURES]
        rows += [(name, b, r, -40.0 + 3.0 * k + 5.0 * j) for j, (b, r) in enumerate(arms)]
    (data_dir / "corrupt.fits.gz").write_bytes(b"not a FITS file")
    bad = [("gone.fits.gz", "COADD_B", "COADD_R", 0.0)] * 39 + [("corrupt.fits.gz", "B", "R", 0)]
    middle = 2 * SHARD  # a shard start; the SHARD bad rows fill that shard exactly
    rows = rows[:middle] + bad + rows[middle:]
    columns = ["filename", "extname_blue", "extname_red", "rv"]
    return pl.DataFrame(rows, schema=columns, orient="row")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cluster")
    data = root / "data"
    data.mkdir()
    catalogue(data).write_parquet(root / "cat.parquet")
    fp = PreprocessSettings().fingerprint()
    sp = make_checkpoint(root / "SP", SP_LABELS, members=2, seed=1, preprocessing=fp)
    ca = make_checkpoint(root / "CA", CA_LABELS, members=2, seed=2, preprocessing=fp)
    world = {"root": root, "data": data, "cat": root / "cat.parquet", "models": [sp, ca]}
    oracle = root / "oracle.parquet"
    world["oracle"] = infer(world["models"], catalog=world["cat"], data_dir=data, out=oracle,
                            device="cpu", batch_size=BATCH)  # fmt: skip
    world["oracle_meta"] = pl.read_parquet_metadata(oracle)
    return world


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    with cluster, Client(cluster) as c:
        yield c


def run(world: dict, client, out: Path, data_dir: Path | None = None, **kwargs) -> dict:
    options = dict(shard_size=SHARD, device="cpu", batch_size=BATCH) | kwargs
    data = data_dir or world["data"]
    return run_cluster(world["models"], world["cat"], data, out, client=client, **options)


@pytest.fixture(scope="module")
def finished(world: dict, client, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("finished") / "cat.parquet"
    import torch

    # "auto" is resolved by each worker (cpu here; the oracle's rows are cpu rows)
    return out, run(world, client, out, device="cpu" if torch.cuda.is_available() else "auto")


def test_shards_are_whole_files_in_order(world: dict) -> None:
    cat = pl.read_parquet(world["cat"])
    shards = plan_shards(cat, SHARD)
    assert shards[0].start == 0 and shards[-1].stop == cat.height
    assert all(a.stop == b.start for a, b in itertools.pairwise(shards))
    names = cat["filename"].to_list()
    for shard in shards[1:]:
        assert names[shard.start] != names[shard.start - 1]  # never inside a file's run
    assert all(s.rows >= SHARD for s in shards[:-1])
    assert plan_shards(cat, SHARD) == shards
    assert len(plan_shards(cat, 10**6)) == 1


@pytest.mark.slow
def test_equals_single_machine_row_for_row(world: dict, finished: tuple[Path, dict]) -> None:
    out, report = finished
    got, oracle = pl.read_parquet(out), world["oracle"]
    assert oracle.height == N_FILES * 5 + SHARD and (oracle["status"] == "ok").sum() == N_FILES * 5
    assert got.schema == oracle.schema
    assert got.equals(oracle)
    meta, expected = pl.read_parquet_metadata(out), world["oracle_meta"]
    derived = ("created", "ARROW:schema", "table_meta_yaml")  # the latter two embed `created`
    derived += ("environment",)  # the driver records no threads or batch size (per worker)
    assert {k: v for k, v in meta.items() if not any(d in k for d in derived)} == {
        k: v for k, v in expected.items() if not any(d in k for d in derived)
    }
    environment = {
        k: json.loads(m["rrnet.environment"]) for k, m in (("run", meta), ("one", expected))
    }
    same = ("versions", "precision", "compile", "device")  # the device the models ran on
    assert {k: environment["run"][k] for k in same} == {k: environment["one"][k] for k in same}
    assert environment["run"]["device_requested"] in ("auto", "cpu")
    assert report["complete"] and report["rows_in"] == report["rows_out"] == oracle.height
    assert report["rows_by_status"] == dict(oracle["status"].value_counts().iter_rows())
    assert report["shards_computed"] == report["shards"] == len(plan_shards(oracle, SHARD))
    assert report["shards_retried"] == 0 and report["failed_shards"] == []
    assert json.loads(report_path(out).read_text()) == report
    assert not (run_dir(out) / "parts").exists()


def _worker_threads() -> tuple[int, str | None, str | None]:
    import os

    import torch

    env = os.environ
    return torch.get_num_threads(), env.get("RRNET_NUM_THREADS"), env.get("OMP_NUM_THREADS")


def test_each_worker_runs_on_its_share_of_the_cores(client, finished) -> None:
    """Two worker processes of a 2-core job: the ones that ran shards did so on
    cores // processes = 1 thread each (PyTorch, the Rust kernels, the OOD scoring), not
    on every core of the machine each."""
    seen = [t for t in client.run(_worker_threads).values() if t[1] is not None]
    assert seen, "no worker ran a shard"
    for torch_threads, rrnet_threads, _omp in seen:
        assert (torch_threads, rrnet_threads) == (1, "1")


def test_a_catalogue_without_rvs_gets_them_measured_as_infer_does(world, client, tmp_path) -> None:
    """rrnet-run measures the RVs a catalogue lacks (``--rv auto``, the default), as
    rrnet-infer --catalog and rrnet-preprocess do, with the same rows (it used to refuse
    such a catalogue, and made every row with a null RV bad_rv); ``--rv catalog`` keeps
    that behaviour."""
    names = ["med-000.fits.gz", "med-001.fits.gz"]
    cat = pl.read_parquet(world["cat"]).filter(pl.col("filename").is_in(names)).drop("rv")
    cat.write_csv(tmp_path / "norv.csv")
    models = [str(m) for m in world["models"]]
    common = ["--data-dir", str(world["data"]), "--model", *models, "--device", "cpu",
              "--batch-size", str(BATCH), "--cluster", client.scheduler.address,
              "--quiet"]  # fmt: skip
    norv, null = str(tmp_path / "norv.csv"), str(tmp_path / "null.csv")
    assert main([norv, *common, "--out", str(tmp_path / "a.parquet")]) == 0
    got = pl.read_parquet(tmp_path / "a.parquet")
    oracle = infer(world["models"], catalog=tmp_path / "norv.csv", data_dir=world["data"],
                   out=tmp_path / "oracle.parquet", device="cpu", batch_size=BATCH,
                   preprocess={"rv_mode": "auto"})  # fmt: skip
    assert got.height == cat.height and (got["status"] == "ok").all()
    assert got.equals(oracle)
    # --rv catalog: no RV column is an unusable catalogue, null RVs are bad_rv rows
    refused = tmp_path / "b.parquet"
    assert main([norv, *common, "--out", str(refused), "--rv", "catalog"]) == 2
    cat.with_columns(rv=pl.lit(None, pl.Float64)).write_csv(null)
    assert main([null, *common, "--out", str(refused), "--rv", "catalog"]) == 3  # none labelled
    assert (pl.read_parquet(refused)["status"] == "bad_rv").all()


def test_a_synthetic_domain_checkpoint_marks_every_row_as_rrnet_infer_does(
    world, client, tmp_path, caplog
) -> None:
    """A checkpoint trained on rrnet-synth labels applied to files: rrnet-run warns at the
    start and sets SYNTHETIC_DOMAIN on every row, as rrnet-infer does (it did neither)."""
    import logging

    from rrnet.inference import QualityBit

    domain = {"labels": "synthetic", "source": "rrnet-synth", "store": str(tmp_path / "s")}
    fp = PreprocessSettings().fingerprint()
    syn = make_checkpoint(tmp_path / "syn", SP_LABELS, members=2, seed=3, preprocessing=fp,
                          training={"domain": domain})  # fmt: skip
    cat = pl.read_parquet(world["cat"]).filter(pl.col("filename") == "med-000.fits.gz")
    with caplog.at_level(logging.WARNING):
        run_cluster([syn], cat, world["data"], tmp_path / "syn.parquet", client=client,
                    device="cpu", batch_size=BATCH)  # fmt: skip
    assert any("synthesised spectra" in r.getMessage() for r in caplog.records)
    oracle = infer([syn], catalog=cat, data_dir=world["data"], device="cpu", batch_size=BATCH)
    got = pl.read_parquet(tmp_path / "syn.parquet")
    assert ((got["quality_bits"] & int(QualityBit.SYNTHETIC_DOMAIN)) != 0).all()
    assert got.select("status", "quality_bits", "flag", "reason").equals(
        oracle.select("status", "quality_bits", "flag", "reason")
    )


def test_raw_errors_as_rrnet_infer_and_a_resume_cannot_mix_them(world, client, tmp_path) -> None:
    """--raw-errors quotes paper eq. 3 errors as rrnet-infer --raw-errors does; resuming
    a calibrated run with raw errors (or back) is refused: one catalogue, one kind."""
    model = tmp_path / "SP"
    shutil.copytree(world["models"][0], model)
    doc = {"format": "rrnet-calibration", "version": 2,
           "labels": {SP_LABELS[0]: {"a": 0.7, "b": 0.0, "floor": 0.0}}}  # errors x2  # fmt: skip
    (model / "calibration.json").write_text(json.dumps(doc))
    cat = pl.read_parquet(world["cat"]).filter(pl.col("filename") == "med-000.fits.gz")
    cat.write_parquet(tmp_path / "cat.parquet")
    common = [str(tmp_path / "cat.parquet"), "--data-dir", str(world["data"]), "--model",
              str(model), "--device", "cpu", "--batch-size", str(BATCH), "--cluster",
              client.scheduler.address, "--quiet"]  # fmt: skip
    raw, calibrated = tmp_path / "raw.parquet", tmp_path / "cal.parquet"
    assert main([*common, "--out", str(raw), "--raw-errors"]) == 0
    assert main([*common, "--out", str(calibrated)]) == 0
    kw = dict(catalog=cat, data_dir=world["data"], device="cpu", batch_size=BATCH,
              preprocess={"rv_mode": "auto"})  # fmt: skip
    want_raw, want_cal = infer([model], calibrate=False, **kw), infer([model], **kw)
    got_raw, got_cal = pl.read_parquet(raw), pl.read_parquet(calibrated)
    assert got_raw["teff_err"].equals(want_raw["teff_err"])
    assert got_cal["teff_err"].equals(want_cal["teff_err"])
    assert not got_raw["teff_err"].equals(got_cal["teff_err"])
    assert main([*common, "--out", str(calibrated), "--resume", "--raw-errors"]) == 2


def test_files_outside_the_data_dir_only_with_the_flag(world, client, tmp_path) -> None:
    """As rrnet-infer --catalog: a file named by an absolute path outside --data-dir is
    an outside_data_dir row unless --allow-outside-data-dir."""
    cat = pl.read_parquet(world["cat"]).filter(pl.col("filename") == "med-000.fits.gz")
    elsewhere = str((world["data"] / "med-000.fits.gz").resolve())
    cat.with_columns(filename=pl.lit(elsewhere)).write_parquet(tmp_path / "abs.parquet")
    (tmp_path / "empty").mkdir()
    common = [str(tmp_path / "abs.parquet"), "--data-dir", str(tmp_path / "empty"),
              "--model", str(world["models"][0]), "--device", "cpu", "--batch-size",
              str(BATCH), "--cluster", client.scheduler.address, "--quiet"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "a.parquet")]) == 3  # no row labelled
    assert (pl.read_parquet(tmp_path / "a.parquet")["status"] == "outside_data_dir").all()
    assert main([*common, "--out", str(tmp_path / "b.parquet"), "--allow-outside-data-dir"]) == 0
    assert (pl.read_parquet(tmp_path / "b.parquet")["status"] == "ok").all()


def test_rerun_of_a_finished_run_does_nothing(world: dict, client, finished) -> None:
    out, report = finished
    stamp = out.stat().st_mtime_ns, report_path(out).stat().st_mtime_ns
    again = run(world, client, out, resume=True)
    assert again["shards_computed"] == 0 and again["shards_skipped"] == report["shards"]
    assert out.stat().st_mtime_ns == stamp[0]  # the output is not rewritten
    # issue 23: the report is rewritten on every run, and says this one computed nothing
    assert report_path(out).stat().st_mtime_ns != stamp[1]
    assert json.loads(report_path(out).read_text()) == again and again["rerun"]
    with pytest.raises(ValueError, match="--resume"):
        run(world, client, out)
    # asked in another column style (or format, under a name without suffix): refused,
    # where it kept the old file and reported done; the catalogue untouched
    with pytest.raises(RunError, match="is finished, written as parquet in the identifier"):
        run(world, client, out, resume=True, column_style="paper")
    assert out.stat().st_mtime_ns == stamp[0]


def test_all_bad_shard_is_reported_with_reasons(world: dict, finished) -> None:
    _, report = finished
    [bad] = report["shards_without_ok_rows"]
    assert (bad["shard"], bad["start"], bad["stop"]) == (2, 2 * SHARD, 3 * SHARD)
    reasons = world["oracle"][2 * SHARD : 3 * SHARD]["reason"].value_counts().iter_rows()
    assert bad["reasons"] == dict(reasons)
    assert any("gone.fits.gz" in r for r in bad["reasons"])
    assert any("corrupt.fits.gz" in r for r in bad["reasons"])


@pytest.mark.slow
def test_killed_worker_costs_one_retry_and_no_row(world, client, tmp_path, monkeypatch) -> None:
    marker = tmp_path / "killed"
    monkeypatch.setenv(FAULT_ENV, str(marker))
    out = tmp_path / "cat.parquet"
    report = run(world, client, out)
    assert marker.exists()  # a worker really died (os._exit) inside a shard
    assert report["complete"] and report["shards_retried"] == 1
    assert report["attempts"] == report["shards"] + 1
    got = pl.read_parquet(out)
    assert got["row"].to_list() == list(range(world["oracle"].height))  # each row once
    assert got.equals(world["oracle"])


def test_find_files_locates_the_files_in_sub_folders(world, client, tmp_path) -> None:
    """As rrnet-preprocess --find-files: LAMOST downloads come in sub-folders."""
    nested = tmp_path / "data" / "night1"
    shutil.copytree(world["data"], nested)
    out = tmp_path / "cat.parquet"
    report = run(world, client, out, data_dir=tmp_path / "data", preprocess={"find_files": True})
    assert report["complete"]
    got = pl.read_parquet(out)
    oracle = world["oracle"]
    assert got.drop("filename", "reason").equals(oracle.drop("filename", "reason"))
    found = got.filter(pl.col("status") != "missing_file")["filename"]
    assert found.len() > 0 and found.str.starts_with("night1/").all()


def test_a_shard_written_before_its_task_failed_is_kept_not_failed(
    world, client, tmp_path, monkeypatch
) -> None:
    """Memory pressure can kill a worker after its part's rename: the rows are whole."""
    monkeypatch.setenv(FAULT_AFTER_WRITE_ENV, "1")
    out = tmp_path / "cat.parquet"
    report = run(world, client, out, retries=0)
    assert report["complete"] and report["failed_shards"] == []
    assert report["shards_computed"] == report["shards"]
    assert report["rows_computed"] == world["oracle"].height
    assert pl.read_parquet(out).equals(world["oracle"])


@pytest.mark.slow
def test_failing_shard_is_reported_then_resumed(world, client, tmp_path, monkeypatch) -> None:
    out = tmp_path / "cat.fits"
    monkeypatch.setenv(FAULT_RAISE_ENV, "1")
    report = run(world, client, out, retries=1)
    assert not report["complete"]
    [failed] = report["failed_shards"]
    assert failed["shard"] == 1 and "injected fault in shard 1" in failed["error"]
    assert report["attempts"] == report["shards"] + 1  # one retry of the failing shard
    from rrnet.inference import read_catalogue

    got, _ = read_catalogue(out, column_style="identifier")
    oracle = world["oracle"]
    assert got["row"].to_list() == list(range(oracle.height))
    lost = np.arange(oracle.height)
    lost = (lost >= failed["start"]) & (lost < failed["stop"])
    assert set(got.filter(lost)["status"]) == {"shard_failed"}
    assert all("injected fault" in r for r in got.filter(lost)["reason"])
    assert got.filter(~lost)["status"].to_list() == oracle.filter(~lost)["status"].to_list()
    assert report["rows_by_status"]["shard_failed"] == failed["stop"] - failed["start"]

    monkeypatch.delenv(FAULT_RAISE_ENV)
    resumed = run(world, client, out, resume=True)
    assert resumed["complete"] and resumed["shards_computed"] == 1
    got, _ = read_catalogue(out, column_style="identifier")
    assert got.select(oracle.columns).equals(oracle)


def _cli_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        code = main(list(args))
        raise SystemExit(code)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rrnet-run: error: ")
    return lines[0]


def test_cli_errors_are_one_line(world: dict, tmp_path: Path, capsys) -> None:
    base = [str(world["cat"]), "--data-dir", str(world["data"]), "--out", str(tmp_path / "o.pq")]
    models = ["--model", *map(str, world["models"])]
    assert "no config.json" in _cli_error(capsys, *base, "--model", str(tmp_path))
    assert "--model" in _cli_error(capsys, *base)
    assert "shard" in _cli_error(capsys, *base, *models, "--shard-size", "0")
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster]\nqueues = 'x'\n")
    assert "unknown cluster" in _cli_error(capsys, *base, *models, "--cluster", "condor")
    assert "queues" in _cli_error(capsys, *base, *models, "--config", str(bad))
    bad.write_text("[clustre]\nkind = 'slurm'\n")  # a misspelt table is not a setting
    assert "has no [cluster] table (has [clustre])" in _cli_error(
        capsys, *base, *models, "--config", str(bad)
    )
    assert "directory" in _cli_error(capsys, base[0], "--data-dir", str(tmp_path / "no"),
                                     *base[3:], *models)  # fmt: skip


def test_cli_dry_run_prints_the_slurm_job(tmp_path: Path, capsys) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(
        '[cluster]\nkind = "slurm"\nqueue = "gpu"\naccount = "astro"\ncores = 16\n'
        'memory = "64GiB"\nwalltime = "02:00:00"\ngpus_per_job = 2\n'
        'job_script_prologue = ["module load cuda"]\n'
    )
    args = ["cat.csv", "--data-dir", ".", "--model", "m", "--out", "o.pq"]
    assert main([*args, "--config", str(config), "--account", "other", "--dry-run"]) == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH -p gpu", "#SBATCH -A other", "--gres=gpu:2", "-t 02:00:00"):
        assert line in script
    assert "module load cuda" in script and "--nworkers 2" in script
    # the jobs log at Dask's own level: they inherit the driver's quiet setting, and their
    # logs had held nothing (found by a user); a site's own lines come after it
    assert script.index("DASK_LOGGING__DISTRIBUTED=info") < script.index("module load cuda")


def test_without_dask_the_command_names_the_extra_in_one_line(capsys, monkeypatch) -> None:
    """The cluster modules import dask late: without the extra, rrnet-run had ended in
    'unexpected ModuleNotFoundError' (exit 1) instead of naming the extra."""
    for name in ("dask", "dask.distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    args = ["cat.csv", "--data-dir", ".", "--model", "m", "--out", "o.pq", "--dry-run"]
    assert main([*args, "--cluster", "slurm"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cluster extra" in line and "unexpected" not in line


def test_cli_dry_run_creates_no_log_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    """--dry-run only prints: the log folder it names was created (dask-jobqueue)."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "cluster.toml"
    config.write_text('[cluster]\nkind = "slurm"\nlog_directory = "logs/dask"\n')
    args = ["cat.csv", "--data-dir", ".", "--model", "m", "--out", "o.pq"]
    assert main([*args, "--config", str(config), "--dry-run"]) == 0
    script = capsys.readouterr().out
    assert "logs/dask/" in script and not (tmp_path / "logs").exists()


@pytest.mark.parametrize(("kind", "line"), [("pbs", "#PBS -A astro"), ("sge", "#$ -P astro")])
def test_cli_dry_run_puts_the_account_where_each_scheduler_wants_it(
    tmp_path: Path, capsys, kind: str, line: str
) -> None:
    """``account`` is PBS's account (-A) and SGE's project (-P; SGECluster has no account:
    the dry run failed with an unexpected ValueError)."""
    config = tmp_path / "cluster.toml"
    config.write_text(
        f'[cluster]\nkind = "{kind}"\nqueue = "long"\naccount = "astro"\ncores = 4\n'
        'memory = "16GiB"\nwalltime = "02:00:00"\n'
    )
    args = ["cat.csv", "--data-dir", ".", "--model", "m", "--out", "o.pq"]
    assert main([*args, "--config", str(config), "--dry-run"]) == 0
    assert line in capsys.readouterr().out


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ('job_script_prologue = "module load x"', "must be a list of strings"),
        ('job_extra_directives = "--qos=long"', "must be a list of strings"),
        ('cores = "four"', "must be a whole number"),
        ('worker_wait = "x"', "must be a number"),
        ('memory = "lots"', "is not a size like 16GiB"),
        ('memory = "64"', "each needs at least 1 GiB"),  # 64 bytes: workers restarted for ever
        ('memory = "0GiB"', "each needs at least 1 GiB"),
        ('memory = "600MiB"', "each needs at least 1 GiB"),  # a demo worker needs ~540 MiB
        ('walltime = "forever"', "is not a time like 04:00:00"),
        ("[cluster.extra]\nfoo = 1", "dask-jobqueue refuses the slurm settings"),
    ],
)
# dask-jobqueue's half-built cluster (refused extra key) warns from __del__ in tests only
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_cli_settings_of_the_wrong_kind_are_one_line_exit_2(
    tmp_path: Path, capsys, setting, needle
):
    """A string where a list is wanted wrote the job script one character per line (exit
    0); other wrong kinds were 'unexpected TypeError' (exit 1)."""
    config = tmp_path / "cluster.toml"
    config.write_text(f'[cluster]\nkind = "slurm"\nqueue = "q"\n{setting}\n')
    args = ["cat.csv", "--data-dir", ".", "--model", "m", "--out", "o.pq"]
    assert main([*args, "--config", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_cli_refuses_a_data_dir_that_is_not_a_directory(tmp_path: Path, capsys) -> None:
    args = ["cat.csv", "--data-dir", str(tmp_path / "nowhere"), "--model", "m", "--out", "o.pq"]
    assert main(args) == 2
    assert "--data-dir is not a directory" in capsys.readouterr().err


def test_sge_without_a_parallel_environment_is_warned(tmp_path: Path, caplog) -> None:
    """SGE gives a job one slot unless a -pe asks for more (names are per site, so not
    guessed): a job of 8 worker processes without one is warned about."""
    args = ["cat.csv", "--data-dir", ".", "--model", "m", "--out", "o.pq", "--dry-run"]
    for extra, warned in (("", True), ('job_extra_directives = ["-pe smp 8"]\n', False)):
        config = tmp_path / "cluster.toml"
        config.write_text(f'[cluster]\nkind = "sge"\nqueue = "q"\ncores = 8\n{extra}')
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert main([*args, "--config", str(config)]) == 0
        assert ("without a parallel environment" in caplog.text) is warned


def test_a_full_disk_stops_the_run_at_the_first_shard_not_every_shard() -> None:
    """A full disk failed every shard in turn (three attempts each, a traceback per
    attempt) and the run went on to merge; the first such failure stops it, resumable."""
    import errno

    import polars as pl

    from rrnet.cluster.driver import _collect, _Outcome
    from rrnet.cluster.keeper import RunAborted
    from rrnet.cluster.plan import Shard

    class Failed:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def result(self, timeout: float) -> None:
            raise self.exc

    outcome = _Outcome()
    full = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(RunAborted, match=r"No space left on device.*machine"):
        _collect(Failed(full), Shard(3, 0, 10), outcome)
    wrapped = pl.exceptions.ComputeError("parquet: No space left on device (os error 28)")
    with pytest.raises(RunAborted):
        _collect(Failed(wrapped), Shard(4, 10, 20), outcome)
    assert _collect(Failed(ValueError("bad shard")), Shard(5, 20, 30), outcome)  # goes on
    assert outcome.failures[5] == "ValueError: bad shard"


def test_a_failing_cluster_shutdown_does_not_hide_the_runs_own_error(monkeypatch) -> None:
    """Resubmissions used up ended in "unexpected AssertionError: Status.running": dask's
    shutdown asserted on the worker jobs it had lost, over the run's own one-line cause
    (found by a user on SLURM)."""
    import contextlib

    import distributed

    from rrnet.cluster import config

    class LostJobs:
        def close(self) -> None:
            raise AssertionError("Status.running")

    monkeypatch.setattr(config, "make_cluster", lambda settings: LostJobs())
    monkeypatch.setattr(distributed, "Client", contextlib.nullcontext)
    cause = "worker jobs keep ending; gave up after 4 resubmissions"
    with pytest.raises(RunError, match="gave up after 4 resubmissions"), config.connect(None):
        raise RunError(cause)
    with pytest.raises(AssertionError), config.connect(None):  # nothing else to say: said
        pass


def test_a_shard_dask_gave_up_on_says_memory_in_one_line() -> None:
    """At --memory 600MiB every shard failed as ~400 characters of Dask advice that did
    not say memory (found by a user); other errors keep their type and first line."""
    from distributed.scheduler import KilledWorker

    from rrnet.cluster.driver import _failure_text

    text = _failure_text(KilledWorker("rrnet-shard-000001", "tcp://10.0.0.1:4000", 3))
    assert "memory" in text and "--memory" in text and "\n" not in text and len(text) < 200
    assert _failure_text(ValueError("bad thing\nmore")) == "ValueError: bad thing"


def test_a_run_whose_every_shard_failed_exits_1_not_3(world, client, tmp_path, monkeypatch):
    """Every row ``shard_failed`` (one shard, its worker failing) is the machine's fault,
    resumable: it exited 3, "the data's fault, do not retry", because no row was ok."""
    monkeypatch.setenv(FAULT_RAISE_ENV, "0")
    common = [str(world["cat"]), "--data-dir", str(world["data"]), "--model",
              str(world["models"][0]), "--device", "cpu", "--batch-size", str(BATCH),
              "--cluster", client.scheduler.address, "--quiet", "--retries", "0",
              "--shard-size", "100000"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "a.parquet")]) == 1
    assert (pl.read_parquet(tmp_path / "a.parquet")["status"] == "shard_failed").all()
