"""What `pairwise` shows while a run goes: bars on a terminal, plain lines elsewhere.

Both listen to flows/progress.py. On a terminal, rich (which comes with
Prefect) draws one row per phase, with items, items/s and an ETA for the two
passes. In a log file or a pipe (cron, CI) redrawn bars would be noise: one
line when a phase begins, a pass's progress at most every INTERVAL_S
seconds, and its total when it ends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn
from rich.text import Text

from flows.progress import Listener
from tasks.run_log import count

INTERVAL_S = 10.0


def clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def duration_text(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else clock_text(seconds)


class PlainLines:
    """Progress as lines that are written once each, for logs and pipes."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic,
                 interval: float = INTERVAL_S) -> None:
        self._stream, self._clock, self._interval = stream, clock, interval
        self._start = self._last = self._began = clock()
        self._name, self._total, self._parts, self._selective = "", 0, 0, False
        self._done = self._parts_done = self._labelled = 0

    def phase(self, name: str, items: int | None = None, partitions: int | None = None, *,
              selective: bool = False) -> None:
        self._name, self._total, self._parts, self._selective = name, items or 0, partitions or 0, selective
        self._done = self._parts_done = self._labelled = 0
        self._began = self._last = self._clock()
        self._say(name if items is None else f"{name}: {count(items, 'item')}{' to read' if selective else ''} "
                  f"in {count(partitions or 0, 'partition')}")

    def advance(self, items: int, labelled: int | None = None) -> None:
        self._done += items
        self._labelled += labelled or 0
        self._parts_done += 1
        now = self._clock()
        elapsed = max(now - self._began, 1e-9)
        rate = self._done / elapsed
        # a selective pass: items read, and of them the ones labelled
        read = f" items read, {self._labelled:,} labelled," if self._selective else " items"
        if self._done >= self._total:
            self._say(f"{self._name}: done, {self._done:,}{read} in {duration_text(elapsed)} ({rate:,.0f} items/s)")
        elif now - self._last >= self._interval:
            eta = (self._total - self._done) / rate
            self._say(f"{self._name}: {self._done:,}/{self._total:,}{read.rstrip(',')} ({self._parts_done}/"
                      f"{self._parts} partitions), {rate:,.0f} items/s, ETA {duration_text(eta)}")

    def finish(self) -> None:
        self._say("finished")

    def _say(self, text: str) -> None:
        self._last = now = self._clock()
        try:
            print(f"[{clock_text(now - self._start)}] {text}", file=self._stream, flush=True)
        except BrokenPipeError:  # its reader went away (`| head`, a tee or a logger that died): the run goes on
            silence(self._stream)


def silence(stream: TextIO) -> None:
    """Send what is written to ``stream`` from now on to /dev/null, its file descriptor included (Prefect's log
    lines go there too): a run died on its next progress line, 'BrokenPipeError' its recorded reason, and
    nobody was left to read it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


class _Items(ProgressColumn):
    """Items done of the pass's; a selective pass's are items read, and it says how many it labelled."""

    def render(self, task: Task) -> Text:
        if not task.fields["counts"]:
            return Text("")
        done = f"{task.completed:,.0f}/{task.total:,.0f} items"
        return Text(f"{done} read, {task.fields['labelled']:,} labelled" if task.fields["selective"] else done)


class _Rate(ProgressColumn):
    """items/s: over the whole pass once it is done, over rich's recent window while it runs."""

    def render(self, task: Task) -> Text:
        if not task.fields["counts"]:
            return Text("")
        rate = task.completed / task.finished_time if task.finished and task.finished_time else task.speed
        return Text("" if rate is None else f"{rate:,.0f} items/s")


class _Elapsed(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(clock_text((task.finished_time if task.finished else task.elapsed) or 0.0))


class _Eta(ProgressColumn):
    def render(self, task: Task) -> Text:
        left = task.time_remaining
        shown = task.fields["counts"] and not task.finished and left is not None
        return Text(f"ETA {clock_text(left)}" if shown else "")


class RichBars:
    """One row per phase: a spinner and the elapsed time, and for the passes items, items/s and an ETA."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(finished_text="[green]\u2713"), TextColumn("{task.description}"), BarColumn(),
            _Items(), _Rate(), _Elapsed(), _Eta(), console=console,
        )
        self._current: TaskID | None = None
        self._counts = False
        self._labelled = 0

    def phase(self, name: str, items: int | None = None, partitions: int | None = None, *,
              selective: bool = False) -> None:
        self._finish()
        self._counts = items is not None
        self._labelled = 0
        self._current = self._progress.add_task(name, total=items, counts=self._counts, selective=selective,
                                                labelled=0)

    def advance(self, items: int, labelled: int | None = None) -> None:
        if self._current is not None:
            self._labelled += labelled or 0
            self._progress.update(self._current, advance=items, labelled=self._labelled)

    def _finish(self) -> None:
        """The phase before is done: a phase without a count gets a full bar and stops its clock."""
        if self._current is not None and not self._counts:
            self._progress.update(self._current, total=1, completed=1)

    @contextmanager
    def shown(self) -> Iterator[RichBars]:
        with self._progress:
            yield self
            self._finish()  # only when the run went through: a failed phase stays as it stopped


@contextmanager
def display(stream: TextIO, *, plain: bool = False) -> Iterator[Listener]:
    """Bars when ``stream`` is a terminal (and not ``plain``), else plain lines."""
    if plain or not stream.isatty():
        lines = PlainLines(stream)
        yield lines
        lines.finish()  # only when the run went through: a failure's own line follows instead
        return
    with RichBars(Console(file=stream)).shown() as bars:
        yield bars
