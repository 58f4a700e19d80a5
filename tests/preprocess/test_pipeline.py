"""rrnet.preprocess.pipeline: one manifest row per catalogue row, the right status for
every kind of bad input, files read once, streaming == store, resume == no interruption."""

from __future__ import annotations

import io
import json

import fitsio
import numpy as np
import polars as pl
import pytest

from helpers import (
    EXPOSURES,
    REAL_FILE,
    SPECTRA,
    as_vector_row,
    as_wavelength_row,
    drop_column,
    needs_shared,
    set_values,
    write_lamost_copy,
)
from rrnet.grid import N_PIX
from rrnet.io.catalog import CatalogError
from rrnet.preprocess import batch_builder, prefetch, store_writer
from rrnet.preprocess.pipeline import (
    QualityCuts,
    iter_preprocessed,
    preprocess_catalog,
    write_selection,
)
from rrnet.store import StoreError, open_store, shard_name, storage_array

pytestmark = needs_shared

REAL = REAL_FILE.name


def _rows(*rows: tuple) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema=["filename", "extname_blue", "extname_red", "rv"], orient="row"
    )


def _real_catalog(repeats: int = 1, rvs: list[float] | None = None) -> pl.DataFrame:
    rows = [(REAL, b, r, -20.0) for _ in range(repeats) for b, r in SPECTRA]
    cat = _rows(*rows).with_columns(pl.col("rv").cast(pl.Float64))
    if rvs is not None:
        cat = cat.with_columns(rv=pl.Series(rvs[: cat.height], dtype=pl.Float64))
    return cat.with_columns(star=pl.int_range(pl.len()))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The real file plus one broken variant per failure mode."""
    d = tmp_path_factory.mktemp("lamost")
    (d / REAL).symlink_to(REAL_FILE)
    (d / "junk.fits.gz").write_bytes(b"this is not a FITS file" * 50)
    raw = REAL_FILE.read_bytes()
    (d / "truncated.fits.gz").write_bytes(raw[: len(raw) // 2])
    write_lamost_copy(d / "no-loglam.fits", edit={"COADD_B": drop_column("LOGLAM")})
    write_lamost_copy(d / "lengths.fits", edit={"COADD_B": as_vector_row({"IVAR": 100})})

    def nan_inside(flux):
        flux = flux.copy()
        flux[1500] = np.nan
        return flux

    write_lamost_copy(d / "nan-flux.fits", edit={"COADD_B": set_values("FLUX", nan_inside)})
    write_lamost_copy(
        d / "flat.fits", edit={"COADD_R": set_values("FLUX", lambda f: np.full_like(f, 7.0))}
    )

    def nan_loglam(loglam):
        loglam = loglam.copy()
        loglam[100] = np.nan
        return loglam

    write_lamost_copy(d / "bad-wave.fits", edit={"COADD_B": set_values("LOGLAM", nan_loglam)})
    return d


BAD_CASES = [
    # (filename, blue, red, rv, expected status)
    (REAL, "COADD_B", "COADD_R", "-20", "ok"),
    ("absent.fits.gz", "COADD_B", "COADD_R", "0", "missing_file"),
    ("", "COADD_B", "COADD_R", "0", "missing_file"),
    ("junk.fits.gz", "COADD_B", "COADD_R", "0", "bad_fits"),
    ("truncated.fits.gz", "COADD_B", "COADD_R", "0", "bad_fits"),
    (REAL, "B-00000000", "COADD_R", "0", "missing_extension"),
    (REAL, "COADD_B", None, "0", "missing_extension"),
    ("no-loglam.fits", "COADD_B", "COADD_R", "0", "bad_columns"),
    ("lengths.fits", "COADD_B", "COADD_R", "0", "bad_columns"),
    (REAL, f"B-{EXPOSURES[0]}", f"R-{EXPOSURES[0]}", "-20", "ok"),
    (REAL, "COADD_B", "COADD_R", "5000", "grid_out_of_range"),
    (REAL, "COADD_R", "COADD_B", "0", "grid_out_of_range"),
    (REAL, "COADD_B", "COADD_R", None, "bad_rv"),
    (REAL, "COADD_B", "COADD_R", "fast", "bad_rv"),
    (REAL, "COADD_B", "COADD_R", "nan", "bad_rv"),
    (REAL, "COADD_B", "COADD_R", "400000", "bad_rv"),
    ("nan-flux.fits", "COADD_B", "COADD_R", "0", "bad_flux"),
    ("flat.fits", "COADD_B", "COADD_R", "0", "degenerate_arm"),
    ("bad-wave.fits", "COADD_B", "COADD_R", "0", "bad_wavelength"),
    (REAL, f"B-{EXPOSURES[3]}", f"R-{EXPOSURES[3]}", "-20", "ok"),
]


def _bad_catalog() -> pl.DataFrame:
    cat = _rows(*[case[:4] for case in BAD_CASES])
    return cat.with_columns(tag=pl.Series([f"t{i}" for i in range(cat.height)]))


def test_every_row_gets_a_manifest_row_with_the_right_status(data_dir, tmp_path):
    cat = _bad_catalog()
    store = preprocess_catalog(
        cat, data_dir, tmp_path / "store", workers=0, shard_size=6, rv_mode="catalog"
    )  # its unusable RVs stay bad_rv (the default, auto, would measure them)
    m = store.manifest
    assert m.height == cat.height
    assert m["row"].to_list() == list(range(cat.height))
    assert m["tag"].to_list() == cat["tag"].to_list()  # carried through, catalogue order
    assert m["status"].to_list() == [case[4] for case in BAD_CASES]
    ok = (m["status"] == "ok").to_numpy()
    assert m["reason"].is_null().to_list() == ok.tolist()
    assert all(len(r) > 10 for r in m.filter(~pl.Series(ok))["reason"].to_list())
    flux = store.read_flux(np.arange(cat.height))
    assert np.isfinite(flux[ok]).all()
    assert np.isnan(flux[~ok]).all()
    # Per-spectrum numbers only where normalisation ran.
    assert m.filter(pl.Series(ok))["n_outliers"].null_count() == 0
    assert m.filter(pl.col("status") == "missing_file")["n_outliers"].null_count() == 2
    # A bad row never perturbs its neighbours: the good rows equal a clean run.
    clean = next(
        iter_preprocessed(cat.filter(pl.Series(ok)), data_dir, workers=0, rv_mode="catalog")
    )
    np.testing.assert_array_equal(flux[ok], clean.flux)


def test_reasons_are_specific(data_dir, tmp_path):
    store = preprocess_catalog(
        _bad_catalog(), data_dir, tmp_path / "s", workers=0, shard_size=64, rv_mode="catalog"
    )
    reasons = dict(zip(store.manifest["tag"], store.manifest["reason"], strict=True))
    assert "absent.fits.gz" in reasons["t1"]
    assert "filename is empty" in reasons["t2"]
    assert "B-00000000" in reasons["t5"]
    assert "LOGLAM" in reasons["t7"]
    assert reasons["t12"] == reasons["t13"] == "rv is empty or not a number"  # None, "fast"
    assert "not a usable velocity: nan" in reasons["t14"]
    assert "range" in reasons["t10"]


def test_files_are_read_once_per_batch(data_dir, monkeypatch):
    calls = []
    real_read = prefetch._read_files

    def counting(files, *args):
        calls.extend((path, tuple(extnames)) for path, extnames in files)
        return real_read(files, *args)

    monkeypatch.setattr(prefetch, "_read_files", counting)
    cat = _real_catalog(repeats=3)  # 15 rows, one file
    batches = list(iter_preprocessed(cat, data_dir, workers=0, batch_size=100))
    assert len(calls) == 1
    assert sorted(calls[0][1]) == sorted(e for pair in SPECTRA for e in pair)
    assert batches[0].manifest["status"].to_list() == ["ok"] * 15
    calls.clear()
    # Issue 20: a file straddling batches is read once too (it was once per batch).
    small = list(iter_preprocessed(cat, data_dir, workers=0, batch_size=4))
    assert len(calls) == 1
    per_batch = ["shard", "offset"]
    assert (
        pl.concat([b.manifest for b in small])
        .drop(per_batch)
        .equals(batches[0].manifest.drop(per_batch))
    )
    np.testing.assert_array_equal(np.concatenate([b.flux for b in small]), batches[0].flux)
    calls.clear()
    list(iter_preprocessed(cat, data_dir, workers=0, batch_size=5, reader="fitsio"))
    assert len(calls) == 1


def test_repeated_spectra_give_identical_rows_and_rv_matters(data_dir):
    cat = _real_catalog(repeats=2)
    cat = cat.with_columns(rv=pl.Series([-20.0] * 5 + [-20.0, 0, 30, -20.0, -20.0]))
    (batch,) = iter_preprocessed(cat, data_dir, workers=0, keep_resampled=True)
    np.testing.assert_array_equal(batch.flux[0], batch.flux[5])
    np.testing.assert_array_equal(batch.flux[3], batch.flux[8])
    assert not np.array_equal(batch.resampled[1], batch.resampled[6])


def test_streaming_equals_store_and_workers_do_not_change_results(data_dir, tmp_path):
    cat = _bad_catalog()
    store = preprocess_catalog(cat, data_dir, tmp_path / "store", workers=0, shard_size=7)
    streamed = list(iter_preprocessed(cat, data_dir, batch_size=7, workers=1))
    assert [b.index for b in streamed] == [0, 1, 2]
    rows = np.concatenate([b.rows for b in streamed])
    np.testing.assert_array_equal(rows, np.arange(cat.height))
    np.testing.assert_array_equal(np.concatenate([b.flux for b in streamed]), store.read_flux(rows))
    manifest = pl.concat([b.manifest for b in streamed])
    assert manifest.equals(store.manifest)
    assert not any(p.name.startswith("manifest") for p in tmp_path.iterdir())


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_store_reuses_shard_arrays_without_leaking_rows(data_dir, tmp_path, monkeypatch, dtype):
    """A written shard's arrays serve a later shard: rows no kernel wrote there
    (failed rows) must be NaN again, not the earlier shard's flux. (A float32 store's
    rows go to its files chunk by chunk: a few chunk buffers serve every shard.)"""
    cat = pl.concat([_bad_catalog(), _bad_catalog().reverse()])
    taken, given, chunk_sets = [], [], []
    real_take, real_give = batch_builder.ArrayPool.take, batch_builder.ArrayPool.give
    monkeypatch.setattr(
        batch_builder.ArrayPool,
        "take",
        lambda self, n: taken.append(real_take(self, n)) or taken[-1],
    )
    monkeypatch.setattr(
        batch_builder.ArrayPool,
        "give",
        lambda self, *a: (given.extend(id(x) for x in a), real_give(self, *a))[1],
    )
    real_set = batch_builder._ChunkSet.__init__

    def counted_set(self, rows):
        chunk_sets.append(self)
        real_set(self, rows)

    monkeypatch.setattr(batch_builder._ChunkSet, "__init__", counted_set)
    monkeypatch.setattr(batch_builder, "COMPUTE_CHUNK", 2)  # several chunks per shard
    store = preprocess_catalog(cat, data_dir, tmp_path / "s", workers=2, shard_size=4, dtype=dtype)
    if dtype == "float16":
        assert {id(a) for a in taken[4:]} & set(given)  # later shards got written arrays
        assert not chunk_sets
    else:
        assert not taken  # no shard arrays at all
        assert 0 < len(chunk_sets) <= batch_builder.CHUNKS_IN_FLIGHT + 2  # for ~15 chunks
    streamed = list(iter_preprocessed(cat, data_dir, batch_size=4, workers=0, keep_resampled=True))
    rows = np.arange(cat.height)
    for kind, attr in (("normalized", "flux"), ("resampled", "resampled")):
        stored = [storage_array(getattr(b, attr), dtype).astype(np.float32) for b in streamed]
        np.testing.assert_array_equal(store.read_flux(rows, kind=kind), np.concatenate(stored))
    assert pl.concat([b.manifest for b in streamed]).equals(store.manifest)


def test_resampled_flux_is_kept_and_normalisation_failures_keep_it(data_dir, tmp_path):
    store = preprocess_catalog(_bad_catalog(), data_dir, tmp_path / "s", workers=0)
    status = store.manifest["status"].to_numpy()
    resampled = store.read_flux(np.arange(len(status)), kind="resampled")
    assert np.isfinite(resampled[status == "ok"]).all()
    # "degenerate_arm" is found by the normalisation: the resampled flux is there.
    assert np.isfinite(resampled[status == "degenerate_arm"]).all()
    assert np.isnan(resampled[status == "missing_file"]).all()


def test_without_resampled(data_dir, tmp_path):
    store = preprocess_catalog(
        _real_catalog(), data_dir, tmp_path / "s", workers=0, keep_resampled=False
    )
    assert store.kinds == ("normalized",)
    assert not list((tmp_path / "s" / "shards").glob("resampled-*"))
    with pytest.raises(StoreError, match="resampled"):
        store.read_flux([0], kind="resampled")


def test_quality_flags_follow_the_documented_cuts(data_dir, tmp_path):
    cuts = QualityCuts(min_snr=50.0, max_outliers=140, max_outlier_run=2)
    store = preprocess_catalog(_real_catalog(), data_dir, tmp_path / "s", workers=0, quality=cuts)
    m = store.manifest
    # Independent restatement of the rule on the recorded numbers.
    expected = (
        (pl.col("status") == "ok")
        & (pl.min_horizontal("snr_blue", "snr_red") >= cuts.min_snr)
        & (pl.col("n_outliers") <= cuts.max_outliers)
        & (pl.col("max_outlier_run") <= cuts.max_outlier_run)
    )
    assert m["quality_ok"].to_list() == m.select(expected).to_series().to_list()
    # The exposures have header SNR 43-46 in blue: all fail on S/N; the coadd passes it.
    header_snr = fitsio.read_header(str(REAL_FILE), "COADD_B")["SNR"]  # the file's own
    assert m["snr_blue"][0] == pytest.approx(header_snr)
    for why in m["quality_reason"].to_list()[1:]:
        assert "snr" in why
    assert m["quality_reason"].is_null().to_list() == m["quality_ok"].to_list()
    # The header SNR is what the cut uses; the FLUX/IVAR estimate is recorded too.
    assert m["snr_blue_ivar"].null_count() == 0


def test_selection_is_a_valid_catalogue_of_the_passing_rows(data_dir, tmp_path):
    cat = _real_catalog()
    store = preprocess_catalog(
        cat, data_dir, tmp_path / "s", workers=0, quality=QualityCuts(min_snr=50.0)
    )
    n = write_selection(store, tmp_path / "sel.parquet")
    sel = pl.read_parquet(tmp_path / "sel.parquet")
    assert n == sel.height == store.manifest["quality_ok"].sum()
    assert sel.columns == cat.columns
    assert sel.equals(cat.filter(store.manifest["quality_ok"]))


def test_header_columns_fill_in_when_the_catalogue_lacks_them(data_dir):
    (batch,) = iter_preprocessed(_real_catalog(), data_dir, workers=0)
    assert batch.manifest["obsid"].to_list() == [589002051] * 5
    assert batch.manifest["ra"][0] == pytest.approx(fitsio.read_header(str(REAL_FILE), 0)["RA"])
    with_obsid = _real_catalog().with_columns(obsid=pl.lit(7, dtype=pl.Int64))
    (batch,) = iter_preprocessed(with_obsid, data_dir, workers=0)
    assert batch.manifest["obsid"].to_list() == [7] * 5  # the catalogue wins


def test_no_rv_correction_ignores_the_rv_column(data_dir):
    cat = _real_catalog().with_columns(rv=pl.lit(None, dtype=pl.Float64))
    (batch,) = iter_preprocessed(cat, data_dir, workers=0, correct_rv=False)
    assert batch.manifest["status"].to_list() == ["ok"] * 5
    zero = _real_catalog().with_columns(rv=pl.lit(0.0))
    (ref,) = iter_preprocessed(zero, data_dir, workers=0)
    np.testing.assert_array_equal(batch.flux, ref.flux)
    # Without RV correction the catalogue needs no RV column at all.
    (no_rv,) = iter_preprocessed(cat.drop("rv"), data_dir, workers=0, correct_rv=False)
    np.testing.assert_array_equal(no_rv.flux, ref.flux)
    with pytest.raises(CatalogError, match="rv"):
        next(iter_preprocessed(cat.drop("rv"), data_dir, workers=0, rv_mode="catalog"))


def _store_bytes(path):
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != "store.json")
    return {str(p.relative_to(path)): p.read_bytes() for p in files}


def test_resume_after_an_interruption_is_byte_identical(data_dir, tmp_path, monkeypatch):
    cat = _bad_catalog()
    full = preprocess_catalog(cat, data_dir, tmp_path / "full", workers=0, shard_size=4)
    written = []
    real_write = store_writer._write_shard

    def crash_after_two(out, batch, **kw):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(batch.index)
        real_write(out, batch, **kw)

    monkeypatch.setattr(store_writer, "_write_shard", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        preprocess_catalog(cat, data_dir, tmp_path / "cut", workers=0, shard_size=4)
    with pytest.raises(StoreError, match="incomplete"):
        open_store(tmp_path / "cut")
    monkeypatch.setattr(store_writer, "_write_shard", real_write)
    recomputed = []
    monkeypatch.setattr(
        store_writer,
        "_write_shard",
        lambda out, b, **kw: (recomputed.append(b.index), real_write(out, b, **kw)),
    )
    resumed = preprocess_catalog(
        cat, data_dir, tmp_path / "cut", workers=0, shard_size=4, resume=True
    )
    assert recomputed == [2, 3, 4]  # complete shards are not redone
    assert _store_bytes(tmp_path / "cut") == _store_bytes(tmp_path / "full")
    assert resumed.manifest.equals(full.manifest)
    assert resumed.info == full.info


def test_a_store_names_every_rrnet_that_wrote_its_rows(data_dir, tmp_path, monkeypatch):
    """store.json recorded no version: catalogues and checkpoints named their code, the
    store (whose RVs a later rrnet measures otherwise) did not."""
    import rrnet

    cat = _bad_catalog()
    real_write = store_writer._write_shard

    def crash_at_second(out, batch, **kw):
        if batch.index == 1:
            raise KeyboardInterrupt
        real_write(out, batch, **kw)

    monkeypatch.setattr(store_writer, "_write_shard", crash_at_second)
    with pytest.raises(KeyboardInterrupt):
        preprocess_catalog(cat, data_dir, tmp_path / "s", workers=0, shard_size=4)
    first = json.loads((tmp_path / "s" / "store.json").read_text())["written_by"]
    assert [w["rrnet"] for w in first] == [rrnet.__version__]
    monkeypatch.setattr(store_writer, "_write_shard", real_write)
    monkeypatch.setattr(rrnet, "__version__", "9.9.9")  # a later rrnet resumes it
    store = preprocess_catalog(cat, data_dir, tmp_path / "s", workers=0, shard_size=4, resume=True)
    assert [w["rrnet"] for w in store.info["written_by"]] == [first[0]["rrnet"], "9.9.9"]


def test_resume_refuses_other_settings_or_catalogue(data_dir, tmp_path):
    cat = _real_catalog()
    out = tmp_path / "s"
    preprocess_catalog(cat, data_dir, out, workers=0, shard_size=2)
    refusal = r"not empty: .* \(--overwrite\); resume=True or overwrite=True in Python"
    with pytest.raises(StoreError, match=refusal):  # a notebook user passes keywords
        preprocess_catalog(cat, data_dir, out, workers=0, shard_size=2)
    with pytest.raises(StoreError, match="settings"):
        preprocess_catalog(cat, data_dir, out, workers=0, shard_size=2, resume=True, max_iter=5)
    with pytest.raises(StoreError, match="shard_size"):
        preprocess_catalog(cat, data_dir, out, workers=0, shard_size=3, resume=True)
    # Make it incomplete again, then change the catalogue.
    info = (out / "store.json").read_text().replace('"complete": true', '"complete": false')
    (out / "store.json").write_text(info)
    (out / "parts").mkdir()
    for shard in range(3):
        part = store_part = out / "parts" / f"manifest-{shard:06d}.parquet"
        pl.read_parquet(out / "manifest.parquet").slice(2 * shard, 2).write_parquet(store_part)
        assert part.exists()
    changed = cat.with_columns(rv=pl.lit(-21.0))
    with pytest.raises(StoreError, match="catalogue rows"):
        preprocess_catalog(changed, data_dir, out, workers=0, shard_size=2, resume=True)
    # With the right catalogue it completes from the kept shards.
    store = preprocess_catalog(cat, data_dir, out, workers=0, shard_size=2, resume=True)
    assert store.n_rows == 5


def test_overwrite_replaces_a_store_but_never_a_foreign_folder(data_dir, tmp_path):
    out = tmp_path / "s"
    preprocess_catalog(_real_catalog(), data_dir, out, workers=0)
    store = preprocess_catalog(_real_catalog(2), data_dir, out, workers=0, overwrite=True)
    assert store.n_rows == 10
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not a store"):
        preprocess_catalog(_real_catalog(), data_dir, foreign, workers=0, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("how", [{}, {"resume": True}, {"overwrite": True}])
def test_a_start_cut_short_before_store_json_can_be_run_again(data_dir, tmp_path, how):
    """A full disk before store.json left empty shards/ and parts/: a rerun said "not
    empty", --resume "not a store", --overwrite "not a store"; each now starts afresh."""
    out = tmp_path / "s"
    (out / "shards").mkdir(parents=True)
    (out / "parts").mkdir()
    store = preprocess_catalog(_real_catalog(), data_dir, out, workers=0, **how)
    assert store.n_rows == 5
    (tmp_path / "t" / "shards").mkdir(parents=True)
    (tmp_path / "t" / "shards" / "mine.txt").write_text("x")  # not empty: not a skeleton
    with pytest.raises(StoreError, match="not empty"):
        preprocess_catalog(_real_catalog(), data_dir, tmp_path / "t", workers=0)


