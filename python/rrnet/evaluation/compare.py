"""The paper's central comparison, reproducible: architectures (Fig. 3) and N_r / N_s (Table 1).

Every variant is trained with the same recipe (:class:`rrnet.training.TrainSettings`),
on the same spectra and the same split by star; only the network changes. Test-set
MAE per label gives the architecture comparison (RRNet, ResNet, StarNet, StarNet-R),
validation-set MAE the N_r / N_s ablation, as in the paper. The training function is
a parameter (default :func:`rrnet.training.train_arrays`), so the driver can be run
with any trainer that returns per-member state_dicts and normalisation statistics.

A run takes about an hour on 2 cores, so each finished network's MAE rows are kept in
``OUT/done/<network>.json`` and the tables are rewritten after every network: a run
killed and started again with the same arguments trains only what is missing (the
network in progress at the kill starts afresh).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rrnet.evaluation.report import markdown_table
from rrnet.io.catalog import write_table
from rrnet.models.config import ModelConfig
from rrnet.plots.comparison import plot_mae_bars
from rrnet.utils.atomic import read_json, write_text

ABLATION_CHANNELS: tuple[int, ...] = (4, 8, 16, 32)
"""Residual-block widths; N_r blocks use the first N_r (N_r = 3 is the paper's 4, 8, 16)."""


@dataclass(frozen=True)
class Variant:
    """One network to train: a display name, the experiment it belongs to, its config."""

    name: str
    experiment: str  # "architecture", "N_r" or "N_s"
    config: ModelConfig


def architecture_variants(num_labels: int) -> list[Variant]:
    """RRNet, ResNet (RRNet without RNN), StarNet and StarNet-R (paper Fig. 3)."""
    cfg = ModelConfig(net="rrnet", mode="post-RNN", num_labels=num_labels)
    return [
        Variant("RRNet", "architecture", cfg),
        Variant("ResNet", "architecture", replace(cfg, mode="raw")),
        Variant(
            "StarNet", "architecture", ModelConfig(net="starnet", mode="raw", num_labels=num_labels)
        ),
        Variant(
            "StarNet-R",
            "architecture",
            ModelConfig(net="starnet", mode="post-RNN", num_labels=num_labels),
        ),
    ]


def ablation_variants(
    num_labels: int,
    n_r: Sequence[int] = (1, 2, 3, 4),
    n_s: Sequence[int] = (5, 20, 40, 60),
) -> list[Variant]:
    """Table 1: N_r residual blocks at N_s = 40, and N_s sub-bands at N_r = 3."""
    out = [
        Variant(
            f"N_r={r}",
            "N_r",
            ModelConfig(num_labels=num_labels, channels=ABLATION_CHANNELS[:r], n_subbands=40),
        )
        for r in n_r
    ]
    out += [
        Variant(f"N_s={s}", "N_s", ModelConfig(num_labels=num_labels, n_subbands=s)) for s in n_s
    ]
    return out


TrainFn = Callable[..., Any]
"""``train(flux, labels, split, *, label_names, model_config, settings, out, progress)`` ->
a result with ``state_dicts``, ``normalization`` (flux/label mean/std) and ``test_mean``."""


def ensemble_mean(result: Any, config: ModelConfig, labels: Sequence[str], flux: np.ndarray):
    """Ensemble mean prediction [N, L] of a training result on ``flux`` (physical units)."""
    from rrnet.models.ensemble import Ensemble
    from rrnet.models.normalization import Normalization

    norm = Normalization(**{k: np.asarray(v) for k, v in vars(result.normalization).items()})
    ens = Ensemble(config, result.state_dicts, norm, labels, device="cpu")
    return ens.predict(flux).mean


def mae(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-label MAE (paper eq. 4), ignoring missing reference values."""
    return np.nanmean(np.abs(pred - true), axis=0)


def run_comparison(
    flux: np.ndarray,
    labels: np.ndarray,
    split: Any,
    label_names: Sequence[str],
    out: str | Path,
    *,
    settings: Any = None,
    variants: Sequence[Variant] | None = None,
    train: TrainFn | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, pl.DataFrame]:
    """Train every variant; write tables, bar charts and results.json into ``out``.

    Returns ``{"test": ..., "valid": ...}`` MAE tables (rows: variants, columns: labels).
    """
    from rrnet.training import TrainSettings, train_arrays

    train = train or train_arrays
    settings = settings or TrainSettings()
    out = Path(out)
    names = list(label_names)
    variants = list(
        variants or [*architecture_variants(len(names)), *ablation_variants(len(names))]
    )
    rows: dict[str, list[dict[str, Any]]] = {"test": [], "valid": []}
    done: dict[ModelConfig, dict[str, Any]] = {}  # N_r=3 / N_s=40 / RRNet: one network
    for i, variant in enumerate(variants, 1):
        config = replace(variant.config, num_labels=len(names), n_pixels=flux.shape[1])
        if config not in done:
            done[config] = _train_or_resume(
                variant, config, flux, labels, split, names, out, settings, train, log,
                f"{i}/{len(variants)}",
            )  # fmt: skip
        for key in ("test", "valid"):
            row = {"model": variant.name, "experiment": variant.experiment}
            row |= {n: done[config][key][n] for n in names}
            row["train_s"] = done[config]["train_s"]
            rows[key].append(row)
        tables = {k: pl.DataFrame(v) for k, v in rows.items()}
        _write_outputs(out, tables, names, settings, len(flux), split)
    return tables


def _train_or_resume(
    variant: Variant,
    config: ModelConfig,
    flux: np.ndarray,
    labels: np.ndarray,
    split: Any,
    names: list[str],
    out: Path,
    settings: Any,
    train: TrainFn,
    log: Callable[[str], None],
    position: str,
) -> dict[str, Any]:
    """Test and valid MAE (by label) and training seconds of one network: read from
    ``out/done`` when an earlier run with the same network, labels, settings and
    spectra finished it, else trained now and recorded there."""
    fingerprint = {
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "labels": names,
        "settings": {k: str(v) for k, v in vars(settings).items()},
        "spectra": [int(flux.shape[0]), len(split.train), len(split.valid), len(split.test)],
    }
    record = out / "done" / f"{variant.name.replace('=', '')}.json"
    saved = read_json(record)
    if isinstance(saved, dict) and saved.get("fingerprint") == fingerprint:
        log(f"compare: {position} {variant.name} already trained ({record})")
        return saved
    log(f"compare: {position} training {variant.name} ({config.net}, {config.mode})")
    checkpoint = out / "checkpoints" / variant.name.replace("=", "")
    shutil.rmtree(checkpoint, ignore_errors=True)  # unfinished or stale: start afresh
    t0 = time.perf_counter()
    result = train(
        flux,
        labels,
        split,
        label_names=names,
        model_config=config,
        settings=settings,
        out=checkpoint,
        progress=False,
    )
    seconds = time.perf_counter() - t0
    test = mae(np.asarray(result.test_mean), labels[split.test])
    valid = mae(ensemble_mean(result, config, names, flux[split.valid]), labels[split.valid])
    saved = {
        "fingerprint": fingerprint,
        "test": {n: float(v) for n, v in zip(names, test, strict=True)},
        "valid": {n: float(v) for n, v in zip(names, valid, strict=True)},
        "train_s": seconds,
    }
    record.parent.mkdir(parents=True, exist_ok=True)
    write_text(record, json.dumps(saved, indent=1) + "\n")
    log(f"compare: {variant.name} trained in {seconds:.0f} s")
    return saved


def _write_outputs(out: Path, tables, names, settings, n_spectra: int, split) -> None:
    test, valid = tables["test"], tables["valid"]
    arch = test.filter(pl.col("experiment") == "architecture")
    if arch.height:
        plot_mae_bars(
            arch.select("model", *names),
            out / "comparison.png",
            title="Test-set MAE relative to RRNet (paper Fig. 3)",
        )
    ablation = valid.filter(pl.col("experiment") != "architecture")
    if ablation.height:
        plot_mae_bars(
            ablation.select("model", *names),
            out / "ablation.png",
            reference=_reference(ablation),
            title="Validation MAE relative to N_r=3 / N_s=40 (paper Table 1)",
        )
    for name, table in tables.items():
        write_table(table, out / f"mae_{name}.parquet")  # text widths for astropy
    text = [
        "# Model comparison",
        "",
        f"{n_spectra} spectra; split train/valid/test = {len(split.train)}/"
        f"{len(split.valid)}/{len(split.test)} spectra; settings: `{vars(settings)}`",
        "",
        "## Test-set MAE (paper Fig. 3)",
        "",
        markdown_table(arch.drop("experiment")),
        "",
        "## Validation-set MAE, N_r / N_s ablation (paper Table 1)",
        "",
        markdown_table(ablation.drop("experiment")),
        "",
    ]
    write_text(out / "comparison.md", "\n".join(text))
    doc = {
        "settings": settings.to_dict(),  # typed: 6, true, 0.0005 (it wrote "6", "True")
        "n_spectra": n_spectra,
        "test": test.to_dicts(),
        "valid": valid.to_dicts(),
    }
    write_text(out / "results.json", json.dumps(doc, indent=2) + "\n")


def _reference(table: pl.DataFrame) -> str | None:
    models = table.get_column("model").to_list()
    return next((m for m in ("N_r=3", "N_s=40") if m in models), None)


def load_reference_set(
    store_path: str | Path,
    labels_path: str | Path,
    label_names: Sequence[str],
    *,
    key: str = "star_id",
    max_stars: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(flux [N, 7200], labels [N, L], star_ids [N])`` of the usable store rows with labels.

    ``max_stars`` keeps a random subset of stars (all their spectra) for a reduced run.
    """
    from rrnet.io import read_table
    from rrnet.io.catalog import CatalogError
    from rrnet.store import open_store

    store = open_store(store_path)
    manifest = store.manifest
    if "quality_ok" in manifest.columns:
        manifest = manifest.filter(pl.col("quality_ok"))
    elif "status" in manifest.columns:
        manifest = manifest.filter(pl.col("status") == "ok")
    if key not in manifest.columns:
        raise CatalogError(f"the store has no {key!r} column to join the labels on (--key)")
    truth = read_table(labels_path).select(key, *label_names)
    truth = truth.with_columns(pl.col(key).cast(manifest.schema[key]))
    rows = manifest.select("row", key).join(truth, on=key, how="inner").sort("row")
    if rows.height == 0:  # every row failed, or no id in common: "the train split is empty"
        raise CatalogError(
            f"no usable store row has reference labels ({manifest.height} usable rows, "
            f"{truth.height} labelled {key}s, none in common)"
        )
    if max_stars is not None:
        stars = rows.get_column(key).unique().sort().to_numpy()
        if stars.size > max_stars:
            keep = np.random.default_rng(seed).choice(stars, size=max_stars, replace=False)
            rows = rows.filter(pl.col(key).is_in(pl.Series(keep).implode()))
    flux = store.read_flux(rows.get_column("row").to_numpy())
    labels = rows.select(label_names).cast(pl.Float64).to_numpy()
    return flux, labels, rows.get_column(key).to_numpy()
