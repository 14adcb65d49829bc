"""What runs on a remote worker: task bodies, as one `WorkerRuntime` per worker process.

A task body sent to another process (a process pool, a Dask or a Ray worker) travels
as a `_wire.Call`: the task function and its arguments pickled with cloudpickle, each
resource value replaced by a `ResourceRef`. On the worker, `WorkerRuntime.run_call`:

- opens this worker's copies of the referenced resources (see `_worker_copies`);
- runs the body with a stand-in run context, so ``get_run_logger()`` and
  ``log_prints`` work, and captures the run's log records;
- returns a `CallResult`: the value or the error (pickled), the log records and what
  happened to the copies (``setup-started``, ``setup``, ``setup-failed``).

`WorkerRuntime.interrupt` raises an exception in the thread running a call (timeouts,
cancellation); a body still running a grace period after its timeout is handed to the
runtime's stuck-call strategy. A runner builds the runtime of each of its worker
processes with the strategies that worker needs (how to interrupt a thread, what to do
with a stuck call) and installs it there (`install`). The engine ships the module-level
functions below (`run_call`, `open_copy`, `cleanup_copy`, `interrupt_many`) by reference;
on the worker, each finds that process's runtime (`current`). Tests make runtimes of
their own.

States and logs are the flow process's, made from what the worker reports. This
module does not know which runner it runs under.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import cloudpickle

from tether._context import RunContext, current_run
from tether._errors import TaskRunTimeout, UsageError
from tether._interrupt import Watchdog, clear_in_thread, is_on_its_way_out, keep_sending, landing, let_go_of_logging_locks, raise_in_thread
from tether._interrupt import watchdog as process_watchdog
from tether._logging import enable_log_prints, logger
from tether.runners._wire import Call, CallResult, CleanupReport, ResourceRef, dump_error
from tether.runners._worker_copies import Copy, WorkerCopies

#: How a runtime raises ``exc_type`` in the thread running call ``call_id``: False if the
#: thread is gone. The default sends an async exception (`raise_in_thread`).
Interrupter = Callable[["WorkerRuntime", int, type[BaseException], str], bool]
#: What a runtime does with a call whose body did not stop within the grace period after
#: its timeout (a worker answers for it with `WorkerRuntime.stuck_result`: a process
#: worker then exits, a Dask or Ray worker leaves the thread running). The default logs.
StuckHandler = Callable[["WorkerRuntime", Call], None]


def raise_in_call_thread(runtime: WorkerRuntime, thread_id: int, exc_type: type[BaseException], call_id: str) -> bool:
    """The default `Interrupter`: an async exception, landing at the next bytecode."""
    return raise_in_thread(thread_id, exc_type)


def log_stuck_call(runtime: WorkerRuntime, call: Call) -> None:
    """The default `StuckHandler`: a worker that cannot answer for a stuck call says so."""
    logger.error(
        "Task run %r on worker %s did not stop within %g s of its timeout; it runs on, and its run "
        "stays Running until it returns.", call.task_run_name, runtime.name, call.grace,
    )


# -- logs ------------------------------------------------------------------------------


class _LogCapture(logging.Handler):
    """Keeps the run's log records for the flow process instead of printing them here."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()  # .logs: the records of the call this thread runs

    def emit(self, record: logging.LogRecord) -> None:
        records = getattr(self.local, "logs", None)
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


class _Named:
    """A record or an options object of a stand-in run: an id, a name, the ``log_prints`` option."""

    __slots__ = ("id", "log_prints", "name")

    def __init__(self, id: str, name: str, log_prints: bool | None) -> None:
        self.id = id
        self.name = name
        self.log_prints = log_prints


class _RemoteFlowRun:
    """The part of a `FlowRun` that code in a task body may ask about, on a worker (a
    `RunView`); the flow's options stand in for the flow object, which stays in the flow process."""

    __slots__ = ("options", "record")

    def __init__(self, call: Call) -> None:
        self.record = _Named(call.flow_run_id, "", None)
        self.options = _Named(call.flow_run_id, "", call.log_prints)

    @property
    def flow(self) -> _Named:
        return self.options

    def submit_task(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] | None, /) -> NoReturn:
        raise UsageError(
            f"Task {task.name!r} was submitted from inside a task body running on a remote worker, "
            "where there is no flow run to submit it to. Submit it from the flow function, or call "
            f"its plain function here: {task.name}.fn(...)."
        )

    def call_task(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] | None, return_state: bool, /) -> NoReturn:
        raise UsageError(
            f"Task {task.name!r} was called from inside a task body running on a remote worker, "
            "where there is no flow run to record it in. Call it from the flow function, or call "
            f"its plain function here: {task.name}.fn(...)."
        )


