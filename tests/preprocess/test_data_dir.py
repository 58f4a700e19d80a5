"""Paths outside --data-dir are refused by default (status outside_data_dir), a flag allows
them, and a directory named as a file says so."""

from __future__ import annotations

import shutil

import polars as pl

from helpers import REAL_FILE, needs_shared
from rrnet.cli.preprocess import main
from rrnet.preprocess.pipeline import data_path
from rrnet.store import open_store

pytestmark = needs_shared


def test_data_path_rule(tmp_path):
    root = tmp_path / "data"
    assert data_path(root, "a/b.fits") == str(root / "a" / "b.fits")
    assert data_path(root, "a/../b.fits") == str(root / "b.fits")
    assert data_path(root, "../../etc/passwd") is None
    assert data_path(root, "/etc/passwd") is None
    assert data_path(root, "..") is None
    assert data_path(root, ".") == str(root)  # the folder itself: "is a directory"
    assert data_path(root, "../data2/x.fits") is None  # a sibling sharing the prefix
    assert data_path(root, "/etc/passwd", allow_outside=True) == "/etc/passwd"


def _run(tmp_path, names, *extra):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    shutil.copy(REAL_FILE, data / "sub" / REAL_FILE.name)
    (data / "folder.fits.gz").mkdir()
    rows = [(n, "COADD_B", "COADD_R", -20.0) for n in names]
    catalog = tmp_path / "cat.csv"
    pl.DataFrame(
        rows, schema=["filename", "extname_blue", "extname_red", "rv"], orient="row"
    ).write_csv(catalog)
    out = tmp_path / "store"
    args = [str(catalog), "--data-dir", str(data), "--out", str(out), "--quiet", *extra]
    assert main(args) == 0
    return open_store(out).manifest


def test_outside_refused_by_default_and_allowed_by_flag(tmp_path):
    inside = f"sub/{REAL_FILE.name}"
    names = [inside, f"../data/sub/{REAL_FILE.name}", str(REAL_FILE), "folder.fits.gz", "."]
    manifest = _run(tmp_path, names)
    assert manifest["status"].to_list()[:3] == ["ok", "ok", "outside_data_dir"]
    assert "outside the data directory" in manifest["reason"][2]
    assert manifest["status"].to_list()[3:] == ["missing_file", "missing_file"]
    assert "is a directory" in manifest["reason"][3] and "is a directory" in manifest["reason"][4]
    shutil.rmtree(tmp_path / "data")
    manifest = _run(tmp_path, names, "--overwrite", "--allow-outside-data-dir")
    assert manifest["status"].to_list()[:3] == ["ok", "ok", "ok"]


def test_rrnet_infer_catalog_follows_the_same_rule(tmp_path):
    """rrnet-infer --catalog refuses a file outside --data-dir unless the flag allows it."""
    from helpers import SP_LABELS, make_checkpoint
    from rrnet.cli.infer import main as infer_main
    from rrnet.inference import read_catalogue

    data = tmp_path / "data"
    data.mkdir()
    catalog = tmp_path / "cat.csv"
    pl.DataFrame(
        [(str(REAL_FILE), "COADD_B", "COADD_R", -20.0)],
        schema=["filename", "extname_blue", "extname_red", "rv"],
        orient="row",
    ).write_csv(catalog)
    model = make_checkpoint(tmp_path / "SP", SP_LABELS, members=1, seed=1, preprocessing=None)
    args = ["--catalog", str(catalog), "--data-dir", str(data), "--model", str(model)]
    args += ["--device", "cpu", "--no-progress", "--rv", "catalog"]
    out = tmp_path / "refused.parquet"
    infer_main([*args, "--out", str(out)])  # every row refused: exit status per issue 15
    assert read_catalogue(out)[0]["status"].to_list() == ["outside_data_dir"]
    out = tmp_path / "allowed.parquet"
    assert infer_main([*args, "--out", str(out), "--allow-outside-data-dir"]) == 0
    assert read_catalogue(out)[0]["status"].to_list() == ["ok"]
