"""``rrnet-infer``: the LAMOST-RRNet catalogue from a store or from raw spectra."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from rrnet.cli._args import (
    OneLineParser,
    UsageError,
    add_output_arguments,
    add_raw_errors_argument,
    add_reading_arguments,
    command,
    data_dir_problem,
    file_output_problem,
    infer_options,
    log_to_stderr,
    no_usable_rows,
    reading_options,
    run_errors,
    usage_error,
)
from rrnet.inference.options import (
    DEFAULT_CHUNK_ROWS,
    FLOOR_AUTO,
    FLOOR_FROM_CALIBRATION,
    FLOOR_NONE,
    InferError,
    InferOptions,
)
from rrnet.inference.provenance import FingerprintMismatch
from rrnet.inference.streaming import run_inference
from rrnet.store import StoreError

PROG = "rrnet-infer"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (also used to document it)."""
    p = OneLineParser(
        prog=PROG,
        description="Write the LAMOST-RRNet catalogue (17 labels, calibrated errors, flag, "
        "quality_bits) of a preprocessed store, or of a catalogue of raw spectra preprocessed "
        "on the fly. Progress shows spectra/s and the ETA; the run ends with a summary.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--store", help="preprocessed store (rrnet-preprocess output)")
    src.add_argument(
        "--catalog",
        help="input catalogue (CSV, Parquet or FITS; .csv.gz and .fits.gz too) to "
        "preprocess on the fly",
    )
    p.add_argument(
        "--data-dir",
        help="with --catalog: directory the filenames are relative to (default: the "
        "catalogue's folder)",
    )
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
    p.add_argument(
        "--workers",
        type=int,
        help="with --catalog: reader threads, as rrnet-preprocess --workers "
        "(0: read in the main thread; default one per core)",
    )
    add_reading_arguments(p, when="with --catalog: ")
    p.add_argument("--per-star", action="store_true", help="also write a per-star table")
    p.add_argument("--star-column", default="star_id", help="star id column for --per-star")
    p.add_argument("--per-star-out", help="per-star table path (default: <out>.per_star.<ext>)")
    p.add_argument(
        "--error-floor",
        action="append",
        metavar="LABEL=SIGMA|calibration",
        help="with --per-star: the part of each spectrum's error that does not average "
        "down over a star's spectra (model error), per label (repeat, e.g. teff=40 "
        "fe_h=0.03), 'calibration' for the floors the checkpoints' calibration fitted "
        "(the default with calibrated errors), or 'none' (the whole error averages down; "
        "the default with --raw-errors)",
    )
    add_raw_errors_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar or log lines")
    return p


def _summary(path: Path, options: InferOptions) -> str:
    """The end-of-run lines: counts, flag reasons, failures and where the outputs are."""
    from rrnet.inference.streaming import per_star_path
    from rrnet.inference.summary import format_summary, summarize_file

    summary = summarize_file(path, options.fmt)
    summary.outputs = {"catalogue": path}
    lines = format_summary(summary, PROG)
    if options.per_star:
        stars = Path(options.per_star_out or per_star_path(path))
        lines += f"\n  per-star table: {stars} ({_star_counts(stars, options.fmt)})"
    return lines


def _none_ok(path: Path, options: InferOptions) -> int:
    """3 (``EXIT_NO_USABLE_ROWS``), with one line, when no row could be labelled (a wrong
    --data-dir, say), as rrnet-preprocess does; the catalogue stays for inspection. 0
    otherwise."""
    from rrnet.inference.summary import summarize_file

    summary = summarize_file(path, options.fmt)
    if summary.rows == 0 or summary.ok > 0:
        return 0
    status, (n, example) = next(iter(summary.failed.items()))
    return no_usable_rows(
        PROG,
        f"none of {summary.rows} rows could be labelled ({n} {status}"
        + (f", e.g. {example}" if example else "")
        + f"); catalogue at {path}",
    )


