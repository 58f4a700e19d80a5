"""A linear baseline for the [X/Fe] skill of a checkpoint (issue 17).

Ridge regression from the clipped normalised flux (7,200 pixels) to [Fe/H] and to each
[X/Fe], fitted on the checkpoint's training stars, scored on its test stars with
:func:`rrnet.models.xfe_skill.xfe_skill` (predicted [X/H] = predicted [X/Fe] +
predicted [Fe/H]); only spectra with ``snr_blue >= --min-snr`` take part, since one
linear map cannot follow the noise. Where the ridge has skill and the network has
none, the network has not used information that is in the spectra.

    python benchmarks/xfe_ridge_baseline.py --store STORE --labels LABELS \\
        --checkpoint CKPT [--min-snr 40] [--lam 1 10 100]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from rrnet.labels import CA_LABELS
from rrnet.models.xfe_skill import FE_LABEL, xfe_name, xfe_skill
from rrnet.store import open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True, help="for split.parquet")
    parser.add_argument("--min-snr", type=float, default=40.0)
    parser.add_argument("--lam", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    args = parser.parse_args()
    store = open_store(args.store)
    split = pl.read_parquet(args.checkpoint / "split.parquet")
    rows = split["row"].to_numpy()
    snr = store.manifest["snr_blue"].cast(pl.Float64).to_numpy()[rows]
    keep = snr >= args.min_snr
    rows, part = rows[keep], split["split"].to_numpy()[keep]
    stars = pl.DataFrame({"star_id": split["star_id"].cast(pl.String).to_numpy()[keep]})
    labels = pl.read_parquet(args.labels).with_columns(pl.col("star_id").cast(pl.String))
    truth = stars.join(labels, on="star_id", how="left")
    x = np.clip(store.read_flux(rows).astype(np.float64), -0.5, 2.5)
    train, test = part == "train", part == "test"
    x -= x[train].mean(axis=0)
    print(f"S/N >= {args.min_snr:g}: {train.sum()} training, {test.sum()} test spectra")
    gram = x[train].T @ x[train]
    fe = truth[FE_LABEL].to_numpy()
    abundances = [name for name in CA_LABELS if name in truth.columns]
    print("| lambda | [Fe/H] MAE | " + " | ".join(xfe_name(n) for n in abundances) + " |")
    print("|---|---|" + "---|" * len(abundances))
    for lam in args.lam:
        solve = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), x[train].T)

        def fit(y: np.ndarray, solve: np.ndarray = solve) -> np.ndarray:
            return x @ (solve @ (y[train] - y[train].mean())) + y[train].mean()

        fe_pred = fit(fe)
        cells = [f"{np.mean(np.abs(fe_pred[test] - fe[test])):.3f}"]
        for name in abundances:
            x_true = truth[name].to_numpy()
            x_pred = fit(x_true - fe) + fe_pred
            skill = xfe_skill(x_pred[test], x_true[test], fe_pred[test], fe[test])
            cells.append(f"{skill:.2f}")
        print(f"| {lam:g} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
