"""`pairwise worker`: Prefect's worker for the nightly deployment, stopped by one SIGTERM however it was started.

Prefect's worker turns a SIGTERM into a SIGINT to itself, and stops on that
SIGINT. A process started in the background by a shell script (`cmd &`), by
nohup or by some supervisors inherits SIGINT *ignored*, and Python keeps it
ignored: the forwarded SIGINT is lost and only a second signal (Prefect then
sends SIGKILL) stops the worker. Restoring Python's SIGINT handler before the
worker starts makes one SIGTERM enough, wherever it was started from.

Stopping, Prefect's worker kills the flow runs it started without a word: their
runs stayed Running in Prefect and 'running' in `runs` until a later run found
them. The worker now sends each its own SIGTERM first, and waits for them to
record their end (Prefect's engine marks the run crashed, the flow marks it
failed), at most GRACE_S.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from types import FrameType

GRACE_S = 30.0
STOPPED_BY_SIGINT = 130  # Prefect's CLI exits so on the KeyboardInterrupt that stops the worker
_stopping = threading.Event()  # the stop was asked for (a signal)


def _children() -> list[int]:
    """This process's child processes, from any of its threads (Linux's /proc; none found elsewhere)."""
    pids: list[int] = []
    for thread in Path(f"/proc/{os.getpid()}/task").glob("*"):
        with suppress(OSError):
            pids += [int(pid) for pid in (thread / "children").read_text().split()]
    return pids


def _alive(pid: int) -> bool:
    """Running, not yet exited (an exited child not reaped yet is a zombie, state Z)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _stop_flow_runs_first(signum: int, frame: FrameType | None) -> None:
    """SIGINT (Prefect's worker turns a SIGTERM into one): SIGTERM to the flow runs, then stop the worker once
    they ended. The worker's event loop runs meanwhile (a flow run ending talks to it); the stop is then raised
    in it as the SIGINT's KeyboardInterrupt would have been. (Prefect's own handler, which called this one,
    sends SIGKILL on another SIGINT.)"""
    _stopping.set()
    runs = _children()
    if not runs:
        raise KeyboardInterrupt
    for pid in runs:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()

    def stop_when_ended() -> None:
        deadline = time.monotonic() + GRACE_S
        while any(map(_alive, runs)) and time.monotonic() < deadline:
            time.sleep(0.1)
        loop.call_soon_threadsafe(_interrupt)

    threading.Thread(target=stop_when_ended, name="pairwise-worker-stop", daemon=True).start()


def _interrupt() -> None:
    raise KeyboardInterrupt


def start_worker(pool: str, prefect_args: list[str]) -> int:
    """Run `prefect worker start --pool POOL [prefect_args]` in this process until it is stopped."""
    signal.signal(signal.SIGINT, _stop_flow_runs_first)
    from prefect.cli import app

    sys.argv = ["prefect", "worker", "start", "--pool", pool, *prefect_args]
    try:
        app()
    except SystemExit as stop:  # the CLI always ends this way, 0 included
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        return 0 if _stopping.is_set() and code == STOPPED_BY_SIGINT else code  # stopped as asked: no failure
    return 0
