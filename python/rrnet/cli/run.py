"""``rrnet-run``: the LAMOST-RRNet catalogue of a whole survey on a Dask cluster."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rrnet.cli import _args

PROG = "rrnet-run"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (also used to document it)."""
    from rrnet.cluster.driver import DEFAULT_SHARD_SIZE

    p = _args.OneLineParser(
        prog=PROG,
        description="Write the LAMOST-RRNet catalogue of a whole survey on a Dask cluster "
        "(docs/cluster.md): shards of the input catalogue are preprocessed and inferred on "
        "the workers and merged in input order.",
    )
    p.add_argument(
        "catalog", help="input catalogue (CSV, Parquet or FITS; .csv.gz and .fits.gz too)"
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory the filenames are relative to (default: the catalogue's folder)",
    )
    p.add_argument(
        "--model",
        nargs="+",
        action="extend",
        required=True,
        help="checkpoint directories (the first predicting a label wins)",
    )
    _args.add_output_arguments(p, resume_help="continue a run; skip finished shards")
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
    p.add_argument(
        "--worker-wait",
        type=float,
        help="seconds with no live worker before the run stops (default 900)",
    )
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="rows per shard")
    p.add_argument("--retries", type=int, default=2, help="retries of a failing shard task")
    p.add_argument("--rv-column", default="rv", help="radial velocity column [km/s]")
    p.add_argument("--no-rv-correction", action="store_true", help="do not shift by rv")
    _args.add_reading_arguments(p)
    _args.add_raw_errors_argument(p)
    p.add_argument("--dry-run", action="store_true", help="print the batch job script and stop")
    p.add_argument("--quiet", action="store_true", help="no progress and summary lines")
    p.add_argument("--verbose", action="store_true", help="show Dask's own log messages")
    return p


CLUSTER_EXTRA = "install the cluster extra: pip install 'rrnet[cluster]' (in a clone: '.[cluster]')"


@_args.command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for unusable arguments)."""
    try:
        args = build_parser().parse_args(argv)
    except _args.UsageError as exc:
        return _args.usage_error(PROG, exc)
    _args.log_to_stderr(PROG)
    _quiet_dask(args.verbose)
    try:
        import dask.distributed  # noqa: F401  (the rrnet.cluster modules import it late)

        from rrnet.cluster.config import ClusterConfigError, job_script, load_settings
        from rrnet.cluster.driver import RunError, run_cluster
    except ImportError as exc:  # dask is an optional extra
        print(f"{PROG}: error: {exc}; {CLUSTER_EXTRA}", file=sys.stderr)
        return 2
    return _args.run_errors(
        PROG, lambda: _run(args, job_script, load_settings, run_cluster),
        usage=(RunError, ClusterConfigError),
    )  # fmt: skip


def _run(args: argparse.Namespace, job_script: Any, load_settings: Any, run_cluster: Any) -> int:
    """The command's body (errors become one line in :func:`main`)."""
    from rrnet.cluster.driver import RunStopped  # dask is importable: main checked

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
        worker_wait=args.worker_wait,
    )
    if args.dry_run:
        print(job_script(settings))
        return 0
    if args.data_dir is None:  # as rrnet-preprocess
        args.data_dir = str(Path(args.catalog).parent)
    if (problem := _args.data_dir_problem(args.data_dir)) is not None:
        return _args.usage_error(PROG, problem)
    if (problem := _args.file_output_problem(args.out)) is not None:
        return _args.usage_error(PROG, problem)
    if (problem := _args.rv_problem(not args.no_rv_correction, args.rv_mode)) is not None:
        return _args.usage_error(PROG, problem)
    preprocess = {
        "rv_column": args.rv_column,
        "correct_rv": not args.no_rv_correction,
        **_args.reading_options(args),
    }
    options = _args.infer_options(
        args, preprocess=preprocess, progress=not args.quiet, calibrate=not args.raw_errors
    )
    try:
        report = run_cluster(
            options,
            args.catalog,
            args.data_dir,
            args.out,
            settings=settings,
            shard_size=args.shard_size,
            retries=args.retries,
        )
    except RunStopped as exc:  # interrupted or no worker left: finished shards are kept
        print(f"{PROG}: stopped: {exc}", file=sys.stderr)
        return exc.exit_status
    if not report["complete"]:  # failed shards (reported): --resume recomputes them, exit 1
        return 1
    ok = report.get("rows_by_status", {}).get("ok", 0)
    if report.get("rows_in") and not ok:  # as rrnet-preprocess and rrnet-infer: exit 3
        spans = report.get("shards_without_ok_rows", [])
        reasons = [r for span in spans for r in span["reasons"]]
        example = f" (e.g. {reasons[0]})" if reasons else ""
        return _args.no_usable_rows(
            PROG,
            f"none of {report['rows_in']} rows could be labelled{example}; catalogue at {args.out}",
        )
    return 0


def _quiet_dask(verbose: bool) -> None:
    """Dask's INFO/WARNING chatter (and its tracebacks) only with ``--verbose``."""
    if verbose:
        return
    # the workers' own "Compute Failed" reports (a traceback per attempt) stay quiet:
    # the driver says which shard failed and why, in one line each
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
    try:  # importing distributed sets its loggers' levels: silence them after that
        import distributed  # noqa: F401
    except ImportError:
        return
    prefixes = ("distributed", "dask_jobqueue", "tornado", "asyncio")
    names = [n for n in logging.root.manager.loggerDict if n.startswith(prefixes)]
    for name in {*prefixes, *names}:  # children like distributed.client have own levels
        logging.getLogger(name).setLevel(logging.CRITICAL)


if __name__ == "__main__":
    raise SystemExit(main())
