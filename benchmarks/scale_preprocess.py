"""Scale run: preprocess N spectra end to end and extrapolate to a full data release.

Files are links to the real DR7 file (5 spectra each, varied RV), so the
run needs no disk for inputs and measures CPU, not the disk: the inputs stay
in the page cache. The store holds normalised flux only (the documented
DR-scale choice; ``--keep-resampled`` doubles it). Prints spectra/s, peak RSS
sampled through the run (flat when memory does not grow with N), disk per
spectrum and the extrapolated wall time for DR7 and DR11 on this machine.

    python benchmarks/scale_preprocess.py [--n 20000] [--workers 2]

Do not run the 1,000,000 case on a shared machine (~0.3 TB of inputs as links
is fine, but ~29 GB of store and hours of CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

from _shared import REAL_FILE, SPECTRA
from rrnet.preprocess.pipeline import default_workers, preprocess_catalog

RELEASES = {"DR7": 5.6e6, "DR11": 2.0e7}
"""MRS spectra per release: DR7 from the paper; DR11 an assumed round figure
(override with --release DR11=N from the release notes)."""


class RssSampler(threading.Thread):
    """Samples the resident memory of this process and its worker processes (summed)
    every ``period`` seconds."""

    def __init__(self, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.period, self.samples, self.stop = period, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.perf_counter(), _rss_mib()))
            self.stop.wait(self.period)


def _rss_mib() -> float:
    """RSS of this process plus every live descendant (the preprocessing workers)."""
    me = psutil.Process()
    total = 0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


def make_inputs(folder: Path, n: int) -> pl.DataFrame:
    """``ceil(n / 5)`` links to the real file and a catalogue of ``n`` spectra."""
    rows = []
    for i in range(-(-n // 5)):
        name = f"med-{i:07d}.fits.gz"
        try:
            os.link(REAL_FILE, folder / name)
        except OSError:  # another file system: a symbolic link reads the same
            (folder / name).symlink_to(REAL_FILE)
        for j, (blue, red) in enumerate(SPECTRA):
            rows.append((name, blue, red, float(60 * np.sin(0.37 * (5 * i + j)))))
    return pl.DataFrame(
        rows[:n], schema=["filename", "extname_blue", "extname_red", "rv"], orient="row"
    )


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="spectra to preprocess")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--keep-resampled", action="store_true")
    parser.add_argument("--store-dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument(
        "--rv-mode",
        choices=("auto", "catalog", "measure"),
        default="auto",
        help="auto (the commands' default: every RV measured too) or catalog (as given)",
    )
    parser.add_argument("--release", action="append", default=[], metavar="NAME=N")
    args = parser.parse_args()
    releases = dict(RELEASES)
    for item in args.release:
        name, _, count = item.partition("=")
        releases[name] = float(count)
    workers = default_workers() if args.workers is None else args.workers
    with tempfile.TemporaryDirectory(prefix="rrnet-scale-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        catalog = make_inputs(data, args.n)
        sampler = RssSampler()
        sampler.start()
        start = time.perf_counter()
        store = preprocess_catalog(
            catalog,
            data,
            Path(tmp) / "store",
            workers=workers,
            keep_resampled=args.keep_resampled,
            dtype=args.store_dtype,
            progress=False,
            rv_mode=args.rv_mode,
        )
        seconds = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        ok = int((store.manifest["status"] == "ok").sum())
        rate = args.n / seconds
        disk = _du(store.path) / args.n
        rss = np.array([r for _, r in sampler.samples])
        quarters = [rss[: max(1, len(rss) * q // 4)].max() for q in (1, 2, 4)]
        load = os.getloadavg()
    print(
        f"{args.n} spectra, {ok} ok, workers={workers}, {args.store_dtype} store, "
        f"--rv {args.rv_mode}, "
        f"load average {load[0]:.1f}"
    )
    print(f"{rate:.1f} spectra/s ({seconds:.1f} s)")
    peaks = ", ".join(f"{q:.0f} MiB" for q in quarters)
    print(f"peak RSS (all processes) after 1/4, 1/2, all of the run: {peaks}")
    print(f"disk per spectrum: {disk / 1024:.1f} KiB (store incl. manifest)")
    for name, count in releases.items():
        print(
            f"{name}: {count / 1e6:.1f} M spectra -> {count / rate / 3600:.1f} h on this "
            f"machine, {count * disk / 1e12:.2f} TB of store"
        )


if __name__ == "__main__":
    main()
