"""The subspace OOD test in the catalogue: stored in the checkpoint, used by inference.

The world's store holds the real LAMOST file's spectra; the subspace stored here is
fitted on synthetic toy spectra (flat continuum with random lines), so every real
spectrum must come out out of distribution, and the catalogue's ``ood_score`` must
equal the score computed directly from the store's flux and the manifest's S/N.
"""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest

from helpers import build_world, needs_shared
from rrnet.evaluation.metrics import OOD_BIT, ood_rates
from rrnet.inference import QualityBit, infer
from rrnet.inference.models import load_checkpoints
from rrnet.models import ood_subspace as oos
from rrnet.models.checkpoint import checkpoint_hash
from rrnet.store import open_store

pytestmark = needs_shared


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_world(tmp_path_factory.mktemp("ood"))


def _toy_subspace(seed: int = 0) -> oos.Subspace:
    rng = np.random.default_rng(seed)
    pix = np.arange(7200)

    def spectra(n: int, snr: np.ndarray) -> np.ndarray:
        depth = rng.uniform(0.0, 0.5, (n, 40))
        centres = np.linspace(50, 7150, 40)
        lines = (depth[:, :, None] * np.exp(-0.5 * ((pix - centres[:, None]) / 3.0) ** 2)).sum(1)
        return 1.0 - lines + rng.normal(0.0, 1.0, (n, 7200)) / snr[:, None]

    snr_t, snr_v = rng.uniform(20, 200, 200), rng.uniform(5, 200, 200)
    return oos.fit(spectra(200, snr_t), (snr_t, snr_t), spectra(200, snr_v), (snr_v, snr_v), 40)


def test_catalogue_score_is_the_subspace_score_of_the_store(world: dict, tmp_path) -> None:
    path = tmp_path / "SP_sub"
    shutil.copytree(world["sp"], path)
    before = checkpoint_hash(path)
    sub = _toy_subspace()
    oos.write(path, sub)
    assert checkpoint_hash(path) != before  # the test is part of the checkpoint's identity
    (loaded,) = load_checkpoints([path], device="cpu")
    assert loaded.ood_threshold == 1.0 and loaded.describe()["ood_test"] == "subspace"

    table = infer(path, store=world["store"], device="cpu")
    store = open_store(world["store"])
    ok = np.flatnonzero(store.manifest["status"].to_numpy() == "ok")
    flux = store.read_flux(ok)
    m = store.manifest[ok]
    expected = oos.score(sub, flux, m["snr_blue"].to_numpy(), m["snr_red"].to_numpy(), 0.99)
    got = table["ood_score"].to_numpy()[ok]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.all(expected > 1.0)  # real spectra against a toy training set
    bits = table["quality_bits"].to_numpy()[ok]
    assert np.all(bits & int(QualityBit.OUT_OF_DISTRIBUTION))
    assert int(QualityBit.OUT_OF_DISTRIBUTION) == OOD_BIT

    rates = ood_rates(table.with_columns(pl.col("snr_blue").alias("snr"))[ok])
    assert rates is not None
    row = rates.filter(pl.col("snr_bin") == "all").row(0, named=True)
    assert row["n"] == ok.size and row["n_ood"] == ok.size and row["ood_rate"] == 1.0


def test_checkpoint_without_the_file_keeps_the_older_score(world: dict) -> None:
    (loaded,) = load_checkpoints([world["sp"]], device="cpu")
    assert loaded.ood is None and loaded.describe()["ood_test"] == "none"


def test_sp_and_ca_with_the_same_test_score_it_once(world: dict, tmp_path, monkeypatch) -> None:
    """An SP and a CA checkpoint trained on the same store and split store the same
    test (their files differing in metadata order only): it is scored once per chunk,
    and the catalogue is the one of scoring it per checkpoint. A different test is
    scored separately."""
    sub = _toy_subspace()
    paths = {k: tmp_path / k for k in ("sp", "ca")}
    for key, path in paths.items():
        shutil.copytree(world[key], path)
        oos.write(path, sub)
    assert oos.digest(oos.read(paths["sp"])) == oos.digest(oos.read(paths["ca"]))
    shared = load_checkpoints(list(paths.values()), device="cpu")
    assert shared[0].ood is shared[1].ood

    calls = []
    real_score = oos.score
    monkeypatch.setattr(oos, "score", lambda *a, **k: calls.append(1) or real_score(*a, **k))
    table = infer(list(paths.values()), store=world["store"], device="cpu")
    n_chunks = len(calls)
    monkeypatch.setattr(oos, "digest", lambda s: str(id(s)))  # no sharing: the oracle
    separate = infer(list(paths.values()), store=world["store"], device="cpu")
    assert len(calls) == 3 * n_chunks  # scored twice per chunk without sharing
    assert table.select("ood_score", "quality_bits").equals(
        separate.select("ood_score", "quality_bits")
    )

    other = tmp_path / "ca_other"
    shutil.copytree(world["ca"], other)
    oos.write(other, _toy_subspace(seed=1))
    a, b = load_checkpoints([paths["sp"], other], device="cpu")
    assert a.ood is not b.ood and oos.digest(oos.read(other)) != oos.digest(sub)
