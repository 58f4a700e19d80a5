"""``rrnet-infer``: the LAMOST-RRNet catalogue from a store or from raw spectra."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rrnet.cli._args import (
    OneLineParser,
    UsageError,
    add_quality_arguments,
    quality_thresholds,
    usage_error,
)
from rrnet.inference.provenance import FingerprintMismatch
from rrnet.inference.streaming import DEFAULT_CHUNK_ROWS, InferError, run_inference
from rrnet.inference.writers import FORMATS
from rrnet.labels import COLUMN_STYLES, DEFAULT_COLUMN_STYLE

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
    p.add_argument("--out", required=True, help="output catalogue path")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from suffix)")
    p.add_argument(
        "--column-style",
        choices=COLUMN_STYLES,
        default=DEFAULT_COLUMN_STYLE,
        help="column names: identifier (teff, fe_h; default) or paper (Teff[K], FeH)",
    )
    p.add_argument("--batch-size", type=int, help="spectra per forward call (default: per device)")
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        help="catalogue rows per part file with --catalog (a store uses its shards)",
    )
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1")
    p.add_argument("--workers", type=int, help="reader processes with --catalog")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--per-star", action="store_true", help="also write a per-star table")
    p.add_argument("--star-column", default="star_id", help="star id column for --per-star")
    p.add_argument("--per-star-out", help="per-star table path (default: <out>.per_star.<ext>)")
    add_quality_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar or log lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for unusable arguments)."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return usage_error(PROG, exc)
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s")
    thresholds = quality_thresholds(args)
    try:
        path = run_inference(
            models=args.model,
            out=args.out,
            store=args.store,
            catalog=args.catalog,
            data_dir=args.data_dir,
            fmt=args.format,
            column_style=args.column_style,
            batch_size=args.batch_size,
            chunk_rows=args.chunk_rows,
            device=args.device,
            resume=args.resume,
            overwrite=args.overwrite,
            per_star=args.per_star,
            star_column=args.star_column,
            per_star_out=args.per_star_out,
            thresholds=thresholds,
            allow_fingerprint_mismatch=args.allow_fingerprint_mismatch,
            workers=args.workers,
            progress=not args.no_progress,
        )
    except (InferError, FingerprintMismatch) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return usage_error(PROG, message)
    print(f"{PROG}: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
