"""rrnet-run on a real SLURM (tools/slurm/start-single-node.sh), through its CLI.

Skipped, with the reason shown, when no SLURM answers here (``sinfo`` shows no idle or
busy node). Against the single-machine ``rrnet.infer`` oracle: the output is equal row
for row; a worker job cancelled with ``scancel`` is replaced and the one-job run
completes; an unknown partition and an impossible memory request are refused in one
line (exit 2) within a minute; SIGINT/SIGTERM give exit 130/143, leave no worker job in
``squeue`` and keep the finished parts with a resume hint; the resume may spell the
catalogue path differently; resuming a finished run rewrites its report. The oversub-
scription check and a Ctrl-C to a local run need no SLURM. Tiny one-member model, 30
spectra in 6 shards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

import rrnet
from helpers import REAL_FILE, SPECTRA, make_checkpoint, needs_shared
from rrnet.cluster.config import ClusterConfigError, load_settings
from rrnet.cluster.task import SHARD_HOLD_ENV
from rrnet.labels import SP_LABELS
from rrnet.preprocess.settings import PreprocessSettings

pytest.importorskip("dask_jobqueue")

N_FILES = 6
SHARD = 5  # one file's 5 spectra per shard: 6 shards


def _slurm_state() -> str | None:
    """Why the SLURM tests cannot run here (None when a node is usable)."""
    if shutil.which("sbatch") is None:
        return "no SLURM here (sbatch not found; start one with tools/slurm/start-single-node.sh)"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                              timeout=20)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"SLURM does not answer: {exc}"
    states = done.stdout.split()
    if done.returncode or not {"idle", "mixed", "allocated"} & set(states):
        return f"no usable SLURM node (sinfo: {done.stdout.strip() or done.stderr.strip()})"
    return None


SLURM_MISSING = _slurm_state()
needs_slurm = pytest.mark.skipif(SLURM_MISSING is not None, reason=str(SLURM_MISSING))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Six copies of the real file, a CSV catalogue, an SP model and the infer() oracle."""
    import torch

    from rrnet.inference import infer

    root = tmp_path_factory.mktemp("slurm")
    data = root / "data"
    data.mkdir()
    rows = []
    for k in range(N_FILES):
        name = f"med-{k}.fits.gz"
        shutil.copy(REAL_FILE, data / name)
        rows += [(name, b, r, -10.0 + k + 2.0 * j) for j, (b, r) in enumerate(SPECTRA)]
    columns = ["filename", "extname_blue", "extname_red", "rv"]
    pl.DataFrame(rows, schema=columns, orient="row").write_csv(root / "cat.csv")
    fp = PreprocessSettings().fingerprint()
    model = make_checkpoint(root / "SP", SP_LABELS, members=1, seed=1, preprocessing=fp)
    # on one PyTorch thread, as the workers (--cores 1): other thread counts round
    # differently (the oracle used to follow whatever an earlier test had left)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # rv_mode auto: rrnet-run's default, as rrnet-infer's
        oracle = infer([model], catalog=root / "cat.csv", data_dir=data,
                       out=root / "oracle.parquet", device="cpu", batch_size=1,
                       preprocess={"rv_mode": "auto"})  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "oracle": oracle}


