"""Running task bodies on other processes: the flow process's side.

When a flow's runner does not share memory (a process pool, Dask, Ray), the flow
process still records every state, holds the concurrency slots and decides retries;
only the task body crosses to a worker. `dispatch_remote` hands a run to a
`RemoteAttempt`, which drives its attempts by callbacks, so a task in flight holds no
thread here:

    begin_attempt -> runner.submit(run_call, Call) -> [worker runs the body]
      -> done callback -> copies reported, logs replayed -> succeeded / failed
      -> on a retry: the watchdog calls back after the delay -> begin_attempt ...

`RemoteAttempt` is the run's `Attempt`: the run cancels it (`cancel`) and, once the grace
period is over, gives up on it (`abandon`); every verdict (retry, lost worker, abandoned)
is the run's and the kernel's, applied here only.

A task's timeout is counted on the worker, from the start of its body (time spent
queued for a worker does not count), and interrupts the body there. Cancellation
reaches the worker through the runner (`RemoteRunner.interrupt`): a call that has not
started is cancelled, one that runs is interrupted, and one that does not stop within
the grace period is abandoned (a process runner terminates its process).

`check_arguments` runs at submit: anything that cannot be pickled, other than a
resource value, fails there, naming the argument. A resource value travels as a
`ResourceRef` and each worker opens its own copy (see `_worker`, `_copies`).
"""

from __future__ import annotations

import io
import logging
import pickle
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import TYPE_CHECKING, Any, cast

import cloudpickle

from tether._arguments import labelled_members, rewrite
from tether._context import RunContext
from tether._core import Crashed, Failed
from tether._engine._copies import close_copies, copies_unreported, copy_reported, ledger_target
from tether._engine._task_run import TaskRun
from tether._errors import TaskRunCancelled, TaskRunTimeout, UnpicklableArgumentError
from tether._futures import TaskFuture
from tether._interrupt import wait_interruptibly, watchdog
from tether._logging import logger
from tether._options import TaskOptions
from tether._resources import ResourceScope, scope_of
from tether._shield import unshielded
from tether.runners._wire import Call, CallResult, ResourceRef, WorkerLost, load_error
from tether.runners._worker import open_copy, run_call

if TYPE_CHECKING:
    from tether.runners._base import RemoteRunner, TaskRunner

_PLAIN = (type(None), bool, int, float, complex, str, bytes)
_functions: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()
_openers: weakref.WeakKeyDictionary[ResourceScope, bytes] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


# -- pickling arguments ------------------------------------------------------------------


class _ArgumentPickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle has no type hints
    """cloudpickle, refusing resource values (`_replace_resources` has taken out those it
    may: the ones in an argument's containers); when only checking, futures are skipped."""

    def __init__(self, file: Any, runner: RemoteRunner, checking: bool) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.runner = runner
        self.checking = checking

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is TaskFuture and self.checking:
            return (str, ("<future>",))
        scope = scope_of(obj)
        if scope is not None:
            raise UnpicklableArgumentError(
                f"A value of resource {scope.name!r} is inside an object that would be pickled for a "
                f"{_runner_name(self.runner)} worker, where the worker cannot open its own copy. Pass the "
                "resource's value to the task as an argument of its own (or inside a list, tuple, dict or set)."
            )
        return super().reducer_override(obj)


class _Discard:
    def write(self, data: Any) -> int:
        return len(data)


def _dumps(value: Any, runner: RemoteRunner, checking: bool = False) -> bytes:
    sink: Any = _Discard() if checking else io.BytesIO()
    _ArgumentPickler(sink, runner, checking).dump(value)
    return b"" if checking else sink.getvalue()


def _reference(scope: ResourceScope, runner: RemoteRunner) -> ResourceRef:
    """The scope as it travels: how a worker opens its copy (made once per scope)."""
    with _cache_lock:
        opener = _openers.get(scope)
    if opener is None:
        args, kwargs = _with_refs((scope.args, scope.kwargs), runner)
        try:
            opener = _dumps((scope.resource, args, kwargs), runner)
        except Exception as exc:
            raise UnpicklableArgumentError(
                f"Resource {scope.name!r} cannot be opened on a {_runner_name(runner)} worker: a worker "
                f"opens its own copy from the resource's definition and the arguments of "
                f"'{scope.name}(...)', and these cannot be pickled ({type(exc).__name__}: {exc}). Define "
                "the resource at module level and pass it plain arguments (a URL, a name), not live objects."
            ) from exc
        with _cache_lock:
            _openers[scope] = opener
    return ResourceRef(scope.id, str(scope.name), opener, ledger_target(scope))