def test_empty_catalogue_and_bad_arguments(data_dir, tmp_path):
    with pytest.raises(StoreError, match="no rows"):
        preprocess_catalog(_real_catalog().head(0), data_dir, tmp_path / "s", workers=0)
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_preprocessed(_real_catalog(), data_dir, batch_size=0))


def test_rows_have_n_pix(data_dir):
    (batch,) = iter_preprocessed(_real_catalog(), data_dir, workers=0, keep_resampled=True)
    assert batch.flux.shape == batch.resampled.shape == (5, N_PIX)
    assert batch.flux.dtype == np.float32


def test_rust_reader_store_equals_the_fitsio_store(data_dir, tmp_path):
    real = _real_catalog(repeats=2).drop("star").with_columns(pl.col("rv").cast(pl.Utf8))
    cat = pl.concat([_bad_catalog().drop("tag"), real])
    stores = {
        reader: preprocess_catalog(
            cat,
            data_dir,
            tmp_path / reader,
            reader=reader,
            workers=2,
            shard_size=16,
            progress=False,
            fsync=False,
        )
        for reader in ("auto", "fitsio")
    }
    fast, ref = stores["auto"], stores["fitsio"]
    drop = ["reason"]  # wording may differ; the status may not
    assert fast.manifest.drop(drop).equals(ref.manifest.drop(drop))
    rows = np.arange(cat.height)
    for kind in ("normalized", "resampled"):
        np.testing.assert_array_equal(
            fast.read_flux(rows, kind=kind), ref.read_flux(rows, kind=kind)
        )
    assert (fast.manifest["status"] == "ok").sum() >= 10


