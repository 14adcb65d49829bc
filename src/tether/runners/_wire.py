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
from typing import TYPE_CHECKING, Any, NamedTuple

import cloudpickle

from tether._errors import WorkerLost

if TYPE_CHECKING:
    from tether.store import LedgerTarget


__all__ = [
    "Call",
    "CallResult",
    "CleanupReport",
    "RemoteError",
    "RemoteTraceback",
    "ResourceRef",
    "WorkerLost",  # raised by runners from here; the class is in the exception tree
    "dump_error",
    "load_error",
]


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
    the worker unpickles it only when it sets up its copy. ``ledger`` says where the
    worker writes its copy's ledger rows (None: the flow process records to no store).
    (Not a tuple: the walkers of arguments would take it for a container.)
    """

    __slots__ = ("ledger", "name", "opener", "scope_id")

    def __init__(self, scope_id: str, name: str, opener: bytes, ledger: LedgerTarget | None = None) -> None:
        self.scope_id = scope_id
        self.name = name
        self.opener = opener
        self.ledger = ledger

    def __reduce__(self) -> Any:
        return (ResourceRef, (self.scope_id, self.name, self.opener, self.ledger))

    def __repr__(self) -> str:
        return f"<ResourceRef {self.name!r} {self.scope_id[:8]}>"


class Call(NamedTuple):
    """One attempt of a task run, ready to be sent to a worker."""

    call_id: str
    function: bytes  # cloudpickled
    arguments: bytes  # cloudpickled (args, kwargs), resource values as `ResourceRef`s
    has_resources: bool
    flow_run_id: str
    task_run_id: str
    task_run_name: str
    log_prints: bool
    timeout: float | None  # counted on the worker, from the body's start
    grace: float  # how long an interrupted body may take to stop


class CallResult(NamedTuple):
    """What a worker sends back for a `Call`.

    ``payload`` is the pickled return value when ``ok``, else the pickled error (see
    `dump_error`); ``timed_out`` says the body was interrupted by its timeout (whatever
    it turned that into); ``logs`` are the run's log records as dicts; ``copies`` the
    copy steps that happened during this call, in order (each says whether the worker
    wrote it to the ledger itself: ``recorded``).
    """

    ok: bool
    payload: bytes
    timed_out: bool
    logs: list[dict[str, Any]]
    copies: list[dict[str, Any]]
    worker: str
    host: str
    pid: int


class CleanupReport(NamedTuple):
    """What a worker sends back for `cleanup_copy`; ``recorded``: the worker wrote the
    cleanup to the ledger itself."""

    scope_id: str
    had_copy: bool
    error: str | None
    seconds: float
    still_running: int  # the copy's tasks that had not stopped when it was closed
    worker: str
    host: str
    pid: int
    recorded: bool = False


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
        except Exception:  # noqa: BLE001, S112 - try with fewer attributes, then as a RemoteError
            continue
    else:
        blob = cloudpickle.dumps((RemoteError, (f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}",), {}))
    packed: bytes = cloudpickle.dumps((blob, text))
    return packed


def _travels(value: Any) -> bool:
    try:
        cloudpickle.dumps(value)
    except Exception:  # noqa: BLE001 - whatever stops it, it does not travel
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
    except Exception as unpickling:  # noqa: BLE001 - a class the flow process cannot import, say
        exc = RemoteError(f"an error raised {where} could not be unpickled here ({unpickling!r}); its traceback follows")
    if isinstance(exc, BaseException) and exc.__cause__ is None:
        exc.__cause__ = RemoteTraceback(f"Traceback {where}:\n{text}")
    return exc
