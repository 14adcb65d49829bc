"""What runs on a remote worker: task bodies, and the worker's copies of resources.

A task body sent to another process (a process pool, a Dask or a Ray worker) travels
as a `_wire.Call`: the task function and its arguments pickled with cloudpickle, each
resource value replaced by a `ResourceRef` (the scope's id and how to open the
resource, never the value). On the worker, `run_call`:

- opens this worker's copy of each referenced resource on first use, once per
  (scope, worker process), and reuses it for every later task of that scope here
  (a DB-API connection whose driver says ``threadsafety < 2`` serves one task at a
  time: the others wait for their turn here, before their bodies start);
- runs the body with a stand-in run context, so ``get_run_logger()`` and
  ``log_prints`` work, and captures the run's log records;
- returns a `CallResult`: the value or the error (pickled), the log records and what
  happened to the copies (``setup-started``, ``setup``, ``setup-failed``).

Each step of a copy is written to the run store's ledger here, by this process, before
it acts (see `tether.store._worker_ledger`): the copy's row exists before its setup
runs, and its cleanup is recorded even when the flow process is gone, so a copy whose
call never returns is an orphan that ``tether reap`` finds, and a copy closed here is
never reaped. The reports say which steps were written (the flow process records the
others).

`open_copy` sets up this worker's copy at the ``with`` statement (the first copy of a
scope, so that a setup failure raises there). `cleanup_copy` closes this worker's copy
of a scope with the scope's outcome, after the last task of the scope on this worker
has finished (drain, then tear down).
`interrupt` raises an exception in the thread running a call (timeouts, cancellation).

States and logs are the flow process's, made from what the worker reports. This
module does not know which runner it runs under; runners call `identify` once per
worker process with the worker's name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import cloudpickle

from tether._arguments import map_leaves
from tether._context import RunContext, current_run
from tether._errors import ResourceClosedError, TaskRunTimeout, UsageError
from tether._interrupt import clear_in_thread, raise_in_thread
from tether._logging import enable_log_prints, logger
from tether._resources import ResourceScope, unshareable_connection
from tether.runners._wire import Call, CallResult, CleanupReport, ResourceRef, dump_error, load_error
from tether.store._worker_ledger import record_copy_step

# -- who this worker is ----------------------------------------------------------------

_identity: str | None = None
_host = socket.gethostname()


def identify(worker: str) -> None:
    """Name this worker process (a Dask address, a pool slot); runners call it once."""
    global _identity
    _identity = worker


def identity() -> str:
    return _identity or f"{_host}:{os.getpid()}"


# -- logs ------------------------------------------------------------------------------

_local = threading.local()


class _LogCapture(logging.Handler):
    """Keeps the run's log records for the flow process instead of printing them here."""

    def emit(self, record: logging.LogRecord) -> None:
        records = getattr(_local, "logs", None)
        if records is None or getattr(record, "run_id", None) is None:
            return
        records.append(
            {
                "name": record.name,
                "levelno": record.levelno,
                "levelname": record.levelname,
                "msg": record.getMessage(),
                "created": record.created,
                "msecs": record.msecs,
                "run_id": record.run_id,  # type: ignore[attr-defined]
                "flow_run_id": getattr(record, "flow_run_id", None),
                "run_label": getattr(record, "run_label", None),
                "exc_text": self.format_exception(record),
            }
        )

    @staticmethod
    def format_exception(record: logging.LogRecord) -> str | None:
        if record.exc_info:
            return "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return record.exc_text


_prepared = False
_prepare_lock = threading.Lock()


def _prepare_process() -> None:
    """Once per worker process: route run logs to the capture, not to this process's console."""
    global _prepared
    if _prepared:
        return
    with _prepare_lock:
        if not _prepared:
            logger.addHandler(_LogCapture())
            logger.propagate = False
            _prepared = True


class _Named:
    __slots__ = ("id", "log_prints", "name")

    def __init__(self, id: str, name: str, log_prints: bool | None) -> None:
        self.id = id
        self.name = name
        self.log_prints = log_prints


class _RemoteTaskRun:
    """The part of a `TaskRun` that code in a task body may ask about, on a worker."""

    __slots__ = ("record", "task")

    def __init__(self, call: Call) -> None:
        self.record = _Named(call.task_run_id, call.task_run_name, None)
        self.task = _Named(call.task_run_id, call.task_run_name, call.log_prints)


