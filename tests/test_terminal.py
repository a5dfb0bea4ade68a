"""The CLI's progress displays, driven as the flow drives them (the real CLI's output: test_cli.py)."""

import io

from rich.console import Console

from flows.progress import begin_phase, listening, partition_done
from flows.terminal import PlainLines, RichBars


class Clock:
    """Seconds that the test sets, so that the rate limit and the rates are exact."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_say_each_phase_and_a_pass_at_most_every_interval_then_its_total():
    out, clock = io.StringIO(), Clock()
    lines = PlainLines(out, clock=clock, interval=10.0)
    with listening(lines):
        begin_phase("fit the masks")
        clock.now += 2
        begin_phase("pass 2/2: labels", 4_000, 4)
        for seconds in (3, 3, 6, 3):  # a partition done at +3, +6, +12 and +15 s
            clock.now += seconds
            partition_done(1_000)
        begin_phase("metrics")
    partition_done(1_000)  # no longer listening: nothing
    assert out.getvalue().splitlines() == [
        "[0:00] fit the masks",
        "[0:02] pass 2/2: labels: 4,000 items in 4 partitions",
        # +3 and +6 s are within 10 s of the phase's line; +12 s is not
        "[0:14] pass 2/2: labels: 3,000/4,000 items (3/4 partitions), 250 items/s, ETA 4.0 s",
        "[0:17] pass 2/2: labels: done, 4,000 items in 15.0 s (267 items/s)",
        "[0:17] metrics",
    ]


def test_a_selective_pass_says_items_read_and_how_many_it_labelled():
    """An incremental night reads whole partitions and labels their new and changed items: it said "done, 300
    items" where its report said "labelled 10"."""
    out, clock = io.StringIO(), Clock()
    lines = PlainLines(out, clock=clock, interval=10.0)
    with listening(lines):
        begin_phase("pass 1/1: labels of the new and changed items", 3_000, 3, selective=True)
        for seconds, labelled in ((12, 4), (3, 0), (3, 6)):
            clock.now += seconds
            partition_done(1_000, labelled)
    assert out.getvalue().splitlines()[1:] == [
        "[0:12] pass 1/1: labels of the new and changed items: 1,000/3,000 items read, 4 labelled (1/3 partitions), "
        "83 items/s, ETA 24.0 s",
        "[0:18] pass 1/1: labels of the new and changed items: done, 3,000 items read, 10 labelled, in 18.0 s "
        "(167 items/s)",
    ]
    assert out.getvalue().splitlines()[0] == "[0:00] pass 1/1: labels of the new and changed items: 3,000 items to " \
        "read in 3 partitions"
    bars_out = io.StringIO()
    bars = RichBars(Console(file=bars_out, force_terminal=True, width=150))
    with bars.shown(), listening(bars):
        begin_phase("pass 1/1: labels of the new and changed items", 2_000, 2, selective=True)
        partition_done(1_000, 3)
        partition_done(1_000, 7)
    assert "2,000/2,000 items read, 10 labelled" in bars_out.getvalue()


def test_rich_bars_show_items_rate_and_every_phase_on_a_terminal():
    out = io.StringIO()
    bars = RichBars(Console(file=out, force_terminal=True, width=150))
    with bars.shown(), listening(bars):
        begin_phase("stage the sources")
        begin_phase("pass 1/2: pair statistics", 2_000, 2)
        partition_done(1_000)
        partition_done(1_000)
        begin_phase("fit the masks")
    screen = out.getvalue()
    assert "\x1b[" in screen  # drawn for a terminal
    last = screen[screen.rindex("stage the sources"):]  # the final frame
    assert "pass 1/2: pair statistics" in last and "2,000/2,000 items" in last and "items/s" in last
    assert "fit the masks" in last and "ETA" not in last
