"""CPU throughput of a 6-member RRNet ensemble: batched members vs the authors' loop.

Baseline (measured in the same run): the original's way, i.e. each member as its own
eager ``nn.Module``, one after the other, over batches of 128 spectra. Candidate:
:class:`rrnet.models.ensemble.Ensemble` (all members in one call; on CPU the grouped-convolution
network of :mod:`rrnet.models.grouped`). Both include the clip + standardisation of the
flux. Runs alternate so that a busy machine slows both alike; the median of the repeats
is reported, in wall-clock time and in process CPU time (less sensitive to other jobs).

Usage: python benchmarks/bench_infer.py [--spectra 256] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from rrnet.models import ModelConfig, Normalization, build_model
from rrnet.models.ensemble import Ensemble, ensemble_moments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--members", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = ModelConfig()
    members = [build_model(config).state_dict() for _ in range(args.members)]
    rng = np.random.default_rng(0)
    norm = Normalization(
        rng.uniform(0.9, 1.1, 7200), rng.uniform(0.05, 0.2, 7200), np.zeros(3), np.ones(3)
    )
    flux = (1 + 0.05 * rng.standard_normal((args.spectra, 7200))).astype(np.float32)
    ensemble = Ensemble.from_members(config, members, norm, device="cpu")
    models = ensemble.member_models()

    def loop() -> np.ndarray:
        x = torch.from_numpy(norm.standardize_flux(flux))
        mus, variances = [], []
        with torch.no_grad():
            for model in models:
                outs = [model(x[i : i + 128]) for i in range(0, len(x), 128)]
                mus.append(torch.cat([o[0] for o in outs]).numpy())
                variances.append(torch.cat([o[1] for o in outs]).numpy())
        return ensemble_moments(np.array(mus, np.float64), np.array(variances, np.float64))[0]

    def batched() -> np.ndarray:
        return ensemble.predict(flux).mean

    diff = float(np.max(np.abs(loop() - batched())))  # warm-up, and a correctness check
    times: dict[str, list[float]] = {"loop": [], "batched": []}
    cpu: dict[str, list[float]] = {"loop": [], "batched": []}
    for _ in range(args.repeats):
        for name, fn in (("loop", loop), ("batched", batched)):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    rate = {name: args.spectra / statistics.median(t) for name, t in times.items()}
    cpu_ms = {name: 1e3 * statistics.median(t) / args.spectra for name, t in cpu.items()}
    print(f"{args.members}-member RRNet ensemble, {args.spectra} spectra, {args.threads} threads")
    print(
        f"  loop of eager models (authors' way): {rate['loop']:8.1f} spectra/s"
        f"  ({cpu_ms['loop']:.2f} CPU-ms/spectrum)"
    )
    print(
        f"  batched ensemble (rrnet.models.ensemble):   {rate['batched']:8.1f} spectra/s"
        f"  ({cpu_ms['batched']:.2f} CPU-ms/spectrum)"
    )
    print(f"  ratio batched / loop: {rate['batched'] / rate['loop']:.2f}x  (target >= 3x)")
    print(f"  ratio in CPU time:    {cpu_ms['loop'] / cpu_ms['batched']:.2f}x")
    print(f"  max |mean difference|: {diff:.2e} (standardised units)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