class _RemoteFlowRun:
    """The part of a `FlowRun` that code in a task body may ask about, on a worker."""

    __slots__ = ("flow", "record")

    def __init__(self, call: Call) -> None:
        self.record = _Named(call.flow_run_id, "", None)
        self.flow = _Named(call.flow_run_id, "", call.log_prints)

    def submit_task(self, task: Any, *args: Any) -> Any:
        raise UsageError(
            f"Task {task.name!r} was submitted from inside a task body running on a remote worker, "
            "where there is no flow run to submit it to. Submit it from the flow function, or call "
            f"its plain function here: {task.name}.fn(...)."
        )

    def call_task(self, task: Any, *args: Any) -> Any:
        raise UsageError(
            f"Task {task.name!r} was called from inside a task body running on a remote worker, "
            "where there is no flow run to record it in. Call it from the flow function, or call "
            f"its plain function here: {task.name}.fn(...)."
        )


# -- resource copies -----------------------------------------------------------------


class _Copy:
    """This worker's copy of one resource scope."""

    def __init__(self, ref: ResourceRef) -> None:
        self.ref = ref
        self.scope: ResourceScope | None = None
        self.value: Any = None
        self.users = 0  # calls holding the copy (counted before setup, so cleanup drains setups too)
        self.closing = False
        self.parents: list[_Copy] = []  # copies this one's setup received as arguments
        self.setup_lock = threading.Lock()
        self.turn: threading.Lock | None = None  # one task at a time: see `unshareable_connection`
        self.idle = threading.Condition()


