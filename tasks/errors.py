"""What caused an error, where a library's own error hides the one that decides.

Free of Prefect and DuckDB imports: the command asks whether a failure was a Ctrl-C before either is loaded,
and the tasks' retry policy asks the same of every failed attempt.
"""

from __future__ import annotations

from collections.abc import Iterator

# DuckDB's message when a signal interrupts the query it runs; some of its calls (fetching Arrow) raise it as a
# plain RuntimeError rather than its InterruptException
QUERY_INTERRUPTED = "Query interrupted"


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, then what it was raised from or during, and so on: where a library's own error hides the
    one that decides (Prefect's "Failed to reach API", DuckDB's error from a Ctrl-C)."""
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def interrupted(error: BaseException) -> bool:
    """Whether a signal caused ``error``: a KeyboardInterrupt, or DuckDB's interrupt of the query it ran then,
    here or in the errors it led to (a run records it as its failure, and the command reports that failure)."""
    return any(isinstance(seen, KeyboardInterrupt) or type(seen).__name__ == "InterruptException"
               or (isinstance(seen, RuntimeError) and str(seen) == QUERY_INTERRUPTED) for seen in causes(error))


def terminated(error: BaseException) -> bool:
    """Whether SIGTERM caused ``error``: Prefect's engine turns it into its TerminationSignal while a flow runs,
    and DuckDB, amid a query, into its own error raised during that one."""
    return any(type(seen).__name__ == "TerminationSignal" for seen in causes(error))


class OutputClosed(RuntimeError):
    """A flow run's console output closed under it: its stdout and stderr are pipes to the Prefect worker that
    started it, and that worker ended (killed, say). Prefect's console log handler (rich's) then ends the run
    at its next log line with SystemExit(1), which `runs` recorded as the failure: 'SystemExit: 1'."""


def output_closed(error: BaseException) -> OutputClosed | None:
    """``error`` as its output closing under the run, if it is the exit a broken pipe made of a log line."""
    if isinstance(error, SystemExit) and any(isinstance(seen, BrokenPipeError) for seen in causes(error)):
        return OutputClosed("its output closed under it (BrokenPipeError): the Prefect worker that started it "
                            "(or whatever read its output) ended")
    return None
