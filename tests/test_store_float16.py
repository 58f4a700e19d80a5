"""float16 stores (issue 20): half the disk, read back as float32, labels unchanged."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest

from helpers import REAL_FILE, input_catalogue, make_checkpoint, needs_shared, varied_rv_catalogue
from rrnet.grid import N_PIX
from rrnet.labels import SP_LABELS
from rrnet.preprocess.pipeline import preprocess_catalog
from rrnet.store import StoreError, open_store, shard_name, storage_array

pytestmark = needs_shared


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same 13 rows (real spectra, varied RV, shards of 4) stored as float32 and float16."""
    data = tmp_path_factory.mktemp("data")
    cat = varied_rv_catalogue(data)
    root = tmp_path_factory.mktemp("stores")
    kw = dict(workers=0, shard_size=4, progress=False)
    single = preprocess_catalog(cat, data, root / "f32", **kw)
    half = preprocess_catalog(cat, data, root / "f16", dtype="float16", **kw)
    return {"cat": cat, "data": data, "root": root, "f32": single, "f16": half}


@pytest.mark.parametrize("kind", ["normalized", "resampled"])
def test_round_trip_equals_float32_to_float16_precision(pair, kind):
    single, half = pair["f32"], pair["f16"]
    assert half.dtype == "float16" and half.info["dtype"] == "float16"
    assert single.dtype == "float32"
    rows = np.arange(single.n_rows)
    got = half.read_flux(rows, kind)
    assert got.dtype == np.float32 and got.shape == (13, N_PIX)
    # Oracle: the float32 store's values rounded to float16 by NumPy (exact upcast back).
    want = single.read_flux(rows, kind).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    ok = np.isfinite(want)
    assert ok.any() and np.array_equal(np.isfinite(got), ok)  # failed rows stay NaN
    rel = np.abs(got[ok] - single.read_flux(rows, kind)[ok]) / np.abs(want[ok]).clip(1e-30)
    assert rel.max() <= 2.0**-11  # round to nearest, 11 significant bits
    assert half.manifest.equals(single.manifest)


def test_shards_are_float16_on_disk_and_half_the_size(pair):
    single, half = pair["f32"], pair["f16"]
    for shard in range(half.n_shards):
        path = half.path / shard_name("normalized", shard)
        assert np.load(path, mmap_mode="r").dtype == np.float16
        assert half.shard(shard).dtype == np.float16
        f32 = (single.path / shard_name("normalized", shard)).stat().st_size
        assert path.stat().st_size < 0.51 * f32 + 128  # the .npy header is the rest


def test_storage_array_keeps_what_float16_cannot_hold_as_float32():
    flux = np.ones((3, 8), np.float32)
    flux[1] = np.nan
    flux[2, 0] = np.inf  # already infinite: not an overflow
    assert storage_array(flux, "float16").dtype == np.float16
    assert storage_array(flux, "float32") is flux
    for big in (65520.0, -1e6, 3e38):  # 65504 is float16's largest; 65520 rounds to inf
        over = flux.copy()
        over[0, 3] = big
        kept = storage_array(over, "float16")
        assert kept.dtype == np.float32 and np.array_equal(kept, over, equal_nan=True)
    edge = flux.copy()
    edge[0, 3] = 65504.0
    assert storage_array(edge, "float16")[0, 3] == 65504.0
    with pytest.raises(ValueError, match="dtype"):
        storage_array(flux, "float64")


def test_a_float32_shard_in_a_float16_store_is_read(pair, tmp_path):
    """A shard that overflowed float16 is float32 on disk; reading does not care."""
    copy = tmp_path / "copy"
    shutil.copytree(pair["f16"].path, copy)
    exact = pair["f32"].read_flux([4, 5, 6, 7], "resampled")
    np.save(copy / shard_name("resampled", 1), exact)
    np.testing.assert_array_equal(open_store(copy).read_flux([4, 5, 6, 7], "resampled"), exact)
    np.save(copy / shard_name("normalized", 1), exact.astype(np.float64))
    with pytest.raises(StoreError, match="float16"):
        open_store(copy).read_flux([4])


