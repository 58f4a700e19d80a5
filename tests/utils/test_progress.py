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


class FakeClock:
    """Seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_every_interval_with_a_fake_clock(capsys) -> None:
    clock = FakeClock()
    bar = Progress(1000, enabled=True, prefix="rrnet-x", interval=10.0, clock=clock)
    lines = []
    for _ in range(100):  # 100 updates of 5 spectra, one every 0.5 s: 50 s in all
        clock.now += 0.5
        bar.update(5)
        lines += [ln for ln in capsys.readouterr().err.splitlines() if ln]
    assert len(lines) == 5  # at 10, 20, 30, 40 and 50 s
    assert lines[0].startswith("rrnet-x: 100/1000 spectra (10.0%), 10.0 spectra/s, ETA 00:01:30")
    assert lines[-1].startswith("rrnet-x: 500/1000 spectra (50.0%)")


def test_default_interval_is_short_enough_to_see_progress() -> None:
    assert Progress(1, enabled=False).interval <= 10.0


def test_a_tick_says_the_run_is_alive_between_slow_units(capsys) -> None:
    """rrnet-run printed a line only when a shard finished: minutes of silence per shard,
    and none at all while its worker jobs were pending (found by a user)."""
    clock = FakeClock()
    bar = Progress(100, enabled=True, prefix="rrnet-x", interval=10.0, clock=clock)
    bar.note = ", 0/4 shards, 0 workers"
    lines = []
    for _ in range(30):  # 30 s of polls once a second, nothing finished
        clock.now += 1.0
        bar.tick()
        lines += [ln for ln in capsys.readouterr().err.splitlines() if ln]
    assert len(lines) == 3  # at 10, 20 and 30 s
    assert lines[0].startswith(
        "rrnet-x: 0/100 spectra (0.0%), 0.0 spectra/s, ETA ?, 0/4 shards, 0 workers at "
    )
    quiet = Progress(1, enabled=False, interval=0.0, clock=clock)
    clock.now += 100
    quiet.tick()  # silent when disabled
    assert capsys.readouterr().err == ""


def test_each_line_ends_with_the_utc_time() -> None:
    """A batch log is lined up with the batch system's accounting (sacct) by time."""
    bar = Progress(10, enabled=False, prefix="rrnet-x", wall=lambda: 1_780_000_000.0)
    assert bar.line().endswith(" at 2026-05-28T20:26:40Z")  # date -u -d @1780000000


def test_an_eta_beyond_a_day_is_not_wrapped() -> None:
    """5.6 million spectra at 50 per second said "ETA 07:06:40" (31 h 6 min 40 s
    wrapped at a day): hours now run on."""
    bar = Progress(5_600_000, enabled=False)
    bar.update(50)
    line = bar.line(now=bar.start + 1.0)
    assert "ETA 31:06:39" in line  # 5,599,950 left at 50 per second: 111,999 s
    bar.update(5_600_000)  # more done than the total said: nothing left, not negative
    assert "ETA 00:00:00" in bar.line(now=bar.start + 2.0)


def test_a_terminal_without_width_gets_plain_lines(monkeypatch) -> None:
    """``script`` from cron gives a 0-column pty, where a tqdm bar draws nothing: the run
    logged no progress at all. So does ``TERM=dumb``."""
    import os

    from rrnet.utils import progress

    class Tty:
        def isatty(self) -> bool:
            return True

        def fileno(self) -> int:
            return 2

    def size(columns):  # type: ignore[no-untyped-def]
        return lambda fd: os.terminal_size((columns, 24))

    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(progress.os, "get_terminal_size", size(0))
    assert not progress.draws_a_bar(Tty())
    monkeypatch.setattr(progress.os, "get_terminal_size", size(100))
    assert progress.draws_a_bar(Tty())
    monkeypatch.setenv("TERM", "dumb")
    assert not progress.draws_a_bar(Tty())
