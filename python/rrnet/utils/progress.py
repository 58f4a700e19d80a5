"""Progress of long runs: a tqdm bar on a terminal, plain log lines otherwise.

Survey runs go to batch logs as often as to terminals, where a bar is noise; a
line every ``interval`` seconds (and one at the end) with the rate, the ETA and the
UTC time (to line a log up with the batch system's accounting) is what an operator
greps for. One class serves every command.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable


def duration_text(seconds: float) -> str:
    """``HH:MM:SS`` with as many hours as it takes (a DR7 run's 31 h is ``31:00:00``,
    where a clock format wraps to ``07:00:00``); ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(max(0, int(seconds)), 60)  # done past total: nothing left
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def draws_a_bar(stream: object) -> bool:
    """Whether a tqdm bar can show on ``stream``: a terminal with a width (``script`` from
    cron gives a 0-column pty, where the bar draws nothing) that is not ``TERM=dumb``."""
    try:
        if not stream.isatty():  # type: ignore[attr-defined]
            return False
        columns = os.get_terminal_size(stream.fileno()).columns  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return columns > 0 and os.environ.get("TERM") != "dumb"


class Progress:
    """Count finished items of a run of ``total`` (``initial`` already done when resuming).

    Parameters
    ----------
    total, initial
        Items in the whole run, and items done before this process started.
    enabled
        False silences it (library calls, tests).
    prefix
        Command name that starts each log line, e.g. ``"rrnet-preprocess"``.
    unit
        What is counted, plural (``"spectra"``, ``"visits"``).
    interval
        Seconds between log lines when stderr is not a terminal.
    clock
        Seconds since an arbitrary start (``time.monotonic``); tests pass a fake one.
    wall
        Seconds since the epoch (``time.time``) for the UTC time each line ends with.
    leave
        Keep the finished bar on the terminal (False: a bar per training epoch).
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        enabled: bool = True,
        prefix: str = "rrnet",
        unit: str = "spectra",
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        leave: bool = True,
    ) -> None:
        self.total, self.initial, self.done = total, initial, initial
        self.prefix, self.unit, self.interval = prefix, unit, interval
        self.enabled, self.clock, self.wall = enabled, clock, wall
        self.note = ""
        """Appended to each line, e.g. ``", 3/10 shards"``."""
        self.start = self.last = clock()
        self.bar = None
        if enabled and draws_a_bar(sys.stderr):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=initial, unit=unit, dynamic_ncols=True, leave=leave
            )

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            if self.note:
                self.bar.set_postfix_str(self.note.lstrip(", "), refresh=False)
            self.bar.update(n)
            return
        now = self.clock()
        if self.enabled and (now - self.last >= self.interval or self.done == self.total):
            self.last = now
            print(self.line(now), file=sys.stderr, flush=True)

    def tick(self) -> None:
        """Say the run is alive when ``interval`` has passed without a line: units that
        take minutes each (an rrnet-run shard) left a batch log silent that long."""
        if not self.enabled:
            return
        if self.bar is not None:
            if self.note:
                self.bar.set_postfix_str(self.note.lstrip(", "), refresh=False)
            self.bar.refresh()  # its elapsed time moves on
            return
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            print(self.line(now), file=sys.stderr, flush=True)

    def line(self, now: float | None = None) -> str:
        """The log line: done/total, percentage, rate, ETA and the UTC time."""
        now = self.clock() if now is None else now
        rate = (self.done - self.initial) / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        percent = 100 * self.done / max(self.total, 1)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.wall()))
        return (
            f"{self.prefix}: {self.done}/{self.total} {self.unit} ({percent:.1f}%), "
            f"{rate:.1f} {self.unit}/s, ETA {duration_text(eta)}{self.note} at {stamp}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