def test_resume_refuses_another_dtype_and_continues_its_own(pair, tmp_path):
    cat, data = pair["cat"], pair["data"]
    out = tmp_path / "s"
    kw = dict(workers=0, shard_size=4, progress=False)
    shutil.copytree(pair["f16"].path, out)
    with pytest.raises(StoreError, match="stored as float16, now float32"):
        preprocess_catalog(cat, data, out, resume=True, **kw)
    with pytest.raises(StoreError, match="stored as float32, now float16"):
        preprocess_catalog(cat, data, pair["f32"].path, resume=True, dtype="float16", **kw)
    # An interrupted float16 store: its complete float16 shards are kept, the rest written.
    info = (out / "store.json").read_text().replace('"complete": true', '"complete": false')
    (out / "store.json").write_text(info)
    (out / "parts").mkdir()
    kept = out / shard_name("normalized", 0)
    pl.read_parquet(out / "manifest.parquet").slice(0, 4).write_parquet(
        out / "parts" / "manifest-000000.parquet"
    )
    for shard in (1, 2, 3):
        for kind in ("normalized", "resampled"):
            (out / shard_name(kind, shard)).unlink()
    before = kept.stat().st_mtime_ns
    again = preprocess_catalog(cat, data, out, resume=True, dtype="float16", **kw)
    assert kept.stat().st_mtime_ns == before
    for kind in ("normalized", "resampled"):
        np.testing.assert_array_equal(
            again.read_flux(slice(None), kind), pair["f16"].read_flux(slice(None), kind)
        )
    with pytest.raises(ValueError, match="dtype"):
        preprocess_catalog(cat, data, tmp_path / "t", dtype="bfloat16", **kw)


def test_cli_store_dtype(pair, tmp_path, capsys):
    from rrnet.cli.preprocess import main

    csv = tmp_path / "cat.csv"
    pair["cat"].write_csv(csv)
    args = [str(csv), "--data-dir", str(pair["data"]), "--out", str(tmp_path / "s")]
    assert main([*args, "--store-dtype", "float16", "--no-keep-resampled"]) == 0
    err = capsys.readouterr().err
    assert "kB per row (float16 flux)" in err
    assert open_store(tmp_path / "s").dtype == "float16"
    assert main([*args, "--store-dtype", "float64"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--store-dtype" in err and "\n" not in err
    assert main([*args, "--resume", "--store-dtype", "float32", "--no-keep-resampled"]) == 2
    assert "stored as float16" in capsys.readouterr().err


def test_predictions_agree_within_a_small_fraction_of_the_errors(tmp_path):
    """Inference from a float16 store moves no label by more than 0.05 of its error."""
    from rrnet.inference import infer

    kw = dict(workers=0, shard_size=3, progress=False)
    cat = input_catalogue()
    single = preprocess_catalog(cat, REAL_FILE.parent, tmp_path / "f32", **kw)
    half = preprocess_catalog(cat, REAL_FILE.parent, tmp_path / "f16", dtype="float16", **kw)
    sp = make_checkpoint(
        tmp_path / "SP", SP_LABELS, members=3, seed=1, preprocessing=single.fingerprint
    )
    tables = [
        infer([sp], store=s.path, out=tmp_path / f"{s.dtype}.parquet", device="cpu")
        for s in (single, half)
    ]
    assert (
        tables[0]
        .select("status", "flag", "quality_bits")
        .equals(tables[1].select("status", "flag", "quality_bits"))
    )
    ok = (tables[0]["status"] == "ok").to_numpy()
    assert ok.sum() >= 5
    for label in ("teff", "logg", "fe_h"):
        a, b = (t[label].to_numpy()[ok] for t in tables)
        err = tables[0][f"{label}_err"].to_numpy()[ok]
        assert np.all(err > 0)
        assert np.max(np.abs(a - b) / err) < 0.05


def test_training_and_evaluation_readers_get_float32(pair):
    """Training streams rows through StreamedRows (and evaluation through read_flux)."""
    from rrnet.training.stream import StreamedRows

    rows = np.array([12, 0, 5, 7])
    streamed = StreamedRows(pair["f16"], rows)[np.arange(4)]
    assert streamed.dtype == np.float32
    want = pair["f32"].read_flux(rows).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(streamed, want)
