"""Run logs: `get_run_logger()`, ``log_prints``, and the handler that turns log records into events.

Records logged through a run logger carry the run's id; `RunLogHandler` turns them
into `LogEmitted` events for the recorders. What reaches the terminal is the
ordinary `logging` machinery (logger ``tether``), so users configure it as usual.
"""

from __future__ import annotations

import builtins
import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tether import _known_secrets as _known
from tether import _settings as settings
from tether._context import current_run, events
from tether._core import LogEmitted
from tether._errors import MissingContextError
from tether._known_secrets import redact_known

logger = logging.getLogger("tether")
_flow_logger = logging.getLogger("tether.flow_runs")
_task_logger = logging.getLogger("tether.task_runs")


class RunLogHandler(logging.Handler):
    """Sends records that belong to a run to the event stream."""

    def emit(self, record: logging.LogRecord) -> None:
        run_id = getattr(record, "run_id", None)
        if run_id is None or not events().active:
            return
        events().emit(
            LogEmitted(
                run_id=run_id,
                flow_run_id=getattr(record, "flow_run_id", None),
                level=record.levelno,
                message=record.getMessage(),
                timestamp=record.created,
            )
        )


class _RunFormatter(logging.Formatter):
    """Prefixes a run's records with the run ("Task run 'extract' - ...")."""

    def format(self, record: logging.LogRecord) -> str:
        label = getattr(record, "run_label", None)
        record.run_prefix = f"{label} - " if label else ""
        text = super().format(record)
        return text if _known.known_secrets is None else redact_known(text)  # a loaded secret's value


_configured = False
_configure_lock = threading.Lock()


def configure_logging() -> None:
    """Attach tether's console and event handlers once (idempotent)."""
    global _configured
    if _configured:
        return
    with _configure_lock:
        if _configured:
            return
        logger.addHandler(RunLogHandler())
        if not any(not isinstance(h, RunLogHandler) for h in logger.handlers):
            console = logging.StreamHandler()
            console.setFormatter(
                _RunFormatter("%(asctime)s.%(msecs)03d | %(levelname)-7s | %(run_prefix)s%(message)s", "%H:%M:%S")
            )
            # The level is the console's: the run log in the store keeps INFO whatever is shown.
            console.setLevel(settings.logging_level())
            logger.addHandler(console)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.propagate = False
        _configured = True


class RunLoggerAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def get_run_logger() -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """A logger whose records belong to the current flow or task run."""
    ctx = current_run.get()
    if ctx is None:
        if _flow_logger.disabled and _task_logger.disabled:  # inside disable_run_logger()
            return logging.LoggerAdapter(_silent, {})
        raise MissingContextError(
            "get_run_logger() was called outside a flow or task run, so there is no run "
            "to attach the logs to. Call it inside a @flow or @task function, or use "
            "logging.getLogger(...) in plain code."
        )
    configure_logging()
    if ctx.task_run is not None:
        run = ctx.task_run.record
        label = f"Task run {run.name!r}"
        base = _task_logger
    else:
        run = ctx.flow_run.record
        label = f"Flow run {run.name!r}"
        base = _flow_logger
    return RunLoggerAdapter(
        base, {"run_id": run.id, "flow_run_id": ctx.flow_run.record.id, "run_label": label}
    )


_silent = logging.getLogger("tether.silent")
_silent.disabled = True


def get_logger(name: str | None = None) -> logging.Logger:
    """A plain logger under tether's (``tether`` or ``tether.<name>``), shown like run logs."""
    configure_logging()
    return logger if name is None else logger.getChild(name)


@contextmanager
def disable_run_logger() -> Iterator[None]:
    """Inside the block, run loggers log nothing, and `get_run_logger()` works outside a
    run (returning a silent logger): for calling a task's ``.fn`` in a test."""
    before = _flow_logger.disabled, _task_logger.disabled
    _flow_logger.disabled = _task_logger.disabled = True
    try:
        yield
    finally:
        _flow_logger.disabled, _task_logger.disabled = before


_original_print = builtins.print
_print_patched = False


def _print_to_run_log(*args: Any, **kwargs: Any) -> None:
    ctx = current_run.get()
    if ctx is None or not ctx.log_prints or kwargs.get("file") not in (None,):
        _original_print(*args, **kwargs)
        return
    buffer = io.StringIO()
    _original_print(*args, **{**kwargs, "file": buffer, "end": ""})
    get_run_logger().info(buffer.getvalue())


def enable_log_prints() -> None:
    """Route ``print`` to the run log inside runs that ask for it (once per process)."""
    global _print_patched
    if not _print_patched:
        builtins.print = _print_to_run_log
        _print_patched = True


def log_for_run(run: Any, flow_run_id: str | None, level: int, message: str) -> None:
    """Log ``message`` as the engine's word about task run ``run`` (a `RunRecord`): shown on
    the console like the run's own logs, and kept in its run log."""
    if not _task_logger.isEnabledFor(level):
        return
    configure_logging()
    extra = {"run_id": run.id, "flow_run_id": flow_run_id, "run_label": f"Task run {run.name!r}"}
    RunLoggerAdapter(_task_logger, extra).log(level, message)
