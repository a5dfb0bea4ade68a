"""A run's phases and finished partitions, for a display in the process that called the flow.

`pairwise` calls the flows in its own process and listens here to draw its
progress (flows/terminal.py). The flow says when a phase begins and
map_partitions when a partition is done: that loop runs in this process
whatever the task runner, so a run on a Dask cluster reports too, a partition
at a time. Without a listener (a deployment's run on a worker) the calls do
nothing: the Prefect UI has the run's logs and its progress artifact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Listener(Protocol):
    def phase(self, name: str, items: int | None = None, partitions: int | None = None, *,
              selective: bool = False) -> None:
        """A phase begins (and the one before it ends); ``items``: how many its partitions hold, if it counts.
        ``selective``: it reads them all but labels only some (an incremental night's new and changed items),
        so its count is of items read, and each partition says how many it labelled."""

    def advance(self, items: int, labelled: int | None = None) -> None:
        """A partition of the counting phase is done: ``items`` read, of which ``labelled`` (a label pass's)."""


_listeners: list[Listener] = []


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def begin_phase(name: str, items: int | None = None, partitions: int | None = None, *,
                selective: bool = False) -> None:
    for listener in _listeners:
        listener.phase(name, items, partitions, selective=selective)


def partition_done(items: int, labelled: int | None = None) -> None:
    for listener in _listeners:
        listener.advance(items, labelled)