class _RemoteTaskRun:
    """The part of a `TaskRun` that code in a task body may ask about, on a worker (a
    `TaskRunView`); the task's options stand in for the task object."""

    __slots__ = ("options", "record")

    def __init__(self, call: Call) -> None:
        self.record = _Named(call.task_run_id, call.task_run_name, None)
        self.options = _Named(call.task_run_id, call.task_run_name, call.log_prints)

    @property
    def task(self) -> _Named:
        return self.options


class _Running:
    """A call that has arrived here, until its body ends."""

    __slots__ = ("copies", "ident", "in_body", "interrupted", "logs", "timer", "watchdog")

    def __init__(self, ident: int, copies: list[dict[str, Any]], logs: list[dict[str, Any]]) -> None:
        self.ident = ident
        self.copies = copies  # the call's copy steps and log records so far (see `stuck_result`)
        self.logs = logs
        self.in_body = False  # False while its resource copies are being opened
        self.interrupted: type[BaseException] | None = None
        self.timer: int | None = None  # the watchdog's handle for its timeout
        self.watchdog: Watchdog | None = None  # the watchdog that keeps it


# -- the runtime ---------------------------------------------------------------------


class WorkerRuntime:
    """What one worker process keeps between calls, and how it treats them.

    ``name`` is the worker's name as its runner knows it (a Dask address, ``process-PID``,
    ``ray-PID``; by default ``host:pid``): the engine sends the closing of a copy to the
    worker of that name. ``interrupter`` and ``on_stuck`` are the runner's strategies (see
    `Interrupter`, `StuckHandler`); ``watchdog`` keeps the calls' timeouts and grace periods
    (by default the process's, on the process's clock).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        interrupter: Interrupter = raise_in_call_thread,
        on_stuck: StuckHandler = log_stuck_call,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.host = socket.gethostname()
        self.name = name or f"{self.host}:{os.getpid()}"
        self.copies = WorkerCopies(self.name, self.host)
        self._interrupter = interrupter
        self._on_stuck = on_stuck
        self._given_watchdog = watchdog
        self._running: dict[str, _Running] = {}
        #: Interrupts for calls not here yet: a call that arrives later raises before it opens anything.
        self._interrupted_early: OrderedDict[str, type[BaseException]] = OrderedDict()
        self._running_lock = threading.Lock()
        self._functions: OrderedDict[bytes, Any] = OrderedDict()  # unpickled task functions, by their pickle
        self._functions_lock = threading.Lock()
        self._capture: _LogCapture | None = None
        self._propagate = True
        self._capture_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<WorkerRuntime {self.name}>"

    # -- the calls the engine sends --

    def run_call(self, call: Call) -> CallResult:
        """Run one attempt of a task body here; never raises (the error travels in the result)."""
        capture = self._capture_logs()
        copies: list[dict[str, Any]] = []
        logs: list[dict[str, Any]] = []
        held: list[Copy] = []
        turns: list[threading.Lock] = []
        entry: _Running | None = None
        capture.local.logs = logs
        token = current_run.set(RunContext(_RemoteFlowRun(call), _RemoteTaskRun(call)))
        try:
            try:
                entry = self._register(call, copies, logs)
                fn = self._load_function(call.function)
                args, kwargs = cloudpickle.loads(call.arguments)
                if call.has_resources:
                    args, kwargs = self.copies.open_refs((args, kwargs), held, copies)
                    # One order for every call, so that two calls never wait for each other's turn.
                    for copy in sorted({c for c in held if c.turn is not None}, key=lambda c: c.ref.scope_id):
                        turn = copy.turn
                        if turn is not None:
                            turn.acquire()
                            turns.append(turn)
                if call.log_prints:
                    enable_log_prints()
                self._start_body(call, entry)
                try:
                    value = asyncio.run(fn(*args, **kwargs)) if asyncio.iscoroutinefunction(fn) else fn(*args, **kwargs)
                finally:
                    self._end_body(call.call_id, entry)
                ok, payload = True, _dump_value(value, call)
            except BaseException as exc:  # noqa: BLE001 - the run's error travels in the result
                let_go_of_logging_locks(exc)  # an interrupt may have left a log handler's lock held
                ok, payload = False, dump_error(exc)
            finally:
                with self._running_lock:  # again: an interrupt may have landed inside _end_body
                    self._running.pop(call.call_id, None)
                for turn in turns:
                    turn.release()
                for copy in held:
                    self.copies.release(copy)
        finally:
            current_run.reset(token)
            capture.local.logs = None
        timed_out = entry is not None and entry.interrupted is TaskRunTimeout
        return CallResult(ok, payload, timed_out, logs, copies, self.name, self.host, os.getpid())

    def open_copy(self, ref: ResourceRef) -> tuple[list[dict[str, Any]], bytes | None]:
        """Set up this worker's copy of ``ref``'s scope now (at the ``with`` statement, so that
        a setup failure raises there); the copy steps, and the setup's error."""
        self._capture_logs()
        return self.copies.open(ref)

    def cleanup_copy(self, scope_id: str, error: bytes | None, drain_seconds: float) -> CleanupReport:
        """Close this worker's copy of a scope after its last task here (see `WorkerCopies.cleanup`)."""
        return self.copies.cleanup(scope_id, error, drain_seconds)

    def close_all_copies(self, reason: str) -> None:
        """Close every copy this worker still holds, as failed (the flow process is gone)."""
        self.copies.close_all(reason)

    def holds_copies(self) -> bool:
        """Whether this worker still holds a copy of some resource (a worker that answered for
        a stuck call waits for the flow process to close them before it exits)."""
        return self.copies.holds_any()

    # -- interrupts --

    def is_running(self, call_id: str) -> bool:
        """Whether ``call_id``'s body runs here now; safe to call from a signal handler (no lock)."""
        entry = self._running.get(call_id)
        return entry is not None and entry.in_body

    def interrupt(self, call_id: str, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` in the thread running ``call_id`` here; False if it is not here.

        A call still opening its resource copies raises once they are open (never inside a
        setup). A call that has not arrived yet is remembered: if it arrives here later, it
        raises before it opens anything.
        """
        with self._running_lock:
            entry = self._running.get(call_id)
            if entry is None:
                self._interrupted_early[call_id] = exc_type
                if len(self._interrupted_early) > 1000:  # calls that ran elsewhere, or had ended
                    self._interrupted_early.popitem(last=False)
                return False
            if entry.interrupted is not None:
                return True  # the first interrupt wins (a timeout, then the flow's cancellation)
            entry.interrupted = exc_type
            if not entry.in_body:
                return True
            if not self._interrupter(self, entry.ident, exc_type, call_id):
                return False
        keep_sending(self._watchdog(), lambda: self._interrupt_again(call_id))
        return True

    def _interrupt_again(self, call_id: str) -> bool:
        """Send the interrupt of ``call_id`` again if the one before is not on its way out of
        the body (see `keep_sending`); False once the body is over."""
        with self._running_lock:
            entry = self._running.get(call_id)
            if entry is None or entry.interrupted is None:
                return False
            if not is_on_its_way_out(entry.ident, landing(entry.interrupted)):
                self._interrupter(self, entry.ident, entry.interrupted, call_id)
            return True

    def interrupt_many(self, requests: list[tuple[str, type[BaseException]]]) -> list[str]:
        """`interrupt` for several calls at once; the ids of those that are here."""
        return [call_id for call_id, exc_type in requests if self.interrupt(call_id, exc_type)]

    def stuck_result(self, call: Call, error: BaseException) -> CallResult:
        """The answer for a call whose body did not stop after its timeout, made while the body
        still runs: ``error``, with the copies the call opened and its logs so far."""
        entry = self._running.get(call.call_id)
        copies = list(entry.copies) if entry is not None else []
        logs = list(entry.logs) if entry is not None else []
        return CallResult(False, dump_error(error), True, logs, copies, self.name, self.host, os.getpid())

    def close(self) -> None:
        """Stop capturing run logs in this process (a test's runtime; a worker's lives as long as it)."""
        with self._capture_lock:
            if self._capture is not None:
                logger.removeHandler(self._capture)
                logger.propagate = self._propagate
                self._capture = None

    # -- inside --

    def _capture_logs(self) -> _LogCapture:
        """On first use: route run logs to this runtime's capture, not to this process's console."""
        capture = self._capture
        if capture is not None:
            return capture
        with self._capture_lock:
            if self._capture is None:
                self._capture = _LogCapture()
                self._propagate = logger.propagate
                logger.addHandler(self._capture)
                logger.propagate = False
            return self._capture

    def _load_function(self, blob: bytes) -> Any:
        with self._functions_lock:
            fn = self._functions.get(blob)
            if fn is not None:
                self._functions.move_to_end(blob)
                return fn
        fn = cloudpickle.loads(blob)
        with self._functions_lock:
            self._functions[blob] = fn
            if len(self._functions) > 256:
                self._functions.popitem(last=False)
        return fn

    def _register(self, call: Call, copies: list[dict[str, Any]], logs: list[dict[str, Any]]) -> _Running:
        """The call is here: interrupts now find it (they land once its body starts)."""
        entry = _Running(threading.get_ident(), copies, logs)
        with self._running_lock:
            entry.interrupted = self._interrupted_early.pop(call.call_id, None)
            self._running[call.call_id] = entry
        return entry

    def _watchdog(self) -> Watchdog:
        """The watchdog given, or the process runtime's now (a worker may outlive a runtime)."""
        return self._given_watchdog if self._given_watchdog is not None else process_watchdog()

    def _start_body(self, call: Call, entry: _Running) -> None:
        """The body starts: raise an interrupt that came during setup, start the timeout."""
        with self._running_lock:
            entry.in_body = True
            if entry.interrupted is not None:
                raise entry.interrupted()
        if call.timeout is not None:
            entry.watchdog = self._watchdog()
            entry.timer = entry.watchdog.schedule(call.timeout, lambda: self._on_timeout(call))

    def _end_body(self, call_id: str, entry: _Running) -> None:
        """The body returned or raised: no interrupt may land after this."""
        with self._running_lock:
            self._running.pop(call_id, None)
            if entry.interrupted is not None:
                clear_in_thread(entry.ident)  # an interrupt that had not landed yet must not hit later code
        if entry.timer is not None and entry.watchdog is not None:
            entry.watchdog.cancel(entry.timer)

    def _on_timeout(self, call: Call) -> None:
        """The body ran past its timeout: interrupt it, and give it the grace period to stop."""
        if self.interrupt(call.call_id, TaskRunTimeout):
            self._watchdog().schedule(call.grace, lambda: self._check_stopped(call))

    def _check_stopped(self, call: Call) -> None:
        if self.is_running(call.call_id):
            self._on_stuck(self, call)


def _dump_value(value: Any, call: Call) -> bytes:
    try:
        packed: bytes = cloudpickle.dumps(value)
        return packed
    except Exception as exc:  # noqa: BLE001 - any reason it cannot travel
        raise UsageError(
            f"Task run {call.task_run_name!r} returned a {type(value).__module__}.{type(value).__qualname__}, "
            f"which cannot be pickled back to the flow process ({exc}). Return plain data; keep "
            "connections and clients in a @resource."
        ) from None


# -- this process's runtime, and the functions shipped to workers -----------------------

_process_runtime: WorkerRuntime | None = None
_process_lock = threading.Lock()


def install(runtime: WorkerRuntime | None) -> WorkerRuntime | None:
    """Make ``runtime`` the one this process's shipped functions use (None: none, until
    `current` makes one); returns the one before, for a test to put back."""
    global _process_runtime
    with _process_lock:
        previous, _process_runtime = _process_runtime, runtime
    return previous


def current(make: Callable[[], WorkerRuntime] = WorkerRuntime) -> WorkerRuntime:
    """This process's runtime: the one its runner installed, else one made by ``make`` and
    installed now (a runner whose workers learn their name on their first call passes it)."""
    global _process_runtime
    runtime = _process_runtime
    if runtime is not None:
        return runtime
    with _process_lock:
        if _process_runtime is None:
            _process_runtime = make()
        return _process_runtime


# Module-level, so that cloudpickle sends them by reference (a worker imports this module).


def run_call(call: Call) -> CallResult:
    """`WorkerRuntime.run_call` on this process's runtime."""
    return current().run_call(call)


def open_copy(ref: ResourceRef) -> tuple[list[dict[str, Any]], bytes | None]:
    """`WorkerRuntime.open_copy` on this process's runtime."""
    return current().open_copy(ref)


def cleanup_copy(scope_id: str, error: bytes | None, drain_seconds: float) -> CleanupReport:
    """`WorkerRuntime.cleanup_copy` on this process's runtime."""
    return current().cleanup_copy(scope_id, error, drain_seconds)


def interrupt_many(requests: list[tuple[str, type[BaseException]]]) -> list[str]:
    """`WorkerRuntime.interrupt_many` on this process's runtime."""
    return current().interrupt_many(requests)
