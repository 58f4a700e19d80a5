"""A store has one writer, is resumed only from its own inputs, and --overwrite deletes
only what rrnet wrote."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import polars as pl
import pytest

from helpers import REAL_FILE, needs_shared
from rrnet.cli.preprocess import main
from rrnet.preprocess.pipeline import preprocess_catalog
from rrnet.store import StoreError

pytestmark = needs_shared


def _catalog(path, rvs=(-20.0,)):
    rows = [(REAL_FILE.name, "COADD_B", "COADD_R", rv) for rv in rvs]
    pl.DataFrame(
        rows, schema=["filename", "extname_blue", "extname_red", "rv"], orient="row"
    ).write_csv(path)
    return path


def _args(catalog, out, *extra):
    return [str(catalog), "--data-dir", str(REAL_FILE.parent), "--out", str(out), "--quiet", *extra]


def test_resume_of_a_finished_store_checks_the_catalogue(tmp_path, capsys):
    out = tmp_path / "store"
    assert main(_args(_catalog(tmp_path / "a.csv", (-20.0,)), out)) == 0
    other = _catalog(tmp_path / "b.csv", (15.0,))  # same length, other values
    assert main(_args(other, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "another catalogue" in err and err.count("\n") == 1
    assert main(_args(tmp_path / "a.csv", out, "--resume")) == 0  # its own: reused


def test_overwrite_keeps_foreign_files_and_refuses_foreign_folders(tmp_path, capsys):
    catalog = _catalog(tmp_path / "a.csv")
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "store.json").write_text('{"mine": 1}')
    (fake / "manifest.parquet").write_text("precious")
    (fake / "shards").mkdir()
    (fake / "shards" / "x.npy").write_text("precious")
    assert main(_args(catalog, fake, "--overwrite")) == 2
    assert "not rrnet's" in capsys.readouterr().err
    assert (fake / "store.json").read_text() == '{"mine": 1}'
    assert (fake / "manifest.parquet").read_text() == "precious"
    assert (fake / "shards" / "x.npy").read_text() == "precious"

    out = tmp_path / "store"
    assert main(_args(catalog, out)) == 0
    (out / "notes.txt").write_text("mine")
    (out / "shards" / "keep.npy").write_text("mine")
    assert main(_args(catalog, out, "--overwrite")) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "shards" / "keep.npy").read_text() == "mine"


def test_device_node_as_out_is_refused(tmp_path, capsys):
    catalog = _catalog(tmp_path / "a.csv")
    assert main(_args(catalog, "/dev/null", "--overwrite")) == 2
    assert "not a directory" in capsys.readouterr().err
    with pytest.raises(StoreError, match="not a directory"):
        preprocess_catalog(catalog, REAL_FILE.parent, os.devnull, overwrite=True, progress=False)


HOLD = textwrap.dedent(
    """
    import sys, time
    from rrnet.utils.lock import output_lock
    with output_lock(sys.argv[1], directory=True, what="store"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def test_second_writer_of_a_store_fails_at_once(tmp_path, capsys):
    catalog = _catalog(tmp_path / "a.csv")
    out = tmp_path / "store"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(_args(catalog, out, "--resume")) == 75  # EX_TEMPFAIL: retry later
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and err.count("\n") == 1
        assert not (out / "store.json").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_resume_with_another_data_dir_is_refused(tmp_path, capsys):
    """An unfinished store resumed with another --data-dir was accepted: the rows done
    with the first folder (all missing_file, say) were silently kept."""
    import json
    import shutil

    other = tmp_path / "copy"
    other.mkdir()
    shutil.copy(REAL_FILE, other / REAL_FILE.name)
    catalog, out = _catalog(tmp_path / "a.csv", (-20.0, -21.0)), tmp_path / "store"
    assert main([*_args(catalog, out), "--shard-size", "1"]) == 0
    info = json.loads((out / "store.json").read_text())
    assert info["data_dir"] == os.path.realpath(REAL_FILE.parent)
    (out / "store.json").write_text(json.dumps(info | {"complete": False}))  # as if cut
    moved = [str(catalog), "--data-dir", str(other), "--out", str(out), "--quiet"]
    assert main([*moved, "--shard-size", "1", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "begun with --data-dir" in err and err.count("\n") == 1
    assert main([*_args(catalog, out), "--shard-size", "1", "--resume"]) == 0
    # Finished, then resumed from another folder whose sub-folders --find-files searches:
    # the file names it finds differ, and the folder is the cause to name.
    (tmp_path / "found" / "sub").mkdir(parents=True)
    shutil.copy(REAL_FILE, tmp_path / "found" / "sub" / REAL_FILE.name)
    found = [str(catalog), "--data-dir", str(tmp_path / "found"), "--find-files"]
    assert main([*found, "--out", str(out), "--quiet", "--shard-size", "1", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "begun with --data-dir" in err and err.count("\n") == 1
    # finished, same catalogue, another folder: refused too (a rerun to mend missing_file
    # rows with the right folder got "done" and the stale rows)
    assert main([*moved, "--shard-size", "1", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "begun with --data-dir" in err and err.count("\n") == 1


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_every_store_file_has_the_mode_the_umask_gives(tmp_path, mask):
    """A survey shares its store: the shards were written 0600 (mkstemp's mode, kept by
    the rename), so another user could read the manifest but not the flux."""
    import stat

    previous = os.umask(mask)
    try:
        assert main(_args(_catalog(tmp_path / "a.csv", (-20.0, 5.0)), tmp_path / "store")) == 0
    finally:
        os.umask(previous)
    files = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert any(p.suffix == ".npy" for p in files)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o666 & ~mask}, modes


def test_a_closed_output_pipe_does_not_stop_the_run(tmp_path):
    """``rrnet-preprocess ... 2>&1 | head``: the reader goes, the writes to the pipe fail
    (BrokenPipeError); the run still finishes its store and exits 0."""
    catalog = _catalog(tmp_path / "a.csv", (-20.0, 5.0, 10.0))
    out = tmp_path / "store"
    args = [str(catalog), "--data-dir", str(REAL_FILE.parent), "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rrnet.cli.preprocess", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    proc.stdout.close()  # the reader is gone before the first line
    assert proc.wait(timeout=300) == 0
    from rrnet.store import open_store

    assert open_store(out).manifest["status"].to_list() == ["ok"] * 3
