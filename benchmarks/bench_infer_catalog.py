"""``rrnet-infer --catalog`` against inference alone from a store (issue 20).

Target: preprocessing on the fly loses no more than 10 % to the inference stage
alone, i.e. (b) / (a) <= 1.10 with, on the same spectra and checkpoint,

(a) ``run_inference(store=...)`` from a preprocessed store (normalised flux only), and
(b) ``run_inference(catalog=..., data_dir=...)`` from ``.fits.gz`` files,

both timed in this process after a warm-up, alternating, best of ``--repeats`` (wall
and CPU seconds: on a shared machine the CPU time is the steadier figure). Also
timed: preprocessing alone (``iter_preprocessed``), the OOD test alone (part of (a):
what scoring it costs against the model) and (b) forced both ways: the next
chunk preprocessed on a thread while the model predicts (overlapped) and each chunk
preprocessed in the consuming thread (in turn); (b) itself runs as ``rrnet-infer`` does
(``streaming.overlap_preprocessing`` decides: overlapped on a GPU or with cores that
PyTorch leaves idle, in turn otherwise), so both choices are measured in the same run.
Input: copies (symlinks) of the real LAMOST file, 5 spectra each, as
``bench_infer_e2e.py`` builds them. The two catalogues are checked to agree.
Each checkpoint carries the out-of-distribution test, as every checkpoint ``rrnet-train``
writes from a store with S/N columns does (``training.ood_fit.fit_ood_checkpoint``,
fitted here on half of the store's rows and calibrated on the other half); ``--no-ood``
leaves it out (the model alone: the harder case for the target).
Run: ``python benchmarks/bench_infer_catalog.py [--rows 2048 --chunk-rows 512 --members 6
--ca-members 6]`` (the paper's catalogue: SP and CA ensembles).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import torch

from bench_infer_e2e import make_checkpoint, make_data


@contextmanager
def forced_overlap(overlap: bool):
    """``--catalog`` with the next chunk preprocessed ahead on a thread (True) or each
    chunk preprocessed in the consumer (False), whatever the run would choose."""
    from rrnet.inference import streaming

    saved = streaming.overlap_preprocessing
    streaming.overlap_preprocessing = lambda device_type: overlap
    try:
        yield
    finally:
        streaming.overlap_preprocessing = saved


def timed(fn) -> tuple[float, float]:
    """Wall and CPU seconds (all threads of this process) of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def agree(a: pl.DataFrame, b: pl.DataFrame) -> float:
    """Largest relative difference of the label columns; the rest must be equal."""
    from rrnet.labels import ALL_LABELS

    floats = [c for c in a.columns if any(c.startswith(x) for x in ALL_LABELS)]
    rest = [c for c in a.columns if c not in floats]
    assert a.select(rest).equals(b.select(rest)), "--catalog and --store catalogues differ"
    worst = 0.0
    for c in floats:
        x, y = a[c].to_numpy().astype(float), b[c].to_numpy().astype(float)
        assert np.array_equal(np.isnan(x), np.isnan(y))
        ok = ~np.isnan(x)
        if ok.any():
            worst = max(worst, float(np.max(np.abs(x[ok] - y[ok]) / np.abs(x[ok]).clip(1e-12))))
    return worst


