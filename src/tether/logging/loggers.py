"""Prefect's ``prefect.logging.loggers``: run loggers made from a run object, for code
that has the run but is not inside it (a state-change hook, a callback).

``flow_run_logger(flow_run)`` and ``task_run_logger(task_run)`` log to that run, as
`get_run_logger()` does from inside it; ``get_logger`` and ``get_run_logger`` as in
`tether.logging`.
"""

from __future__ import annotations

import logging as _logging
from typing import Any as _Any

from tether._logging import RunLoggerAdapter as _RunLoggerAdapter
from tether._logging import configure_logging as _configure_logging
from tether._logging import get_logger, get_run_logger

__all__ = ["flow_run_logger", "get_logger", "get_run_logger", "task_run_logger"]


def flow_run_logger(flow_run: _Any, flow: _Any = None, **extra: _Any) -> _logging.LoggerAdapter:  # type: ignore[type-arg]
    """A logger whose records belong to ``flow_run`` (anything with ``.id`` and ``.name``)."""
    _configure_logging()
    return _RunLoggerAdapter(
        _logging.getLogger("tether.flow_runs"),
        {"run_id": flow_run.id, "flow_run_id": flow_run.id, "run_label": f"Flow run {flow_run.name!r}", **extra},
    )


def task_run_logger(task_run: _Any, task: _Any = None, flow_run: _Any = None, flow: _Any = None, **extra: _Any) -> _logging.LoggerAdapter:  # type: ignore[type-arg]
    """A logger whose records belong to ``task_run`` (anything with ``.id``, ``.name``, ``.flow_run_id``)."""
    _configure_logging()
    flow_run_id = flow_run.id if flow_run is not None else getattr(task_run, "flow_run_id", None)
    return _RunLoggerAdapter(
        _logging.getLogger("tether.task_runs"),
        {"run_id": task_run.id, "flow_run_id": flow_run_id, "run_label": f"Task run {task_run.name!r}", **extra},
    )
