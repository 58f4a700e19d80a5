"""Cluster settings (a small TOML file or flags) and the Dask cluster they describe.

``kind`` is ``local`` (a LocalCluster on this machine), ``slurm``, ``pbs`` or
``sge`` (batch jobs through dask-jobqueue, each job one node's worth of worker
processes), or a scheduler address (``tcp://host:8786``) to join a running
cluster. Dask is imported inside the functions only: the single-machine path
never needs it.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

BATCH_KINDS = ("slurm", "pbs", "sge")


log = logging.getLogger(__name__)


class ClusterConfigError(ValueError):
    """Unusable cluster settings (one-line message)."""


@dataclass(frozen=True)
class ClusterSettings:
    """Where the shards run. Batch-job fields are per job (one job = one node)."""

    kind: str = "local"
    jobs: int = 1
    """Batch jobs to start (``local``: ignored)."""
    processes: int | None = None
    """Worker processes per job (per machine for ``local``); default one per core asked
    for, one per GPU when GPUs are used. More processes than cores is refused."""
    cores: int = 2
    """Cores per job; each worker process gets ``cores // processes`` threads for reading."""
    memory: str = "8GiB"
    """Memory per job (``local``: per worker process)."""
    walltime: str = "04:00:00"
    queue: str | None = None
    account: str | None = None
    gpus_per_job: int = 0
    local_directory: str | None = None
    """Node-local scratch for worker spill files (``$TMPDIR`` on most clusters)."""
    log_directory: str | None = None
    job_extra_directives: tuple[str, ...] = ()
    """Extra ``#SBATCH``/``#PBS`` lines, e.g. ``--constraint=a100``."""
    job_script_prologue: tuple[str, ...] = ()
    """Shell lines run before the worker starts, e.g. ``module load cuda``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other dask-jobqueue keyword arguments, passed through unchanged."""
    worker_wait: float = 900.0
    """Seconds without any live worker (jobs pending, lost, refused) before the run stops."""
    resubmits: int | None = None
    """Lost worker jobs replaced in one run (default ``2 * jobs + 2``)."""

    @property
    def worker_processes(self) -> int:
        """Worker processes per job: one per GPU, else as set, else one per core."""
        if self.gpus_per_job:
            return self.gpus_per_job
        return self.processes or self.cores

    @property
    def threads(self) -> int:
        """Reader threads per worker process."""
        return max(1, self.cores // self.worker_processes)

    @property
    def max_resubmits(self) -> int:
        return 2 * self.jobs + 2 if self.resubmits is None else self.resubmits


def load_settings(path: str | os.PathLike[str] | None, **overrides: Any) -> ClusterSettings:
    """Settings from the ``[cluster]`` table of a TOML file, then ``overrides`` (not None)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:  # a PNG given as --config: "unexpected" before
            raise ClusterConfigError(f"cluster config {path} is not a TOML text file") from exc
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ClusterConfigError(f"cannot read cluster config {path}: {exc}") from exc
        tables = [k for k, v in data.items() if isinstance(v, dict)]
        if "cluster" not in data and tables:  # [clustre]: not a setting named "clustre"
            names = ", ".join(f"[{t}]" for t in tables)
            raise ClusterConfigError(f"cluster config {path} has no [cluster] table (has {names})")
        section = data.get("cluster", data)
        if not isinstance(section, dict):
            raise ClusterConfigError(f"cluster config {path}: [cluster] must be a table")
        values = dict(section)
    known = {f.name for f in fields(ClusterSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ClusterConfigError(f"unknown cluster setting(s): {', '.join(unknown)}")
    _check_types(values)
    for key in ("job_extra_directives", "job_script_prologue"):
        if key in values:
            values[key] = tuple(values[key])
    settings = replace(ClusterSettings(), **values)
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if min(settings.jobs, settings.cores, settings.processes or 1) < 1 or settings.processes == 0:
        raise ClusterConfigError("jobs, processes and cores must be positive")
    if settings.worker_wait <= 0 or settings.max_resubmits < 0:
        raise ClusterConfigError("worker_wait must be positive and resubmits >= 0")
    if settings.kind in BATCH_KINDS and settings.worker_processes > settings.cores:
        raise ClusterConfigError(
            f"{settings.worker_processes} worker processes per job on {settings.cores} cores "
            "oversubscribe the job: ask for more --cores or fewer --processes"
        )
    if settings.kind not in ("local", *BATCH_KINDS) and ":" not in settings.kind:
        raise ClusterConfigError(
            f"unknown cluster {settings.kind!r}: use local, slurm, pbs, sge or a scheduler address"
        )
    if settings.gpus_per_job < 0:
        raise ClusterConfigError("gpus_per_job must be >= 0")
    try:  # "lots", "8XB": refused here, not by dask-jobqueue mid-start
        from dask.utils import parse_bytes

        size = parse_bytes(settings.memory)
    except (ValueError, TypeError) as exc:
        raise ClusterConfigError(f"memory {settings.memory!r} is not a size like 16GiB") from exc
    per_job = settings.kind in BATCH_KINDS  # local: the size is each worker's own
    processes = settings.worker_processes if per_job else 1
    if size < MIN_PROCESS_MEMORY * processes:
        # "64" is 64 bytes: the workers restarted for ever, each over its budget
        raise ClusterConfigError(
            f"memory {settings.memory!r} is {size:,} bytes for {processes} worker "
            "process(es); each needs at least 1 GiB: give a size like 16GiB"
        )
    if settings.kind in BATCH_KINDS and not re.fullmatch(
        r"(\d+-)?\d+(:\d+){0,2}", settings.walltime
    ):
        raise ClusterConfigError(
            f"walltime {settings.walltime!r} is not a time like 04:00:00 (or 1-12:00:00)"
        )
    return settings


MIN_PROCESS_MEMORY = 2**30
"""Memory each worker process needs at the least: Python, PyTorch, the models and one
shard (a 2-member demo checkpoint's worker peaked at ~540 MiB on 50-row shards, and was
restarted for ever at the 512 MiB this was, every shard failing as KilledWorker)."""


_WHOLE = ("jobs", "processes", "cores", "gpus_per_job", "resubmits")
_TEXT = ("kind", "memory", "walltime", "queue", "account", "local_directory", "log_directory")
_LINES = ("job_extra_directives", "job_script_prologue")


def _kind_problem(key: str, value: Any) -> str | None:
    """What a TOML setting must be, when it is not that (a string where a list of lines is
    wanted wrote the job script one character per line)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if key in _WHOLE and not (number and isinstance(value, int)):
        return "a whole number"
    if key == "worker_wait" and not number:
        return "a number"
    if key in _TEXT and not isinstance(value, str):
        return "a string"
    if key in _LINES and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return "a list of strings"
    if key == "extra" and not isinstance(value, dict):
        return "a table"
    return None


def _check_types(values: dict[str, Any]) -> None:
    """Refuse a setting of the wrong TOML type, in one line naming what it should be."""
    for key, value in values.items():
        what = _kind_problem(key, value)
        if what is not None:
            raise ClusterConfigError(f"cluster setting {key} = {value!r} must be {what}")


WORKER_LOGGING = "export DASK_LOGGING__DISTRIBUTED=info"
"""First line of every worker job: the jobs inherit the driver's environment, where
rrnet-run (without --verbose) quiets Dask for its own terminal; the job logs in
``log_directory`` had then held nothing, not even why a worker died."""


def _jobqueue_cluster(settings: ClusterSettings, *, any_dashboard_port: bool = False) -> Any:
    import dask_jobqueue

    classes = {
        "slurm": dask_jobqueue.SLURMCluster,
        "pbs": dask_jobqueue.PBSCluster,
        "sge": dask_jobqueue.SGECluster,
    }
    directives = list(settings.job_extra_directives)
    processes = settings.worker_processes  # one per GPU with GPUs
    if settings.kind == "sge" and not any(d.lstrip().startswith("-pe") for d in directives):
        log.warning(  # SGE's parallel environments are named per site: not guessed here
            "SGE job without a parallel environment: it gets one slot for %d worker "
            'processes; add job_extra_directives = ["-pe <your site\'s PE> %d"] (and '
            'memory, e.g. "-l h_vmem=...")',
            processes,
            settings.cores,
        )
    if settings.gpus_per_job:
        directives.append(
            f"--gres=gpu:{settings.gpus_per_job}"
            if settings.kind == "slurm"
            else f"-l ngpus={settings.gpus_per_job}"
        )
    options: dict[str, Any] = dict(
        cores=settings.cores,
        processes=processes,
        memory=settings.memory,
        walltime=settings.walltime,
        queue=settings.queue,
        job_extra_directives=directives,
        job_script_prologue=[WORKER_LOGGING, *settings.job_script_prologue],
        local_directory=settings.local_directory,
        log_directory=settings.log_directory,
        # One thread per worker process: one shard at a time per process bounds memory.
        worker_extra_args=["--nthreads", "1"],
    )
    if settings.account:  # SGE calls it the project
        options["project" if settings.kind == "sge" else "account"] = settings.account
    if any_dashboard_port:
        options["scheduler_options"] = {"dashboard_address": ":0"}  # any free port
    options.update(settings.extra)
    try:
        cluster = classes[settings.kind](**options)
    except (TypeError, ValueError) as exc:  # e.g. an `extra` key this scheduler lacks
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterConfigError(
            f"dask-jobqueue refuses the {settings.kind} settings: {text}"
        ) from exc
    if settings.jobs:
        try:
            check_submission(settings.kind, cluster.job_script())
        except BaseException:
            cluster.close()
            raise
        cluster.scale(jobs=settings.jobs)
    return cluster


def check_submission(kind: str, script: str, timeout: float = 60.0) -> None:
    """Refuse, in one line, a worker job the scheduler would reject (SLURM: ``--test-only``).

    A refused submission inside dask-jobqueue only logs a traceback and leaves the
    driver waiting for workers that never come, so the script is tried first. PBS and
    SGE have no dry submission: their refusals surface as no live worker instead.
    """
    import subprocess
    import tempfile

    if kind != "slurm":
        return
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="rrnet-check-") as file:
        file.write(script)
        file.flush()
        try:
            done = subprocess.run(
                ["sbatch", "--test-only", file.name],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterConfigError(f"cannot submit SLURM jobs: sbatch: {exc}") from exc
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        reason = lines[0] if lines else f"sbatch exited with {done.returncode}"
        raise ClusterConfigError(f"SLURM refuses the worker job: {reason}")


def make_cluster(settings: ClusterSettings) -> Any:
    """A Dask cluster object for ``settings`` (None when joining an address)."""
    import dask

    # Workers start with spawn, never fork: CUDA and the Rust thread pool do not survive a fork.
    dask.config.set({"distributed.worker.multiprocessing-method": "spawn"})
    if settings.kind == "local":
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=settings.worker_processes,
            threads_per_worker=1,
            processes=True,
            memory_limit=settings.memory,
            local_directory=settings.local_directory,
            dashboard_address=":0",
            preload=["rrnet.cluster.worker_setup"],  # Ctrl-C is the driver's to handle
        )
    if settings.kind in BATCH_KINDS:
        return _jobqueue_cluster(settings)
    if "://" in settings.kind or ":" in settings.kind:
        return None
    raise ClusterConfigError(
        f"unknown cluster {settings.kind!r}: use local, slurm, pbs, sge or a scheduler address"
    )


