"""``rrnet-preprocess``: LAMOST MRS files named by a catalogue -> a preprocessed store."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from rrnet.cli._args import (
    OneLineParser,
    command,
    data_dir_problem,
    file_output_problem,
    folder_output_problem,
    interrupted_exit,
    log_to_stderr,
    no_usable_rows,
    os_error_exit,
    output_in_use,
    parse_or_status,
    rv_problem,
    stop_on_sigterm,
    unexpected_exit,
    usage_error,
)
from rrnet.io.catalog import CatalogError, input_format, read_table, table_format
from rrnet.io.lamost import DEFAULT_MAX_INFLATED
from rrnet.io.locate import FOUND_ELSEWHERE, locate_files
from rrnet.preprocess.pipeline import (
    MAX_SHARD_SIZE,
    QualityCuts,
    default_workers,
    preprocess_catalog,
    write_selection,
)
from rrnet.preprocess.rv_policy import DEFAULT_RV_MODE, RV_MODES
from rrnet.preprocess.settings import MAX_ITER_LIMIT
from rrnet.store import STORE_DTYPES, SUMMARY_FILE, StoreError, read_store_info
from rrnet.utils.lock import LockError, output_lock

if TYPE_CHECKING:
    from rrnet.inference.summary import RunSummary

PROG = "rrnet-preprocess"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=(
            "Resample and continuum-normalise the LAMOST MRS spectra named by CATALOG into a "
            "store (manifest.parquet + float32 flux shards). Every catalogue row gets a "
            "manifest row with a status; bad rows never stop the run."
        ),
        epilog=(
            "Disk: a store takes about 57.6 kB per spectrum (7200 float32 pixels of "
            "normalised flux plus 7200 of resampled flux), e.g. about 320 GB for the 5.6 "
            "million spectra of DR7; with --no-keep-resampled (only what training and "
            "inference read) half, 28.8 kB per spectrum (160 GB for DR7); adding "
            "--store-dtype float16 halves it again, 14.6 kB per spectrum with the manifest "
            "(82 GB for DR7; "
            "labels move by < 0.05 of their quoted errors, docs/store.md)."
        ),
    )
    parser.add_argument(
        "catalog",
        type=Path,
        metavar="CATALOG",
        help="input catalogue (CSV, Parquet or FITS; .csv.gz and .fits.gz too) with "
        "columns filename, extname_blue, "
        "extname_red, rv [km/s]",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder the filenames are relative to (default: the catalogue's folder)",
    )
    parser.add_argument(
        "--find-files",
        action="store_true",
        help="also find each file by its name anywhere under --data-dir (one index, built once)",
    )
    parser.add_argument("--out", type=Path, required=True, help="store directory to write")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"reader threads (0: read in the main thread; default one per core, here "
        f"{default_workers()})",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run into the same --out"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing store at --out"
    )
    parser.add_argument(
        "--rv-column", default="rv", help="catalogue column with the RV in km/s (default rv)"
    )
    parser.add_argument(
        "--rv",
        dest="rv_mode",
        choices=RV_MODES,
        default=DEFAULT_RV_MODE,
        help="RV that shifts each spectrum to rest: the catalogue's, the measured one, or "
        "auto (default: the catalogue's when usable, else measured; both are compared)",
    )
    parser.add_argument(
        "--no-rv-correction",
        dest="correct_rv",
        action="store_false",
        help="resample the observed-frame wavelengths (no shift to the rest frame)",
    )
    parser.add_argument(
        "--no-keep-resampled",
        dest="keep_resampled",
        action="store_false",
        help="store only the normalised flux, not the resampled one (halves the store: "
        "28.8 instead of 57.6 kB per spectrum)",
    )
    parser.add_argument(
        "--store-dtype",
        choices=STORE_DTYPES,
        default="float32",
        help="storage type of the flux shards (default float32); float16 halves the store "
        "and is read back as float32 (a shard with a value beyond 65504 stays float32)",
    )
    parser.add_argument(
        "--max-iter", type=int, default=100, help="continuum-fit iteration cap per arm"
    )
    parser.add_argument(
        "--shard-size",
        type=int,
        default=4096,
        help="spectra per flux shard (default 4096, at most 1,000,000)",
    )
    parser.add_argument(
        "--select",
        type=Path,
        default=None,
        metavar="OUT",
        help="also write the rows passing the quality cuts to OUT (.csv or .parquet)",
    )
    parser.add_argument("--min-snr", type=float, default=10.0, help="quality cut (default 10)")
    parser.add_argument(
        "--max-outliers", type=int, default=100, help="quality cut on outlier pixels (100)"
    )
    parser.add_argument(
        "--max-outlier-run",
        type=int,
        default=30,
        help="quality cut on consecutive outlier pixels (30)",
    )
    parser.add_argument(
        "--reader",
        choices=("auto", "fitsio"),
        default="auto",
        help="FITS reader: auto (Rust, in memory; fitsio for what it does not support; "
        "default) or fitsio (the reference reader only)",
    )
    parser.add_argument(
        "--max-inflated-mb",
        type=float,
        default=DEFAULT_MAX_INFLATED / 2**20,
        help="refuse files larger (.fits.gz: inflating) beyond this many MiB with status too_large "
        f"(default {DEFAULT_MAX_INFLATED // 2**20})",
    )
    parser.add_argument(
        "--allow-outside-data-dir",
        action="store_true",
        help="read files named outside --data-dir (absolute or ../); refused by default "
        "with status outside_data_dir",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def _check(args: argparse.Namespace) -> str | None:
    """A one-line problem with the arguments, or None."""
    if not args.catalog.is_file():
        return f"catalogue not found: {args.catalog}"
    if args.data_dir is None:
        args.data_dir = args.catalog.parent
    if (problem := data_dir_problem(args.data_dir)) is not None:
        return problem
    if args.workers is not None and args.workers < 0:
        return f"--workers must be >= 0, got {args.workers}"
    if (problem := rv_problem(args.correct_rv, args.rv_mode)) is not None:
        return problem
    if not (args.max_inflated_mb * 2**20 >= 1):  # also refuses nan
        return f"--max-inflated-mb must be positive, got {args.max_inflated_mb}"
    if not 1 <= args.shard_size <= MAX_SHARD_SIZE:
        return f"--shard-size must lie in 1..{MAX_SHARD_SIZE:,}, got {args.shard_size}"
    if not 1 <= args.max_iter <= MAX_ITER_LIMIT:
        return f"--max-iter must lie in 1..{MAX_ITER_LIMIT}, got {args.max_iter}"
    if not math.isfinite(args.min_snr):
        return f"--min-snr must be a finite number, got {args.min_snr}"
    for name in ("max_outliers", "max_outlier_run"):
        if getattr(args, name) < 0:
            return f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}"
    if args.resume and args.overwrite:
        return "--resume and --overwrite exclude each other"
    if (problem := folder_output_problem(args.out)) is not None:
        return problem
    if args.select is not None and (problem := file_output_problem(args.select, "--select")):
        return problem
    if args.select is not None and args.select.exists():
        if args.catalog.exists() and args.select.samefile(args.catalog):
            return f"--select {args.select} is the input catalogue: name another file"
        if not (args.overwrite or args.resume):  # a rerun rewrites its own selection
            return f"--select {args.select} exists: name another file, or pass --overwrite"
    try:
        input_format(args.catalog)
        if args.select is not None and table_format(args.select) == "fits":
            return "--select writes .csv or .parquet"
    except CatalogError as exc:
        return str(exc)
    return None


def _counts(path: Path) -> tuple[RunSummary, int]:
    """The store's counts (:func:`~rrnet.inference.summary.summarize` of its manifest) and
    its rows passing the quality cuts."""
    from rrnet.inference.summary import summarize

    manifest = pl.scan_parquet(path / "manifest.parquet")
    passing = manifest.select(pl.col("quality_ok").sum()).collect().item()
    return summarize(manifest), int(passing or 0)


def _summarize_store(path: Path) -> tuple[RunSummary, int]:
    """:func:`_counts`, written to ``STORE/summary.json`` (rows, ok, passing the quality
    cuts, failures by status with an example reason: what the end-of-run lines say)
    under the store's lock, so that they describe the store that is there: a run that
    took the store meanwhile (``--overwrite``) keeps it, and its own summary."""
    import json

    from rrnet.inference.summary import summary_document
    from rrnet.utils.atomic import write_text

    try:
        with output_lock(path, directory=True, what="store"):
            summary, passing = _counts(path)  # the store there now
            doc = summary_document(summary) | {"quality_ok": passing}
            if read_store_info(path).get("complete"):
                write_text(path / SUMMARY_FILE, json.dumps(doc, indent=2) + "\n")
            return summary, passing
    except LockError:  # another run writes this store now: its summary will be its own
        return _counts(path)


def _summary(
    path: Path, selection: Path | None, summary: RunSummary, passing: int, dtype: str
) -> str:
    """The end-of-run lines: rows in, ok, passing the cuts, failures by status, outputs."""
    from rrnet.inference.summary import format_summary
    from rrnet.utils.sizes import size_text

    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    summary.outputs = {"store": path}
    if selection is not None:
        summary.outputs["selection"] = selection
    text = format_summary(summary, PROG).splitlines()
    text[0] += f", {passing:,} pass the quality cuts"
    per = f", {size_text(size / summary.rows)} per row" if summary.rows else ""
    text.append(f"  disk: {size_text(size)}{per} ({dtype} flux)")
    return "\n".join(text)


@command(PROG)
def main(argv: list[str] | None = None) -> int:
    args = parse_or_status(build_parser(), argv, PROG)
    if isinstance(args, int):
        return args
    log_to_stderr(PROG)
    problem = _check(args)
    if problem is not None:
        return usage_error(PROG, problem)
    stop_on_sigterm()  # a walltime SIGTERM says what was kept, as Ctrl-C does
    try:
        catalog = args.catalog
        if args.find_files:
            catalog, moved = locate_files(read_table(args.catalog), args.data_dir)
            if not args.quiet and moved:
                print(
                    f"{PROG}: " + FOUND_ELSEWHERE % (moved, args.data_dir),
                    file=sys.stderr,
                )
        store = preprocess_catalog(
            catalog,
            args.data_dir,
            args.out,
            workers=args.workers,
            resume=args.resume,
            overwrite=args.overwrite,
            rv_column=args.rv_column,
            correct_rv=args.correct_rv,
            rv_mode=args.rv_mode,
            max_iter=args.max_iter,
            keep_resampled=args.keep_resampled,
            shard_size=args.shard_size,
            quality=QualityCuts(args.min_snr, args.max_outliers, args.max_outlier_run),
            progress=not args.quiet,
            reader=args.reader,
            max_inflated=int(min(args.max_inflated_mb * 2**20, 2**62)),
            allow_outside_data_dir=args.allow_outside_data_dir,
            dtype=args.store_dtype,
        )
    except (CatalogError, StoreError) as exc:
        return usage_error(PROG, exc)
    except LockError as exc:
        return output_in_use(PROG, exc)
    except OSError as exc:  # the machine (disk full, read-only, I/O error), not the data
        return os_error_exit(PROG, exc)
    except KeyboardInterrupt as exc:
        return interrupted_exit(PROG, exc)
    except Exception as exc:  # out of memory, a full disk inside Arrow's error, ...
        return unexpected_exit(PROG, exc)
    summary, passing = _summarize_store(store.path)
    if summary.ok == 0:
        status, (n, example) = next(iter(summary.failed.items()))
        return no_usable_rows(
            PROG,
            f"none of {store.n_rows} rows could be preprocessed "
            f"({n} {status}" + (f", e.g. {example}" if example else "") + f"); store at {args.out}",
        )
    if args.select is not None:
        write_selection(store, args.select)
    if not args.quiet:
        print(_summary(store.path, args.select, summary, passing, store.dtype), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
