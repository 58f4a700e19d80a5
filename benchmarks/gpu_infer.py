"""GPU throughput of the 12-model (6 SP + 6 CA) RRNet ensemble: spectrum-model evaluations/s.

Self-contained: needs only torch, numpy and safetensors; the rrnet package need not
be installed (``python/`` is put on ``sys.path``; nothing that needs polars, fitsio or
the Rust extension is imported). Prints one JSON document.

Cases: eager fp32 (``set_float32_mode("fp32")``: matmuls and cuDNN), eager TF32, eager bf16
autocast, at several batch sizes; then ``torch.compile`` bf16/TF32/fp32 at one batch
size. Every case times ``Ensemble.predict_standardized`` on device-resident input
(the model cost, transfer excluded) and reports the peak GPU memory; the compiled
cases also count graph breaks and recompilations in the timed (steady-state) calls.
``end_to_end`` times ``Ensemble.predict`` from host NumPy flux (transfer, clipping,
standardising and the copy back included). ``amp_vs_fp32`` is the largest difference of
bf16 vs fp32 ensemble means, in standardised units and relative to the ensemble
1-sigma. ``flops_per_eval`` (counted by ``torch.utils.flop_counter``) turns the best
rate into TFLOP/s, set against a bf16 matrix product measured in the same run. A time
budget skips the remaining cases rather than overrun. Target: >= 240k evaluations/s
(DR7's 5.6M spectra x 12 models in under 5 minutes).

Usage: python benchmarks/gpu_infer.py [--budget-s 140] [--tiny]   (--tiny: CPU check)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from rrnet.labels import CA_LABELS, SP_LABELS
from rrnet.models import ModelConfig, Normalization, build_model
from rrnet.models.device import set_float32_mode
from rrnet.models.ensemble import Ensemble, ensemble_moments


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_ensembles(device, n_members, n_pixels, compile_, amp, tiny):
    """SP and CA ensembles with seeded random weights (throughput does not depend on them)."""
    out = []
    for seed, labels in ((0, SP_LABELS), (1, CA_LABELS)):
        extra = {"channels": (2, 4), "n_subbands": 4, "hidden": (8, 8)} if tiny else {}
        config = ModelConfig(num_labels=len(labels), n_pixels=n_pixels, **extra)
        torch.manual_seed(seed)
        members = [build_model(config).state_dict() for _ in range(n_members)]
        norm = Normalization(
            np.ones(n_pixels), np.full(n_pixels, 0.1), np.zeros(len(labels)), np.ones(len(labels))
        )
        out.append(
            Ensemble.from_members(
                config, members, norm, labels, device=device, compile=compile_, amp=amp
            )
        )
    return out


def _time_case(ensembles, x, batch, min_time):
    """Evaluations/s of all ensembles on ``x`` after one warm-up call, peak memory (GB),
    and the graphs compiled after the warm-up (0 in a steady state)."""
    device = x.device
    for ens in ensembles:
        ens.predict_standardized(x[:batch], batch_size=batch)
    _sync(device)
    warm = _dynamo_counts()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n_models = sum(ens.n_members for ens in ensembles)
    calls, start = 0, time.perf_counter()
    while True:
        for ens in ensembles:
            ens.predict_standardized(x, batch_size=batch)
        calls += 1
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            break
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    recompiles = _dynamo_counts()["unique_graphs"] - warm["unique_graphs"]
    return calls * x.shape[0] * n_models / elapsed, peak, recompiles


def _dynamo_counts() -> dict:
    """Graph breaks and compiled graphs so far (torch._dynamo's own counters)."""
    from torch._dynamo.utils import counters

    return {
        "graph_breaks": sum(counters["graph_break"].values()),
        "unique_graphs": counters["stats"]["unique_graphs"],
    }


def _flops_per_eval(ensembles, n_pixels) -> float:
    """Forward FLOPs of one spectrum through one member (mean over the ensembles).

    Counted on the CPU: the count does not depend on the device.
    """
    from torch.utils.flop_counter import FlopCounterMode

    total = 0
    x = torch.zeros(8, n_pixels)
    for ens in ensembles:
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            ens.member_models()[0].cpu()(x)
        total += counter.get_total_flops() / 8
    return total / len(ensembles)


def _bf16_matmul_tflops(device) -> float | None:
    """Measured bf16 matrix-product rate: the practical ceiling of this GPU."""
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    _sync(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    _sync(device)
    return 10 * 2 * 8192**3 / (time.perf_counter() - start) / 1e12


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small CPU run to check the script")
    parser.add_argument("--budget-s", type=float, default=140.0)
    parser.add_argument("--members", type=int, default=6)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--compile-batch", type=int, default=None)
    parser.add_argument("--min-time", type=float, default=None, help="seconds per case")
    args = parser.parse_args()
    t0 = time.perf_counter()

    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    n_pixels = 160 if args.tiny else 7200
    batch_sizes = args.batch_sizes or ([8, 32] if args.tiny else [256, 1024, 4096, 8192])
    compile_batch = args.compile_batch or batch_sizes[-2 if len(batch_sizes) > 1 else -1]
    min_time = args.min_time or (0.2 if args.tiny else 1.5)
    n_spectra = max(batch_sizes) * (1 if args.tiny else 2)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(n_spectra, n_pixels, generator=gen).to(device)

    report: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "models": 2 * args.members,
        "spectra_per_case": n_spectra,
        "unit": "spectrum-model evaluations per second",
        "results": [],
        "skipped": [],
    }
    # Most informative first: if the budget runs out, the fp32 cases are the ones skipped.
    precisions = {"bf16": ("fp32", True), "tf32": ("tf32", False), "fp32": ("fp32", False)}
    plan = [("eager", p, b) for b in batch_sizes for p in precisions]
    plan += [("compile", p, compile_batch) for p in precisions]
    cache: dict = {}
    for kind, precision, batch in plan:
        if time.perf_counter() - t0 > args.budget_s:
            report["skipped"].append(f"{kind}-{precision}-b{batch}: time budget")
            continue
        float32_mode, amp = precisions[precision]
        set_float32_mode(float32_mode)
        key = (kind, amp)
        try:
            if key not in cache:
                cache.clear()  # keep one set of stacked weights on the device at a time
                cache[key] = random_ensembles(
                    device, args.members, n_pixels, kind == "compile", amp, args.tiny
                )
            start = time.perf_counter()
            rate, peak_gb, recompiles = _time_case(cache[key], x, batch, min_time)
            row = {
                "mode": kind,
                "precision": precision,
                "batch": batch,
                "evals_per_s": round(rate),
                "peak_gpu_gb": None if peak_gb is None else round(peak_gb, 2),
                "case_s": round(time.perf_counter() - start, 1),
            }
            if kind == "compile":  # the warm-up call compiled; the timed calls must not
                row["graph_breaks"] = _dynamo_counts()["graph_breaks"]
                row["recompiles_in_timed_calls"] = recompiles
            report["results"].append(row)
        except torch.OutOfMemoryError:
            cache.clear()
            torch.cuda.empty_cache()
            report["skipped"].append(f"{kind}-{precision}-b{batch}: out of memory")
        print(json.dumps(report["results"][-1:] or report["skipped"][-1:]), file=sys.stderr)

    # bf16 autocast vs fp32 on the same input, and one end-to-end predict from host flux.
    set_float32_mode("fp32")
    cache.clear()
    fp32 = random_ensembles(device, args.members, n_pixels, False, False, args.tiny)
    bf16 = random_ensembles(device, args.members, n_pixels, False, True, args.tiny)
    xs = x[: min(1024, n_spectra)]
    worst_abs = worst_sigma = 0.0
    for a, b in zip(fp32, bf16, strict=True):
        mean_a, var_a = ensemble_moments(*a.predict_standardized(xs))
        mean_b, _ = ensemble_moments(*b.predict_standardized(xs))
        diff = (mean_a - mean_b).abs()
        worst_abs = max(worst_abs, float(diff.max()))
        worst_sigma = max(worst_sigma, float((diff / var_a.sqrt()).max()))
    report["amp_vs_fp32"] = {"max_abs_diff": worst_abs, "max_diff_over_sigma": worst_sigma}
    flux = (1 + 0.05 * np.random.default_rng(0).standard_normal((n_spectra, n_pixels))).astype(
        np.float32
    )
    for ens in bf16:
        ens.predict(flux[: batch_sizes[0]], batch_size=batch_sizes[0])
    _sync(device)
    start = time.perf_counter()
    for ens in bf16:
        ens.predict(flux, batch_size=compile_batch)
    _sync(device)
    report["end_to_end_bf16_eager_evals_per_s"] = round(  # host flux in, numbers out
        n_spectra * 2 * args.members / (time.perf_counter() - start)
    )
    best = max(report["results"], key=lambda r: r["evals_per_s"], default=None)
    report["best"] = best
    flops = _flops_per_eval(fp32, n_pixels)
    peak = _bf16_matmul_tflops(device)
    report["flops_per_eval"] = round(flops)
    if best is not None:
        achieved = best["evals_per_s"] * flops / 1e12
        report["best_tflops"] = round(achieved, 2)
        report["bf16_matmul_tflops_measured"] = None if peak is None else round(peak, 1)
        report["fraction_of_bf16_matmul"] = None if peak is None else round(achieved / peak, 4)
        # Input bytes alone (float32 flux, read once per ensemble of 6 members):
        input_gbps = best["evals_per_s"] / args.members * n_pixels * 4 / 1e9
        report["best_input_gb_per_s"] = round(input_gbps, 2)
    report["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