@contextmanager
def connect(settings: ClusterSettings) -> Iterator[Any]:
    """A ``distributed.Client`` for ``settings``; the cluster is shut down on exit."""
    from distributed import Client

    cluster = make_cluster(settings)
    address = cluster if cluster is not None else settings.kind
    try:
        with Client(address) as client:
            yield client
    except BaseException:
        if cluster is not None:
            try:
                cluster.close()
            except Exception as exc:  # the run's own error is what to say
                # dask's shutdown asserts on worker jobs it lost ("AssertionError:
                # Status.running"): it had replaced "gave up after N resubmissions"
                log.debug("the cluster's shutdown failed after the run's error: %r", exc)
        raise
    if cluster is not None:
        cluster.close()


def job_script(settings: ClusterSettings) -> str:
    """The batch script dask-jobqueue would submit (for ``--dry-run`` and the docs)."""
    if settings.kind not in BATCH_KINDS:
        raise ClusterConfigError(f"no job script for cluster {settings.kind!r}")
    import tempfile

    # dask-jobqueue creates the log folder when the cluster is made: a --dry-run makes
    # it in a scratch folder and prints the script with the real one
    with tempfile.TemporaryDirectory(prefix="rrnet-logs-") as scratch:
        logs = settings.log_directory
        shown = replace(settings, jobs=0, log_directory=scratch if logs else None)
        cluster = _jobqueue_cluster(shown, any_dashboard_port=True)
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    return script.replace(scratch, logs) if logs else script
