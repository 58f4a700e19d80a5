"""Every command holds one lock on its output: rrnet-eval (report folder), rrnet-train
(checkpoint folder) and rrnet-run (catalogue + run folder) refuse a second writer at once,
with one line naming the holder and exit status 75 (EX_TEMPFAIL: retry later)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from rrnet.cli._args import EXIT_OUTPUT_IN_USE

HOLD = textwrap.dedent(
    """
    import sys, time
    from rrnet.utils.lock import output_lock
    with output_lock(sys.argv[1], directory=sys.argv[2] == "dir"):
        print("held", flush=True)
        time.sleep(60)
    """
)


@pytest.fixture
def hold():
    procs = []

    def start(out, kind):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(out), kind], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _one_line_naming(capsys, proc):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pid {proc.pid}" in err and "Traceback" not in err


def test_eval_report_folder(tmp_path, hold, capsys):
    from rrnet.cli.eval import main

    for name in ("cat.csv", "labels.csv"):
        (tmp_path / name).write_text("obsid\n1\n")
    out = tmp_path / "report"
    proc = hold(out, "dir")
    args = ["--catalog", str(tmp_path / "cat.csv"), "--labels", str(tmp_path / "labels.csv")]
    assert main([*args, "--out", str(out)]) == EXIT_OUTPUT_IN_USE
    _one_line_naming(capsys, proc)


def test_train_checkpoint_folder(tmp_path, hold, capsys):
    from rrnet.cli.train import main

    out = tmp_path / "SP"
    proc = hold(out, "file")
    args = ["--store", str(tmp_path / "store"), "--labels", str(tmp_path / "l.csv")]
    assert main([*args, "--out", str(out), "--quiet"]) == EXIT_OUTPUT_IN_USE
    _one_line_naming(capsys, proc)
    assert not out.exists()
