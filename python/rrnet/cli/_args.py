"""What every rrnet command shares: unusable arguments end it with one line and exit 2.

argparse prints the whole usage block on an error; in batch logs of survey runs one
line that names the command and the problem is what an operator needs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rrnet.inference.options import InferOptions
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


def error_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def add_output_arguments(parser: argparse.ArgumentParser, *, resume_help: str) -> None:
    """The output and model-running options shared by rrnet-infer and rrnet-run."""
    from rrnet.inference.writers import FORMATS

    parser.add_argument("--out", required=True, help="output catalogue path")
    parser.add_argument("--format", choices=FORMATS, help="output format (default: from suffix)")
    parser.add_argument(
        "--batch-size", type=int, help="spectra per forward call (default: per device)"
    )
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1")
    parser.add_argument("--resume", action="store_true", help=resume_help)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--allow-fingerprint-mismatch",
        action="store_true",
        help="use checkpoints trained on differently preprocessed spectra",
    )
    parser.add_argument(
        "--min-snr",
        type=float,
        default=QualityThresholds.min_snr,
        help="flag rows whose blue or red S/N is below this (default %(default)g)",
    )
    parser.add_argument(
        "--ood-quantile",
        type=float,
        default=QualityThresholds.ood_quantile,
        help="flag spectra whose out-of-distribution score exceeds this quantile of the "
        "training split's scores (default %(default)g)",
    )
    parser.add_argument(
        "--max-disagreement",
        type=float,
        default=QualityThresholds.max_disagreement,
        help="flag rows where the spread of the ensemble members' means exceeds this many "
        "times their mean predicted sigma (default %(default)g)",
    )


def infer_options(args: argparse.Namespace, **extra: Any) -> InferOptions:
    """The :class:`InferOptions` of :func:`add_output_arguments`' options (plus ``extra``)."""
    thresholds = QualityThresholds(
        min_snr=args.min_snr,
        ood_quantile=args.ood_quantile,
        max_disagreement=args.max_disagreement,
    )
    return InferOptions(
        models=args.model,
        fmt=args.format,
        batch_size=args.batch_size,
        device=args.device,
        resume=args.resume,
        overwrite=args.overwrite,
        thresholds=thresholds,
        allow_fingerprint_mismatch=args.allow_fingerprint_mismatch,
        **extra,
    )
