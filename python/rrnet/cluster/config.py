"""Cluster settings (a small TOML file or flags) and the Dask cluster they describe.

``kind`` is ``local`` (a LocalCluster on this machine), ``slurm``, ``pbs`` or
``sge`` (batch jobs through dask-jobqueue, each job one node's worth of worker
processes), or a scheduler address (``tcp://host:8786``) to join a running
cluster. Dask is imported inside the functions only: the single-machine path
never needs it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

BATCH_KINDS = ("slurm", "pbs", "sge")


class ClusterConfigError(ValueError):
    """Unusable cluster settings (one-line message)."""


@dataclass(frozen=True)
class ClusterSettings:
    """Where the shards run. Batch-job fields are per job (one job = one node)."""

    kind: str = "local"
    jobs: int = 1
    """Batch jobs to start (``local``: ignored)."""
    processes: int = 2
    """Worker processes per job (per machine for ``local``); one per GPU when GPUs are used."""
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

    @property
    def threads(self) -> int:
        """Reader threads per worker process."""
        return max(1, self.cores // max(1, self.processes))


def load_settings(path: str | os.PathLike[str] | None, **overrides: Any) -> ClusterSettings:
    """Settings from the ``[cluster]`` table of a TOML file, then ``overrides`` (not None)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ClusterConfigError(f"cannot read cluster config {path}: {exc}") from exc
        values = dict(data.get("cluster", data))
    known = {f.name for f in fields(ClusterSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ClusterConfigError(f"unknown cluster setting(s): {', '.join(unknown)}")
    for key in ("job_extra_directives", "job_script_prologue"):
        if key in values:
            values[key] = tuple(values[key])
    settings = replace(ClusterSettings(), **values)
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if settings.jobs < 1 or settings.processes < 1 or settings.cores < 1:
        raise ClusterConfigError("jobs, processes and cores must be positive")
    if settings.kind not in ("local", *BATCH_KINDS) and ":" not in settings.kind:
        raise ClusterConfigError(
            f"unknown cluster {settings.kind!r}: use local, slurm, pbs, sge or a scheduler address"
        )
    if settings.gpus_per_job < 0:
        raise ClusterConfigError("gpus_per_job must be >= 0")
    return settings


def _jobqueue_cluster(settings: ClusterSettings, *, any_dashboard_port: bool = False) -> Any:
    import dask_jobqueue

    classes = {
        "slurm": dask_jobqueue.SLURMCluster,
        "pbs": dask_jobqueue.PBSCluster,
        "sge": dask_jobqueue.SGECluster,
    }
    directives = list(settings.job_extra_directives)
    processes = settings.processes
    if settings.gpus_per_job:
        processes = settings.gpus_per_job  # one worker process per GPU
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
        job_script_prologue=list(settings.job_script_prologue),
        local_directory=settings.local_directory,
        log_directory=settings.log_directory,
        # One thread per worker process: one shard at a time per process bounds memory.
        worker_extra_args=["--nthreads", "1"],
    )
    if settings.account:
        options["account"] = settings.account
    if any_dashboard_port:
        options["scheduler_options"] = {"dashboard_address": ":0"}  # any free port
    options.update(settings.extra)
    cluster = classes[settings.kind](**options)
    cluster.scale(jobs=settings.jobs)
    return cluster


def make_cluster(settings: ClusterSettings) -> Any:
    """A Dask cluster object for ``settings`` (None when joining an address)."""
    import dask

    # Workers start with spawn, never fork: CUDA and the Rust thread pool do not survive a fork.
    dask.config.set({"distributed.worker.multiprocessing-method": "spawn"})
    if settings.kind == "local":
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=settings.processes,
            threads_per_worker=1,
            processes=True,
            memory_limit=settings.memory,
            local_directory=settings.local_directory,
            dashboard_address=":0",
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
    finally:
        if cluster is not None:
            cluster.close()


def job_script(settings: ClusterSettings) -> str:
    """The batch script dask-jobqueue would submit (for ``--dry-run`` and the docs)."""
    if settings.kind not in BATCH_KINDS:
        raise ClusterConfigError(f"no job script for cluster {settings.kind!r}")
    cluster = _jobqueue_cluster(replace(settings, jobs=0), any_dashboard_port=True)
    try:
        return cluster.job_script()
    finally:
        cluster.close()
