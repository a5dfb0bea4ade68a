"""`pairwise worker`: Prefect's worker for the nightly deployment, stopped by one SIGTERM however it was started.

Prefect's worker turns a SIGTERM into a SIGINT to itself, and stops on that
SIGINT. A process started in the background by a shell script (`cmd &`), by
nohup or by some supervisors inherits SIGINT *ignored*, and Python keeps it
ignored: the forwarded SIGINT is lost and only a second signal (Prefect then
sends SIGKILL) stops the worker. Restoring Python's SIGINT handler before the
worker starts makes one SIGTERM enough, wherever it was started from.
"""

from __future__ import annotations

import signal
import sys


def start_worker(pool: str, prefect_args: list[str]) -> int:
    """Run `prefect worker start --pool POOL [prefect_args]` in this process until it is stopped."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from prefect.cli import app

    sys.argv = ["prefect", "worker", "start", "--pool", pool, *prefect_args]
    try:
        app()
    except SystemExit as stop:  # the CLI always ends this way, 0 included
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    return 0
