"""``rrnet-train``: train an RRNet ensemble from a preprocessed store and reference labels."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rrnet.cli._args import (
    OneLineParser,
    UsageError,
    command,
    interrupted_exit,
    log_to_stderr,
    os_error_exit,
    output_in_use,
    output_problem,
    seed,
    stop_on_sigterm,
    unexpected_exit,
    usage_error,
)
from rrnet.models.calibration import AUTO, FORMS
from rrnet.training.settings import TrainOptions, TrainSettings
from rrnet.utils.lock import LockError, output_lock

PROG = "rrnet-train"


def build_parser() -> argparse.ArgumentParser:
    d = TrainSettings()
    p = OneLineParser(
        prog=PROG,
        description="Train M networks together (deep ensemble) with the paper's recipe.",
    )
    p.add_argument("--store", required=True, help="preprocessed store (rrnet-preprocess)")
    p.add_argument(
        "--labels", required=True, help="labels table (CSV, Parquet or FITS; also gzipped)"
    )
    p.add_argument("--out", required=True, help="checkpoint directory to create")
    p.add_argument(
        "--group",
        default="SP",
        help="labels to fit: SP, CA, all, or a comma list of label columns (default SP)",
    )
    p.add_argument("--members", type=int, default=d.members, help="ensemble size M (6)")
    p.add_argument(
        "--arch",
        default="rrnet",
        choices=("rrnet", "resnet", "starnet", "starnet-r"),
        help="network (default rrnet)",
    )
    p.add_argument("--mode", choices=("post-RNN", "pre-RNN", "raw"), help="RNN placement")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs (%(default)s)")
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="spectra per step (%(default)s)"
    )
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (5e-4)")
    p.add_argument("--lr-step", type=int, default=d.lr_step, help="StepLR step in epochs (10)")
    p.add_argument("--lr-gamma", type=float, default=d.lr_gamma, help="StepLR factor (0.1)")
    p.add_argument(
        "--augment-from", type=int, default=d.augment_from,
        help="first 1-based epoch with noise augmentation, 0 = never (6)",
    )  # fmt: skip
    p.add_argument(
        "--noise-fraction", type=float, default=d.noise_fraction,
        help="augmentation: fraction of pixels that get noise (%(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--noise-sigma", type=float, default=d.noise_sigma,
        help="augmentation: sigma of that noise in standardised flux units (%(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--rv-shift", type=float, default=d.rv_shift_kms, metavar="KMS",
        help="RRNet-cp: random Doppler shifts up to +-KMS km/s during augmentation (0 = off)",
    )  # fmt: skip
    p.add_argument(
        "--predict-rv", action="store_true",
        help="RRNet-ur: predict the manifest's rv as an extra label",
    )  # fmt: skip
    p.add_argument("--seed", type=seed, default=d.seed, help="initialisation seed (%(default)s)")
    p.add_argument("--split-seed", type=seed, help="seed of the star split (default --seed)")
    p.add_argument(
        "--split-fractions", default="7:1:2", metavar="TRAIN:VALID:TEST",
        help="shares of the stars in the train, validation and test splits (%(default)s, the "
        "paper's); with few stars give validation more (4:4:2): the error calibration and "
        "the out-of-distribution test are fitted on it",
    )  # fmt: skip
    p.add_argument(
        "--split-from",
        metavar="CKPT",
        help="stars of this checkpoint keep its split, so none of its training stars becomes "
        "a test star here (default with --init: the --init checkpoint's); e.g. train CA with "
        "--split-from the SP checkpoint of the same labels; 'none' splits anew",
    )
    p.add_argument("--key", default="star_id", help="join column(s), comma separated")
    p.add_argument("--star-column", default="star_id", help="column the split groups by")
    p.add_argument(
        "--include-flagged", action="store_true",
        help="keep rows failing the quality cuts (quality_ok false)",
    )  # fmt: skip
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")
    p.add_argument("--no-compile", action="store_true", help="no torch.compile on CUDA")
    p.add_argument(
        "--ram-limit-gb", type=float, default=d.ram_limit_gb,
        help="read the training flux into memory if it fits in this many GiB, else batch "
        "by batch from the store (%(default)s)",
    )  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument(
        "--keep-state", action="store_true",
        help="keep train_state.pt (optimizer state) after the last epoch",
    )  # fmt: skip
    p.add_argument(
        "--init", metavar="CKPT",
        help="fine-tune: start every member from this checkpoint (ours or imported)",
    )  # fmt: skip
    p.add_argument(
        "--freeze", default="",
        help="with --init: comma list of parameter groups kept fixed (conv, rnn, head, out)",
    )  # fmt: skip
    p.add_argument(
        "--label-norm", choices=("auto", "checkpoint", "data"), default="auto",
        help="with --init: label normalisation kept from the checkpoint or recomputed "
        "(auto: checkpoint for the same labels, data for a new label set)",
    )  # fmt: skip
    p.add_argument(
        "--formulation", choices=("auto", "grouped", "vmap"), default=d.formulation,
        help="how the members train together (auto: grouped on CPU, vmap on GPU)",
    )  # fmt: skip
    p.add_argument(
        "--calibration-form", choices=(AUTO, *FORMS), default=AUTO,
        help="form of the error calibration fitted on the validation split (auto: "
        "balanced-scale with >= 500 validation spectra, else const; docs/training.md)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


# Options whose argparse name is the field name (the others are mapped in main).
_SAME_SETTINGS = (
    "members", "epochs", "batch_size", "lr", "lr_step", "lr_gamma", "augment_from",
    "noise_fraction", "noise_sigma", "seed", "device", "ram_limit_gb", "formulation",
)  # fmt: skip
_SAME_OPTIONS = (
    "arch", "mode", "star_column", "include_flagged", "predict_rv", "split_seed",
    "split_from", "resume", "keep_state", "init", "label_norm", "calibration_form",
)  # fmt: skip


def _options(args: argparse.Namespace) -> TrainOptions:
    """TrainOptions (with its TrainSettings) from the parsed command line."""
    settings = TrainSettings(
        **{name: getattr(args, name) for name in _SAME_SETTINGS},
        rv_shift_kms=args.rv_shift,
        amp=not args.no_amp,
        compile=not args.no_compile,
    )
    return TrainOptions(
        **{name: getattr(args, name) for name in _SAME_OPTIONS},
        labels_to_fit=args.group,
        settings=settings,
        key=args.key,  # a comma list (TrainOptions splits it)
        split_fractions=_fractions(args.split_fractions),
        progress=not args.quiet,
        freeze=_freeze_groups(args.freeze, args.init),
    )


def _check_sources(init: str | None, split_from: str | None) -> None:
    """``--init`` and ``--split-from`` checked before the labels are joined (the join's
    count line came first, then the error: two lines)."""
    from rrnet.models.checkpoint import SPLIT_FILE, read_checkpoint_config

    if init is not None:
        read_checkpoint_config(init)  # CheckpointError (a ValueError) naming what is wrong
    if split_from not in (None, "none") and not (Path(split_from) / SPLIT_FILE).is_file():
        raise ValueError(f"--split-from {split_from}: no {SPLIT_FILE} there to keep")


def _check_label_norm(label_norm: str, init: str | None) -> None:
    """``--label-norm`` chooses between the --init checkpoint's label statistics and the
    data's: without --init it was ignored without a word."""
    if label_norm != "auto" and init is None:
        raise ValueError(f"--label-norm {label_norm} needs --init (a checkpoint to start from)")


