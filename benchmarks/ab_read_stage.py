"""The pipeline's read stage, two builds of ``rrnet._core`` in one process, alternated.

Old build: ``read_lamost_batch`` as it was (mask columns decoded); new build:
``masks=False`` (the pipeline's call). Both results go through the same Python
conversion to the pipeline's per-file values (``_from_rust`` + ``_plain``),
which are checked identical (arrays bit for bit, header values, S/N). Reported:
CPU time per spectrum (one reader thread) of the Rust call and of the
conversion, and the minor page faults per call.

    python benchmarks/ab_read_stage.py --old /path/to/old/_core.abi3.so [--files 100] [--repeats 24]

(``--old-no-masks``: the old build is called with ``masks=False`` as well, to compare
two builds that both have the option.)
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ab_preprocess_stages import NAMES, load_core  # noqa: E402
from bench_preprocess_e2e import make_files  # noqa: E402
from rrnet import _core  # noqa: E402
from rrnet.io import lamost_fast as lf  # noqa: E402
from rrnet.preprocess import pipeline as pp  # noqa: E402


def stage(core: ModuleType, files: list[Path], **options: bool) -> tuple[float, float, int, list]:
    """(read us/spectrum, conversion us/spectrum, minor faults, the pipeline's values)."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.process_time()
    raw = core.read_lamost_batch(
        [str(p) for p in files], [NAMES] * len(files), lf._PRIMARY, lf._ARM, 1 << 28,
        threads=1, **options,
    )  # fmt: skip
    t1 = time.process_time()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    values = [pp._plain(lf._from_rust(p, NAMES, r)) for p, r in zip(files, raw, strict=True)]
    n = len(files) * len(NAMES) // 2
    return (t1 - t0) / n * 1e6, (time.process_time() - t1) / n * 1e6, faults, values


def same_values(a: list, b: list) -> None:
    for x, y in zip(a, b, strict=True):
        assert (x[0], x[3], str(x[1])) == (y[0], y[3], str(y[1]))
        assert list(x[2]) == list(y[2])
        for name, arm in x[2].items():
            for u, v in zip(arm, y[2][name], strict=True):
                if isinstance(u, np.ndarray):
                    assert u.dtype == v.dtype and u.tobytes() == v.tobytes()
                else:
                    assert u == v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="old build of _core.abi3.so")
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=24)
    parser.add_argument(
        "--old-no-masks",
        action="store_true",
        help="call the old build with masks=False too (an old build that has the option)",
    )
    args = parser.parse_args()
    old = load_core(args.old)
    with tempfile.TemporaryDirectory(prefix="rrnet-ab-read-") as tmp:
        make_files(Path(tmp), args.files)
        files = sorted(Path(tmp).glob("*.fits.gz"))
        got: dict[str, list[tuple[float, float, int]]] = {"old": [], "new": []}
        first: dict[str, list] = {}
        for i in range(args.repeats):
            for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                old_options = {"masks": False} if args.old_no_masks else {}
                core, options = (old, old_options) if name == "old" else (_core, {"masks": False})
                read, conv, faults, values = stage(core, files, **options)
                got[name].append((read, conv, faults))
                first.setdefault(name, values)
        same_values(first["old"], first["new"])
    print("pipeline values identical (arrays bit for bit, header values, S/N)")
    for name, rows in got.items():
        v = np.array(rows, dtype=float)
        print(
            f"{name}: read median {np.median(v[:, 0]):.0f} (min {v[:, 0].min():.0f}), "
            f"conversion median {np.median(v[:, 1]):.1f} us/spectrum, "
            f"minor faults per call {np.median(v[:, 2]):.0f}"
        )
    o = np.array(got["old"])[:, :2].sum(axis=1)
    n = np.array(got["new"])[:, :2].sum(axis=1)
    ratio = f"median of pair ratios {np.median(n / o):.3f}, mins {n.min() / o.min():.3f}"
    print(f"read + conversion, new/old: {ratio}")


if __name__ == "__main__":
    main()
