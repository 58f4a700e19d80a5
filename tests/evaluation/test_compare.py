"""Smoke test of the comparison driver on a tiny toy set (results are reported, not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from rrnet.cli.eval import main
from rrnet.evaluation.compare import ablation_variants, architecture_variants, run_comparison
from rrnet.training import TrainSettings, split_by_star, train_arrays
from rrnet.training.toy import toy_spectra

NAMES = ["Teff[K]", "Logg", "FeH"]


def test_variants_are_the_papers() -> None:
    arch = {v.name: v.config for v in architecture_variants(3)}
    assert (arch["RRNet"].net, arch["RRNet"].mode, arch["RRNet"].n_subbands) == (
        "rrnet", "post-RNN", 40)  # fmt: skip
    assert arch["ResNet"].mode == "raw" and arch["StarNet"].net == "starnet"
    assert arch["StarNet-R"].mode == "post-RNN"
    abl = {v.name: v.config for v in ablation_variants(3)}
    assert [len(abl[f"N_r={r}"].channels) for r in (1, 2, 3, 4)] == [1, 2, 3, 4]
    assert [abl[f"N_s={s}"].n_subbands for s in (5, 20, 40, 60)] == [5, 20, 40, 60]
    assert abl["N_r=3"] == abl["N_s=40"] == arch["RRNet"]


@pytest.mark.slow
def test_comparison_runs_and_trains_each_network_once(tmp_path: Path) -> None:
    flux, labels = toy_spectra(24, seed=1)
    split = split_by_star(np.arange(24), seed=0)
    calls = []

    def counting_train(*args, **kwargs):
        calls.append(kwargs["model_config"])
        return train_arrays(*args, **kwargs)

    settings = TrainSettings(members=1, epochs=1, batch_size=16, device="cpu", compile=False,
                             amp=False)  # fmt: skip
    wanted = {"RRNet", "StarNet", "N_r=3"}
    variants = [v for v in architecture_variants(3) + ablation_variants(3) if v.name in wanted]
    tables = run_comparison(
        flux, labels, split, NAMES, tmp_path, settings=settings, variants=variants,
        train=counting_train, log=lambda _: None,
    )  # fmt: skip
    assert len(calls) == 2  # N_r=3 is RRNet
    assert tables["test"]["model"].to_list() == ["RRNet", "StarNet", "N_r=3"]
    for name in ("comparison.png", "ablation.png", "comparison.md", "results.json"):
        assert (tmp_path / name).stat().st_size > 100
    written = json.loads((tmp_path / "results.json").read_text())["settings"]
    assert TrainSettings.from_dict(written) == settings  # typed values (were all strings)
    # the reported test MAE is the one of the saved test predictions
    pred = pl.read_parquet(tmp_path / "checkpoints" / "StarNet" / "test_predictions.parquet")
    mae = (pred["Logg"] - pred["Logg_true"]).abs().mean()
    starnet = tables["test"].filter(pl.col("model") == "StarNet")
    assert abs(starnet["Logg"][0] - mae) < 1e-6
    # Started again (as after a kill), finished networks are not trained again...
    again = run_comparison(
        flux, labels, split, NAMES, tmp_path, settings=settings, variants=variants,
        train=counting_train, log=lambda _: None,
    )  # fmt: skip
    assert len(calls) == 2
    assert again["test"].equals(tables["test"]) and again["valid"].equals(tables["valid"])
    # ...but other settings make them stale.
    other = TrainSettings(members=1, epochs=2, batch_size=16, device="cpu", compile=False,
                          amp=False)  # fmt: skip
    run_comparison(
        flux, labels, split, NAMES, tmp_path, settings=other, variants=variants[:1],
        train=counting_train, log=lambda _: None,
    )  # fmt: skip
    assert len(calls) == 3


def test_compare_cli_rejects_unknown_variants(tmp_path: Path, capsys) -> None:
    args = ["compare", "--store", str(tmp_path), "--labels", "x.csv", "--out", str(tmp_path)]
    assert main([*args, "--variants", "RRNet,LeNet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rrnet-eval: error: unknown variant(s) LeNet") and err.count("\n") == 1
    assert main([*args, "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rrnet-eval: error: --batch-size must be >= 1") and err.count("\n") == 1


def test_compare_cli_refuses_a_reference_set_it_cannot_split(tmp_path: Path, capsys) -> None:
    """A store whose rows all failed, labels of other stars, or two stars: "unexpected
    ValueError: the train split is empty" after loading; now one line, exit 2, before
    any training, and no output folder."""
    import json

    flux, labels = toy_spectra(6, n_pixels=7200, n_lines=10, seed=1)
    store = tmp_path / "store"
    (store / "shards").mkdir(parents=True)
    np.save(store / "shards" / "normalized-000000.npy", flux.astype(np.float32))
    stars = np.array(["a", "a", "a", "b", "b", "b"])
    manifest = pl.DataFrame({"row": np.arange(6), "star_id": stars, "status": ["ok"] * 6})
    manifest.write_parquet(store / "manifest.parquet")
    info = {"format": "rrnet-preprocessed-store", "format_version": 1, "complete": True,
            "n_rows": 6, "shard_size": 6, "kinds": ["normalized"],
            "fingerprint": {"hash": "toy0123456789abc", "correct_rv": True}}  # fmt: skip
    (store / "store.json").write_text(json.dumps(info))
    table = {"Teff[K]": labels[::3, 0], "Logg": labels[::3, 1], "FeH": labels[::3, 2]}
    pl.DataFrame({"star_id": ["a", "b"], **table}).write_csv(tmp_path / "two.csv")
    pl.DataFrame({"star_id": ["x", "y"], **table}).write_csv(tmp_path / "other.csv")
    out = tmp_path / "compare"
    cases = {"two.csv": "6 usable spectra of 2 labelled stars: too few",
             "other.csv": "no usable store row has reference labels"}  # fmt: skip
    for name, message in cases.items():
        argv = ["compare", "--store", str(store), "--labels", str(tmp_path / name)]
        assert main([*argv, "--out", str(out), "--epochs", "1", "--members", "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
        assert not out.exists()
