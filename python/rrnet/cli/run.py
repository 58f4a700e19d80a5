"""``rrnet-run``: the LAMOST-RRNet catalogue of a whole survey on a Dask cluster."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rrnet.cli._args import (
    OneLineParser,
    UsageError,
    add_quality_arguments,
    quality_thresholds,
    usage_error,
)
from rrnet.inference.writers import FORMATS
from rrnet.labels import COLUMN_STYLES, DEFAULT_COLUMN_STYLE

PROG = "rrnet-run"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (also used to document it)."""
    from rrnet.cluster.driver import DEFAULT_SHARD_SIZE

    p = OneLineParser(prog=PROG, description=__doc__)
    p.add_argument("catalog", help="input catalogue (CSV/Parquet/FITS)")
    p.add_argument("--data-dir", required=True, help="directory the filenames are relative to")
    p.add_argument(
        "--model",
        nargs="+",
        action="extend",
        required=True,
        help="checkpoint directories (the first predicting a label wins)",
    )
    p.add_argument("--out", required=True, help="output catalogue path")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from suffix)")
    p.add_argument(
        "--column-style",
        choices=COLUMN_STYLES,
        default=DEFAULT_COLUMN_STYLE,
        help="column names: identifier (teff, fe_h; default) or paper (Teff[K], FeH)",
    )
    p.add_argument(
        "--cluster", help="local, slurm, pbs, sge or a scheduler address (default: config, local)"
    )
    p.add_argument("--config", help="TOML file with a [cluster] table (docs/cluster.md)")
    p.add_argument("--jobs", type=int, help="batch jobs (nodes) to start")
    p.add_argument("--processes", type=int, help="worker processes per job / local machine")
    p.add_argument("--cores", type=int, help="cores per job")
    p.add_argument("--memory", help="memory per job, e.g. 64GiB")
    p.add_argument("--walltime", help="walltime per job, e.g. 04:00:00")
    p.add_argument("--queue", help="partition / queue")
    p.add_argument("--account", help="account / project to charge")
    p.add_argument("--gpus-per-job", type=int, help="GPUs per job (one worker process each)")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="rows per shard")
    p.add_argument("--retries", type=int, default=2, help="retries of a failing shard task")
    p.add_argument("--batch-size", type=int, help="spectra per forward call (default: per device)")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda")
    p.add_argument("--rv-column", default="rv", help="radial velocity column [km/s]")
    p.add_argument("--no-rv-correction", action="store_true", help="do not shift by rv")
    p.add_argument("--resume", action="store_true", help="continue a run; skip finished shards")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_quality_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="print the batch job script and stop")
    p.add_argument("--quiet", action="store_true", help="no summary line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for unusable arguments)."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return usage_error(PROG, exc)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    try:
        from rrnet.cluster.config import ClusterConfigError, job_script, load_settings
        from rrnet.cluster.driver import RunError, run_cluster
    except ImportError as exc:  # dask is an optional extra
        print(f"{PROG}: error: {exc}; install rrnet[cluster]", file=sys.stderr)
        return 2
    try:
        settings = load_settings(
            args.config,
            kind=args.cluster,
            jobs=args.jobs,
            processes=args.processes,
            cores=args.cores,
            memory=args.memory,
            walltime=args.walltime,
            queue=args.queue,
            account=args.account,
            gpus_per_job=args.gpus_per_job,
        )
        if args.dry_run:
            print(job_script(settings))
            return 0
        report = run_cluster(
            args.model,
            args.catalog,
            args.data_dir,
            args.out,
            settings=settings,
            shard_size=args.shard_size,
            fmt=args.format,
            column_style=args.column_style,
            batch_size=args.batch_size,
            device=args.device,
            resume=args.resume,
            overwrite=args.overwrite,
            thresholds=quality_thresholds(args),
            preprocess={"rv_column": args.rv_column, "correct_rv": not args.no_rv_correction},
            retries=args.retries,
            progress=not args.quiet,
        )
    except (RunError, ClusterConfigError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return usage_error(PROG, message)
    return 0 if report["complete"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