@pytest.mark.parametrize("reader", ["auto", "fitsio"])
def test_a_dr9_layout_file_preprocesses_like_its_dr7_original(tmp_path, reader):
    # WAVELENGTH [A] in one row of vectors (DR9 v1.0 on) instead of LOGLAM rows
    every = [name for pair in SPECTRA for name in pair]
    write_lamost_copy(tmp_path / REAL, edit=dict.fromkeys(every, as_wavelength_row))
    cat = _real_catalog().drop("star")
    new = next(iter_preprocessed(cat, tmp_path, workers=0, reader=reader))
    old = next(iter_preprocessed(cat, REAL_FILE.parent, workers=0, reader=reader))
    assert new.manifest["status"].to_list() == old.manifest["status"].to_list()
    assert (new.manifest["status"] == "ok").all()
    same = ["n_outliers", "max_outlier_run", "continuum_iterations_blue"]
    same += ["continuum_iterations_red", "snr_blue", "snr_red", "snr_blue_ivar", "snr_red_ivar"]
    same += ["rv_used", "rv_measured_status"]
    assert new.manifest.select(same).equals(old.manifest.select(same))
    np.testing.assert_allclose(new.manifest["rv_measured"], old.manifest["rv_measured"], atol=1e-6)
    np.testing.assert_allclose(new.flux, old.flux, rtol=0, atol=1e-5)


