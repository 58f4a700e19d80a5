"""Run the catalogue across many machines with Dask (``pip install rrnet[cluster]``).

:func:`run_cluster` (and ``rrnet-run``) cuts the catalogue into shards of whole
files, runs the single-machine pipeline on each shard on a Dask cluster
(local, SLURM, PBS, SGE or an existing scheduler), and merges the parts into
one catalogue equal to :func:`rrnet.inference.infer`'s, plus a run report.
Importing this package does not import Dask; running does.
"""

from __future__ import annotations

from rrnet.cluster.config import ClusterConfigError, ClusterSettings, connect, load_settings
from rrnet.cluster.driver import DEFAULT_SHARD_SIZE, RunError, report_path, run_cluster, run_dir
from rrnet.cluster.plan import Shard, plan_shards

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "ClusterConfigError",
    "ClusterSettings",
    "RunError",
    "Shard",
    "connect",
    "load_settings",
    "plan_shards",
    "report_path",
    "run_cluster",
    "run_dir",
]
