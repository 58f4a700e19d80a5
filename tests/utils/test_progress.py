"""Progress reporting of long runs, off a terminal (as in batch logs)."""

from __future__ import annotations

from rrnet.utils.progress import Progress


def test_plain_lines_at_the_interval_and_at_the_end(capsys) -> None:
    bar = Progress(10, enabled=True, prefix="rrnet-x", unit="spectra", interval=3600.0)
    for _ in range(9):
        bar.update()
    assert capsys.readouterr().err == ""  # interval not reached, run not finished
    bar.update()
    err = capsys.readouterr().err
    assert err.startswith("rrnet-x: 10/10 spectra (100.0%), ")
    assert "spectra/s" in err and "ETA 00:00:00" in err
    bar.close()


def test_resumed_runs_count_only_new_work_in_the_rate() -> None:
    bar = Progress(100, initial=40, enabled=False)
    bar.start -= 10.0  # 10 s ago
    bar.update(20)
    line = bar.line(now=bar.start + 10.0)
    assert "60/100" in line
    assert "2.0 spectra/s" in line  # 20 new items in 10 s, not 60
    assert "ETA 00:00:20" in line  # 40 left at 2 per second


def test_disabled_is_silent(capsys) -> None:
    bar = Progress(2, enabled=False, interval=0.0)
    bar.update(2)
    assert capsys.readouterr().err == ""
