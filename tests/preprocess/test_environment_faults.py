"""Faults of the machine are not faults of the data: a full, read-only or forbidden scratch
folder or output disk stops the run with one line (exit 1), keeps finished shards, is never
recorded as a row's status, and --resume then finishes the same store."""

from __future__ import annotations

import errno
import os
import tempfile

import numpy as np
import polars as pl
import pytest

from helpers import REAL_FILE, needs_shared
from rrnet.cli.preprocess import main
from rrnet.preprocess import pipeline, shard_files, store_writer
from rrnet.preprocess.pipeline import preprocess_catalog
from rrnet.store import open_store, read_store_info

pytestmark = needs_shared

FAULTS = [errno.ENOSPC, errno.EROFS, errno.EIO, errno.EACCES, errno.EFBIG]


def _catalog(path, n=4):
    rows = [(REAL_FILE.name, "COADD_B", "COADD_R", -20.0 + i) for i in range(n)]
    pl.DataFrame(
        rows, schema=["filename", "extname_blue", "extname_red", "rv"], orient="row"
    ).write_csv(path)
    return path


def _failing_after(monkeypatch, target, attr, n_ok, code):
    real = getattr(target, attr)
    calls = {"n": 0}

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise OSError(code, "injected " + errno.errorcode[code], "/scratch/rrnet-x.fits")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, attr, fake)


