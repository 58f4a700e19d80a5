"""What every rrnet command shares: unusable arguments end it with one line and exit 2.

argparse prints the whole usage block on an error; in batch logs of survey runs one
line that names the command and the problem is what an operator needs.
"""

from __future__ import annotations

import argparse
import sys

from rrnet.inference.quality import QualityThresholds


class UsageError(Exception):
    """Unusable command-line arguments (reported as one line, exit status 2)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors raise :class:`UsageError` instead of printing usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def usage_error(prog: str, message: object) -> int:
    """Print ``prog: error: message`` on one line to stderr; return the exit status 2."""
    text = " ".join(str(message).split())
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 2


def add_quality_arguments(parser: argparse.ArgumentParser) -> None:
    """The catalogue-quality options shared by rrnet-infer and rrnet-run."""
    parser.add_argument(
        "--allow-fingerprint-mismatch",
        action="store_true",
        help="use checkpoints trained on differently preprocessed spectra",
    )
    parser.add_argument("--min-snr", type=float, default=QualityThresholds.min_snr)
    parser.add_argument("--ood-quantile", type=float, default=QualityThresholds.ood_quantile)
    parser.add_argument(
        "--max-disagreement", type=float, default=QualityThresholds.max_disagreement
    )


def quality_thresholds(args: argparse.Namespace) -> QualityThresholds:
    """The thresholds given by :func:`add_quality_arguments`' options."""
    return QualityThresholds(
        min_snr=args.min_snr,
        ood_quantile=args.ood_quantile,
        max_disagreement=args.max_disagreement,
    )
