"""A handled failure reaches a flow run's log (the Prefect UI's Logs tab) as one line, a bug with its traceback."""

import logging

import numpy as np
import pytest

from flows.reclassify import ReclassifyParams, reclassify_catalog
from flows.run_log_failures import RUN_LOGGERS, handled
from tasks.sources import SourceError, parquet_files


@pytest.fixture
def run_records():
    """Every record of Prefect's flow-run and task-run loggers, as the API handler gets them."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    loggers = [logging.getLogger(name) for name in RUN_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    yield records
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.mark.usefixtures("prefect_harness")
def test_bad_input_fails_the_flow_run_in_lines_without_a_traceback(tmp_path, run_records):
    params = ReclassifyParams(items=str(tmp_path / "nope" / "*.parquet"), classes=str(tmp_path / "classes.parquet"),
                              db=str(tmp_path / "out.duckdb"))
    with pytest.raises(SourceError, match="matches no Parquet files"):
        reclassify_catalog(params)
    errors = [record for record in run_records if record.levelno >= logging.ERROR]
    assert any("matches no Parquet files" in record.getMessage() for record in errors), errors
    assert [record.getMessage() for record in errors if record.exc_info or record.exc_text] == []


def test_only_the_projects_own_refusals_lose_their_traceback(tmp_path):
    with pytest.raises(SourceError) as refused:
        parquet_files(str(tmp_path / "*.parquet"))
    assert handled(refused.value)
    with pytest.raises(ValueError) as numpy_error:  # a bug's ValueError, raised in a library
        np.zeros(2).reshape(3)
    assert not handled(numpy_error.value)
    assert not handled(KeyError("x"))
