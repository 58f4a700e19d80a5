"""``rrnet-eval``: metrics, calibration and figures of a catalogue; ``compare`` subcommand.

``rrnet-eval --catalog C --labels L --out DIR`` writes DIR/index.html, metrics.json,
metrics.md and figures/*.png. ``rrnet-eval compare ...`` trains the paper's four
architectures and the N_r / N_s ablation at reduced size (see docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rrnet.cli._args import (
    OneLineParser,
    UsageError,
    command,
    log_to_stderr,
    parse_or_status,
    run_errors,
    seed,
    usage_error,
)
from rrnet.cli._report_folder import marked_report_folder, report_folder_problem
from rrnet.io.catalog import CatalogError, input_format
from rrnet.utils.lock import output_lock

PROG = "rrnet-eval"
KIND_OVERVIEW = f"{PROG} overview"
KIND_COMPARE = f"{PROG} compare"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description=(
            "Evaluate a rrnet-infer catalogue against reference labels: MAE, bias, scatter, "
            "z-scores and 1-/2-sigma coverage per S/N bin, repeat-observation scatter, the "
            "paper's figures, and one self-contained index.html. Subcommands: 'overview' "
            f"(a catalogue without reference labels; '{PROG} overview --help') and "
            f"'compare' (model comparison and ablation; '{PROG} compare --help')."
        ),
    )
    p.add_argument("--catalog", type=Path, required=True, help="rrnet-infer output table")
    p.add_argument("--labels", type=Path, required=True, help="reference labels table")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="report directory: new, empty, or an earlier rrnet-eval report (rewritten)",
    )
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
    p.add_argument(
        "--isochrones",
        type=Path,
        help="MIST isochrone CSV for the Kiel diagram (default: the shipped MIST 7 Gyr set)",
    )
    p.add_argument(
        "--saliency-spectra",
        type=int,
        default=200,
        help="spectra per Teff class (default 200; the paper used 1000)",
    )
    p.add_argument("--no-figures", action="store_true", help="tables only (fast)")
    return p


def _check(args: argparse.Namespace) -> str | None:
    """One-line reason why the arguments cannot work, or None."""
    for name in ("catalog", "labels"):
        path = getattr(args, name)
        try:
            input_format(path)
        except CatalogError as exc:
            return str(exc)
        if not path.is_file():
            return f"--{name} not found: {path}"
    if (problem := report_folder_problem(args.out, PROG)) is not None:
        return problem
    for ckpt in args.checkpoint:
        if not ckpt.is_dir():
            return f"--checkpoint is not a directory: {ckpt}"
    if args.split != "test" and not args.checkpoint:  # it was ignored without a word
        return f"--split {args.split} needs --checkpoint (the split is stored there)"
    if args.recalibrate and not args.checkpoint:
        return "--recalibrate needs --checkpoint (the validation split is stored there)"
    if args.store is not None and not args.checkpoint:
        return "--store (saliency maps) needs --checkpoint (the models)"
    if args.store is not None and not args.store.is_dir():
        return f"--store is not a directory: {args.store}"
    if args.isochrones is not None and (problem := isochrones_problem(args.isochrones)):
        return problem
    if args.min_exposures < 2:
        return f"--min-exposures must be >= 2, got {args.min_exposures}"
    if args.saliency_spectra < 1:
        return f"--saliency-spectra must be >= 1, got {args.saliency_spectra}"
    if not [k for k in args.key.split(",") if k.strip()]:
        return "--key is empty"
    return None


def _main_eval(argv: list[str]) -> int:
    args = parse_or_status(build_parser(), argv, PROG)
    if isinstance(args, int):
        return args
    problem = _check(args)
    if problem is not None:
        return usage_error(PROG, problem)
    # heavy modules (polars, matplotlib, torch) only after parsing: --help stays fast
    from rrnet.evaluation.evaluate import EvalOptions, evaluate
    from rrnet.evaluation.sample import SampleError
    from rrnet.models.checkpoint import CheckpointError
    from rrnet.store import StoreError

    opts = EvalOptions(
        catalog=args.catalog,
        labels=args.labels,
        out=args.out,
        key=args.key,  # a comma list (EvalOptions splits it)
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

    from rrnet.evaluation.report import headline_lines

    def run() -> int:
        with (
            output_lock(args.out, directory=True, what="report"),
            marked_report_folder(args.out, PROG),
        ):
            report = evaluate(opts)
        # with --checkpoint only the chosen split's stars are evaluated
        n = report.counts.get(f"in_{opts.split}_split", report.counts.get("with_labels", 0))
        print(f"{PROG}: {n} spectra evaluated -> {args.out / 'index.html'}", file=sys.stderr)
        for line in headline_lines(report):
            print(f"  {line}", file=sys.stderr)
        return 0

    usage = (CatalogError, SampleError, CheckpointError, StoreError, FileNotFoundError)
    return run_errors(PROG, run, usage=usage, resumable=False)  # no --resume here


def build_compare_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=f"{PROG} compare",
        description=(
            "Train RRNet, ResNet, StarNet, StarNet-R and the N_r / N_s variants with one "
            "recipe on one split of a preprocessed reference set; write MAE tables "
            "(comparison.md, mae_test.parquet, mae_valid.parquet) and bar charts."
        ),
    )
    p.add_argument("--store", type=Path, required=True, help="preprocessed store")
    p.add_argument("--labels", type=Path, required=True, help="reference labels table")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output directory: new, empty, or an earlier comparison (rewritten)",
    )
    p.add_argument("--key", default="star_id", help="column joining store and labels")
    p.add_argument("--group", choices=("SP", "CA", "all"), default="SP", help="labels to fit")
    p.add_argument(
        "--variants",
        default="all",
        help="comma-separated names (RRNet,ResNet,StarNet,StarNet-R,N_r=1..4,N_s=5,20,40,60) "
        "or 'all', 'architectures', 'ablation'",
    )
    p.add_argument("--members", type=int, default=2, help="ensemble members (paper 6)")
    p.add_argument("--epochs", type=int, default=8, help="epochs (paper 30)")
    p.add_argument("--lr-step", type=int, default=4, help="StepLR step (paper 10)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="batch size (paper 256; a few thousand spectra want ~32 for enough steps)",
    )
    p.add_argument("--augment-from", type=int, default=3, help="first noisy epoch (paper 6)")
    p.add_argument("--max-stars", type=int, default=1500, help="random subset of stars")
    p.add_argument("--seed", type=seed, default=0, help="split, subset and init seed")
    return p


def _select_variants(spec: str, n_labels: int):
    from rrnet.evaluation.compare import ablation_variants, architecture_variants

    arch, abl = architecture_variants(n_labels), ablation_variants(n_labels)
    if spec in ("all", "architectures", "ablation"):
        return {"all": arch + abl, "architectures": arch, "ablation": abl}[spec]
    by_name = {v.name: v for v in arch + abl}
    wanted = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown or not wanted:
        raise UsageError(f"unknown variant(s) {', '.join(unknown) or repr(spec)}")
    return [by_name[n] for n in wanted]


def _main_compare(argv: list[str]) -> int:
    from rrnet.labels import ALL_LABELS, CA_LABELS, SP_LABELS

    try:
        args = build_compare_parser().parse_args(argv)
        names = {"SP": SP_LABELS, "CA": CA_LABELS, "all": ALL_LABELS}[args.group]
        variants = _select_variants(args.variants, len(names))
        for flag in ("members", "epochs", "lr_step", "batch_size", "augment_from", "max_stars"):
            if getattr(args, flag) < 1:
                raise UsageError(f"--{flag.replace('_', '-')} must be >= 1")
        if not args.store.is_dir():
            raise UsageError(f"--store is not a directory: {args.store}")
        if not args.labels.is_file():
            raise UsageError(f"--labels not found: {args.labels}")
        if (problem := report_folder_problem(args.out, KIND_COMPARE)) is not None:
            raise UsageError(problem)
    except UsageError as exc:
        return usage_error(PROG, exc)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    from rrnet.evaluation.compare import load_reference_set, run_comparison
    from rrnet.store import StoreError
    from rrnet.training import TrainSettings, split_by_star

    try:
        flux, labels, stars = load_reference_set(
            args.store, args.labels, names, key=args.key, max_stars=args.max_stars, seed=args.seed
        )
    except (CatalogError, StoreError, pl_errors()) as exc:
        return usage_error(PROG, str(exc).splitlines()[0])
    settings = TrainSettings(
        members=args.members,
        epochs=args.epochs,
        lr_step=args.lr_step,
        batch_size=args.batch_size,
        augment_from=args.augment_from,
        seed=args.seed,
        device="auto",
        compile=False,
    )
    split = split_by_star(stars, seed=args.seed)
    if min(split.train.size, split.valid.size, split.test.size) == 0:
        n_stars = len(set(stars.tolist()))
        return usage_error(
            PROG,
            f"{len(stars)} usable spectra of {n_stars} labelled stars: too few for a "
            "train / validation / test split by star (a few dozen stars at the least)",
        )

    def run() -> int:
        with (
            output_lock(args.out, directory=True, what="report"),
            marked_report_folder(args.out, KIND_COMPARE),
        ):
            run_comparison(
                flux,
                labels,
                split,
                names,
                args.out,
                settings=settings,
                variants=variants,
                log=lambda msg: print(msg, file=sys.stderr),
            )
        print(f"{PROG}: comparison written to {args.out / 'comparison.md'}", file=sys.stderr)
        return 0

    return run_errors(PROG, run, usage=(CatalogError, StoreError), resumable=False)


def build_overview_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=f"{PROG} overview",
        description=(
            "A one-page overview of a catalogue without reference labels: counts and flags "
            "by reason, the Kiel diagram and [X/Fe]-[Fe/H] of the recommended rows, "
            "predicted sigma against S/N and the distribution of every label. Writes "
            "OUT/index.html (self-contained: images embedded), summary.json and figures/."
        ),
    )
    p.add_argument(
        "catalog",
        type=Path,
        metavar="CATALOG",
        help="rrnet-infer catalogue (CSV, Parquet, FITS, VOTable or ECSV)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="overview directory: new, empty, or an earlier overview (rewritten)",
    )
    p.add_argument(
        "--snr",
        default="snr_blue",
        help="S/N for the panels: a column name, or 'min'/'mean' of snr_blue and snr_red "
        "(default snr_blue)",
    )
    p.add_argument(
        "--isochrones",
        type=Path,
        help="MIST isochrone CSV for the Kiel diagram (default: the shipped MIST 7 Gyr set)",
    )
    return p


def _main_overview(argv: list[str]) -> int:
    try:
        args = build_overview_parser().parse_args(argv)
        input_format(args.catalog)
        if not args.catalog.is_file():
            raise UsageError(f"catalogue not found: {args.catalog}")
        if (problem := report_folder_problem(args.out, KIND_OVERVIEW)) is not None:
            raise UsageError(problem)
        if args.isochrones is not None and (problem := isochrones_problem(args.isochrones)):
            raise UsageError(problem)
    except (UsageError, CatalogError) as exc:
        return usage_error(PROG, exc)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    from rrnet.evaluation.overview import overview
    from rrnet.evaluation.sample import SampleError
    from rrnet.inference.summary import format_summary

    def run() -> int:
        with (
            output_lock(args.out, directory=True, what="overview"),
            marked_report_folder(args.out, KIND_OVERVIEW),
        ):
            summary = overview(args.catalog, args.out, snr=args.snr, isochrones=args.isochrones)
        print(format_summary(summary, f"{PROG} overview"), file=sys.stderr)
        return 0

    usage = (CatalogError, SampleError, ValueError, FileNotFoundError)
    return run_errors(PROG, run, usage=usage, resumable=False)


def isochrones_problem(path: Path) -> str | None:
    """One line when ``--isochrones`` is not a MIST isochrone CSV, found before any work."""
    if not path.is_file():
        return f"--isochrones not found: {path}"
    from rrnet.plots.kiel import read_isochrones

    try:
        read_isochrones(path)
    except ValueError as exc:
        return f"--isochrones {exc}"
    return None


def pl_errors() -> type[Exception]:
    import polars as pl

    return pl.exceptions.PolarsError


@command(PROG)
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    log_to_stderr(PROG)
    if argv and argv[0] == "compare":
        return _main_compare(argv[1:])
    if argv and argv[0] == "overview":
        return _main_overview(argv[1:])
    return _main_eval(argv)


if __name__ == "__main__":
    sys.exit(main())
