"""``rrnet-synth``: write a synthetic LAMOST MRS data set (files, catalogue, labels, truth)."""

from __future__ import annotations

import argparse
import logging
import sys

from rrnet.cli._args import (
    EXIT_NO_USABLE_ROWS,
    OneLineParser,
    UsageError,
    command,
    environment_message,
    error_line,
    folder_output_problem,
    run_failure,
    seed,
    usage_error,
)
from rrnet.synth.dataset import make_dataset
from rrnet.utils.faults import is_machine_fault

PROG = "rrnet-synth"


def _exposure_range(text: str) -> tuple[int, int]:
    """Parse ``N`` or ``LOW-HIGH`` into an inclusive (low, high) pair."""
    parts = text.split("-")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"must look like 2 or 1-4, got {text!r}")
    return (values[0], values[-1])


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=(
            "Simulate LAMOST DR7 MRS observations of library stars: one .fits.gz file per "
            "star-visit under OUT/data, plus OUT/catalogue.csv (input of rrnet-preprocess), "
            "OUT/labels.csv and OUT/truth.csv. Re-running with the same settings resumes."
        ),
    )
    parser.add_argument("--stars", type=int, required=True, help="number of star-visits (files)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--snr-range",
        type=float,
        nargs=2,
        default=(10.0, 200.0),
        metavar=("LOW", "HIGH"),
        help="blue coadd S/N drawn log-uniform in this range (default: 10 200)",
    )
    parser.add_argument(
        "--exposures",
        type=_exposure_range,
        default=(1, 4),
        help="single exposures per visit, N or LOW-HIGH (default: 1-4)",
    )
    parser.add_argument(
        "--rv-jitter",
        type=float,
        default=0.0,
        metavar="KMS",
        help="standard deviation of each exposure's RV about its visit's, km/s (binaries; "
        "truth.csv has each spectrum's RV; default: 0)",
    )
    parser.add_argument("--seed", type=seed, default=0, help="master random seed (default: 0)")
    parser.add_argument(
        "--source",
        choices=("library", "emulator"),
        default="library",
        help="rest-frame spectra: the reference library (default) or its emulator",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="simulation processes (default: one per core)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


@command(PROG)
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return usage_error(PROG, exc)

    if args.stars < 1:
        return usage_error(PROG, f"--stars must be >= 1, got {args.stars}")
    low, high = args.snr_range
    if not 0 < low <= high:
        return usage_error(PROG, f"--snr-range needs 0 < LOW <= HIGH, got {low:g} {high:g}")
    if not 1 <= args.exposures[0] <= args.exposures[1]:
        lo_exp, hi_exp = args.exposures
        return usage_error(PROG, f"--exposures needs 1 <= LOW <= HIGH, got {lo_exp}-{hi_exp}")
    if args.workers is not None and args.workers < 1:
        return usage_error(PROG, f"--workers must be >= 1, got {args.workers}")
    if (problem := folder_output_problem(args.out)) is not None:
        return usage_error(PROG, problem)
    log = logging.getLogger("rrnet.synth")
    handler = logging.StreamHandler(sys.stderr)  # progress/resume lines go to our stderr
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.propagate = False
    try:
        paths = make_dataset(
            args.stars,
            args.out,
            snr_range=(low, high),
            exposures=args.exposures,
            seed=args.seed,
            source=args.source,
            workers=args.workers,
            progress=not args.quiet,
            rv_jitter_kms=args.rv_jitter,
        )
    except OSError as exc:
        if is_machine_fault(exc):  # disk full, read-only: rerunning the command resumes
            stopped = environment_message(exc, resumable=False)
            return run_failure(PROG, f"{stopped} (the same command resumes; visits done are kept)")
        return usage_error(PROG, error_line(exc))
    except (ValueError, ImportError) as exc:
        return usage_error(PROG, error_line(exc))
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
    if not args.quiet:
        print(
            f"{PROG}: {paths.n_visits} visits in {paths.data_dir}, catalogue {paths.catalogue}"
            + (f", {paths.n_failed} failed" if paths.n_failed else ""),
            file=sys.stderr,
        )
    return EXIT_NO_USABLE_ROWS if paths.n_failed and not paths.n_visits else 0


if __name__ == "__main__":
    sys.exit(main())