def _with_refs(value: Any, runner: RemoteRunner) -> Any:
    """``value`` with each resource value in it replaced by a `ResourceRef`."""
    return _replace_resources(value, lambda scope: _reference(scope, runner))


def _replace_resources(value: Any, replace: Callable[[ResourceScope], Any]) -> Any:
    """``value`` with every resource value in it (a container may be one itself) replaced
    by ``replace(scope)``; ``value`` itself if there is none.

    The pickler's hook does not see values of plain types (a resource yielding a dict
    or a str), so containers are walked here first.
    """

    def swap(node: Any) -> Any:
        scope = scope_of(node)
        return node if scope is None else replace(scope)

    return rewrite(value, swap)


def _function_blob(task: TaskOptions, runner: RemoteRunner) -> bytes:
    with _cache_lock:
        blob = _functions.get(task)
    if blob is None:
        try:
            blob = cloudpickle.dumps(task.fn)
        except Exception as exc:
            raise UnpicklableArgumentError(
                f"Task {task.name!r} cannot run on {_runner_name(runner)}: its function cannot be pickled "
                f"({type(exc).__name__}: {exc}). A closure that captures a connection, a lock or a client "
                "cannot travel to a worker; pass such things as arguments made with @resource instead."
            ) from exc
        with _cache_lock:
            _functions[task] = blob
    return blob


