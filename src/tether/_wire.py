"""What travels between the flow process and a remote worker, and how errors survive the trip.

A task attempt travels as a `Call` (the function and arguments pickled with
cloudpickle, each resource value replaced by a `ResourceRef`), and comes back as a
`CallResult`; closing a worker's copy of a resource comes back as a `CleanupReport`.
Errors travel with `dump_error` / `load_error`, which keep the worker's traceback
and replace an exception that cannot be pickled by a `RemoteError`.

Plain data and functions only: nothing here runs tasks or opens resources.
"""

from __future__ import annotations

import traceback
from typing import Any

import cloudpickle

from tether._errors import TetherError


class WorkerLost(TetherError):
    """The worker process that ran (or was to run) a call died, or left the cluster."""


class RemoteError(Exception):
    """Stands for an exception raised on a worker that could not be pickled back."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised on a worker, as text (its ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


# -- what travels ------------------------------------------------------------------


class ResourceRef:
    """A resource value, as it travels: which scope, and how a worker opens its own copy.

    ``opener`` is ``cloudpickle.dumps((resource, args, kwargs))``, made once per scope;
    the worker unpickles it only when it sets up its copy.
    """

    __slots__ = ("scope_id", "name", "opener")

    def __init__(self, scope_id: str, name: str, opener: bytes) -> None:
        self.scope_id = scope_id
        self.name = name
        self.opener = opener

    def __reduce__(self) -> Any:
        return (ResourceRef, (self.scope_id, self.name, self.opener))

    def __repr__(self) -> str:
        return f"<ResourceRef {self.name!r} {self.scope_id[:8]}>"


class Call:
    """One attempt of a task run, ready to be sent to a worker."""

    __slots__ = (
        "call_id",
        "function",
        "arguments",
        "has_resources",
        "flow_run_id",
        "task_run_id",
        "task_run_name",
        "log_prints",
        "timeout",
        "grace",
    )

    def __init__(
        self,
        call_id: str,
        function: bytes,
        arguments: bytes,
        has_resources: bool,
        flow_run_id: str,
        task_run_id: str,
        task_run_name: str,
        log_prints: bool,
        timeout: float | None,
        grace: float,
    ) -> None:
        self.call_id = call_id
        self.function = function
        self.arguments = arguments
        self.has_resources = has_resources
        self.flow_run_id = flow_run_id
        self.task_run_id = task_run_id
        self.task_run_name = task_run_name
        self.log_prints = log_prints
        self.timeout = timeout  # counted on the worker, from the body's start
        self.grace = grace

    def __reduce__(self) -> Any:
        return (Call, tuple(getattr(self, name) for name in Call.__slots__))


class CallResult:
    """What a worker sends back for a `Call`.

    ``payload`` is the pickled return value when ``ok``, else the pickled error (see
    `dump_error`); ``timed_out`` says the body was interrupted by its timeout (whatever
    it turned that into); ``logs`` are the run's log records as dicts; ``copies`` the
    copy steps that happened during this call, in order.
    """

    __slots__ = ("ok", "payload", "timed_out", "logs", "copies", "worker", "host", "pid")

    def __init__(
        self,
        ok: bool,
        payload: bytes,
        timed_out: bool,
        logs: list[dict[str, Any]],
        copies: list[dict[str, Any]],
        worker: str,
        host: str,
        pid: int,
    ) -> None:
        self.ok = ok
        self.payload = payload
        self.timed_out = timed_out
        self.logs = logs
        self.copies = copies
        self.worker = worker
        self.host = host
        self.pid = pid

    def __reduce__(self) -> Any:
        return (CallResult, tuple(getattr(self, name) for name in CallResult.__slots__))


class CleanupReport:
    """What a worker sends back for `cleanup_copy`."""

    __slots__ = ("scope_id", "had_copy", "error", "seconds", "still_running", "worker", "host", "pid")

    def __init__(self, scope_id: str, had_copy: bool, error: str | None, seconds: float, still_running: int, worker: str, host: str, pid: int) -> None:
        self.scope_id = scope_id
        self.had_copy = had_copy
        self.error = error
        self.seconds = seconds
        self.still_running = still_running
        self.worker = worker
        self.host = host
        self.pid = pid

    def __reduce__(self) -> Any:
        return (CleanupReport, tuple(getattr(self, name) for name in CleanupReport.__slots__))


def dump_error(exc: BaseException) -> bytes:
    """Pack an exception and its traceback (as text) to travel.

    The exception travels as its class, ``args`` and attributes, and is rebuilt without
    calling ``__init__`` (which may take other arguments than ``args``); one that cannot
    travel that way becomes a `RemoteError` with its type and message.
    """
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    attributes = dict(vars(exc))
    for keep in (attributes, {k: v for k, v in attributes.items() if _travels(v)}):
        try:
            blob = cloudpickle.dumps((type(exc), exc.args, keep))
            _rebuild_error(*cloudpickle.loads(blob))
            break
        except Exception:
            continue
    else:
        blob = cloudpickle.dumps((RemoteError, (f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}",), {}))
    return cloudpickle.dumps((blob, text))


def _travels(value: Any) -> bool:
    try:
        cloudpickle.dumps(value)
    except Exception:
        return False
    return True


def _rebuild_error(kind: type[BaseException], args: tuple[Any, ...], attributes: dict[str, Any]) -> BaseException:
    exc = kind.__new__(kind, *args)
    exc.args = args
    exc.__dict__.update(attributes)
    return exc


def load_error(data: bytes, where: str) -> BaseException:
    """The exception `dump_error` packed, with the worker's traceback as its cause."""
    blob, text = cloudpickle.loads(data)
    try:
        exc = _rebuild_error(*cloudpickle.loads(blob))
    except Exception as unpickling:  # a class the flow process cannot import
        exc = RemoteError(f"an error raised {where} could not be unpickled here ({unpickling!r}); its traceback follows")
    if isinstance(exc, BaseException) and exc.__cause__ is None:
        exc.__cause__ = RemoteTraceback(f'Traceback {where}:\n{text}')
    return exc
