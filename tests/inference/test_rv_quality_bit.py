"""rrnet-infer --catalog --rv (issue 16): the RV decision reaches the catalogue, and a
catalogue RV that disagrees with the measured one sets quality bit RV_DISAGREE.

The real file's star is at about -20 km/s (docs/preprocessing.md): a catalogue RV of
+10 km/s is 30 km/s off, -20.2 km/s is right, a null one is measured in auto mode."""

from __future__ import annotations

import polars as pl

from helpers import REAL_FILE, make_checkpoint, needs_shared
from rrnet.cli.infer import main
from rrnet.inference import QualityBit
from rrnet.labels import SP_LABELS
from rrnet.preprocess.settings import PreprocessSettings

pytestmark = needs_shared


def _catalogue(path):
    name = REAL_FILE.name
    rows = [(name, "COADD_B", "COADD_R", 10.0), (name, "COADD_B", "COADD_R", -20.2)]
    rows += [(name, "COADD_B", "COADD_R", None), (name, "COADD_B", "COADD_R", -9999.0)]
    schema = ["filename", "extname_blue", "extname_red", "rv"]
    pl.DataFrame(rows, schema=schema, orient="row").write_csv(path)
    return path


def test_infer_catalog_sets_the_rv_bit_and_fills_missing_rvs(tmp_path):
    fp = PreprocessSettings().fingerprint()
    sp = make_checkpoint(tmp_path / "SP", SP_LABELS, members=1, seed=1, preprocessing=fp)
    cat = _catalogue(tmp_path / "cat.csv")
    base = ["--catalog", str(cat), "--data-dir", str(REAL_FILE.parent), "--model", str(sp)]
    base += ["--device", "cpu", "--no-progress"]
    out = tmp_path / "auto.parquet"
    assert main([*base, "--out", str(out)]) == 0
    got = pl.read_parquet(out)
    assert got["status"].to_list() == ["ok"] * 4
    rv_bit = ((got["quality_bits"] & int(QualityBit.RV_DISAGREE)) != 0).to_list()
    assert rv_bit == [True, False, False, False]
    assert "RV disagree" in got["reason"][0]
    out = tmp_path / "catalog.parquet"
    assert main([*base, "--out", str(out), "--rv", "catalog"]) == 0
    got = pl.read_parquet(out)
    assert got["status"].to_list() == ["ok", "ok", "bad_rv", "bad_rv"]
    assert ((got["quality_bits"] & int(QualityBit.RV_DISAGREE)) == 0).all()
