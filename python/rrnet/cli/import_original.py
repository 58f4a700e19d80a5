"""``rrnet-import-original``: convert the authors' released weights to rrnet checkpoints."""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

from rrnet.cli._args import OneLineParser, UsageError, command, usage_error

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
    """Entry point; returns the exit status (2 for unusable arguments, 1 for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        label_config = args.label_config or args.model_dir / "label_config.pkl"
        if not args.model_dir.is_dir():
            raise UsageError(f"model directory {args.model_dir} does not exist")
        if not label_config.is_file():
            raise UsageError(f"label config {label_config} does not exist")
    except UsageError as err:
        return usage_error(PROG, err)
    from rrnet.models.original import load_original_ensemble  # torch: only after parsing

    try:
        groups = load_original_ensemble(
            args.model_dir, label_config, args.out, net=args.net, mode=args.mode
        )
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    for name, group in groups.items():
        print(
            f"{name}: {len(group.member_state_dicts)} member(s), labels "
            f"{', '.join(group.labels)} -> {group.checkpoint}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
