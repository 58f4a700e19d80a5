"""GPU throughput of the 12-model (6 SP + 6 CA) RRNet ensemble: spectrum-model evaluations/s.

Self-contained: needs only torch, numpy and safetensors; the rrnet package need not
be installed (``python/`` is put on ``sys.path``; nothing that needs polars, fitsio or
the Rust extension is imported). Prints one JSON document.

Cases: eager fp32 (``float32_matmul_precision="highest"``), eager TF32, eager bf16
autocast, at several batch sizes; then ``torch.compile`` fp32/TF32/bf16 at one batch
size. Every case times ``Ensemble.predict_standardized`` on device-resident input
(the model cost); one end-to-end ``predict`` from host NumPy flux is timed as well.
``amp_vs_fp32`` is the largest difference of bf16 vs fp32 ensemble means, in
standardised units and relative to the ensemble 1-sigma. A time budget skips the
remaining cases rather than overrun. Target: >= 240k evaluations/s on an H100
(DR7's 2.37M spectra x 12 models in 2 minutes).

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
from rrnet.models.ensemble import Ensemble, ensemble_moments


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ensembles(device, n_members, n_pixels, compile_, amp, tiny):
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
    """Evaluations per second of all ensembles on ``x``, after one warm-up call."""
    device = x.device
    for ens in ensembles:
        ens.predict_standardized(x[:batch], batch_size=batch)
    _sync(device)
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
    return calls * x.shape[0] * n_models / elapsed


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
    batch_sizes = args.batch_sizes or ([8, 32] if args.tiny else [1024, 4096, 8192])
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
    precisions = {"bf16": ("highest", True), "tf32": ("high", False), "fp32": ("highest", False)}
    plan = [("eager", p, b) for b in batch_sizes for p in precisions]
    plan += [("compile", p, compile_batch) for p in precisions]
    cache: dict = {}
    for kind, precision, batch in plan:
        if time.perf_counter() - t0 > args.budget_s:
            report["skipped"].append(f"{kind}-{precision}-b{batch}: time budget")
            continue
        matmul_precision, amp = precisions[precision]
        torch.set_float32_matmul_precision(matmul_precision)
        key = (kind, amp)
        try:
            if key not in cache:
                cache.clear()  # keep one set of stacked weights on the device at a time
                cache[key] = _ensembles(
                    device, args.members, n_pixels, kind == "compile", amp, args.tiny
                )
            start = time.perf_counter()
            rate = _time_case(cache[key], x, batch, min_time)
            report["results"].append(
                {
                    "mode": kind,
                    "precision": precision,
                    "batch": batch,
                    "evals_per_s": round(rate),
                    "case_s": round(time.perf_counter() - start, 1),
                }
            )
        except torch.OutOfMemoryError:
            cache.clear()
            torch.cuda.empty_cache()
            report["skipped"].append(f"{kind}-{precision}-b{batch}: out of memory")
        print(json.dumps(report["results"][-1:] or report["skipped"][-1:]), file=sys.stderr)

    # bf16 autocast vs fp32 on the same input, and one end-to-end predict from host flux.
    torch.set_float32_matmul_precision("highest")
    cache.clear()
    fp32 = _ensembles(device, args.members, n_pixels, False, False, args.tiny)
    bf16 = _ensembles(device, args.members, n_pixels, False, True, args.tiny)
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
    report["end_to_end_bf16_eager_evals_per_s"] = round(
        n_spectra * 2 * args.members / (time.perf_counter() - start)
    )
    report["best"] = max(report["results"], key=lambda r: r["evals_per_s"], default=None)
    report["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
