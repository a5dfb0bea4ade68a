"""How our tasks retry and cache, set once.

I/O tasks retry twice with backoff, but never on bad input (a ValueError,
SourceError included): reading the same bad file again cannot help; nor on a
signal (Ctrl-C, SIGTERM) that DuckDB turned into its own error: a retry would
carry on the run its user stopped; nor when
the Prefect API did not answer: Prefect's client has retried that request
already (PREFECT_CLIENT_MAX_RETRIES), and each attempt of the task waited out
its retries again (a server gone after a run's commit took 45 s to report);
nor when the task's run has ended under it (RunEnded: a cancelled run's
queued tasks retried for 5 s into a folder that will not come back).
No task caches: every output is a run-scoped staged file that is deleted when
the run ends, so a cached result would point at nothing.
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NONE

from tasks.errors import causes, interrupted


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry unless the failure is bad input, a signal, a database another process kept open past the wait, a
    full disk, the task's run ended, or the Prefect API's silence (a request to it that got no answer through the
    client's own retries)."""
    from tasks.staging import RunEnded
    from tasks.store import DatabaseBusy, NoRoom

    try:
        state.result()
    except (ValueError, DatabaseBusy, NoRoom, RunEnded):  # NoRoom: a full disk is not freed by waiting 5 s
        return False
    except BaseException as error:
        return not interrupted(error) and no_answer(error) is None
    return True


def no_answer(error: BaseException) -> BaseException | None:
    """The request that got no answer (refused, timed out, cut off) behind ``error``, if any: an HTTP request
    of Prefect's client, as the run's own code sends none (flows/prefect_server.py unreachable)."""
    import httpx

    return next((seen for seen in causes(error) if isinstance(seen, httpx.TransportError)), None)


IO_TASK: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [1, 4],
    "retry_condition_fn": is_transient,
    "cache_policy": NONE,
}
