"""Signs of life for long commands: a live bar with an ETA on a terminal, and plain lines every so
often when stderr is redirected to a log (a bar there writes nothing readable until the end).
Everything goes to stderr, so `--json` output on stdout stays clean.

Library functions take a plain callback `progress(done, total, message)`; the CLI passes
`Reporter.update`, so the library never knows how (or whether) progress is shown.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

ProgressCallback = Callable[[int, int, str], None]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def eta_seconds(done: int, total: int, elapsed: float) -> float | None:
    """Remaining time at the average rate so far; None before the first unit is done."""
    if done <= 0 or total <= 0 or done > total:
        return None
    return elapsed / done * (total - done)


@dataclass
class Reporter:
    """`with Reporter("eval") as report: ... report.update(done, total, message)`."""

    title: str
    interval_s: float = 10.0            # between plain lines when not on a terminal
    stream: TextIO | None = None
    live: bool | None = None            # None: a bar when the stream is a terminal
    clock: Callable[[], float] = time.monotonic
    _start: float = field(default=0.0, init=False)
    _last_line: float = field(default=float("-inf"), init=False)
    _first: tuple[float, int] | None = field(default=None, init=False)  # (time, done) of the first update
    _bar: object = field(default=None, init=False)
    _task: object = field(default=None, init=False)

    def __enter__(self) -> Reporter:
        self.stream = self.stream or sys.stderr
        if self.live is None:
            self.live = self.stream.isatty()
        self._start = self.clock()
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=Console(file=self.stream), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=None)
        return self

    def update(self, done: int, total: int, message: str = "") -> None:
        description = f"{self.title}: {message}" if message else self.title
        if self.live:
            self._bar.update(self._task, completed=done, total=total, description=description)
            return
        now = self.clock()
        if self._first is None:
            # the rate counts work timed here only: a resumed run reports its skipped units first
            self._first = (now, done)
        if now - self._last_line < self.interval_s and done < total:
            return
        self._last_line = now
        elapsed = now - self._start
        first_time, first_done = self._first
        eta = eta_seconds(done - first_done, total - first_done, now - first_time)
        remaining = f", ETA {format_duration(eta)}" if eta is not None and done < total else ""
        print(f"{description} [{done}/{total}, {format_duration(elapsed)} elapsed{remaining}]", file=self.stream,
              flush=True)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
