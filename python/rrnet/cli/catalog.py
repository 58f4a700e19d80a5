"""``rrnet-catalog``: an rrnet input catalogue from LAMOST's own catalogue or files.

``from-lamost`` pairs the blue and red rows of LAMOST's MRS general catalogue;
``scan`` builds the rows from the files' headers (RVs from ``--rv-from``, or left empty
with status ``no_rv`` for ``rrnet-preprocess --rv auto`` to measure). Both write a table that
``rrnet-preprocess`` reads as it is, and end with a summary of the rows' statuses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from rrnet.cli._args import (
    OneLineParser,
    command,
    file_output_problem,
    log_to_stderr,
    no_usable_rows,
    parse_or_status,
    run_errors,
    usage_error,
)
from rrnet.io.catalog import CatalogError, table_format, write_table
from rrnet.io.lamost_catalog import (
    OUTPUT_DESCRIPTIONS,
    OUTPUT_UNITS,
    RV_PRIORITY,
    SPECTRA_CHOICES,
    choose_spectra,
    from_lamost,
    join_rv,
    read_rv_table,
    scan_folder,
    status_summary,
)

WRITTEN_FORMATS = ("csv", "parquet", "fits")

PROG = "rrnet-catalog"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Build rrnet's input catalogue from LAMOST's MRS catalogue or files.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{from-lamost,scan}")
    lamost = sub.add_parser(
        "from-lamost",
        help="pair the B and R rows of LAMOST's MRS general catalogue",
        description="One rrnet row per spectrum of LAMOST's MRS general catalogue "
        "(CSV, CSV.gz, FITS or Parquet; one row per band per exposure or coadd).",
    )
    lamost.add_argument("catalogue", type=Path, metavar="CATALOGUE")
    lamost.add_argument("--out", type=Path, required=True, help="rrnet catalogue to write")
    lamost.add_argument(
        "--spectra",
        choices=SPECTRA_CHOICES,
        default="auto",
        help="auto (default): each file's coadd where the catalogue lists one, else its "
        "single exposures (LAMOST lists exposures only for the time-domain survey); "
        "coadd: coadds only; exposures: single exposures only; all: both",
    )
    lamost.add_argument(
        "--rv",
        default=",".join(RV_PRIORITY),
        metavar="COLUMN[,COLUMN...]",
        help=f"RV columns in order of preference (default {','.join(RV_PRIORITY)})",
    )
    scan = sub.add_parser(
        "scan",
        help="build the catalogue from the files' headers",
        description="One row per coadd pair and per exposure pair of every MRS file under DIR.",
    )
    scan.add_argument("folder", type=Path, metavar="DIR")
    scan.add_argument("--out", type=Path, required=True, help="rrnet catalogue to write")
    scan.add_argument(
        "--rv-from",
        type=Path,
        default=None,
        metavar="TABLE",
        help="LAMOST's MRS catalogue, or any table with obsid and rv [km/s] (without it "
        "rv is empty and rrnet-preprocess --rv auto measures it)",
    )
    for p in (parser, lamost, scan):  # before or after the command
        default = False if p is parser else argparse.SUPPRESS
        p.add_argument("--quiet", action="store_true", default=default, help="no summary")
        p.add_argument(
            "--overwrite", action="store_true", default=default, help="replace an existing --out"
        )
    return parser


def _check(args: argparse.Namespace) -> str | None:
    """A one-line problem with the arguments, or None."""
    if args.command is None:
        return "give a command: from-lamost or scan"
    try:
        fmt = table_format(args.out)
    except CatalogError as exc:
        return str(exc)
    if fmt not in WRITTEN_FORMATS:
        return f"--out {args.out}: rrnet-catalog writes .csv, .parquet or .fits, not {fmt}"
    if (problem := file_output_problem(args.out)) is not None:
        return problem
    source = args.catalogue if args.command == "from-lamost" else args.rv_from
    # --overwrite would replace what the run is about to read
    if source is not None and args.out.exists() and source.exists() and args.out.samefile(source):
        return f"--out {args.out} is an input of this run: name another file"
    if args.out.exists() and not args.overwrite:
        return f"{args.out} exists: give --overwrite to replace it"
    if args.command == "from-lamost":
        if not args.catalogue.is_file():
            return f"catalogue not found: {args.catalogue}"
        if not [c for c in args.rv.split(",") if c.strip()]:
            return "--rv names no column"
    else:
        if not args.folder.is_dir():
            return f"not a directory: {args.folder}"
        if args.rv_from is not None and not args.rv_from.is_file():
            return f"--rv-from table not found: {args.rv_from}"
    return None


def _build(args: argparse.Namespace) -> tuple[pl.DataFrame, int]:
    """The rrnet catalogue and how many spectra ``--spectra`` left out."""
    if args.command == "from-lamost":
        rv = tuple(c.strip().lower() for c in args.rv.split(",") if c.strip())
        every = from_lamost(args.catalogue, spectra="all", rv_columns=rv)  # paired once
        table = choose_spectra(every, args.spectra)
        return table, every.height - table.height
    rv_table = read_rv_table(args.rv_from) if args.rv_from is not None else None
    return join_rv(scan_folder(args.folder, progress=not args.quiet), rv_table), 0


def _left_out(args: argparse.Namespace, n: int) -> str:
    other = {"coadd": "single exposures", "exposures": "coadds"}.get(args.spectra, "spectra")
    return f"{n} {other} left out by --spectra {args.spectra} (--spectra all keeps every one)"


def _usable(args: argparse.Namespace) -> list[str]:
    """Statuses that rrnet-preprocess can use: a scanned row without an RV is measured
    (``--rv auto``); a catalogue without any usable RV is still refused (exit 1)."""
    return ["ok", "no_rv"] if args.command == "scan" else ["ok"]


def summary_lines(table: pl.DataFrame, out: Path) -> list[str]:
    """``N rows -> OUT`` then one line per status: count and one example reason."""
    lines = [f"{PROG}: {table.height} rows -> {out}"]
    for status, n, example in status_summary(table):
        lines.append(f"  {status}: {n}" + (f" (e.g. {example})" if example else ""))
    return lines


@command(PROG)
def main(argv: list[str] | None = None) -> int:
    args = parse_or_status(build_parser(), argv, PROG)
    if isinstance(args, int):
        return args
    log_to_stderr(PROG)
    problem = _check(args)
    if problem is not None:
        return usage_error(PROG, problem)
    return run_errors(PROG, lambda: _run(args), usage=(CatalogError,), resumable=False)


def _run(args: argparse.Namespace) -> int:
    """The command's body (errors become one line in :func:`main`)."""
    table, left_out = _build(args)
    if table.height == 0:
        what = "files under " + str(args.folder) if args.command == "scan" else "rows"
        if left_out:
            what = _left_out(args, left_out)
        return no_usable_rows(PROG, f"no spectra found ({what}); nothing written")
    write_table(table, args.out, units=OUTPUT_UNITS, descriptions=OUTPUT_DESCRIPTIONS)
    n_ok = int(table.get_column("catalog_status").is_in(_usable(args)).sum())
    if n_ok == 0:
        _, _, example = status_summary(table)[0]
        return no_usable_rows(
            PROG,
            f"no usable row among {table.height} (e.g. {example}); "
            f"written to {args.out} for inspection",
        )
    if not args.quiet:
        lines = summary_lines(table, args.out)
        if left_out:
            lines.append(f"  ({_left_out(args, left_out)})")
        print("\n".join(lines), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