class _CopyScope(ResourceScope):
    """The scope of a worker's copy: a handle its setup remembers goes to the ledger at once
    (a reaper needs it if this process dies before the setup ends)."""

    def __init__(self, ref: ResourceRef, resource: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__(resource, args, kwargs)
        self.ref = ref

    def _emit(self, step: str, **details: Any) -> None:
        ref = self.ref
        if step == "handle" and ref.ledger is not None:
            record_copy_step(ref.ledger, "handle", ref.scope_id, ref.name, handle=details.get("handle"))


_copies: dict[str, _Copy] = {}
#: Scopes whose copy was closed here (or that had none here when closed): a task of one
#: that starts after that fails, rather than opening a copy that nobody would close.
_closed: OrderedDict[str, None] = OrderedDict()
#: Values a worker's setup may hand back to the flow process as they are (they open nothing).
_PLAIN_VALUES = frozenset({type(None), bool, int, float, complex, str, bytes})
_copies_lock = threading.Lock()


def _acquire(ref: ResourceRef, reports: list[dict[str, Any]]) -> _Copy:
    """Take a use of this worker's copy of ``ref``'s scope, setting it up on first use."""
    with _copies_lock:
        copy = _copies.get(ref.scope_id)
        if copy is None and ref.scope_id not in _closed:
            copy = _copies[ref.scope_id] = _Copy(ref)
        if copy is None or copy.closing:
            raise ResourceClosedError(
                f"Resource {ref.name!r} was already cleaned up on worker {identity()}, so a task "
                "that started after its scope ended cannot use it."
            )
        with copy.idle:
            copy.users += 1
    try:
        with copy.setup_lock:
            if copy.scope is None:
                _set_up(copy, reports)
    except BaseException:
        _release(copy)
        raise
    return copy


def _set_up(copy: _Copy, reports: list[dict[str, Any]]) -> None:
    ref = copy.ref
    attempt = uuid.uuid4().hex
    _report(reports, "setup-started", ref, attempt)
    parents: list[_Copy] = []
    try:
        resource, args, kwargs = cloudpickle.loads(ref.opener)
        if _holds_ref((args, kwargs)):
            args, kwargs = _open_refs((args, kwargs), parents, reports)
        scope = _CopyScope(ref, resource, args, kwargs)
        value = scope.__enter__()  # no flow run here: a plain context manager
    except BaseException as exc:
        for parent in parents:
            _release(parent)
        _report(reports, "setup-failed", ref, attempt, error=f"{type(exc).__name__}: {exc}")
        raise
    copy.scope, copy.value, copy.parents = scope, value, parents
    if unshareable_connection(value):
        copy.turn = threading.Lock()
    report = _report(reports, "setup", ref, attempt, handle=scope.handle)
    if type(value) in _PLAIN_VALUES:  # nothing to open: the flow body gets the value itself
        report["plain_value"] = value


def _release(copy: _Copy) -> None:
    with copy.idle:
        copy.users -= 1
        if copy.users == 0:
            copy.idle.notify_all()


def _report(reports: list[dict[str, Any]], step: str, ref: ResourceRef, attempt: str, error: str | None = None, handle: Any = None) -> dict[str, Any]:
    """Write a step of this worker's copy to the ledger (before the act it announces), and
    report it to the flow process."""
    recorded = ref.ledger is not None and record_copy_step(ref.ledger, step, ref.scope_id, ref.name, error=error, handle=handle)
    report = {
        "step": step,
        "scope_id": ref.scope_id,
        "name": ref.name,
        "attempt": attempt,
        "timestamp": time.time(),
        "error": error,
        "handle": handle,
        "worker": identity(),
        "host": _host,
        "pid": os.getpid(),
        "recorded": recorded,
    }
    reports.append(report)
    return report


def _holds_ref(value: Any) -> bool:
    found = False

    def check(leaf: Any) -> Any:
        nonlocal found
        found = found or type(leaf) is ResourceRef
        return leaf

    map_leaves(value, check)
    return found


def _open_refs(value: Any, held: list[_Copy], reports: list[dict[str, Any]]) -> Any:
    """``value`` with each `ResourceRef` replaced by this worker's copy's value."""

    def open_ref(leaf: Any) -> Any:
        if type(leaf) is not ResourceRef:
            return leaf
        copy = _acquire(leaf, reports)
        held.append(copy)
        return copy.value

    return map_leaves(value, open_ref)


def open_copy(ref: ResourceRef) -> tuple[list[dict[str, Any]], bytes | None]:
    """Set up this worker's copy of ``ref``'s scope now; the copy steps, and the setup's error."""
    _prepare_process()
    reports: list[dict[str, Any]] = []
    try:
        _release(_acquire(ref, reports))
    except BaseException as exc:  # noqa: BLE001 - the error travels to the `with` statement
        with _copies_lock:
            failed = _copies.get(ref.scope_id)
            if failed is not None and failed.scope is None:
                del _copies[ref.scope_id]
        return reports, dump_error(exc)
    return reports, None


def cleanup_copy(scope_id: str, error: bytes | None, drain_seconds: float) -> CleanupReport:
    """Close this worker's copy of a scope, once no task of the scope runs here any more.

    ``error`` is the scope's first error (packed by `dump_error`), thrown in at the
    resource's ``yield``; None if the scope succeeded. Tasks still holding the copy
    (abandoned after a timeout, say) are waited for at most ``drain_seconds``. The
    cleanup is written to the ledger here, with its outcome.
    """
    with _copies_lock:
        _closed[scope_id] = None
        if len(_closed) > 10_000:
            _closed.popitem(last=False)
        copy = _copies.get(scope_id)
        if copy is None:
            return CleanupReport(scope_id, False, None, 0.0, 0, identity(), _host, os.getpid())
        copy.closing = True
    with copy.idle:
        copy.idle.wait_for(lambda: copy.users == 0, timeout=drain_seconds)
        still_running = copy.users
    started = time.monotonic()
    failure: str | None = None
    try:
        if copy.scope is not None:
            exc = load_error(error, "in the flow") if error is not None else None
            if exc is None:
                copy.scope.__exit__(None, None, None)
            else:
                copy.scope.__exit__(type(exc), exc, exc.__traceback__)
    except BaseException as exc:  # noqa: BLE001 - reported to the flow process, which decides
        failure = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    finally:
        for parent in copy.parents:
            _release(parent)
        with _copies_lock:
            _copies.pop(scope_id, None)
    seconds = time.monotonic() - started
    ref, recorded = copy.ref, False
    if copy.scope is not None and ref.ledger is not None:
        step = "cleanup" if failure is None else "cleanup-failed"
        outcome = "failed" if error is not None else "succeeded"
        recorded = record_copy_step(ref.ledger, step, scope_id, ref.name, error=failure, outcome=outcome, seconds=seconds)
    return CleanupReport(scope_id, copy.scope is not None, failure, seconds, still_running, identity(), _host, os.getpid(), recorded)


def close_all_copies(reason: str) -> None:
    """Close every copy this worker still holds, as failed (the flow process is gone)."""
    error = dump_error(RuntimeError(reason))
    with _copies_lock:
        scope_ids = list(_copies)
    # Nested copies first: a copy's parents were acquired before it, so close newest first.
    for scope_id in reversed(scope_ids):
        cleanup_copy(scope_id, error, 0.0)


def holds_copies() -> bool:
    """Whether this worker still holds a copy of some resource (a worker that answered for
    a stuck call waits for the flow process to close them before it exits)."""
    with _copies_lock:
        return bool(_copies)


# -- running a call ----------------------------------------------------------------------


class _Running:
    __slots__ = ("copies", "ident", "in_body", "interrupted", "logs", "timer")

    def __init__(self, ident: int, copies: list[dict[str, Any]], logs: list[dict[str, Any]]) -> None:
        self.ident = ident
        self.copies = copies  # the call's copy steps and log records so far (see `stuck_result`)
        self.logs = logs
        self.in_body = False  # False while its resource copies are being opened
        self.interrupted: type[BaseException] | None = None
        self.timer: threading.Timer | None = None


_running: dict[str, _Running] = {}
_interrupted_early: OrderedDict[str, type[BaseException]] = OrderedDict()
_running_lock = threading.Lock()
_functions: OrderedDict[bytes, Any] = OrderedDict()
_functions_lock = threading.Lock()


def _load_function(blob: bytes) -> Any:
    with _functions_lock:
        fn = _functions.get(blob)
        if fn is not None:
            _functions.move_to_end(blob)
            return fn
    fn = cloudpickle.loads(blob)
    with _functions_lock:
        _functions[blob] = fn
        if len(_functions) > 256:
            _functions.popitem(last=False)
    return fn


def run_call(call: Call) -> CallResult:
    """Run one attempt of a task body here; never raises (the error travels in the result)."""
    _prepare_process()
    copies: list[dict[str, Any]] = []
    logs: list[dict[str, Any]] = []
    held: list[_Copy] = []
    turns: list[threading.Lock] = []
    entry: _Running | None = None
    _local.logs = logs
    token = current_run.set(RunContext(_RemoteFlowRun(call), _RemoteTaskRun(call)))  # type: ignore[arg-type]
    try:
        try:
            entry = _register(call, copies, logs)
            fn = _load_function(call.function)
            args, kwargs = cloudpickle.loads(call.arguments)
            if call.has_resources:
                args, kwargs = _open_refs((args, kwargs), held, copies)
                for copy in sorted({c for c in held if c.turn is not None}, key=lambda c: c.ref.scope_id):
                    copy.turn.acquire()  # type: ignore[union-attr]
                    turns.append(copy.turn)  # type: ignore[arg-type]
            if call.log_prints:
                enable_log_prints()
            _start_body(call, entry)
            try:
                value = asyncio.run(fn(*args, **kwargs)) if asyncio.iscoroutinefunction(fn) else fn(*args, **kwargs)
            finally:
                _end_body(call.call_id, entry)
            ok, payload = True, _dump_value(value, call)
        except BaseException as exc:  # noqa: BLE001 - the run's error travels in the result
            ok, payload = False, dump_error(exc)
        finally:
            with _running_lock:  # again: an interrupt may have landed inside _end_body
                _running.pop(call.call_id, None)
            for turn in turns:
                turn.release()
            for copy in held:
                _release(copy)
    finally:
        current_run.reset(token)
        _local.logs = None
    timed_out = entry is not None and entry.interrupted is TaskRunTimeout
    return CallResult(ok, payload, timed_out, logs, copies, identity(), _host, os.getpid())


def _register(call: Call, copies: list[dict[str, Any]], logs: list[dict[str, Any]]) -> _Running:
    """The call is here: interrupts now find it (they land once its body starts)."""
    entry = _Running(threading.get_ident(), copies, logs)
    with _running_lock:
        entry.interrupted = _interrupted_early.pop(call.call_id, None)
        _running[call.call_id] = entry
    return entry


def _start_body(call: Call, entry: _Running) -> None:
    """The body starts: raise an interrupt that came during setup, start the timeout."""
    with _running_lock:
        entry.in_body = True
        if entry.interrupted is not None:
            raise entry.interrupted()
    if call.timeout is not None:
        entry.timer = threading.Timer(call.timeout, _on_timeout, (call,))
        entry.timer.daemon = True
        entry.timer.start()


def _end_body(call_id: str, entry: _Running) -> None:
    """The body returned or raised: no interrupt may land after this."""
    with _running_lock:
        _running.pop(call_id, None)
        if entry.interrupted is not None:
            clear_in_thread(entry.ident)  # an interrupt that had not landed yet must not hit later code
    if entry.timer is not None:
        entry.timer.cancel()


def _on_timeout(call: Call) -> None:
    """The body ran past its timeout: interrupt it, and give it the grace period to stop."""
    if not interrupt(call.call_id, TaskRunTimeout):
        return
    timer = threading.Timer(call.grace, _check_stopped, (call,))
    timer.daemon = True
    timer.start()


def _check_stopped(call: Call) -> None:
    if is_running(call.call_id):
        _on_stuck(call)


def _log_stuck(call: Call) -> None:
    logger.error(
        "Task run %r on worker %s did not stop within %g s of its timeout; it runs on, and its run "
        "stays Running until it returns.", call.task_run_name, identity(), call.grace,
    )


_on_stuck: Callable[[Call], None] = _log_stuck


def set_stuck_handler(handler: Callable[[Call], None]) -> None:
    """What to do with a body that did not stop within the grace period after its timeout
    (a worker answers for it with `stuck_result`: a process worker then exits, a Dask
    worker leaves the thread running; a worker with no handler can only log)."""
    global _on_stuck
    _on_stuck = handler


def stuck_result(call: Call, error: BaseException) -> CallResult:
    """The answer for a call whose body did not stop after its timeout, made while the body
    still runs: ``error``, with the copies the call opened and its logs so far."""
    entry = _running.get(call.call_id)
    copies = list(entry.copies) if entry is not None else []
    logs = list(entry.logs) if entry is not None else []
    return CallResult(False, dump_error(error), True, logs, copies, identity(), _host, os.getpid())


def _dump_value(value: Any, call: Call) -> bytes:
    try:
        return cloudpickle.dumps(value)
    except Exception as exc:  # noqa: BLE001 - any reason it cannot travel
        raise UsageError(
            f"Task run {call.task_run_name!r} returned a {type(value).__module__}.{type(value).__qualname__}, "
            f"which cannot be pickled back to the flow process ({exc}). Return plain data; keep "
            "connections and clients in a @resource."
        ) from None


def _raise_in_thread(ident: int, exc_type: type[BaseException], call_id: str) -> bool:
    return raise_in_thread(ident, exc_type)


_interrupter: Callable[[int, type[BaseException], str], bool] = _raise_in_thread


def set_interrupter(interrupter: Callable[[int, type[BaseException], str], bool]) -> None:
    """Replace how `interrupt` reaches a thread (a process worker signals its main thread,
    which also wakes a blocking ``sleep`` or ``recv``)."""
    global _interrupter
    _interrupter = interrupter


def is_running(call_id: str) -> bool:
    """Whether ``call_id``'s body runs here now; safe to call from a signal handler (no lock)."""
    entry = _running.get(call_id)
    return entry is not None and entry.in_body


def interrupt(call_id: str, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in the thread running ``call_id`` here; False if it is not here.

    A call still opening its resource copies raises once they are open (never inside a
    setup). A call that has not arrived yet is remembered: if it arrives here later, it
    raises before it opens anything.
    """
    with _running_lock:
        entry = _running.get(call_id)
        if entry is None:
            _interrupted_early[call_id] = exc_type
            if len(_interrupted_early) > 1000:  # calls that ran elsewhere, or had ended
                _interrupted_early.popitem(last=False)
            return False
        if entry.interrupted is not None:
            return True  # the first interrupt wins (a timeout, then the flow's cancellation)
        entry.interrupted = exc_type
        if not entry.in_body:
            return True
        return _interrupter(entry.ident, exc_type, call_id)


def interrupt_many(requests: list[tuple[str, type[BaseException]]]) -> list[str]:
    """`interrupt` for several calls at once; the ids of those that are here."""
    return [call_id for call_id, exc_type in requests if interrupt(call_id, exc_type)]
