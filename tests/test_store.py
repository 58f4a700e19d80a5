"""rrnet.store: reading rows back from the shards, refusing broken stores; the fingerprint."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import needs_shared, varied_rv_catalogue
from rrnet.grid import N_PIX
from rrnet.preprocess.pipeline import preprocess_catalog
from rrnet.preprocess.settings import PreprocessSettings
from rrnet.store import StoreError, open_store, shard_name

pytestmark = needs_shared


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """13 rows (the 5 real spectra, repeated, with varied RV) in shards of 4."""
    data = tmp_path_factory.mktemp("data")
    cat = varied_rv_catalogue(data)
    out = tmp_path_factory.mktemp("store") / "s"
    return preprocess_catalog(cat, data, out, workers=0, shard_size=4, progress=False)


def _from_files(store, rows, kind):
    """Independent oracle: np.load of the shard files, by the documented row -> shard rule."""
    return np.stack(
        [
            np.load(store.path / shard_name(kind, r // store.shard_size))[r % store.shard_size]
            for r in rows
        ]
    )


@pytest.mark.parametrize("kind", ["normalized", "resampled"])
def test_read_flux_returns_the_rows_asked_for_in_that_order(store, kind):
    rng = np.random.default_rng(0)
    rows = rng.integers(0, store.n_rows, size=20)  # unordered, with repeats
    flux = store.read_flux(rows, kind=kind)
    assert flux.shape == (20, N_PIX) and flux.dtype == np.float32
    np.testing.assert_array_equal(flux, _from_files(store, rows, kind))
    np.testing.assert_array_equal(
        store.read_flux(slice(2, 9), kind), _from_files(store, range(2, 9), kind)
    )
    assert store.read_flux([], kind).shape == (0, N_PIX)


def test_layout_and_manifest(store):
    assert store.n_rows == len(store) == 13 and store.n_shards == 4
    m = store.manifest
    assert m["row"].to_list() == list(range(13))
    assert m["obsid"].to_list() == list(range(13))
    assert m["shard"].to_list() == [r // 4 for r in range(13)]
    assert m["offset"].to_list() == [r % 4 for r in range(13)]
    shapes = [
        np.load(store.path / shard_name("normalized", s), mmap_mode="r").shape for s in range(4)
    ]
    assert shapes == [(4, N_PIX)] * 3 + [(1, N_PIX)]
    assert not (store.path / "parts").exists()


def test_iter_shards_covers_every_row_once(store):
    rows = []
    for shard_rows, flux in store.iter_shards():
        np.testing.assert_array_equal(flux, store.read_flux(shard_rows))
        rows.extend(shard_rows.tolist())
    assert rows == list(range(13))


def test_shards_are_memory_mapped_and_read_only(store):
    shard = store.shard(1)
    assert isinstance(shard, np.memmap)
    with pytest.raises(ValueError):
        shard[0, 0] = 1.0


def test_bad_rows_arguments(store):
    with pytest.raises(IndexError):
        store.read_flux([13])
    with pytest.raises(IndexError):
        store.read_flux([-1])
    with pytest.raises(TypeError):
        store.read_flux(np.array([0.5]))
    with pytest.raises(ValueError, match="kind"):
        store.read_flux([0], kind="raw")


def test_fingerprint_is_in_the_store(store):
    assert store.fingerprint == PreprocessSettings().fingerprint()


def test_refuses_what_is_not_a_complete_store(store, tmp_path):
    with pytest.raises(StoreError, match=r"no store\.json"):
        open_store(tmp_path)
    info = json.loads((store.path / "store.json").read_text())
    for change, match in (
        ({"format": "other"}, "not an rrnet store"),
        ({"format_version": 99}, "version"),
        ({"complete": False}, "incomplete"),
    ):
        (tmp_path / "store.json").write_text(json.dumps({**info, **change}))
        with pytest.raises(StoreError, match=match):
            open_store(tmp_path)
    (tmp_path / "store.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable"):
        open_store(tmp_path)


def test_a_damaged_shard_is_reported(store, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy)
    np.save(copy / shard_name("normalized", 0), np.zeros((3, N_PIX), dtype=np.float32))
    with pytest.raises(StoreError, match="shape"):
        open_store(copy).read_flux([0])


def test_a_manifest_this_user_cannot_read_is_not_called_corrupt(store, monkeypatch):
    """Polars words a permission error on the manifest as a corrupt file ("rerun
    rrnet-preprocess" for someone else's store): it is the store's access, said so
    (the file's opening is patched: root reads anything)."""
    import errno

    import rrnet.store

    def denied(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(rrnet.store, "open", denied, raising=False)
    with pytest.raises(StoreError, match=r"manifest.parquet: not readable by this user") as err:
        _ = open_store(store.path).manifest
    assert "corrupt" not in str(err.value)


def test_a_shard_this_user_cannot_read_is_said_so(store, monkeypatch):
    """Another user's shard (written 0600 by older versions) was a "machine fault" (exit 1,
    'rerun'): it is the store's access, a StoreError naming the file (the load is patched:
    root reads anything)."""
    import errno

    real_load = np.load

    def denied(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(np, "load", denied)
    with pytest.raises(StoreError, match=r"normalized-000000.npy: not readable by this user"):
        open_store(store.path).read_flux([0])
    monkeypatch.setattr(np, "load", real_load)


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_across_processes():
    code = (
        "import json; from rrnet.preprocess.settings import PreprocessSettings as P; "
        "print(json.dumps(P().fingerprint()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == PreprocessSettings().fingerprint()


def test_fingerprint_changes_with_every_flux_setting_only():
    base = PreprocessSettings().fingerprint()
    assert len(base["hash"]) == 16
    for other in (PreprocessSettings(correct_rv=False), PreprocessSettings(max_iter=50)):
        assert other.fingerprint()["hash"] != base["hash"]
    described = set(base)
    for key in ("blue_grid", "red_grid", "medfilt_kernel", "poly_degree", "outlier_clip"):
        assert key in described
    assert {"continuum_clip", "max_iter", "correct_rv", "preprocess_version"} <= described
    with pytest.raises(ValueError):
        PreprocessSettings(max_iter=0)


def test_fingerprint_depends_on_the_grid_values(monkeypatch):
    import rrnet.preprocess.settings as settings

    base = PreprocessSettings().fingerprint()["hash"]
    shifted = settings.BLUE_GRID.copy()
    shifted[1800] += 1e-6  # same start, step and size: only the exact values differ
    monkeypatch.setattr(settings, "BLUE_GRID", shifted)
    assert PreprocessSettings().fingerprint()["hash"] != base


def test_fingerprint_constants_are_what_the_kernels_implement():
    from rrnet.preprocess import kernels, reference
    from rrnet.preprocess import settings as st

    assert st.POLY_DEGREE == reference.POLY_DEGREE
    assert st.OUTLIER_CLIP == (-reference.MEDIAN_LOWER_SIGMA, reference.MEDIAN_UPPER_SIGMA)
    assert st.CONTINUUM_CLIP == (-reference.FIT_LOWER_SIGMA, reference.FIT_UPPER_SIGMA)
    assert st.DEFAULT_MAX_ITER == reference.DEFAULT_MAX_ITER == kernels.DEFAULT_MAX_ITER
    # The median filter is 3 wide: a lone spike is removed, a 2-pixel plateau is not.
    spike = np.zeros(9)
    spike[4] = 1.0
    assert reference.medfilt3(spike).max() == 0.0
    assert st.MEDFILT_KERNEL == 3


def test_release_closes_a_shard_map_and_reading_reopens_it(store):
    first = store.shard(0)
    store.release(0)
    again = store.shard(0)
    assert again is not first
    np.testing.assert_array_equal(np.asarray(again), np.asarray(first))