def check_arguments(flow_runner: TaskRunner, task: TaskOptions, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Fail at submit, naming the argument, if a value other than a resource's cannot travel."""
    runner = cast("RemoteRunner", flow_runner)
    _function_blob(task, runner)

    def placeholder(scope: ResourceScope) -> str:
        _reference(scope, runner)  # can a worker open its own copy? (raises if not)
        return "<resource>"

    for name, value in task.bind(args, kwargs).items():
        if type(value) in _PLAIN:
            continue
        value = _replace_resources(value, placeholder)
        try:
            _dumps(value, runner, checking=True)
        except UnpicklableArgumentError:
            raise
        except Exception as exc:
            raise _unpicklable(runner, task, name, value, exc) from exc


def _unpicklable(runner: RemoteRunner, task: TaskOptions, name: str, value: Any, exc: Exception) -> UnpicklableArgumentError:
    where, leaf = _find_unpicklable(name, value, runner)
    kind = f"{type(leaf).__module__}.{type(leaf).__qualname__}".removeprefix("builtins.")
    holds = f"its argument {name!r} is" if where == name else f"its argument {name!r} holds, at {where},"
    return UnpicklableArgumentError(
        f"Task {task.name!r} cannot be submitted to {_runner_name(runner)}: {holds} a {kind}, which "
        f"cannot be pickled ({type(exc).__name__}: {exc}), and a task on another process gets its "
        "arguments pickled. If it is a connection, a client, a lock or anything else a worker must "
        "open for itself, make it a resource with @resource (tether.resource) and pass the "
        "resource's value: a resource's value is never pickled, each worker opens its own copy."
    )


def _find_unpicklable(path: str, value: Any, runner: RemoteRunner) -> tuple[str, Any]:
    """The innermost member of ``value`` (as the argument walkers see containers) that does
    not pickle, and where it is."""
    items = labelled_members(value)
    if items is None:
        return path, value
    for label, item in items:
        where = f"{label} {path}" if label == "an item of" else f"{path}{label}"
        try:
            _dumps(item, runner, checking=True)
        except Exception:  # noqa: BLE001 - this item is (or holds) the culprit
            return _find_unpicklable(where, item, runner)
    return path, value


def _runner_name(runner: Any) -> str:
    return type(runner).__name__


# -- the first copy, at the `with` statement ------------------------------------------


def open_first_copy(runner: RemoteRunner, scope: ResourceScope, grace: float) -> tuple[bool, Any]:
    """Set ``scope``'s resource up on one worker now, so that its setup failure raises
    at the ``with`` statement; that worker keeps the copy for the scope's tasks there.

    Returns ``(True, value)`` when the value is plain (None, a number, a str, bytes),
    which the flow body can hold as it is, else ``(False, None)``."""
    ref = _reference(scope, runner)  # raises if a worker could not open it
    known = _scope_and_parents(scope)
    opened = threading.Event()
    future = runner.submit(open_copy, ref)
    future.add_done_callback(lambda _: opened.set())
    try:
        unshielded(wait_interruptibly, opened)  # a wait inside the shielded 'with': Ctrl-C may end it
    except BaseException as exc:  # Ctrl-C, SIGTERM, a timeout: the setup runs on over there
        logger.warning(
            "Interrupted (%s) while resource %r was being set up on a worker; waiting up to %g s for "
            "that setup to end, so that its copy is cleaned up.", type(exc).__name__, scope.name, grace,
        )
        deadline = time.monotonic() + grace
        while not opened.is_set() and deadline > time.monotonic():
            try:
                opened.wait(deadline - time.monotonic())
            except BaseException:  # noqa: BLE001 - interrupted again: the copy must still be closed
                logger.warning("Interrupted again: still waiting for resource %r's setup on a worker; please wait.", scope.name)
        if future.done() and not future.cancelled() and future.exception() is None:
            _report_copies(future.result()[0], known, runner)
        elif not future.done():
            copies_unreported(scope, runner)  # its worker is asked to close it when it is done
        close_copies(scope, exc)
        raise
    try:
        reports, error = future.result()
    except BaseException as exc:
        raise WorkerLost(
            f"Resource {scope.name!r} could not be set up: the {_runner_name(runner)} worker asked to open "
            f"it went away ({type(exc).__name__}: {exc}). Check the workers' health and run the flow again."
        ) from exc
    _report_copies(reports, known, runner)
    if error is not None:
        raise load_error(error, f"in the setup of resource {scope.name!r} on a {_runner_name(runner)} worker")
    for report in reports:
        if report["scope_id"] == scope.id and "plain_value" in report:
            return True, report["plain_value"]
    return False, None


def _scope_and_parents(scope: ResourceScope) -> dict[str, ResourceScope]:
    found = {scope.id: scope}
    for parent in scope._parents:
        found.update(_scope_and_parents(parent))
    return found


def _report_copies(reports: list[dict[str, Any]], known: dict[str, ResourceScope], runner: RemoteRunner) -> None:
    """Record the copy steps a worker reported, for the scopes in ``known`` (id -> scope)."""
    for report in reports:
        if report["scope_id"] in known:
            copy_reported(known[report["scope_id"]], runner, report)


# -- driving a run's attempts ----------------------------------------------------------


def dispatch_remote(runner: TaskRunner, run: TaskRun) -> None:
    """Run ``run``'s attempts on ``runner``, its flow's remote runner (its slots are already held)."""
    RemoteAttempt(run, cast("RemoteRunner", runner)).begin()


class RemoteAttempt:
    """Drives one task run's attempts on a remote runner, by callbacks; the run's `Attempt`.

    The flow process starts no timer for a remote body's timeout (the worker counts it)."""

    def __init__(self, run: TaskRun, runner: RemoteRunner) -> None:
        self.run = run
        self.host = run.flow_run
        self.runner = runner
        self.scopes = {scope.id: scope for scope in run.scopes}
        self.call: Call | None = None
        self.future: Future[Any] | None = None
        self.attempt = 0
        self.interrupted: type[BaseException] | None = None
        self.retry_timer: int | None = None
        self.lock = threading.Lock()
        run.attempt = self

    # -- the run's `Attempt` --

    def cancel(self) -> None:
        """The flow is cancelled: stop waiting for a retry, or interrupt the call in flight."""
        with self.lock:
            retry_timer, self.retry_timer = self.retry_timer, None
        if retry_timer is not None:
            watchdog().cancel(retry_timer)
            self.run.cancelled_awaiting_retry()
            return
        self._interrupt(self.attempt, TaskRunCancelled)

    def abandon(self) -> bool:
        """The interrupted call did not stop (blocked in C): end its worker, and have the copies
        it may have opened closed by the scopes' ends. False if its result is coming."""
        with self.lock:
            future = self.future
        if future is None or future.done():
            return False
        try:
            self.runner.abandon(future)
        except Exception as exc:  # noqa: BLE001
            logger.warning("Could not stop the worker of task run %r: %r", self.run.record.name, exc)
        # Its result, with the copies it opened, may never come: the scopes' ends ask every worker.
        for scope in self.scopes.values():
            for each in _scope_and_parents(scope).values():
                copies_unreported(each, self.runner)
        return True

    # -- attempts --

    def begin(self) -> None:
        run = self.run
        if not run.begin_attempt():
            return
        with self.lock:
            self.attempt = attempt = run.record.run_count
            self.interrupted = None
            self.future = None
        try:
            # Each attempt its own id: an interrupt meant for one must not reach the next.
            self.call = self._make_call() if self.call is None else self.call._replace(call_id=uuid.uuid4().hex)
            future = self.runner.submit(run_call, self.call)
        except UnpicklableArgumentError as exc:
            run.end_body()
            run.finish(Failed(exc, message=str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - the runner failed: the run crashed, the flow goes on
            run.end_body()
            run.finish(Crashed(exc, message=f"{_runner_name(self.runner)} could not take task run {run.record.name!r}: {exc!r}"))
            return
        with self.lock:
            self.future = future
            pending = self.interrupted
        if pending is not None or self.host.cancelling:  # cancelled between begin_attempt and submit
            self._interrupt(attempt, pending or TaskRunCancelled, again=True)
        future.add_done_callback(lambda f: self._done(attempt, f))

    def _make_call(self) -> Call:
        run = self.run
        args, kwargs = run.args, run.kwargs
        has_resources = False
        if run.scopes:
            packed = (args, kwargs)
            replaced = _with_refs(packed, self.runner)
            has_resources = replaced is not packed
            args, kwargs = replaced
        try:
            arguments = _dumps((args, kwargs), self.runner)
        except UnpicklableArgumentError:
            raise
        except Exception as exc:  # an upstream's result that cannot travel
            error = UnpicklableArgumentError(
                f"Task run {run.record.name!r} cannot be sent to {_runner_name(self.runner)}: its arguments "
                f"(with its upstreams' results) cannot be pickled ({type(exc).__name__}: {exc}). Return plain "
                "data from upstream tasks; keep connections and clients in a @resource."
            )
            raise error from exc
        return Call(
            uuid.uuid4().hex,
            _function_blob(run.options, self.runner),
            arguments,
            has_resources,
            self.host.run_id,
            run.record.id,
            run.record.name,
            RunContext(self.host, run).log_prints,
            run.options.timeout_seconds,
            self.host.grace_seconds,
        )

    def _done(self, attempt: int, future: Future[Any]) -> None:
        run = self.run
        with self.lock:
            if attempt != self.attempt:
                return
            interrupted = self.interrupted
        try:
            result: CallResult = future.result()
        except CancelledError:
            if not run.record.state.is_final():
                run.end_body()
                self._decided(run.failed((interrupted or TaskRunCancelled)()))
            return
        except BaseException as exc:  # noqa: BLE001 - the runner lost the call (a worker died)
            if not run.record.state.is_final():
                run.end_body()
                lost = exc if isinstance(exc, WorkerLost) else WorkerLost(f"{type(exc).__name__}: {exc}")
                self._decided(run.failed(lost, lost=True))  # retried while retries are left, else Crashed
            return
        where = f"on worker {result.worker} (pid {result.pid})"
        _report_copies(result.copies, self.scopes, self.runner)  # even for an abandoned run: its copies must be closed
        if result.logs:
            _replay_logs(result.logs)
        if run.record.state.is_final():  # abandoned meanwhile
            return
        run.end_body()
        if result.ok:
            try:
                value = cloudpickle.loads(result.payload)
            except Exception as exc:  # noqa: BLE001 - a class the flow process cannot import, say
                run.finish(Failed(exc, message=f"The result of task run {run.record.name!r} could not be unpickled here: {exc!r}"))
                return
            run.succeeded(value)
            return
        error = load_error(result.payload, f"in task run {run.record.name!r} {where}")
        if result.timed_out and not isinstance(error, TaskRunTimeout):
            timeout = TaskRunTimeout()  # the timeout landed, whatever the body turned it into
            timeout.__cause__ = error
            error = timeout
        self._decided(run.failed(error))

    def _decided(self, delay: float | None) -> None:
        if delay is None:
            return
        attempt = self.attempt
        if delay <= 0:
            self._retry(attempt)
            return
        with self.lock:
            self.retry_timer = watchdog().schedule_pause(delay, lambda: self._retry(attempt))

    def _retry(self, attempt: int) -> None:
        with self.lock:
            if attempt != self.attempt:
                return
            self.retry_timer = None
        self.begin()

    def _interrupt(self, attempt: int, exc_type: type[BaseException], again: bool = False) -> None:
        """Make the call of ``attempt`` stop: cancelled if it has not started, interrupted if it
        runs (the run gives up on it after the grace period: `abandon`)."""
        with self.lock:
            if attempt != self.attempt or (self.interrupted is not None and not again):
                return
            self.interrupted = exc_type
            future, call = self.future, self.call
        if future is None or call is None or future.done():
            return  # not submitted yet: begin() interrupts it once it is
        try:
            self.runner.interrupt(future, call.call_id, exc_type)
        except Exception as exc:  # noqa: BLE001 - the grace period still ends the run
            logger.warning("Could not interrupt task run %r on its worker: %r", self.run.record.name, exc)


def _replay_logs(records: list[dict[str, Any]]) -> None:
    """Log a worker's records here, so they reach the console and the run's log."""
    for fields in records:
        record = logging.makeLogRecord(fields)
        logging.getLogger(record.name).handle(record)
