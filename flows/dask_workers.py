"""Before a pass on Dask: do the scheduler's workers run this flow's code?

A worker that cannot import the project died as it unpickled its first task (distributed closes a worker whose
task it cannot deserialize), and the scheduler gave the task to the next, which died too: the run then waited
for workers forever, with nothing on its console. A worker running another version of the project ran its own
code on this flow's plans: a run failed on a missing key (``KeyError: 'pair_masks'``), or, where the keys
matched, would have labelled with other code. Each pass now first asks every worker for its code's
fingerprint, with a probe shipped by value (it needs nothing of the project to be unpickled), and refuses
workers that differ, in one line naming the worker.

Workers that join the cluster after the check are not checked: start them all alike.
"""

from __future__ import annotations

from typing import Any, Callable

CONNECT_TIMEOUT_S = 30  # distributed's own default for a scheduler that does not answer


class DaskWorkerMismatch(RuntimeError):
    """A Dask worker that cannot import the project, or runs other code of it than the flow."""


def _make_probe() -> Callable[[], tuple[str | None, str]]:
    """The probe, built in a function so that cloudpickle ships it by value: a module-level function would be
    pickled by reference, and a worker without the project could not unpickle it."""

    def probe() -> tuple[str | None, str]:
        """(fingerprint of the project's Python sources, the folder they are in), or (None, why not)."""
        import hashlib
        import importlib
        import pathlib

        digest = hashlib.sha256()
        where = ""
        for name in ("pairwise_core", "tasks", "flows"):  # the project's packages (inside: shipped by value)
            try:
                module = importlib.import_module(name)
            except Exception as error:  # noqa: BLE001 - any failure to import is the answer
                return None, f"cannot import {name} ({type(error).__name__}: {error})".splitlines()[0]
            root = pathlib.Path(module.__file__).parent
            where = where or str(root.parent)
            for path in sorted(root.rglob("*.py")):
                digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
        return digest.hexdigest()[:12], where

    return probe


probe = _make_probe()


def check_workers(address: str, log: Any = None) -> None:
    """DaskWorkerMismatch if a worker of the scheduler at ``address`` cannot import the project or runs other
    code of it; a warning on ``log`` if it has no worker yet (the pass waits for them)."""
    from distributed import Client

    ours, here = probe()
    with Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False) as client:
        found = client.run(probe, on_error="return")
    if not found and log is not None:
        log.warning(f"The Dask scheduler at {address} has no worker yet: the pass waits until one joins")
    for worker, answer in sorted(found.items()):
        if isinstance(answer, BaseException):
            raise DaskWorkerMismatch(f"the Dask worker {worker} could not be checked "
                                     f"({type(answer).__name__}: {answer})".splitlines()[0])
        theirs, there = answer
        if theirs is None:
            raise DaskWorkerMismatch(
                f"the Dask worker {worker} {there}: every worker needs this package installed "
                "(pip install -c constraints.txt '.[dask]'), or on its PYTHONPATH, as the flow has it")
        if theirs != ours:
            raise DaskWorkerMismatch(
                f"the Dask worker {worker} runs other code of this package (code {theirs} in {there}) than the "
                f"flow (code {ours} in {here}): install the same version on every worker")


class DaskSchedulerLost(RuntimeError):
    """The Dask scheduler went away while a pass ran on it."""


def scheduler_lost(error: BaseException, address: str | None) -> DaskSchedulerLost | None:
    """What failed the run when its Dask scheduler went away mid-pass: distributed cancels the pass's futures
    (``FutureCancelledError: label_partition-555bb9e46081e0766f5cddbf3ff54243 cancelled for reason:
    scheduler-connection-lost.``, a task key where the scheduler should be named), or, when it went as the client
    gathered results, the gather's connection closed (``CommClosedError: in <TCP (closed) ConnectionPool.gather
    ...>: ConnectionResetError``; seen once in CI), taken for the scheduler's only if its port no longer
    answers; None for any other error."""
    if address is None:
        return None
    cancelled = type(error).__name__ == "FutureCancelledError" \
        and getattr(error, "reason", None) == "scheduler-connection-lost"
    if not cancelled and not (type(error).__name__ == "CommClosedError" and not _answers(address)):
        return None
    return DaskSchedulerLost(f"the Dask scheduler at {address} went away during the run (its connection was lost); "
                             "nothing was committed: run again once it is back")


def _answers(address: str) -> bool:
    """Whether something still listens at a ``tcp://host:port`` address (one connection attempt, 2 s)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return True
    except OSError:
        return False
