"""``rrnet-import-original``: convert the authors' released weights to rrnet checkpoints."""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

from rrnet.cli._args import (
    OneLineParser,
    UsageError,
    command,
    error_line,
    folder_output_problem,
    log_to_stderr,
    run_errors,
    usage_error,
)
from rrnet.utils.faults import is_machine_fault
from rrnet.utils.lock import output_lock

PROG = "rrnet-import-original"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=(
            "Convert the authors' RRNet release (SP0..SPn/ and CA0..CAn/ folders holding "
            "weight_best.pkl) into rrnet checkpoints OUT/SP and OUT/CA (JSON + "
            "safetensors, no pickle), ready for `rrnet-infer --model OUT/SP --model OUT/CA`."
        ),
    )
    parser.add_argument("model_dir", type=Path, help="folder with SP<i>/ and CA<i>/ subfolders")
    parser.add_argument(
        "--label-config",
        type=Path,
        default=None,
        help="the authors' label_config.pkl (default: MODEL_DIR/label_config.pkl)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace checkpoints already at OUT/SP or OUT/CA (default: refuse)",
    )
    parser.add_argument(
        "--net", choices=["RRNet", "StarNet"], default="RRNet", help="architecture (RRNet)"
    )
    parser.add_argument(
        "--mode",
        choices=["post-RNN", "pre-RNN", "raw"],
        default="post-RNN",
        help="recurrent-module placement (post-RNN)",
    )
    return parser


@command(PROG)
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for unusable arguments or input, 1 for a
    fault of the machine)."""
    parser = build_parser()
    log_to_stderr(PROG)
    try:
        args = parser.parse_args(argv)
        label_config = args.label_config or args.model_dir / "label_config.pkl"
        if not args.model_dir.is_dir():
            raise UsageError(f"model directory {args.model_dir} does not exist")
        if not label_config.is_file():
            raise UsageError(f"label config {label_config} does not exist")
        if (problem := folder_output_problem(args.out)) is not None:
            raise UsageError(problem)
    except UsageError as err:
        return usage_error(PROG, err)
    from rrnet.models.original import find_original_members, load_original_ensemble

    def run() -> int:
        try:
            taken = [
                args.out / group
                for group in find_original_members(args.model_dir)
                if (args.out / group).exists() and any((args.out / group).iterdir())
            ]
            if taken and not args.overwrite:
                raise UsageError(
                    f"{taken[0]} already holds a checkpoint: add --overwrite to replace it, "
                    "or choose another --out"
                )
            with output_lock(args.out, directory=True, what="checkpoints"):
                groups = load_original_ensemble(
                    args.model_dir, label_config, args.out, net=args.net, mode=args.mode
                )
        except UsageError:
            raise
        except (OSError, ValueError, KeyError, pickle.UnpicklingError) as err:
            if is_machine_fault(err):
                raise
            return usage_error(PROG, error_line(err))  # the release's fault: unusable input
        for name, group in groups.items():
            print(  # on stderr, as every command's report: stdout stays for data
                f"{PROG}: {name}: {len(group.member_state_dicts)} member(s), labels "
                f"{', '.join(group.labels)} -> {group.checkpoint}",
                file=sys.stderr,
            )
        return 0

    return run_errors(PROG, run, usage=(UsageError,), resumable=False)


if __name__ == "__main__":
    sys.exit(main())