def _fractions(text: str) -> tuple[float, float, float]:
    """``--split-fractions 7:1:2`` (or ``0.4,0.4,0.2``) as shares summing to 1."""
    parts = [p.strip() for p in text.replace(",", ":").split(":")]
    try:
        shares = [float(p) for p in parts]
    except ValueError:
        shares = []
    finite = all(0 <= x < float("inf") for x in shares)
    if len(shares) != 3 or not finite or not (shares[0] > 0 and shares[1] > 0):
        raise ValueError(
            f"--split-fractions {text!r}: give three shares TRAIN:VALID:TEST, train and "
            "validation above 0 (say 7:1:2)"
        )
    total = sum(shares)
    return (shares[0] / total, shares[1] / total, shares[2] / total)


def _freeze_groups(text: str, init: str | None) -> tuple[str, ...]:
    """``--freeze`` as group names, checked (it needs ``--init``)."""
    from rrnet.training.finetune import FREEZE_GROUPS

    groups = tuple(g.strip() for g in text.split(",") if g.strip())
    if groups and init is None:
        raise ValueError("--freeze needs --init (a checkpoint to start from)")
    unknown = [g for g in groups if g not in FREEZE_GROUPS]
    if unknown:
        raise ValueError(
            f"unknown --freeze group(s) {', '.join(unknown)}; expected {', '.join(FREEZE_GROUPS)}"
        )
    if set(groups) >= set(FREEZE_GROUPS):  # PyTorch's "empty parameter list", after the data
        raise ValueError(
            f"--freeze {text} freezes every group: nothing would be trained; leave one free "
            "(say out)"
        )
    return groups


@command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return usage_error(PROG, exc)
    try:
        _check_label_norm(args.label_norm, args.init)
        options = _options(args)
        _check_sources(args.init, args.split_from)
    except ValueError as exc:
        return usage_error(PROG, exc)
    from rrnet.models.device import device_problem

    if (problem := device_problem(args.device)) is not None:  # before the data is read
        return usage_error(PROG, problem)
    if (problem := output_problem(args.out)) is not None:
        return usage_error(PROG, problem)

    from rrnet.training.api import train_ensemble
    from rrnet.training.loop import CheckpointComplete

    log_to_stderr(PROG)

    stop_on_sigterm()  # a walltime SIGTERM says what was kept, as Ctrl-C does
    try:
        with output_lock(args.out, directory=False, what="checkpoint"):
            out = train_ensemble(args.store, args.labels, args.out, options)
    except CheckpointComplete as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 0
    except (ValueError, FileExistsError, FileNotFoundError, FloatingPointError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return usage_error(PROG, message)
    except LockError as exc:
        return output_in_use(PROG, exc)
    except OSError as exc:  # the machine (disk full, read-only), not the inputs
        return os_error_exit(PROG, exc)
    except KeyboardInterrupt as exc:
        return interrupted_exit(PROG, exc)
    except Exception as exc:  # out of memory, a full disk inside Arrow's error, ...
        return unexpected_exit(PROG, exc)
    if not args.quiet:
        print(f"{PROG}: checkpoint written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
