"""A/B of one grouped training step (6 members x 256 spectra, the paper's RRNet, fused
Adam step included) with glibc's default malloc settings vs after
``rrnet.utils.heap.retain_heap()`` (what ``train_arrays`` calls on CPU).

Each arm runs in fresh processes (malloc's state is per process), alternating, each
process timing ``--steps`` steps after one discarded warm-up step.
Per arm: process CPU time, wall time and minor page faults per step. CPU time is
what load on a shared machine inflates least; wall / CPU at T threads is the
parallel efficiency.

    .venv/bin/python benchmarks/ab_grouped_step.py [--threads 2] [--rounds 3] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import torch

from rrnet.models import ModelConfig
from rrnet.training.grouped_step import grouped_step
from rrnet.training.vectorize import MemberStack
from rrnet.utils.heap import retain_heap


def _summary(name: str, rows: list[tuple[float, float, int]]) -> str:
    cpu, wall, faults = zip(*rows, strict=True)
    med = statistics.median
    return (
        f"{name:9s} CPU median {med(cpu):.3f} s (min {min(cpu):.3f}), wall median "
        f"{med(wall):.3f} s (min {min(wall):.3f}), page faults median {med(faults):.0f}"
    )


def _child(arm: str, threads: int, steps: int, batch: int) -> None:
    """Run ``steps`` + 1 steps in this process (the first discarded); print JSON rows."""
    torch.set_num_threads(threads)
    config = ModelConfig(num_labels=3)
    stack = MemberStack(config, list(range(6)), formulation="grouped")
    opt = torch.optim.Adam(list(stack.params.values()), lr=1e-4, fused=True)
    x = torch.randn(6, batch, config.n_pixels)
    y = torch.randn(6, batch, config.num_labels)
    rows = []
    if arm == "retained":
        retain_heap()
    for i in range(steps + 1):
        f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        c, w = time.process_time(), time.perf_counter()
        grouped_step(config, stack.params, x, y, threads=threads)
        opt.step()
        c, w = time.process_time() - c, time.perf_counter() - w
        f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f
        if i:
            rows.append((c, w, f))
    print(json.dumps(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="processes per arm, alternating")
    p.add_argument("--steps", type=int, default=3, help="timed steps per process")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--child", choices=("default", "retained"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child, args.threads, args.steps, args.batch)
        return
    res: dict[str, list[tuple[float, float, int]]] = {"default": [], "retained": []}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for arm in res:
            cmd = [sys.executable, __file__, "--child", arm, "--threads", str(args.threads),
                   "--steps", str(args.steps), "--batch", str(args.batch)]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            res[arm] += [tuple(r) for r in json.loads(out.splitlines()[-1])]
    for arm, rows in res.items():
        print(_summary(arm, rows))
    ratio = statistics.median(r[0] for r in res["retained"]) / statistics.median(
        r[0] for r in res["default"]
    )
    print(f"retained / default CPU: {ratio:.3f}; threads {args.threads}; "
          f"load {load:.1f} -> {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
