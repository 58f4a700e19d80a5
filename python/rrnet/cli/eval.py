"""``rrnet-eval``: metrics, calibration and figures of a catalogue; ``compare`` subcommand.

``rrnet-eval --catalog C --labels L --out DIR`` writes DIR/index.html, metrics.json,
metrics.md and figures/*.png. ``rrnet-eval compare ...`` trains the paper's four
architectures and the N_r / N_s ablation at reduced size (see docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rrnet.io.catalog import CatalogError, table_format

PROG = "rrnet-eval"


class UsageError(Exception):
    """Unusable command-line arguments (reported as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description=(
            "Evaluate a rrnet-infer catalogue against reference labels: MAE, bias, scatter, "
            "z-scores and 1-/2-sigma coverage per S/N bin, repeat-observation scatter, the "
            "paper's figures, and a static index.html. Subcommand: 'compare' (model "
            f"comparison and ablation; '{PROG} compare --help')."
        ),
    )
    p.add_argument("--catalog", type=Path, required=True, help="rrnet-infer output table")
    p.add_argument("--labels", type=Path, required=True, help="reference labels table")
    p.add_argument("--out", type=Path, required=True, help="report directory (created)")
    p.add_argument(
        "--key",
        default="star_id",
        help="join column(s), comma-separated (default star_id; per spectrum e.g. "
        "obsid,extname_blue,extname_red)",
    )
    p.add_argument(
        "--snr",
        default="snr_blue",
        help="S/N used for binning: a column name, or 'min'/'mean' of snr_blue and snr_red "
        "(default snr_blue)",
    )
    p.add_argument(
        "--all-rows", action="store_true", help="count status-ok rows even with flag != 1"
    )
    p.add_argument("--repeat-key", default="star_id", help="column grouping repeat exposures")
    p.add_argument("--min-exposures", type=int, default=2, help="exposures per repeat star")
    p.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="ensemble checkpoint dir (split, history, models); repeat for SP and CA",
    )
    p.add_argument(
        "--split",
        choices=("test", "valid", "train", "all"),
        default="test",
        help="with --checkpoint: evaluate this split's stars only (default test)",
    )
    p.add_argument(
        "--recalibrate",
        action="store_true",
        help="fit per-label sigma factors on the checkpoint's VALIDATION split and write "
        "CHECKPOINT/recalibration.json",
    )
    p.add_argument("--store", type=Path, help="preprocessed store, for the saliency maps")
    p.add_argument("--isochrones", type=Path, help="MIST isochrone CSV for the Kiel diagram")
    p.add_argument(
        "--saliency-spectra", type=int, default=200, help="spectra per Teff class (paper 1000)"
    )
    p.add_argument("--no-figures", action="store_true", help="tables only (fast)")
    return p


def _check(args: argparse.Namespace) -> str | None:
    """One-line reason why the arguments cannot work, or None."""
    for name in ("catalog", "labels"):
        path = getattr(args, name)
        try:
            table_format(path)
        except CatalogError as exc:
            return str(exc)
        if not path.is_file():
            return f"--{name} not found: {path}"
    if args.out.exists() and not args.out.is_dir():
        return f"--out exists and is not a directory: {args.out}"
    for ckpt in args.checkpoint:
        if not ckpt.is_dir():
            return f"--checkpoint is not a directory: {ckpt}"
    if args.recalibrate and not args.checkpoint:
        return "--recalibrate needs --checkpoint (the validation split is stored there)"
    if args.store is not None and not args.checkpoint:
        return "--store (saliency maps) needs --checkpoint (the models)"
    if args.store is not None and not args.store.is_dir():
        return f"--store is not a directory: {args.store}"
    if args.isochrones is not None and not args.isochrones.is_file():
        return f"--isochrones not found: {args.isochrones}"
    if args.min_exposures < 2:
        return f"--min-exposures must be >= 2, got {args.min_exposures}"
    if args.saliency_spectra < 1:
        return f"--saliency-spectra must be >= 1, got {args.saliency_spectra}"
    if not [k for k in args.key.split(",") if k.strip()]:
        return "--key is empty"
    return None


def _main_eval(argv: list[str]) -> int:
    from rrnet.checkpoint import CheckpointError
    from rrnet.evaluation.run import EvalOptions, evaluate
    from rrnet.evaluation.sample import SampleError
    from rrnet.store import StoreError

    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    problem = _check(args)
    if problem is not None:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    opts = EvalOptions(
        catalog=args.catalog,
        labels=args.labels,
        out=args.out,
        key=tuple(k.strip() for k in args.key.split(",") if k.strip()),
        snr=args.snr,
        all_rows=args.all_rows,
        repeat_key=args.repeat_key,
        min_exposures=args.min_exposures,
        checkpoints=tuple(args.checkpoint),
        split=args.split,
        recalibrate=args.recalibrate,
        store=args.store,
        isochrones=args.isochrones,
        saliency_spectra=args.saliency_spectra,
        figures=not args.no_figures,
    )
    try:
        report = evaluate(opts)
    except (CatalogError, SampleError, CheckpointError, StoreError, FileNotFoundError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    n = report.counts.get("with_labels", 0)
    print(f"{PROG}: {n} spectra evaluated -> {args.out / 'index.html'}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "compare":
        from rrnet.cli.compare import main as compare_main

        return compare_main(argv[1:])
    return _main_eval(argv)


if __name__ == "__main__":
    sys.exit(main())
