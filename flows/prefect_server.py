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
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from functools import partial
from pathlib import Path
from types import SimpleNamespace

_PR_SET_PDEATHSIG = 1
# The temporary server's SQLite database took 4.7 MB as the server started in a fresh PREFECT_HOME, and grows with
# every run. On a full disk the server failed as it started, and Prefect took its exit for a port taken: it
# started another server, and another, for the whole wait (120 s), then the command blamed a slow start.
SERVER_ROOM_MB = 16


def start_temporary_server() -> None:
    """Start Prefect's temporary server now, detached as above, unless an API server is configured.

    Prefect keeps one such server per process (``SubprocessASGIServer``): the flow's client then finds this
    one running. Only the Prefect module that starts it sees the detached ``Popen``."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    check_server_room()
    from prefect.server.api import server
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    server.subprocess = SimpleNamespace(**{**vars(subprocess), "Popen": partial(
        _StartingServer, start_new_session=True, preexec_fn=_die_with_parent())})
    instance = server.SubprocessASGIServer()
    try:
        instance.start()
    except (PrefectUnreachable, ValueError):  # ours, with their line
        raise
    except Exception as error:  # the wait ran out (a hung server, or too slow a machine), or it failed otherwise
        with suppress(OSError, AttributeError):  # no use for it now: a hung one ignores SIGTERM (stop() waits 5 s)
            instance.server_process.kill()
        waited = f"not ready {PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value():g} s after its start: " \
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS sets the wait"
        why = waited if str(error).startswith("Timed out") else f"{type(error).__name__}: {error}".splitlines()[0]
        raise PrefectUnreachable("Prefect's temporary server", why) from None
    finally:
        if isinstance(instance.server_process, _StartingServer):
            instance.server_process.starting = False


def check_server_room() -> None:
    """Refuse (ValueError: one line, exit 2, before anything is written) to start the temporary server when its
    SQLite database would sit on a disk with less than SERVER_ROOM_MB free; a database of another kind is not
    ours to check."""
    path = _database_path()
    if path is None:
        return
    folder = path.parent
    while not folder.exists():  # PREFECT_HOME not made yet: the disk it will be made on
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < SERVER_ROOM_MB * 2**20:
        raise ValueError(f"Prefect's temporary server keeps its database in {path} (PREFECT_HOME), and that disk has "
                         f"{free / 2**20:,.1f} MB free, less than the {SERVER_ROOM_MB} MB it needs: free space there, "
                         "or set PREFECT_HOME to a folder on another disk; no run started and nothing was written")


def _database_path() -> Path | None:
    """The temporary server's SQLite database file; None for a database of another kind."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL
    from sqlalchemy.engine import make_url

    url = make_url(PREFECT_API_DATABASE_CONNECTION_URL.value())
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).absolute()


class _StartingServer(subprocess.Popen):
    """The temporary server's process, which ends Prefect's wait for it to answer once it has ended. The wait
    polls it for Uvicorn's exit code 3 (startup failed, which Prefect takes for its port taken: it starts another
    on another port) and otherwise asks it for its health until PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
    (120 s here, for a busy machine) have passed, however it ended: a server killed as it started cost the whole
    wait. A second exit 3, on another port, is not a port taken: a damaged database made Prefect start server
    after server for the whole wait, then the command blamed a slow start."""

    starting = True
    # the exits with code 3 let through so far: on the class, as Prefect makes a process object for each port it
    # tries; a command starts the temporary server once
    ports_taken = 0

    def poll(self) -> int | None:
        code = super().poll()
        if not self.starting or code is None:
            return code
        self.starting = False
        if code == 3 and not _StartingServer.ports_taken:
            _StartingServer.ports_taken += 1
            return code
        if code == 3:
            raise ValueError(f"Prefect's temporary server failed as it started, twice, on two ports (Uvicorn's exit "
                             f"code 3, startup failed): its database "
                             f"({_database_path() or 'PREFECT_API_DATABASE_CONNECTION_URL'}) may be damaged or "
                             "unwritable: move it aside (Prefect makes a new one), or set PREFECT_HOME to another "
                             "folder; no run started and nothing was written")
        raise PrefectUnreachable("Prefect's temporary server", f"it {_ended(code)} as it started")


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

    from tasks.errors import causes

    for seen in causes(error):
        if isinstance(seen, PrefectUnreachable):
            return seen
        if isinstance(seen, httpx.TransportError):
            url = PREFECT_API_URL.value()
            server = f"the Prefect server at {url}" if url else "Prefect's temporary server"
            return PrefectUnreachable(server, f"{type(seen).__name__}: {seen}".splitlines()[0])
    return None


# The `pairwise` command's way to leave when Prefect stops answering after a run's commit, and the retries of
# Prefect's client after the commit (None: as set); nothing elsewhere (a deployment's run on a worker)
_after_commit: list[tuple[Callable[[PrefectUnreachable], None], int | None]] = []


@contextmanager
def leaving_after_commit(leave: Callable[[PrefectUnreachable], None], retries: int | None) -> Iterator[None]:
    """Within it, a committed run's requests to Prefect (``after_commit``) retry ``retries`` times, and one that
    gets no answer calls ``leave``, which does not return."""
    entry = (leave, retries)
    _after_commit.append(entry)
    try:
        yield
    finally:
        _after_commit.remove(entry)


@contextmanager
def after_commit() -> Iterator[None]:
    """What a committed run still sends Prefect (its reports' artifacts): for the Prefect UI alone, since the run
    stands whatever happens to it. In the `pairwise` command (``leaving_after_commit``) a server that stopped
    answering is not waited out: the request retries once (not the command's two retries, 2 s then 4 s), and
    then the command leaves with its line (exit 3) from here, without reporting the flow run's end to that
    server (which waited out two retries again). Elsewhere, as any request of the run."""
    if not _after_commit:
        yield
        return
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    leave, retries = _after_commit[-1]
    try:
        with nullcontext() if retries is None else temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: retries}):
            yield
    except Exception as error:
        if (gone := unreachable(error)) is not None:
            leave(gone)
        raise


def _ended(code: int) -> str:
    """How a process with exit status ``code`` ended, in words: a negative one is the signal that killed it."""
    if code >= 0:
        return f"exited with code {code}"
    with suppress(ValueError):
        return f"was killed by {signal.Signals(-code).name}"
    return f"was killed by signal {-code}"


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
