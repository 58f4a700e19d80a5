"""Calibration of the demo checkpoint's errors on its held-out TEST stars, per S/N bin.

    python benchmarks/calibration_demo.py demo-output [--checkpoint DIR] [--refit]

Fits (with ``--refit``, or when the checkpoint has no ``calibration.json``) the
training step's calibration on the VALIDATION split, then predicts the TEST split
and prints, per label and S/N bin (10-20, 20-40, 40-60, 60-100, >=100), the z-score
std and 1-sigma coverage of the raw (paper eq. 3) and the calibrated errors.
Issue 17 targets: std in [0.9, 1.1], coverage in [0.63, 0.73].
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl

from rrnet.models.calibration import apply_calibration, calibration_snr, read_calibration
from rrnet.models.ensemble import Ensemble
from rrnet.store import open_store
from rrnet.training.calibrate import calibrate_checkpoint

BINS = ((10, 20), (20, 40), (40, 60), (60, 100), (100, np.inf))


def _arrays(demo: Path, checkpoint: Path):
    store = open_store(demo / "store")
    config = json.loads((checkpoint / "config.json").read_text())
    labels = config["labels"]
    split = pl.read_parquet(checkpoint / "split.parquet")
    truth = pl.read_parquet(demo / "data" / "labels.parquet")
    man = store.manifest.with_row_index("_row").join(
        truth.select("star_id", *labels).cast({"star_id": store.manifest.schema["star_id"]}),
        on="star_id",
        how="left",
    )
    man = man.sort("_row")
    rows = split["row"].to_numpy()
    y = man.select(labels).to_numpy().astype(np.float64)[rows]
    snr = calibration_snr(
        man["snr_blue"].cast(pl.Float64).to_numpy()[rows],
        man["snr_red"].cast(pl.Float64).to_numpy()[rows],
    )
    flux = store.read_flux(rows)
    which = split["split"].to_numpy()
    return labels, flux, y, snr, which


def _table(labels, mean, y, err, snr) -> list[dict]:
    out = []
    for j, label in enumerate(labels):
        for lo, hi in BINS:
            sel = (snr >= lo) & (snr < hi) & np.isfinite(y[:, j])
            z = (mean[sel, j] - y[sel, j]) / err[sel, j]
            name = f"{lo}-{hi}" if np.isfinite(hi) else f">={lo}"
            out.append(
                {
                    "label": label,
                    "snr_bin": name,
                    "n": int(sel.sum()),
                    "z_std": float(np.std(z)) if z.size > 1 else np.nan,
                    "cov1": float(np.mean(np.abs(z) <= 1)) if z.size else np.nan,
                }
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("demo", type=Path)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--refit", action="store_true")
    args = p.parse_args()
    ckpt = args.checkpoint or args.demo / "checkpoint"
    labels, flux, y, snr, which = _arrays(args.demo, ckpt)
    valid, test = np.flatnonzero(which == "valid"), np.flatnonzero(which == "test")
    if args.refit or read_calibration(ckpt) is None:
        doc = calibrate_checkpoint(ckpt, flux, y, valid, snr, device="cpu")
        if doc is None:
            raise SystemExit("checkpoint not complete")
    params = read_calibration(ckpt)
    pred = Ensemble.from_checkpoint(ckpt, device="cpu").predict(flux[test])
    mean, raw = np.asarray(pred.mean), np.asarray(pred.std)
    cal = apply_calibration(raw, labels, params, snr[test])
    before = pl.DataFrame(_table(labels, mean, y[test], raw, snr[test]))
    after = pl.DataFrame(_table(labels, mean, y[test], cal, snr[test]))
    table = before.rename({"z_std": "z_std_raw", "cov1": "cov1_raw"}).join(
        after.select("label", "snr_bin", "z_std", "cov1"), on=["label", "snr_bin"]
    )
    ok = table.filter(pl.col("n") >= 2)
    hit_std = ok.filter((pl.col("z_std") >= 0.9) & (pl.col("z_std") <= 1.1)).height
    hit_cov = ok.filter((pl.col("cov1") >= 0.63) & (pl.col("cov1") <= 0.73)).height
    with pl.Config(tbl_rows=200, float_precision=2):
        print(table)
        print(
            table.group_by("snr_bin", maintain_order=True).agg(
                pl.col("n").first(),
                pl.col("z_std_raw").median().alias("median z_std raw"),
                pl.col("z_std").median().alias("median z_std cal"),
                pl.col("z_std").min().alias("min z_std cal"),
                pl.col("z_std").max().alias("max z_std cal"),
                pl.col("cov1").median().alias("median cov1 cal"),
                pl.col("cov1").min().alias("min cov1 cal"),
                pl.col("cov1").max().alias("max cov1 cal"),
            )
        )
    print(f"{valid.size} valid, {test.size} test spectra")
    print(
        f"z_std in [0.9,1.1]: {hit_std}/{ok.height}; coverage in [0.63,0.73]: {hit_cov}/{ok.height}"
    )


if __name__ == "__main__":
    main()
