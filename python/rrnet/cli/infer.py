"""``rrnet-infer``: the LAMOST-RRNet catalogue from a store or from raw spectra."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rrnet.cli._args import (
    OneLineParser,
    UsageError,
    add_output_arguments,
    error_line,
    infer_options,
    usage_error,
)
from rrnet.inference.options import DEFAULT_CHUNK_ROWS, InferError
from rrnet.inference.provenance import FingerprintMismatch
from rrnet.inference.streaming import run_inference

PROG = "rrnet-infer"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (also used to document it)."""
    p = OneLineParser(prog=PROG, description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--store", help="preprocessed store (rrnet-preprocess output)")
    src.add_argument(
        "--catalog", help="input catalogue (CSV/Parquet/FITS) to preprocess on the fly"
    )
    p.add_argument("--data-dir", help="directory the catalogue's filenames are relative to")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        help="checkpoint directory; repeat for several (the first predicting a label wins)",
    )
    add_output_arguments(p, resume_help="continue an interrupted run")
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        help="catalogue rows per part file with --catalog (a store uses its shards)",
    )
    p.add_argument("--workers", type=int, help="reader processes with --catalog")
    p.add_argument("--per-star", action="store_true", help="also write a per-star table")
    p.add_argument("--star-column", default="star_id", help="star id column for --per-star")
    p.add_argument("--per-star-out", help="per-star table path (default: <out>.per_star.<ext>)")
    p.add_argument(
        "--raw-errors",
        action="store_true",
        help="quote paper eq. 3 errors, without the checkpoint's S/N-dependent calibration",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar or log lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for unusable arguments)."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return usage_error(PROG, exc)
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s")
    options = infer_options(
        args,
        chunk_rows=args.chunk_rows,
        workers=args.workers,
        per_star=args.per_star,
        star_column=args.star_column,
        per_star_out=args.per_star_out,
        progress=not args.no_progress,
        calibrate=not args.raw_errors,
    )
    inputs = {"store": args.store, "catalog": args.catalog, "data_dir": args.data_dir}
    try:
        path = run_inference(options, out=args.out, **inputs)
    except (InferError, FingerprintMismatch) as exc:
        return usage_error(PROG, error_line(exc))
    print(f"{PROG}: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
