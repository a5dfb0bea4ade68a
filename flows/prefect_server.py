"""Prefect's temporary server for one `pairwise` command, out of reach of the terminal's signals.

Without PREFECT_API_URL, Prefect starts a temporary API server (a uvicorn child process) for the run. As
Prefect starts it, it shares the command's process group, so Ctrl-C in a terminal, which signals the whole
group, killed the server too: the interrupted run then retried every event against a dead server for two to
five minutes, printed pages of errors and blamed a ConnectionError. And a `pairwise` killed by SIGTERM or
SIGKILL left the server running, orphaned. Here the server is started at once, on the main thread, in a
session of its own (the terminal's Ctrl-C reaches only `pairwise`, which stops it as it exits) and with
Linux's parent-death signal (it gets SIGTERM when the thread that started it, this main thread, ends).
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from functools import partial
from types import SimpleNamespace

_PR_SET_PDEATHSIG = 1


def start_temporary_server() -> None:
    """Start Prefect's temporary server now, detached as above, unless an API server is configured.

    Prefect keeps one such server per process (``SubprocessASGIServer``): the flow's client then finds this
    one running. Only the Prefect module that starts it sees the detached ``Popen``."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    from prefect.server.api import server

    server.subprocess = SimpleNamespace(**{**vars(subprocess), "Popen": partial(
        subprocess.Popen, start_new_session=True, preexec_fn=_die_with_parent())})
    server.SubprocessASGIServer().start()


class PrefectUnreachable(RuntimeError):
    """A request to the Prefect API got no answer: its server stopped, or never started."""

    def __init__(self, server: str, why: str) -> None:
        super().__init__(f"{server} stopped answering ({why})")
        self.server, self.why = server, why


def unreachable(error: BaseException) -> PrefectUnreachable | None:
    """``error`` as the Prefect API's silence, if it came of a request to it that got no answer (refused, timed
    out, cut off): Prefect raises that error, or its own "Failed to reach API" from it, out of a progress update
    or a state change, after its retries. The run's own code sends no other HTTP request."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, PrefectUnreachable):
            return seen
        if isinstance(seen, httpx.TransportError):
            url = PREFECT_API_URL.value()
            server = f"the Prefect server at {url}" if url else "Prefect's temporary server"
            return PrefectUnreachable(server, f"{type(seen).__name__}: {seen}".splitlines()[0])
        seen = seen.__cause__ or seen.__context__
    return None


def _die_with_parent():
    """A preexec_fn asking Linux to send the child SIGTERM when its parent thread ends; a no-op elsewhere.
    The library call is looked up here, in the parent, so the child between fork and exec only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return partial(prctl, _PR_SET_PDEATHSIG, int(signal.SIGTERM))


def stop_temporary_server() -> None:
    """Stop the temporary server now, if this process started one: for a command that leaves without the
    interpreter's exit hooks, which would stop it (and, on Linux, before the parent-death signal would). Its
    module is not imported for nothing: with a server of the user's, that took seconds after the last line."""
    server = sys.modules.get("prefect.server.api.server")
    if server is None:
        return
    for instance in list(server.SubprocessASGIServer._instances.values()):
        instance.stop()