class Run:
    """One ``rrnet-run`` process on SLURM, started in the world's directory."""

    def __init__(
        self,
        world: dict,
        out: str,
        *extra: str,
        catalog: str = "cat.csv",
        hold: float = 0,
        local: bool = False,
    ) -> None:
        self.root, self.out = world["root"], world["root"] / out
        self.name = f"rrnet-test-{uuid.uuid4().hex[:8]}"  # the worker jobs' name
        config = self.root / f"{self.name}.toml"
        config.write_text(f'[cluster]\nkind = "slurm"\nextra = {{job_name = "{self.name}"}}\n')
        cluster = ["--cluster", "local", "--processes", "2"] if local else [
            "--config", str(config), "--jobs", "1", "--cores", "1", "--memory", "2GiB",
            "--walltime", "00:15:00", "--worker-wait", "240"]  # fmt: skip
        args = [catalog, "--data-dir", "data", "--model", "SP", "--out", out, *cluster,
                "--shard-size", str(SHARD), "--batch-size", "1", "--device", "cpu",
                *extra]  # fmt: skip
        env = dict(os.environ)
        source = str(Path(rrnet.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([source, *filter(None, [env.get("PYTHONPATH")])])
        env.pop("DASK_LOGGING__DISTRIBUTED", None)
        env[SHARD_HOLD_ENV] = str(hold)  # seconds per shard: time to interrupt the run
        self.began = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rrnet.cli.run", *args],
            cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )  # fmt: skip

    def finish(self, timeout: float = 420) -> tuple[int, str]:
        """Exit status and stderr (the process is killed on timeout)."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.fail(f"rrnet-run still running after {timeout} s:\n{err}")
        self.seconds = time.monotonic() - self.began
        return self.proc.returncode, err

    def jobs(self, states: str = "PENDING,RUNNING,CONFIGURING,COMPLETING") -> list[str]:
        """``id state`` of this run's worker jobs in ``squeue``."""
        out = subprocess.run(["squeue", "-h", "-n", self.name, "-t", states, "-o", "%i %T"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return out.split("\n")[:-1]

    def parts(self) -> list[Path]:
        return sorted((self.root / f"{self.out.name}.run" / "parts").glob("shard-*.parquet"))

    def wait(self, what: Callable[[], object], timeout: float = 300) -> None:
        """Wait until ``what()`` is true while the run goes on."""
        deadline = time.monotonic() + timeout
        while not what():
            if self.proc.poll() is not None:
                pytest.fail(f"rrnet-run ended early ({self.proc.returncode}): {self.finish()[1]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"timed out waiting; stderr: {self.finish()[1]}")
            time.sleep(0.5)

    def no_jobs_left(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while self.jobs() and time.monotonic() < deadline:
            time.sleep(1)
        return not self.jobs()


def report(run: Run) -> dict:
    return json.loads((run.root / f"{run.out.name}.report.json").read_text())


@needs_shared
@needs_slurm
def test_equals_infer_and_resume_of_finished_run_rewrites_report(world: dict) -> None:
    run = Run(world, "plain.parquet")
    status, err = run.finish()
    assert status == 0, err
    assert pl.read_parquet(run.out).equals(world["oracle"])
    first = report(run)
    assert first["complete"] and first["shards_computed"] == N_FILES and first["workers"] == 1
    assert "6/6 shards" in err and "spectra/s" in err and "ETA" in err  # progress display
    assert "6 shards computed" in err.splitlines()[-1]  # end summary
    assert "distributed." not in err and "INFO" not in err  # Dask's log is quiet
    assert run.no_jobs_left()
    again = Run(world, str(run.out), "--resume", catalog=str(run.root / "cat.csv"))
    status, err = again.finish()
    assert status == 0, err
    second = report(run)
    assert second["shards_computed"] == 0 and second["shards_skipped"] == N_FILES
    assert second["rerun"] and second["wall_s"] != first["wall_s"]
    assert second["rows_by_status"] == first["rows_by_status"]
    print(f"plain run {run.seconds:.0f} s, finished rerun {again.seconds:.0f} s")


@needs_shared
@needs_slurm
def test_cancelled_worker_job_is_replaced(world: dict) -> None:
    run = Run(world, "cancelled.parquet", hold=3)
    run.wait(lambda: run.parts())  # the worker is up and has finished a shard
    job = run.jobs("RUNNING")[0].split()[0]
    subprocess.run(["scancel", job], check=True)
    status, err = run.finish()
    assert status == 0, err
    assert f"job {job} CANCELLED" in err and "submitting a replacement" in err
    assert pl.read_parquet(run.out).equals(world["oracle"])
    assert report(run)["complete"]
    assert run.no_jobs_left()
    print(f"run with a cancelled job {run.seconds:.0f} s")


@needs_shared
@needs_slurm
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--queue", "no-such-partition"], "invalid partition"),
        (["--memory", "4000TiB"], "SLURM refuses the worker job"),
    ],
)
def test_refused_submission_is_one_line_exit_2(world: dict, flags: list[str], message: str) -> None:
    run = Run(world, "refused.parquet", *flags)
    status, err = run.finish(timeout=60)
    assert status == 2 and run.seconds < 60
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not run.jobs() and not (run.root / "refused.parquet.run").exists()


@needs_shared
@needs_slurm
def test_sigint_keeps_parts_and_resume_with_other_spelling(world: dict) -> None:
    run = Run(world, "interrupted.parquet", hold=3)
    run.wait(lambda: run.parts())
    run.proc.send_signal(signal.SIGINT)
    status, err = run.finish(timeout=90)
    assert status == 130, err
    assert "interrupted by SIGINT" in err and "--resume" in err and "Traceback" not in err
    assert run.no_jobs_left()
    kept = run.parts()
    assert kept and not run.out.exists()
    resumed = Run(world, str(run.out), "--resume", catalog=str(run.root / "cat.csv"))
    status, err = resumed.finish()
    assert status == 0, err
    assert pl.read_parquet(run.out).equals(world["oracle"])
    assert report(run)["shards_skipped"] >= len(kept)


@needs_shared
@needs_slurm
def test_sigterm_exits_143_and_cancels_jobs(world: dict) -> None:
    run = Run(world, "terminated.parquet", hold=3)
    run.wait(lambda: run.jobs(), timeout=120)
    time.sleep(1)
    run.proc.send_signal(signal.SIGTERM)
    status, err = run.finish(timeout=90)
    assert status == 143, err
    assert "interrupted by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    assert run.no_jobs_left()


@needs_shared
def test_ctrl_c_to_a_local_run_prints_one_line_not_the_workers_tracebacks(world: dict) -> None:
    """A terminal's Ctrl-C reaches every process of the group, the workers included."""
    run = Run(world, "local-interrupted.parquet", hold=3, local=True)
    run.wait(lambda: run.parts())
    os.killpg(run.proc.pid, signal.SIGINT)
    status, err = run.finish(timeout=90)
    assert status == 130, err
    assert "interrupted by SIGINT" in err and "--resume" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def test_worker_processes_follow_cores_and_oversubscription_is_refused() -> None:
    assert load_settings(None, kind="slurm", cores=1).worker_processes == 1
    assert load_settings(None, kind="slurm", cores=8).worker_processes == 8
    assert load_settings(None, kind="slurm", cores=8, processes=2).threads == 4
    assert load_settings(None, kind="slurm", cores=8, gpus_per_job=2).worker_processes == 2
    assert load_settings(None).worker_processes == 2  # local default unchanged
    with pytest.raises(ClusterConfigError, match="oversubscribe"):
        load_settings(None, kind="slurm", cores=1, processes=2)


def test_a_config_that_is_no_toml_table_is_one_config_error(tmp_path: Path) -> None:
    """A PNG as --config escaped as "unexpected UnicodeDecodeError"; ``cluster = 5``
    as "'int' object is not iterable". Both are the config's fault, said with its name."""
    png = tmp_path / "cluster.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    scalar = tmp_path / "scalar.toml"
    scalar.write_text("cluster = 5\n")
    with pytest.raises(ClusterConfigError, match=r"cluster\.png is not a TOML text file"):
        load_settings(png)
    with pytest.raises(ClusterConfigError, match=r"\[cluster\] must be a table"):
        load_settings(scalar)
    table = tmp_path / "ok.toml"
    table.write_text('[cluster]\nkind = "slurm"\ncores = 4\n')
    assert load_settings(table).cores == 4
