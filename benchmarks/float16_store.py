"""The effect of a float16 store on the labels (issue 20).

One synthesised data set is preprocessed twice, into a float32 and a float16 store
(normalised flux only, the DR-scale layout), and one trained checkpoint infers from
both. Printed per label: the largest and the rms difference of the two predictions in
units of the quoted (calibrated) error of each row, the same in physical units, and
the largest change of the quoted error; then the flux-level rounding against the
photon noise (model independent) and the disk per spectrum of each store.

By default the demo's data set is synthesised and a small ensemble trained on it
(``rrnet.demo``'s recipe: 400 stars, 2 members, 15 epochs; a few minutes on 2 cores);
``--demo DIR`` reuses the output of an earlier ``make demo`` / ``rrnet.demo`` run.
The per-row ratio is dominated by the rows with the smallest quoted error (a small
ensemble can agree on an error far below the label's scatter), so the largest shift is
also given against the label's median error. Run:
``python benchmarks/float16_store.py [--demo DIR]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

LIMIT_SIGMA = 0.05
"""What counts as negligible: every prediction moves by less than this many errors."""


def build_demo(out: Path, stars: int, epochs: int, members: int) -> Path:
    """Synthesise a data set and train a checkpoint on it (the demo's steps 1-3)."""
    from rrnet.demo import DEMO_BATCH_SIZE, _official_catalogue
    from rrnet.preprocess.pipeline import preprocess_catalog
    from rrnet.synth.dataset import make_dataset
    from rrnet.training.api import train_ensemble
    from rrnet.training.settings import TrainOptions, TrainSettings

    data = make_dataset(stars, out / "data", seed=0, progress=False)
    catalogue = _official_catalogue(data.root, out)
    store = preprocess_catalog(catalogue, data.data_dir, out / "store", progress=False)
    settings = TrainSettings(members=members, epochs=epochs, seed=0, batch_size=DEMO_BATCH_SIZE)
    train_ensemble(store, data.labels, out / "checkpoint", TrainOptions("all", settings=settings))
    return out


def disk_per_spectrum(store) -> float:
    """Bytes on disk per catalogue row (shards + manifest + store.json)."""
    size = sum(f.stat().st_size for f in store.path.rglob("*") if f.is_file())
    return size / store.n_rows


def flux_rounding(single, half) -> tuple[float, float]:
    """Median and largest ratio, over ok rows, of the rms float16 rounding of the
    normalised flux to the photon noise of that row (1 / min(S/N blue, S/N red))."""
    ok = np.flatnonzero((single.manifest["status"] == "ok").to_numpy())
    a, b = single.read_flux(ok), half.read_flux(ok)
    rms = np.sqrt(np.mean((a - b) ** 2, axis=1))
    m = single.manifest[ok]
    snr = np.minimum(m["snr_blue"].to_numpy(), m["snr_red"].to_numpy())
    ratio = rms * snr
    return float(np.median(ratio)), float(np.max(ratio))


def compare(t32: pl.DataFrame, t16: pl.DataFrame, labels: list[str]) -> list[dict]:
    """Per label: max and rms |v16 - v32| / err32, in physical units, and error changes."""
    rows = []
    for label in labels:
        both = t32.select(v32=label, e32=f"{label}_err").hstack(
            t16.select(v16=label, e16=f"{label}_err")
        )
        both = both.drop_nulls()
        d = (both["v16"] - both["v32"]).abs().to_numpy()
        e = both["e32"].to_numpy()
        de = ((both["e16"] - both["e32"]).abs() / both["e32"]).to_numpy()
        rows.append(
            {
                "label": label,
                "n": both.height,
                "median_err": float(np.median(e)),
                "max_sigma": float(np.max(d / e)),
                "rms_sigma": float(np.sqrt(np.mean((d / e) ** 2))),
                "max_abs": float(np.max(d)),
                "max_median_sigma": float(np.max(d) / np.median(e)),
                "min_err": float(np.min(e)),
                "rms_abs": float(np.sqrt(np.mean(d**2))),
                "max_err_change": float(np.max(de)),
            }
        )
    return rows


def main() -> None:
    from rrnet.inference import infer
    from rrnet.labels import ALL_LABELS
    from rrnet.preprocess.pipeline import preprocess_catalog

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", type=Path, help="an earlier demo output to reuse")
    p.add_argument("--stars", type=int, default=400)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--members", type=int, default=2)
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-f16-"))
    try:
        t0 = time.perf_counter()
        demo = a.demo or build_demo(root / "demo", a.stars, a.epochs, a.members)
        catalogue, data_dir = demo / "rrnet_catalogue.parquet", demo / "data" / "data"
        stores = {
            dtype: preprocess_catalog(
                catalogue,
                data_dir,
                root / dtype,
                keep_resampled=False,
                dtype=dtype,
                progress=False,
            )
            for dtype in ("float32", "float16")
        }
        tables = {
            dtype: infer(
                [demo / "checkpoint"],
                store=s.path,
                out=root / f"{dtype}.parquet",
                device="cpu",
                column_style="paper",
                progress=False,
            )
            for dtype, s in stores.items()
        }
        t32, t16 = tables["float32"], tables["float16"]
        same = t32.select("status", "flag", "quality_bits").equals(
            t16.select("status", "flag", "quality_bits")
        )
        n_ok = int((t32["status"] == "ok").sum())
        print(f"# float16 store vs float32 store: {demo}, {t32.height} rows, {n_ok} ok")
        print(f"load average {os.getloadavg()[0]:.2f}, {time.perf_counter() - t0:.0f} s\n")
        print("| label | rows | median (min) error | max abs(d)/err | rms d/err | max abs(d) "
              "| max abs(d)/median err | rms d | max rel. error change |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        results = compare(t32, t16, [c for c in ALL_LABELS if c in t32.columns])
        for r in results:
            print(
                f"| {r['label']} | {r['n']} | {r['median_err']:.3g} ({r['min_err']:.2g}) "
                f"| {r['max_sigma']:.2e} | {r['rms_sigma']:.2e} | {r['max_abs']:.2e} "
                f"| {r['max_median_sigma']:.2e} | {r['rms_abs']:.2e} "
                f"| {r['max_err_change']:.2e} |"
            )
        worst = max(r["max_sigma"] for r in results)
        med, top = flux_rounding(stores["float32"], stores["float16"])
        print(f"\nworst label shift: {worst:.2e} sigma (limit {LIMIT_SIGMA}): "
              f"{'negligible' if worst < LIMIT_SIGMA else 'NOT negligible'}")  # fmt: skip
        print(f"status, flag and quality bits identical: {same}")
        print(f"flux rounding rms / photon noise per spectrum: median {med:.3f}, max {top:.3f}")
        for dtype, s in stores.items():
            print(f"disk per spectrum, {dtype} (normalised only): "
                  f"{disk_per_spectrum(s) / 1e3:.1f} kB")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