def main() -> None:
    from rrnet.inference import InferOptions, run_inference
    from rrnet.inference.streaming import overlap_preprocessing
    from rrnet.labels import CA_LABELS, SP_LABELS
    from rrnet.preprocess.pipeline import iter_preprocessed, preprocess_catalog

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--chunk-rows", type=int, default=512, help="chunk and shard size")
    p.add_argument("--members", type=int, default=2, help="SP ensemble members")
    p.add_argument(
        "--ca-members", type=int, default=0,
        help="CA ensemble members too (0: none); the paper's catalogue needs SP and CA",
    )  # fmt: skip
    p.add_argument("--tiny", action="store_true", help="tiny RRNet instead of paper size")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--rv-mode", default="auto", choices=("auto", "catalog", "measure"),
        help="RV mode of every run (auto: rrnet-infer's default, every RV measured too)",
    )  # fmt: skip
    p.add_argument(
        "--ood", action=argparse.BooleanOptionalAction, default=True,
        help="checkpoints with the OOD test, as rrnet-train writes them (default)",
    )  # fmt: skip
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-infer-catalog-"))
    try:
        load0 = os.getloadavg()
        catalog, data = make_data(root, a.rows)
        store = preprocess_catalog(
            catalog, data, root / "store", shard_size=a.chunk_rows, keep_resampled=False,
            workers=a.workers, progress=False, rv_mode=a.rv_mode,
        )  # fmt: skip
        models = [make_checkpoint(root / "SP", SP_LABELS, a.members, a.tiny, store.fingerprint)]
        if a.ca_members:
            ca = make_checkpoint(root / "CA", CA_LABELS, a.ca_members, a.tiny, store.fingerprint)
            models.append(ca)
        if a.ood:
            from rrnet.training.ood_fit import fit_ood_checkpoint

            rows = np.arange(a.rows)
            snr = [store.manifest[c].to_numpy() for c in ("snr_blue", "snr_red")]
            flux = store.read_flux(rows)
            for path in models:
                sub = fit_ood_checkpoint(path, flux, rows[::2], rows[1::2], *snr)
                assert sub is not None, "no OOD test fitted"
        opts = InferOptions(models, device=a.device, overwrite=True, workers=a.workers,
                            chunk_rows=a.chunk_rows, progress=False,
                            preprocess={"rv_mode": a.rv_mode})  # fmt: skip
        outs = {k: root / f"{k}.parquet" for k in ("store", "catalog", "overlap", "serial")}

        def run_store() -> None:
            run_inference(opts, out=outs["store"], store=store.path)

        def run_catalog() -> None:
            run_inference(opts, out=outs["catalog"], catalog=catalog, data_dir=data)

        def run_overlap() -> None:
            with forced_overlap(True):
                run_inference(opts, out=outs["overlap"], catalog=catalog, data_dir=data)

        def run_serial() -> None:
            with forced_overlap(False):
                run_inference(opts, out=outs["serial"], catalog=catalog, data_dir=data)

        def run_pre() -> None:
            chunks = iter_preprocessed(
                catalog, data, batch_size=a.chunk_rows, workers=a.workers, rv_mode=a.rv_mode
            )
            for _ in chunks:
                pass

        scorers = []  # the OOD test alone, as inference scores it (flux read beforehand)
        if a.ood:
            from rrnet.models import ood_subspace

            flux_all = store.read_flux(np.arange(a.rows))
            snr_all = [store.manifest[c].to_numpy() for c in ("snr_blue", "snr_red")]
            scorers = [ood_subspace.read(path) for path in models]

        def run_ood() -> None:
            for sub in scorers:
                for i in range(0, a.rows, a.chunk_rows):
                    rows = slice(i, i + a.chunk_rows)
                    ood_subspace.score(sub, flux_all[rows], snr_all[0][rows], snr_all[1][rows])

        run_store(), run_pre()  # warm-up: imports, page cache, thread pools
        keys = ("store", "catalog", "overlap", "serial", "pre") + (("ood",) if a.ood else ())
        times: dict[str, list[float]] = {k: [] for k in keys}
        cpu: dict[str, list[float]] = {k: [] for k in times}
        for _ in range(a.repeats):
            for key, fn in (("store", run_store), ("catalog", run_catalog),
                            ("overlap", run_overlap), ("serial", run_serial),
                            ("pre", run_pre), ("ood", run_ood)):  # fmt: skip
                if key not in times:
                    continue
                wall, used = timed(fn)
                times[key].append(wall)
                cpu[key].append(used)
        best = {k: min(v) for k, v in times.items()}
        least = {k: min(v) for k, v in cpu.items()}
        tables = {k: pl.read_parquet(v) for k, v in outs.items()}
        worst = max(agree(tables["store"], tables[k]) for k in ("catalog", "overlap", "serial"))
        chosen = "overlapped" if overlap_preprocessing(a.device.split(":")[0]) else "in turn"
        size = "tiny" if a.tiny else "paper-size"
        ca = f" + {a.ca_members}-member CA" if a.ca_members else ""
        ood = "with the OOD test" if a.ood else "without the OOD test"
        print(f"# rrnet-infer --catalog vs --store: {a.rows} spectra, chunks of {a.chunk_rows}, "
              f"{a.members}-member SP{ca} {size} RRNet {ood}, {a.device}, "
              f"--rv {a.rv_mode}")  # fmt: skip
        print(f"cores {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average "
              f"{load0[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")  # fmt: skip
        print(f"\n| run | wall s (best of {a.repeats}) | spectra/s | / (a) | CPU s | / (a) |")
        print("|---|---:|---:|---:|---:|---:|")
        rows = (("(a) inference alone (--store)", "store"),
                (f"(b) --catalog (as rrnet-infer runs it: {chosen})", "catalog"),
                ("(b') --catalog, preprocessing overlapped", "overlap"),
                ("(b'') --catalog, preprocessing then inference per chunk", "serial"),
                ("preprocessing alone (iter_preprocessed)", "pre"),
                ("OOD test alone (ood_subspace.score, part of (a))", "ood"))  # fmt: skip
        for name, key in (r for r in rows if r[1] in times):
            t, c = best[key], least[key]
            print(f"| {name} | {t:.2f} | {a.rows / t:.1f} | {t / best['store']:.3f} "
                  f"| {c:.1f} | {c / least['store']:.3f} |")  # fmt: skip
        print(f"\nall runs, wall s: { {k: [round(x, 2) for x in v] for k, v in times.items()} }")
        print(
            f"ratio (b)/(a) = {best['catalog'] / best['store']:.3f} (target <= 1.10); "
            f"overlapped {best['overlap'] / best['store']:.3f}, in turn "
            f"{best['serial'] / best['store']:.3f}; bound if fully "
            f"overlapped max(a, pre)/(a) = {max(best['store'], best['pre']) / best['store']:.3f}"
        )
        med = {k: float(np.median(v)) for k, v in times.items()}
        print(f"medians: (b)/(a) = {med['catalog'] / med['store']:.3f}, "
              f"(b')/(a) = {med['overlap'] / med['store']:.3f}, "
              f"(b'')/(a) = {med['serial'] / med['store']:.3f}")  # fmt: skip
        pairs = {k: [round(x / y, 2) for x, y in zip(times[k], times["store"], strict=True)]
                 for k in ("catalog", "overlap", "serial")}  # fmt: skip
        print(f"per repeat (same minute, so the same load) / (a): {pairs}")
        print(f"catalogues agree: largest relative label difference {worst:.1e}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