def _star_counts(path: Path, fmt: str | None) -> str:
    """How many stars the per-star table has and how many of them have a usable exposure
    (a table of stars with none says why, or it reads as a failure of the combination)."""
    from rrnet.inference.writers import read_catalogue

    table, _ = read_catalogue(path, fmt)
    usable = int((table["n_exp"] > 0).sum())
    stars = "star" if table.height == 1 else "stars"
    text = f"{table.height:,} {stars}, {usable:,} with a usable exposure"
    if table.height and not usable:
        text += ": it combines exposures with status ok and flag 1, and none has flag 1"
    return text


def _preprocess_options(args: argparse.Namespace) -> dict[str, object]:
    """On-the-fly preprocessing options (``--catalog`` only)."""
    if not args.catalog:
        return {}
    return reading_options(args)


def parse_error_floor(values: Sequence[str] | None) -> dict[str, float] | str | None:
    """``--error-floor`` values -> ``InferOptions.error_floor`` (InferError if malformed)."""
    if not values:
        return FLOOR_AUTO
    for word in (FLOOR_FROM_CALIBRATION, FLOOR_NONE):
        if word in values:
            if len(values) > 1:
                raise InferError(f"--error-floor {word} cannot be combined with other values")
            return word
    out: dict[str, float] = {}
    for value in values:
        name, sep, sigma = value.partition("=")
        try:
            out[name.strip()] = float(sigma)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise InferError(
                f"--error-floor wants LABEL=SIGMA, 'calibration' or 'none', got {value!r}"
            )
    return out


CATALOG_ONLY = (
    ("data_dir", "--data-dir"),
    ("workers", "--workers"),
    ("chunk_rows", "--chunk-rows"),
    ("rv_mode", "--rv"),
    ("allow_outside_data_dir", "--allow-outside-data-dir"),
    ("find_files", "--find-files"),
)
"""Options of reading raw spectra (``--catalog``): a store is read as it was preprocessed."""


def _ignored_with_store(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """One line when an option that only reading raw spectra uses is given with --store
    (it was ignored without a word: ``--rv measure`` measured nothing)."""
    if not args.store:
        return None
    for dest, flag in CATALOG_ONLY:
        if getattr(args, dest) != parser.get_default(dest):
            return (
                f"{flag} applies to --catalog (raw spectra); a --store was preprocessed with "
                "its own settings (rrnet-preprocess)"
            )
    return None


@command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for unusable arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return usage_error(PROG, exc)
    if (problem := _ignored_with_store(parser, args)) is not None:
        return usage_error(PROG, problem)
    log_to_stderr(PROG, logging.INFO)
    if args.catalog and args.data_dir is None:  # as rrnet-preprocess: the catalogue's folder
        args.data_dir = str(Path(args.catalog).parent)
    inputs = {"store": args.store, "catalog": args.catalog, "data_dir": args.data_dir}

    def run() -> int:
        if args.error_floor and not args.per_star:
            raise InferError("--error-floor applies to the per-star table: add --per-star")
        if args.per_star_out and not args.per_star:  # it was ignored without a word
            raise InferError("--per-star-out names the per-star table: add --per-star")
        if args.catalog and (problem := data_dir_problem(args.data_dir)) is not None:
            raise InferError(problem)
        for target, what in ((args.out, "--out"), (args.per_star_out, "--per-star-out")):
            if target is not None and (problem := file_output_problem(target, what)):
                raise InferError(problem)
        options = infer_options(
            args,
            chunk_rows=args.chunk_rows,
            workers=args.workers,
            per_star=args.per_star,
            star_column=args.star_column,
            per_star_out=args.per_star_out,
            progress=not args.no_progress,
            preprocess=_preprocess_options(args),
            calibrate=not args.raw_errors,
            error_floor=parse_error_floor(args.error_floor),
        )
        path = run_inference(options, out=args.out, **inputs)
        print(_summary(path, options), file=sys.stderr)
        return _none_ok(path, options)

    return run_errors(PROG, run, usage=(InferError, FingerprintMismatch, StoreError))


if __name__ == "__main__":
    raise SystemExit(main())