def test_bounded_inflation_is_a_row_status(data_dir):
    cat = _real_catalog()
    (batch,) = iter_preprocessed(cat, data_dir, workers=0, max_inflated=100_000)
    assert batch.manifest["status"].to_list() == ["too_large"] * cat.height
    with pytest.raises(ValueError, match="reader"):
        next(iter_preprocessed(cat, data_dir, reader="astropy"))


@pytest.mark.parametrize(("workers", "keep_resampled"), [(0, True), (2, True), (2, False)])
def test_flux_files_written_while_computing_equal_np_save(
    data_dir, tmp_path, monkeypatch, workers, keep_resampled
):
    """A float32 store's flux files, written row run by row run as chunks finish (rows
    out of catalogue order, failed rows, several chunks per shard), equal ``np.save`` of
    the streamed batches' arrays."""
    monkeypatch.setattr(batch_builder, "COMPUTE_CHUNK", 3)
    real = _real_catalog(repeats=2).drop("star").with_columns(pl.col("rv").cast(pl.Utf8))
    cat = pl.concat([_bad_catalog().drop("tag"), real, _bad_catalog().drop("tag")])
    out = tmp_path / f"s{workers}"
    store = preprocess_catalog(
        cat, data_dir, out, workers=workers, shard_size=7, progress=False,
        keep_resampled=keep_resampled,
    )  # fmt: skip
    batches = list(iter_preprocessed(cat, data_dir, workers=workers, batch_size=7,
                                     keep_resampled=keep_resampled))  # fmt: skip
    assert len(batches) == store.n_shards == 8
    for batch in batches:
        assert batch.files is None  # streamed batches are not written
        kinds = [("normalized", batch.flux), ("resampled", batch.resampled)]
        for kind, flux in kinds[: 2 if keep_resampled else 1]:
            buf = io.BytesIO()
            np.save(buf, flux)
            assert (out / shard_name(kind, batch.index)).read_bytes() == buf.getvalue()
    assert not list(out.rglob("*.tmp"))
    assert (out / shard_name("resampled", 0)).exists() == keep_resampled


def test_the_library_measures_a_missing_rv_as_the_commands_do(data_dir):
    """preprocess_catalog/iter_preprocessed and rrnet-infer's library call defaulted to
    the catalogue's RV only (a missing one: bad_rv) where every command defaults to auto."""
    import inspect

    from rrnet.cli.preprocess import build_parser

    cat = _real_catalog().with_columns(rv=pl.lit(None, dtype=pl.Float64))
    (batch,) = iter_preprocessed(cat, data_dir, workers=0)
    assert batch.manifest["status"].to_list() == ["ok"] * 5
    assert batch.manifest["rv_used_source"].to_list() == ["measured"] * 5
    cli_default = build_parser().parse_args(["c.csv", "--out", "s"]).rv_mode
    for function in (iter_preprocessed, preprocess_catalog):
        assert inspect.signature(function).parameters["rv_mode"].default == cli_default
