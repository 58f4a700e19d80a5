"""Vectorised M-member training vs M sequential single-model runs, on CPU, same data.

Both sides train the paper's RRNet (post-RNN, 7200 pixels) for one epoch with the
same batch size, Adam and noise augmentation; only the training pass is timed
(validation excluded). The baseline is the plain per-model loop of the authors' code,
run once per member. Both formulations of the vectorised training (grouped
convolutions, vmap) and the baseline run interleaved at each thread count; prints
spectra/s of each and the ratios vectorised / sequential at 1 and 2 threads.

    .venv/bin/python benchmarks/bench_train.py [--n 512] [--members 6] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import numpy as np
import torch

from rrnet.models import FLUX_CLIP, ModelConfig, build_model, gaussian_nll
from rrnet.training import TrainSettings, split_by_star, train_arrays
from rrnet.training.augment import add_pixel_noise
from rrnet.training.toy import TOY_LABELS, toy_spectra


def sequential(flux, labels, rows, config, settings) -> float:
    """Seconds for ``members`` separate one-epoch runs of a plain model (baseline)."""
    mean = torch.from_numpy(np.clip(flux[rows], *FLUX_CLIP).mean(0))
    std = torch.from_numpy(np.clip(flux[rows], *FLUX_CLIP).std(0)).clamp(min=1e-3)
    y_all = torch.from_numpy(((labels - labels.mean(0)) / labels.std(0)).astype(np.float32))
    x_all = torch.from_numpy(flux)
    t0 = time.perf_counter()
    for m in range(settings.members):
        torch.manual_seed(m)
        model = build_model(config).train()
        opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
        gen = torch.Generator().manual_seed(m)
        order = np.random.default_rng(m).permutation(rows)
        for b in range(0, order.size, settings.batch_size):
            idx = torch.from_numpy(order[b : b + settings.batch_size])
            x = (x_all[idx].clamp(*FLUX_CLIP) - mean) / std
            x = add_pixel_noise(x, settings.noise_fraction, settings.noise_sigma, gen)
            loss = gaussian_nll(*model(x), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def _vectorised(flux, labels, split, config, settings) -> float:
    """Seconds of the training pass of one epoch of ``train_arrays`` (validation excluded)."""
    result = train_arrays(flux, labels, split, label_names=TOY_LABELS, model_config=config,
                          settings=settings, progress=False)  # fmt: skip
    return result.history[0]["train_time_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=512, help="training spectra")
    p.add_argument("--members", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", default="1,2", help="comma list of intra-op thread counts")
    p.add_argument("--repeats", type=int, default=1, help="interleaved repeats (best kept)")
    p.add_argument(
        "--formulations",
        default="grouped,vmap",
        help="comma list of vectorised formulations to time (grouped, vmap)",
    )
    args = p.parse_args()
    n_total = int(args.n / 0.7) + 8
    flux, labels = toy_spectra(n_total, seed=0)
    split = split_by_star(np.arange(n_total), seed=0)
    split = type(split)(split.train[: args.n], split.valid[:16], split.test[:0])
    config = ModelConfig(num_labels=3)
    base = TrainSettings(
        members=args.members, epochs=1, batch_size=args.batch_size, augment_from=1,
        device="cpu",
    )  # fmt: skip
    load_before = os.getloadavg()[0]
    # warm-up every path (allocator, lazy init) on a few batches
    small = type(split)(split.train[:32], split.valid[:8], split.test[:0])
    forms = [f.strip() for f in args.formulations.split(",") if f.strip()]
    for form in forms:
        warm = TrainSettings(members=args.members, epochs=1, batch_size=16, device="cpu",
                             formulation=form)  # fmt: skip
        _vectorised(flux, labels, small, config, warm)
    sequential(flux, labels, split.train[:32], config, TrainSettings(members=1, batch_size=16))
    n_spec = args.members * split.train.size
    report: dict = {"device": "cpu", "load_average_1min_before": load_before,
                    "members": args.members, "train_spectra": int(split.train.size),
                    "batch_size": args.batch_size, "cpu_count": os.cpu_count()}  # fmt: skip
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        times: dict[str, list[float]] = {f: [] for f in (*forms, "sequential")}
        for _ in range(args.repeats):  # interleaved, so that load changes hit all alike
            for form in forms:
                settings = dataclasses.replace(base, formulation=form)
                times[form].append(_vectorised(flux, labels, split, config, settings))
            times["sequential"].append(sequential(flux, labels, split.train, config, base))
        best = {k: min(v) for k, v in times.items()}
        report[f"threads_{threads}"] = {
            **{f"{k}_spectra_per_s": round(n_spec / t, 1) for k, t in best.items()},
            **{f"speedup_{f}_over_sequential": round(best["sequential"] / best[f], 3)
               for f in forms},
        }  # fmt: skip
    report["load_average_1min_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
