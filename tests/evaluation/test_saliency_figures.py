"""Saliency from a real checkpoint and store: equals finite differences; the CLI draws it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from rrnet.cli.eval import main
from rrnet.evaluation.saliency_figures import compute_saliency, store_rows
from rrnet.io import write_table
from rrnet.models import ModelConfig, build_model
from rrnet.models.checkpoint import load_checkpoint, save_checkpoint
from rrnet.store import STORE_FORMAT, STORE_FORMAT_VERSION

SP = ("Teff[K]", "Logg", "FeH")
TEFF = [4100.0, 4200.0, 6100.0, 6200.0, 5000.0, 4150.0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sal")
    torch.manual_seed(0)
    config = ModelConfig(net="rrnet", mode="raw", num_labels=3, channels=(2,), hidden=(8, 8))
    members = [build_model(config).state_dict() for _ in range(2)]
    rng = np.random.default_rng(0)
    save_checkpoint(
        root / "ckpt",
        model_config=config,
        labels=SP,
        member_state_dicts=members,
        flux_mean=np.ones(7200, dtype=np.float32),
        flux_std=np.full(7200, 0.1, dtype=np.float32),
        label_mean=np.array([5000.0, 3.0, -0.2], dtype=np.float32),
        label_std=np.array([700.0, 1.0, 0.3], dtype=np.float32),
    )
    n = len(TEFF)
    names = [f"f{i}.fits.gz" for i in range(n)]
    catalog = pl.DataFrame(
        {
            "obsid": np.arange(n),
            "filename": names,
            "extname_blue": ["B"] * n,
            "extname_red": ["R"] * n,
            "star_id": np.arange(n),
            "snr_blue": np.full(n, 50.0),
            "flag": np.ones(n, dtype=np.int64),
            "status": ["ok"] * n,
            **{lb: np.zeros(n) for lb in SP},
            **{f"{lb}_err": np.ones(n) for lb in SP},
        }
    )
    labels = pl.DataFrame({"star_id": np.arange(n), "Teff[K]": TEFF, "Logg": [4.0] * n,
                           "FeH": [0.0] * n})  # fmt: skip
    write_table(catalog, root / "cat.parquet")
    write_table(labels, root / "labels.parquet")
    # store rows in reverse catalogue order, so the mapping is exercised
    store = root / "store"
    (store / "shards").mkdir(parents=True)
    flux = (1.0 + 0.05 * rng.standard_normal((n, 7200))).astype(np.float32)
    np.save(store / "shards" / "normalized-000000.npy", flux)
    manifest = pl.DataFrame(
        {"row": np.arange(n), "filename": names[::-1], "extname_blue": ["B"] * n,
         "extname_red": ["R"] * n}
    )  # fmt: skip
    manifest.write_parquet(store / "manifest.parquet")
    info = {"format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION, "n_rows": n}
    info |= {"shard_size": 16, "kinds": ["normalized"], "fingerprint": {}, "complete": True}
    (store / "store.json").write_text(json.dumps(info))
    return {"root": root, "ckpt": root / "ckpt", "store": store, "flux": flux}


def test_store_rows_follow_the_ids_not_the_order(setup) -> None:
    joined = pl.DataFrame({"filename": ["f0.fits.gz", "f5.fits.gz"], "extname_blue": ["B", "B"],
                           "extname_red": ["R", "R"]})  # fmt: skip
    manifest = pl.read_parquet(setup["store"] / "manifest.parquet")
    assert store_rows(joined, manifest)["row"].to_list() == [5, 0]


def test_saliency_equals_finite_differences(setup) -> None:
    joined = pl.read_parquet(setup["root"] / "cat.parquet").with_columns(
        pl.Series("Teff[K]_true", TEFF)
    )
    labels, sal, counts = compute_saliency(setup["ckpt"], setup["store"], joined)
    assert labels == SP and counts == {"cool": 3, "hot": 2}
    # cool stars are catalogue rows 0, 1, 5 -> store rows 5, 4, 0
    cool = torch.tensor(setup["flux"][[0, 4, 5]], dtype=torch.float64)
    ckpt = load_checkpoint(setup["ckpt"])
    models = []
    for state in ckpt.member_state_dicts:
        model = build_model(ckpt.model_config).double().eval()
        model.load_state_dict(state)
        models.append(model)
    norm = {k: torch.tensor(v, dtype=torch.float64) for k, v in vars(ckpt.normalization).items()}

    def predict(x: torch.Tensor) -> np.ndarray:
        """Method §3-4 in float64: clip, standardise, mean of mu, de-standardise."""
        xs = (x.clamp(-0.5, 2.5) - norm["flux_mean"]) / norm["flux_std"]
        with torch.no_grad():
            mu = torch.stack([m(xs)[0] for m in models]).mean(dim=0)
        return (mu * norm["label_std"] + norm["label_mean"]).numpy()

    h = 1e-5
    scale = np.abs(sal["cool"]).max(axis=1)
    for pixel in (100, 3600, 7000):
        up, down = cool.clone(), cool.clone()
        up[:, pixel] += h
        down[:, pixel] -= h
        fd = ((predict(up) - predict(down)) / (2 * h)).mean(axis=0)
        assert np.allclose(sal["cool"][:, pixel], fd, rtol=1e-3, atol=1e-3 * scale)


def test_cli_draws_the_saliency_figure(setup) -> None:
    root = setup["root"]
    out = root / "report"
    args = ["--catalog", str(root / "cat.parquet"), "--labels", str(root / "labels.parquet")]
    args += ["--out", str(out), "--store", str(setup["store"]), "--checkpoint", str(setup["ckpt"])]
    args += ["--split", "all"]
    split = pl.DataFrame({"star_id": np.arange(len(TEFF)), "split": ["test"] * len(TEFF)})
    split.write_parquet(setup["ckpt"] / "split.parquet")
    assert main(args) == 0
    png = out / "figures" / "saliency-ckpt.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    assert "figures/saliency-ckpt.png" in (out / "index.html").read_text()
