"""A handled failure in a flow run's log is its one line, without Prefect's traceback.

Prefect's engine logs each failed task run and flow run with its traceback. A deployment run refused for bad
input (a glob that matches nothing, a model not stored) showed its one-line reason in the flow run's state,
and two tracebacks of some 60 lines each in the UI's Logs tab, Prefect's frames and ours, for a failure that
Pairwise names and handles: what the `pairwise` command prints as one line. Here such a record keeps its
message (which names the error) and loses its traceback. A bug keeps it: any other error, and a ValueError
raised outside the project's own code (numpy's, say).
"""

from __future__ import annotations

import linecache
import logging
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
# the loggers Prefect's engine logs a flow run's and its task runs' failures to (and the UI's Logs tab shows)
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def handled(error: BaseException) -> bool:
    """Whether ``error`` is one Pairwise raises with the whole story in its message: bad input (a ValueError)
    raised by the project's own code, or one of its one-line failures (the lock held, the file kept open, a
    full disk, the run ended or its staging gone, the Prefect API silent, a failed run or export); or a
    deployment run's parameters refused by their validation (Prefect's ParameterTypeError, which lists them)."""
    from prefect.exceptions import ParameterTypeError

    from flows.prefect_server import PrefectUnreachable
    from tasks.errors import OutputClosed
    from tasks.staging import RunEnded, StagingGone
    from tasks.store import DatabaseBusy, ExportFailed, NoRoom, RunFailed, RunLocked

    one_line = (DatabaseBusy, ExportFailed, NoRoom, OutputClosed, RunFailed, RunLocked, RunEnded, StagingGone,
                PrefectUnreachable, ParameterTypeError)
    if isinstance(error, one_line):
        return True
    return isinstance(error, ValueError) and _raised_by_project(error)


def _raised_by_project(error: BaseException) -> bool:
    """Whether ``error`` was raised by a ``raise`` statement of the project's own code: its innermost frame is
    in the project (not an installed package, even one in a virtual environment inside the project's folder),
    at a ``raise``; not a library's C code (numpy's reshape) that a line of ours called."""
    frame = error.__traceback__
    if frame is None:
        return False
    while frame.tb_next is not None:
        frame = frame.tb_next
    path = Path(frame.tb_frame.f_code.co_filename).resolve()
    ours = path.is_relative_to(PROJECT) and "site-packages" not in path.parts
    return ours and linecache.getline(str(path), frame.tb_lineno).lstrip().startswith("raise")


class OneLineFailures(logging.Filter):
    """Drops the traceback of a record whose exception is handled (its own, not one it was raised during: an
    error in the handling of another is a bug), and names the error in its message if the message does not."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and handled(error):
            record.exc_info, record.exc_text = None, None
            message = record.getMessage()
            if str(error).splitlines()[0] not in message:  # 'Engine execution exited with unexpected exception'
                why = " ".join(line.strip() for line in f"{type(error).__name__}: {error}".splitlines())
                record.msg, record.args = f"{message}: {why}", ()
        return True


def install() -> None:
    """Put the filter on Prefect's run loggers, once per process (the flow's module calls it as it is
    imported: by the `pairwise` command, and by a worker's flow run process)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, OneLineFailures) for existing in logger.filters):
            logger.addFilter(OneLineFailures())
