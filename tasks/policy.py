"""How our tasks retry and cache, set once.

I/O tasks retry twice with backoff, but never on bad input (a ValueError,
SourceError included): reading the same bad file again cannot help. No task
caches: every output is a run-scoped staged file that is deleted when the run
ends, so a cached result would point at nothing.
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NONE


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry unless the failure is bad input, or a database another process kept open past the wait."""
    from tasks.store import DatabaseBusy

    try:
        state.result()
    except (ValueError, DatabaseBusy):
        return False
    except BaseException:
        return True
    return True


IO_TASK: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [1, 4],
    "retry_condition_fn": is_transient,
    "cache_policy": NONE,
}
