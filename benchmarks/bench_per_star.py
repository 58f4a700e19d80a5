"""Time of the per-star table (``rrnet-infer --per-star``) on a survey-sized catalogue.

DR7 has millions of MRS spectra of about a million stars. The per-star table combines
each star's independent exposures (:func:`rrnet.inference.per_star.per_star_table`).
The baseline, measured in the same run on the same Parquet file, is the floor of such
a table: one plain Polars ``group_by`` with a mean and a minimum per label. The script
prints both times and their ratio, alternating the two ``--repeats`` times.

Run: ``python benchmarks/bench_per_star.py --rows 2000000 --repeats 3``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from rrnet.inference.columns import SPEC_LABELS
from rrnet.inference.per_star import per_star_table


def synthesise(path: Path, n_rows: int, seed: int = 0) -> int:
    """A per-exposure catalogue, ~3 spectra per star, ~20 % coadds; returns the star count."""
    rng = np.random.default_rng(seed)
    n_stars = max(1, n_rows // 3)
    star = rng.integers(0, n_stars, n_rows)
    columns: dict[str, np.ndarray] = {
        "star_id": star,
        "status": np.where(rng.random(n_rows) < 0.95, "ok", "bad_flux"),
        "flag": (rng.random(n_rows) < 0.8).astype(np.uint8),
        "filename": np.char.add("f", (star * 2 + rng.integers(0, 2, n_rows)).astype(str)),
        "extname_blue": np.where(rng.random(n_rows) < 0.2, "COADD_B", "B-1"),
        "ra": rng.uniform(0, 360, n_rows),
        "dec": rng.uniform(-10, 60, n_rows),
    }
    for label in SPEC_LABELS:
        centre = 5000.0 if label.startswith("Teff") else 0.0
        columns[label] = (centre + rng.normal(size=n_rows)).astype(np.float32)
        columns[f"{label}_err"] = rng.uniform(0.1, 1.0, n_rows).astype(np.float32)
    pl.DataFrame(columns).write_parquet(path)
    return len(np.unique(star))


def baseline(path: Path) -> pl.DataFrame:
    """One plain aggregation per label: what any per-star table must at least cost."""
    aggs = [pl.col(label).mean() for label in SPEC_LABELS]
    aggs += [pl.col(f"{label}_err").min() for label in SPEC_LABELS]
    return pl.scan_parquet(path).group_by("star_id").agg(aggs).collect(engine="streaming")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalogue.parquet"
        n_stars = synthesise(path, args.rows)
        print(f"{args.rows:,} rows, {n_stars:,} stars, {len(SPEC_LABELS)} labels")
        for repeat in range(args.repeats):
            start = time.perf_counter()
            base = baseline(path)
            t_base = time.perf_counter() - start
            start = time.perf_counter()
            table = per_star_table(pl.scan_parquet(path))
            t_table = time.perf_counter() - start
            assert table.height == base.height == n_stars
            print(
                f"repeat {repeat + 1}: per-star table {t_table:.2f} s, plain group_by "
                f"{t_base:.2f} s, ratio {t_table / t_base:.1f}x "
                f"({args.rows / t_table:,.0f} rows/s)"
            )


if __name__ == "__main__":
    main()