@pytest.mark.parametrize("code", FAULTS)
@pytest.mark.parametrize("workers", [0, 2])
def test_scratch_fault_stops_the_run_and_resume_finishes(
    tmp_path, monkeypatch, capsys, code, workers
):
    catalog = _catalog(tmp_path / "cat.csv")
    args = [str(catalog), "--data-dir", str(REAL_FILE.parent), "--quiet", "--shard-size", "2"]
    args += ["--workers", str(workers)]
    with monkeypatch.context() as m:
        _failing_after(m, tempfile, "mkstemp", 1, code)  # the second file read fails
        assert main([*args, "--out", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "Traceback" not in err
    assert not (tmp_path / "s" / "manifest.parquet").exists()  # not marked complete
    assert main([*args, "--out", str(tmp_path / "s"), "--resume"]) == 0
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    store, ref = open_store(tmp_path / "s"), open_store(tmp_path / "ref")
    assert store.manifest["status"].to_list() == ["ok"] * 4
    assert store.manifest.equals(ref.manifest)
    np.testing.assert_array_equal(store.read_flux(range(4)), ref.read_flux(range(4)))


def _failing_from_shard(monkeypatch, shard, code):
    """Writes of rows into shard ``shard``'s flux files (and later ones) fail with ``code``
    (a float32 store's rows are written as they are finished, see shard_files)."""
    real = shard_files.pwrite_all

    def fake(fd, data, offset):
        name = os.readlink(f"/proc/self/fd/{fd}")
        rows = offset > 0  # not the header: fails on the writing thread, seen at commit
        if rows and any(f"-{i:06d}.npy" in name for i in range(shard, shard + 10)):
            raise OSError(code, "injected " + errno.errorcode[code], name)
        return real(fd, data, offset)

    monkeypatch.setattr(shard_files, "pwrite_all", fake)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_output_disk_fault_keeps_finished_shards(tmp_path, monkeypatch, code, dtype):
    catalog = _catalog(tmp_path / "cat.csv")
    out = tmp_path / "s"
    with monkeypatch.context() as m:
        if dtype == "float16":  # written whole by np.save once complete
            _failing_after(m, np, "save", 2, code)  # first shard (2 kinds) written, then full
        else:
            _failing_from_shard(m, 1, code)
        with pytest.raises(OSError):
            preprocess_catalog(
                catalog, REAL_FILE.parent, out, workers=0, shard_size=2, progress=False,
                dtype=dtype,
            )  # fmt: skip
    assert (out / "parts" / "manifest-000000.parquet").is_file()
    assert not list(out.rglob(".*.tmp"))
    done = store_writer.prepare_out(
        out,
        {**read_store_info(out)},
        resume=True,
        overwrite=False,
        catalog=pipeline._load_catalog(catalog, "rv", True),
    )
    assert done == {0}
    preprocess_catalog(
        catalog, REAL_FILE.parent, out, workers=0, shard_size=2, progress=False, resume=True,
        dtype=dtype,
    )  # fmt: skip
    assert open_store(out).manifest["status"].to_list() == ["ok"] * 4


def test_a_data_folder_gone_before_the_reading_starts_is_the_machines_fault(tmp_path):
    """An rrnet-run shard task that started after the data folder had gone (or on a node
    without the mount) recorded its rows missing_file: the run exited 0 with 280 of 300
    rows missing and --resume kept them (found by a user). The folder is not data."""
    from rrnet.utils.faults import is_machine_fault

    catalog = pl.DataFrame(
        {"filename": [REAL_FILE.name] * 2, "extname_blue": ["COADD_B"] * 2,
         "extname_red": ["COADD_R"] * 2, "rv": [-20.0] * 2}
    )  # fmt: skip
    with pytest.raises(OSError) as caught:
        list(pipeline.iter_preprocessed(catalog, tmp_path / "unmounted", workers=0))
    assert is_machine_fault(caught.value)
    assert "data folder is not there" in str(caught.value)
    # an empty folder is an unmounted file system's mount point (found by a user)
    (tmp_path / "mountpoint").mkdir()
    with pytest.raises(OSError, match="data folder is empty") as caught:
        list(pipeline.iter_preprocessed(catalog, tmp_path / "mountpoint", workers=0))
    assert is_machine_fault(caught.value)
    # a folder that is there with other files, without these: the rows' fault, as before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "med-1.fits.gz").write_bytes(b"")
    batch = next(pipeline.iter_preprocessed(catalog, tmp_path / "other", workers=0))
    assert batch.manifest["status"].to_list() == ["missing_file"] * 2


def test_a_missing_files_reason_names_it_however_the_folder_was_spelled(tmp_path, monkeypatch):
    """rrnet-run (its driver hands shards the real path) and rrnet-infer (the path as
    typed) wrote different reasons for the same missing file (found by a user)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "another.fits.gz").write_bytes(b"")  # an empty folder: unmounted
    monkeypatch.chdir(tmp_path)
    catalog = pl.DataFrame(
        {"filename": ["gone.fits.gz"], "extname_blue": ["COADD_B"], "extname_red": ["COADD_R"],
         "rv": [-20.0]}
    )  # fmt: skip
    reasons = {
        spelling: next(pipeline.iter_preprocessed(catalog, spelling, workers=0)).manifest["reason"][
            0
        ]
        for spelling in ("data", "./data/../data", str(tmp_path / "data"))
    }
    assert set(reasons.values()) == {
        f"file not found: {tmp_path.resolve() / 'data' / 'gone.fits.gz'}"
    }


def test_a_data_folder_that_vanishes_mid_run_stops_it_not_its_rows(tmp_path, capsys):
    """Moved away (or unmounted) during a run, every later file was recorded missing_file
    with exit 0, and --resume never read them again."""
    import shutil

    data = tmp_path / "data"
    data.mkdir()
    names = [f"med-{k}.fits.gz" for k in range(10)]
    for name in names:
        shutil.copy(REAL_FILE, data / name)
    catalog = pl.DataFrame(
        {"filename": names, "extname_blue": ["COADD_B"] * 10, "extname_red": ["COADD_R"] * 10,
         "rv": [-20.0] * 10}
    )  # fmt: skip
    # one file per read, two ahead: the later files are read after the folder is gone
    batches = pipeline.iter_preprocessed(catalog, data, batch_size=2, workers=0, reader="fitsio")
    first = next(batches)
    assert (first.manifest["status"] == "ok").all()
    data.rename(tmp_path / "gone")
    statuses = []  # batches read ahead before the move are fine; no row is called missing
    with pytest.raises(OSError) as caught:
        for batch in batches:
            statuses += batch.manifest["status"].to_list()
    assert "missing_file" not in statuses
    assert "data folder vanished" in str(caught.value)
    from rrnet.utils.faults import is_machine_fault

    assert is_machine_fault(caught.value)
    # a file missing from a folder that is still there is the row's fault, as before
    (tmp_path / "gone").rename(data)
    (data / names[3]).unlink()
    table = preprocess_catalog(catalog, data, tmp_path / "store", progress=False).manifest
    assert table["status"].to_list() == ["ok"] * 3 + ["missing_file"] + ["ok"] * 6
