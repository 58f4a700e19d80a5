"""Time the vectorised training of M members on N spectra (paper: 12 min/model on a T4).

Runs on a GPU machine without polars or fitsio: the rrnet package need not be
installed (``python/`` is put on sys.path). The training loop imports torch, numpy,
safetensors, scipy, threadpoolctl and the Rust extension (the checkpoint module
reaches the OOD subspace code); build the extension here as abi3 and carry
``python/rrnet/_core.abi3.so``. Data are random normalised fluxes (timing only).
Prints one JSON object.

    python benchmarks/gpu_train.py                 # 6 members, 80,000 spectra, 2 epochs
    python benchmarks/gpu_train.py --tiny          # a CPU smoke run
    python benchmarks/gpu_train.py --n 20000 --no-compile --formulation grouped  # vs vmap
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import numpy as np
import torch

from rrnet.models import ModelConfig
from rrnet.training import Split, TrainSettings, train_arrays

PAPER_MIN_PER_MODEL_T4 = 12.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=80_000, help="spectra (7:1:2 split)")
    p.add_argument("--members", type=int, default=6)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (first includes compile)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--formulation", default="auto", choices=("auto", "vmap", "grouped"))
    p.add_argument("--tiny", action="store_true", help="512 spectra, 2 members, 1 epoch, CPU")
    args = p.parse_args()
    if args.tiny:
        args.n, args.members, args.epochs, args.device = 512, 2, 1, "cpu"
        torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    flux = (1.0 + 0.05 * rng.standard_normal((args.n, 7200), dtype=np.float32)).astype(np.float32)
    labels = rng.standard_normal((args.n, 3)) * [500.0, 1.0, 0.4] + [5000.0, 3.0, -0.3]
    t_data = time.perf_counter() - t0
    rows = rng.permutation(args.n)
    cut1, cut2 = int(0.7 * args.n), int(0.8 * args.n)
    split = Split(np.sort(rows[:cut1]), np.sort(rows[cut1:cut2]), np.sort(rows[cut2:]))
    settings = TrainSettings(
        members=args.members, epochs=args.epochs, batch_size=args.batch_size,
        augment_from=1, device=args.device, amp=not args.no_amp, compile=not args.no_compile,
        ram_limit_gb=64, formulation=args.formulation,
    )  # fmt: skip
    result = train_arrays(
        flux, labels, split, label_names=["Teff[K]", "Logg", "FeH"],
        model_config=ModelConfig(num_labels=3), settings=settings, progress=False,
    )  # fmt: skip
    epochs = [row for row in result.history if row["member"] == 0]
    steady = epochs[-1]
    per_epoch = steady["epoch_time_s"]
    thirty = 30 * per_epoch / 60
    report = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "n_spectra": args.n,
        "train_spectra": int(split.train.size),
        "members": args.members,
        "formulation": settings.resolved_formulation(
            "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
        ),
        "batch_size": args.batch_size,
        "amp": settings.amp and torch.cuda.is_available() and args.device != "cpu",
        "compile": settings.compile and torch.cuda.is_available() and args.device != "cpu",
        "data_generation_s": round(t_data, 1),
        "epoch_times_s": [round(r["epoch_time_s"], 2) for r in epochs],
        "train_spectra_per_s": round(steady["spectra_per_s"], 1),
        "minutes_30_epochs_all_members": round(thirty, 2),
        "minutes_30_epochs_per_model": round(thirty / args.members, 2),
        "paper_minutes_per_model_T4": PAPER_MIN_PER_MODEL_T4,
        "speedup_vs_paper_per_model": round(PAPER_MIN_PER_MODEL_T4 / (thirty / args.members), 2),
        "wall_s": round(result.timing.get("wall_s", float("nan")), 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
