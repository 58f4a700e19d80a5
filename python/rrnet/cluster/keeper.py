"""Keep a batch cluster's worker jobs alive, and stop cleanly on signals.

dask-jobqueue submits the worker jobs once: a job that ends (``scancel``, walltime,
node failure, out of memory) is never replaced, and when the last one goes the
driver waits forever. :class:`Keeper` polls the scheduler and the batch system
from the driver's loop: it resubmits lost jobs (bounded, reason logged) and stops
the run with one line when no worker has been alive for ``worker_wait`` seconds
or the resubmissions are used up. :func:`interruptible` turns SIGINT/SIGTERM into
:class:`Interrupted` (dask-jobqueue's own SIGINT handler exits with status 0).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from rrnet.cluster.config import BATCH_KINDS, ClusterSettings

log = logging.getLogger(__name__)

LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"}
"""SLURM job states of a job that may still give workers."""


class RunAborted(RuntimeError):
    """The cluster cannot give workers any more (one-line message); the run is resumable."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the driver; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def interruptible() -> Iterator[None]:
    """Raise :class:`Interrupted` on SIGINT/SIGTERM (once) inside the block."""
    fired: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if not fired:  # a second signal during the cleanup is ignored
            fired.append(signum)
            raise Interrupted(signum)

    try:
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        # Importing dask-jobqueue installs a SIGINT handler that exits 0: import it now,
        # override it, and put back what was there before (not its handler) at the end.
        with suppress(ImportError):
            import dask_jobqueue.runner  # noqa: F401
        for sig in previous:
            signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """``{job id: "STATE reason"}`` of the SLURM jobs still known to ``squeue``."""
    if not job_ids:
        return {}
    try:
        done = subprocess.run(
            ["squeue", "-h", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(job_ids)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return {i: "RUNNING" for i in job_ids}  # unknown: assume alive, check later
    states = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = parts[1] if parts[2] in ("None", "") else f"{parts[1]} {parts[2]}"
    return states


def cancel_jobs(kind: str, job_ids: list[str]) -> None:
    """Cancel batch jobs (quietly; already finished ones are no error)."""
    command = {"slurm": "scancel", "pbs": "qdel", "sge": "qdel"}.get(kind)
    if command and job_ids:
        try:
            subprocess.run([command, *job_ids], capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            log.warning("could not cancel worker jobs %s", " ".join(job_ids))


class Keeper:
    """Watch a client's workers; resubmit lost batch jobs; abort when none can come."""

    def __init__(self, client: Any, settings: ClusterSettings, poll: float = 3.0) -> None:
        self.client, self.settings, self.poll = client, settings, poll
        cluster = getattr(client, "cluster", None)
        self.cluster: Any = cluster if settings.kind in BATCH_KINDS else None
        self.last_alive = self.last_poll = time.monotonic()
        self.resubmitted = 0
        self.job_ids: set[str] = set()
        self.lost: list[str] = []
        self.unsubmitted: dict[str, float] = {}
        self.names: set[str] = set()

    def alive(self) -> int:
        """Workers connected to the scheduler now."""
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def check(self) -> None:
        """Called from the driver's loop: replace lost jobs, give up when nothing lives."""
        now = time.monotonic()
        if now - self.last_poll < self.poll:
            return
        self.last_poll = now
        if self.alive():
            self.last_alive = now
        if self.cluster is not None:
            self._replace_lost(now)
        if now - self.last_alive > self.settings.worker_wait:
            cause = f"; lost jobs: {', '.join(self.lost[-3:])}" if self.lost else ""
            raise RunAborted(
                f"no worker alive for {self.settings.worker_wait:.0f} s "
                f"(worker jobs pending, refused or failing{cause})"
            )

    def _replace_lost(self, now: float) -> None:
        jobs = dict(self.cluster.workers)
        ids = {name: str(job.job_id) for name, job in jobs.items() if job.job_id}
        self.job_ids |= set(ids.values())
        states = slurm_states(list(ids.values())) if self.settings.kind == "slurm" else None
        gone = {}
        for name, job in jobs.items():
            if not job.job_id:  # submission failed (or is still under way)
                since = self.unsubmitted.setdefault(name, now)
                if now - since > 60:
                    gone[name] = "submission failed"
            elif states is not None:
                state = states.get(ids[name], "ENDED (no longer in squeue)")
                if state.split()[0] not in LIVE_STATES:
                    gone[name] = f"job {ids[name]} {state}"
        for name, reason in gone.items():
            self._resubmit(name, reason)

    def _resubmit(self, name: str, reason: str) -> None:
        self.lost.append(reason)
        self.unsubmitted.pop(name, None)
        if self.resubmitted >= self.settings.max_resubmits:
            raise RunAborted(
                f"worker jobs keep ending ({len(self.lost)} lost, last: {reason}); "
                f"gave up after {self.resubmitted} resubmissions"
            )
        self.resubmitted += 1
        log.warning("worker job %s lost (%s): submitting a replacement", name, reason)
        cluster = self.cluster
        cluster.worker_spec.pop(name, None)
        cluster.workers.pop(name, None)
        # A fresh name: dask-jobqueue would reuse the lost one, and its delayed clean-up
        # of the lost worker (lost-worker-timeout) would then cancel the replacement.
        self.names |= {name, *cluster.worker_spec}
        while cluster._new_worker_name(cluster._i) in self.names:
            cluster._i += 1
        cluster.scale(jobs=self.settings.jobs)

    def cancel_all(self) -> None:
        """Cancel every worker job this run submitted (after the cluster's own close)."""
        if self.cluster is not None:
            ids = {str(j.job_id) for j in dict(self.cluster.workers).values() if j.job_id}
            cancel_jobs(self.settings.kind, sorted(self.job_ids | ids))
