"""One flow run: creates its task runs, tracks them, and ends only when they and
its resources have.

`FlowRun` holds what the run's task runs share (runner, limiter, cancellation): it is
their `TaskRunHost`, and its resource scopes' `ScopeOwner`. It decides the flow's final
state. It reads the flow's and tasks' options from their records (`FlowOptions`,
`TaskOptions`) and hands the objects themselves only to hooks and views. The shells that
execute the flow body are in `_flow_shells`, those that run task attempts in `_shells`.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any, cast

from tether._arguments import rewrite, strip_quotes
from tether._context import RunContext, RunView, current_run, current_tags, events, open_blocks
from tether._core import (
    AwaitingRetry,
    Retrying,
    RunCreated,
    Running,
    RunRecord,
    State,
    StateType,
    transition,
)
from tether._core._decide import flow_failure, flow_retry_delay, flow_timeout_message, with_late_interrupt
from tether._engine._copies import close_copies, close_copies_held_by
from tether._engine._remote import check_arguments, dispatch_remote, open_first_copy
from tether._engine._scan import ArgumentScan
from tether._engine._shells import crash_if_unfinished, run_async, run_guarded, run_sync
from tether._engine._task_run import TaskDefinition, TaskRun
from tether._errors import (
    CleanupError,
    FlowRunTimeout,
    TaskRunCancelled,
    Terminated,
    TimeoutInterrupt,
    UnresolvedFailureError,
)
from tether._futures import TaskFuture
from tether._interrupt import clear_in_thread, interrupt_main_thread, is_on_its_way_out, keep_sending, landing, raise_in_thread, wait_interruptibly, watchdog
from tether._leases import use_store
from tether._limits import limiter
from tether._logging import configure_logging, enable_log_prints, logger
from tether._loop import run_on_engine_loop
from tether._options import FlowOptions
from tether._resources import ResourceScope, join_scopes, scope_of, values
from tether._run_names import render_run_name
from tether._run_views import FlowRun as FlowRunView
from tether._run_views import with_defaults
from tether._settings import Settings
from tether._shield import active as shield_active
from tether._shield import defer as defer_interrupt
from tether._shield import shielded
from tether._state_helpers import is_state, is_state_iterable, return_value_to_state
from tether.runners._base import RemoteRunner, TaskRunner
from tether.store import enable as enable_store
from tether.store import flush as flush_store


class FlowRun:
    record: RunRecord

    def __init__(self, options: FlowOptions, flow: object, parameters: dict[str, Any], parent: RunView | None) -> None:
        self.options = options
        self.flow = flow  # the user's object: handed to hooks and to views, never read here
        self.parameters = parameters
        self.parent = parent
        self.record = RunRecord("flow", options.name, parent_id=parent.record.id if parent else None)
        self.record.flow_run_id = self.record.id
        self.runner: TaskRunner = options.task_runner.duplicate()
        self.limiter = limiter()
        self.events = events()  # the runtime's this run started on: its runs' events go there
        self.values = values()  # ... and the resource values its tasks' arguments may hold
        self.settings = Settings.from_env()
        self.cancel_event = threading.Event()
        self.cancelling = False
        self.cancel_reason: BaseException | None = None
        self.timed_out = False
        self.scopes: list[ResourceScope] = []
        self.cleanup_errors: list[BaseException] = []
        self._active: set[TaskRun] = set()
        self._failures: list[TaskRun] = []
        self._active_lock = threading.Lock()
        self._idle = threading.Event()
        self._waiting = False  # someone waits on _idle: only then is it worth setting
        self._body_error: BaseException | None = None
        self._value: Any = None
        self._thread_id = threading.get_ident()
        self._in_body = False
        self._body_lock = threading.Lock()
        self._timer: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._waking: Any = None  # a called task run on the main thread whose timeout sent SIGINT
        self._context_token: Any = None
        self._ending = False  # the body is over for good: `wait_and_decide` runs
        #: A signal (or the timeout) that came once the work was over, during cleanup: noted, changes nothing.
        self.late_interrupt: BaseException | None = None
        if options.flow_run_name is not None:
            context = with_defaults(options.signature, parameters)
            self.record.name = render_run_name(options.owner, "flow_run_name", options.flow_run_name, context, RunContext(self))

    # -- task runs --------------------------------------------------------------------

    def _create(self, task: TaskDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] | None) -> TaskRun:
        options = task.options
        parameters = options.binder.bind(args, kwargs)
        found = ArgumentScan(self, options, list(open_blocks.get()), self.values)
        for value in args:
            found.argument(value)
        for value in kwargs.values():
            found.argument(value)
        if wait_for is not None:
            for value in wait_for:
                found.waited_for(value)
        scopes, annotated = found.scopes, found.annotated
        if annotated:
            args, kwargs = strip_quotes(args), strip_quotes(kwargs)
            parameters = options.binder.bind(args, kwargs)
        extra_tags = current_tags.get()
        tags = options.tags | extra_tags if extra_tags else options.tags
        record = RunRecord("task", options.name, self.record.id, self.record.id, tags)
        # What it found, or () for nothing: an empty list kept by every run is an object the collector tracks.
        run = TaskRun(task, options, self, record, args, kwargs, parameters, found.upstreams or (), scopes or ())
        run.slot_keys = found.limited or ()
        if annotated:
            run.allowed_failures = tuple(r for r in annotated if r is not None)
        if options.task_run_name is not None:
            context = with_defaults(options.signature, parameters)
            record.name = render_run_name(options.owner, "task_run_name", options.task_run_name, context, RunContext(self, run))
        if scopes:
            join_scopes(scopes, options.name, record.id, run)
        with self._active_lock:
            self._active.add(run)
        if self.events.active:
            recorded = _without_resource_values(parameters) if scopes else parameters
            self.events.emit(RunCreated(record.id, "task", options.name, self.record.id, self.record.id, tags, recorded, record.state.time, record.name))
        return run

    def submit_task(self, task: TaskDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] | None) -> TaskFuture[Any]:
        # Shielded: Ctrl-C half-way through would leave a run joined to its scopes, never started.
        return shielded(self._submit, task, args, kwargs, wait_for)

    def _submit(self, task: TaskDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] | None) -> TaskFuture[Any]:
        if not self.runner.shares_memory:
            check_arguments(self.runner, task.options, args, kwargs)
        run = self._create(task, args, kwargs, wait_for)
        run.start()
        return TaskFuture(run)

    def call_task(self, task: TaskDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] | None, return_state: bool) -> Any:
        is_async = task.options.is_async
        if is_async and _in_event_loop():
            return self._call_task_async(task, args, kwargs, wait_for, return_state)
        run, ready = shielded(self._start_called, task, args, kwargs, wait_for, not is_async)
        if ready is not None and not run.is_done():  # it waits for a slot, or is async
            if not ready.acquire(blocking=False):
                wait_interruptibly(ready)  # for a concurrency slot: interruptible, the run is booked
            if is_async:
                run_on_engine_loop(run_async(run)).result()
            else:
                shielded(run_sync, run)  # the engine's steps around the body; the body is not shielded
        run.wait()
        state = run.record.state
        return state if return_state else state.result()

    def _start_called(self, task: TaskDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] | None,
                      run_now: bool) -> tuple[TaskRun, Any]:
        """Create and start a called task run; with ``run_now``, also run it here if it may start at
        once (the common case: no slot to wait for), inside this same shielded step. Returns the run,
        and the lock released once it may start, or None if it has run."""
        run = self._create(task, args, kwargs, wait_for)
        run.observed = True
        ready = threading.Lock()  # released once the run may start; cheaper than an Event
        ready.acquire()
        run.on_ready = ready.release
        run.start()
        if run_now and not run.is_done() and ready.acquire(blocking=False):
            run_sync(run)  # the engine's steps around the body; the body itself runs unshielded
            return run, None
        return run, ready

    async def _call_task_async(self, task: TaskDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] | None, return_state: bool) -> Any:
        run = self._create(task, args, kwargs, wait_for)
        run.observed = True
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        run.on_ready = lambda: (loop.call_soon_threadsafe(ready.set_result, None), None)[1]
        run.start()
        if not run.is_done():
            await ready
            await run_async(run)
        state = run.record.state
        return state if return_state else state.result()

    def dispatch(self, run: TaskRun) -> None:
        if run.on_ready is not None:
            run.on_ready()
            return
        if not self.runner.shares_memory:
            dispatch_remote(self.runner, run)
            return
        try:
            if run.options.is_async:
                future = run_on_engine_loop(run_async(run))
                future.add_done_callback(lambda f: None if f.cancelled() or f.exception() is None else crash_if_unfinished(run, f.exception()))
            else:
                self.runner.run_soon(run_guarded, run)
        except Exception as exc:
            crash_if_unfinished(run, exc)

    # -- what a resource scope needs of its flow run (`_resources.ScopeOwner`) ------------

    @property
    def run_id(self) -> str:
        return self.record.id

    @property
    def shares_memory(self) -> bool:
        return self.runner.shares_memory

    @property
    def grace_seconds(self) -> float:
        return self.settings.interrupt_grace_seconds

    def add_scope(self, scope: ResourceScope) -> None:
        self.scopes.append(scope)

    def add_cleanup_error(self, error: BaseException) -> None:
        self.cleanup_errors.append(error)

    def open_first_copy(self, scope: ResourceScope) -> tuple[bool, Any]:
        """Set ``scope`` up on one of the runner's workers (it does not share this memory);
        ``(True, value)`` if its value is plain enough to hold here as it is."""
        return open_first_copy(cast(RemoteRunner, self.runner), scope, self.grace_seconds)

    def close_copies(self, scope: ResourceScope, error: BaseException | None) -> None:
        close_copies(scope, error)

    def task_run_ended(self, run: TaskRun) -> None:
        state = run.record.state
        failed = state.type is not StateType.COMPLETED
        if failed:
            self._failures.append(run)
        for scope in run.scopes:
            scope.member_ended(run, state)
        with self._active_lock:
            self._active.discard(run)
            wake = self._waiting and not self._active
        if wake:
            self._idle.set()

    def wait_for_task_runs(self) -> None:
        while True:
            with self._active_lock:
                if not self._active:
                    self._waiting = False
                    return
                self._waiting = True
                self._idle.clear()
            wait_interruptibly(self._idle)

    # -- the flow body ---------------------------------------------------------------

    def begin(self) -> None:
        configure_logging()
        if self.parent is None:
            store = enable_store(open_now=False)  # opened when first used: the records are spooled meanwhile
            if store is not None:
                use_store(store, self.limiter)
        if self.options.log_prints:
            enable_log_prints()
        self._context_token = current_run.set(RunContext(self))
        # An async flow's loop (asyncio.run) turns Ctrl-C into cancellation of its own.
        if threading.current_thread() is threading.main_thread() and not self.options.is_async:
            self._previous_handlers = {
                signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGINT, signal.SIGTERM)
            }
        if self.events.active:
            self.events.emit(RunCreated(self.record.id, "flow", self.options.name, self.record.id, self.record.parent_id, frozenset(), with_defaults(self.options.signature, self.parameters), self.record.state.time, self.record.name))
        self.runner.start()
        self._reclaim_signal_handlers()
        if self.options.timeout_seconds is not None:
            self._timer = watchdog().schedule(self.options.timeout_seconds, self._on_timeout)
        self._enter_body(Running())
        if self.options.on_running:
            self._run_hooks(self.record.state, self.options.on_running)

    def _reclaim_signal_handlers(self) -> None:
        """Put tether's handlers back where starting the runner, or a library the body called,
        replaced them (``ray.init`` installs a SIGTERM handler that exits at once, with
        nothing cleaned up); `restore` puts back the ones from before the run."""
        for signum in self._previous_handlers:
            if signal.getsignal(signum) != self._on_signal:
                logger.debug("Signal %d had been given another handler during flow run %r; tether's is back.", signum, self.record.name)
                signal.signal(signum, self._on_signal)

    def _enter_body(self, state: State) -> None:
        self.events.emit(transition(self.record, state))
        with self._body_lock:
            self._in_body = True

    def _leave_body(self) -> None:
        with self._body_lock:
            self._in_body = False
            if self.timed_out:
                clear_in_thread(self._thread_id)

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Ctrl-C or SIGTERM: raise in the body (after the engine step it interrupted, if it
        interrupted one: see `_shield`); once the body is over, cancel without raising."""
        waking, self._waking = self._waking, None
        if waking is not None and signum == signal.SIGINT:  # not Ctrl-C: a called task's timeout
            if waking.in_body:
                raise KeyboardInterrupt  # into its body; TaskRun.failed sees the timeout it was for
            return
        reason: BaseException = KeyboardInterrupt() if signum == signal.SIGINT else Terminated()
        if self._in_body and not self.cancelling:
            if shield_active():
                defer_interrupt(reason)
                return
            raise reason
        # Ending: a signal handler must not take the locks the interrupted code may hold,
        # and must not cut the wait for task runs and cleanups short.
        threading.Thread(target=self._interrupted_while_ending, args=(reason,), name="tether-cancel", daemon=True).start()

    def _interrupted_while_ending(self, reason: BaseException) -> None:
        if self.cancelling or self.late_interrupt is not None:
            logger.warning("Interrupted again: still cleaning up flow run %r; please wait.", self.record.name)
        else:
            self.cancel(reason)

    def body_returned(self, value: Any) -> None:
        self._leave_body()
        self._value = value

    def body_failed(self, exc: BaseException) -> float | None:
        """Decide what the body's error leads to; returns a retry delay or None."""
        self._leave_body()
        if self.timed_out and isinstance(exc, (KeyboardInterrupt, FlowRunTimeout, TimeoutInterrupt)):
            exc = FlowRunTimeout(flow_timeout_message(self.record.name, self.options.timeout_seconds or 0))
        if not isinstance(exc, Exception) or isinstance(exc, FlowRunTimeout):
            self.cancel(exc)
            return None
        self._body_error = exc
        options = self.options
        delay = flow_retry_delay(retries_done=self.record.run_count - 1, retries=options.retries, retry_delays=options.retry_delays, cancelling=self.cancelling)
        if delay is not None:
            self.wait_for_task_runs()
            self.events.emit(transition(self.record, AwaitingRetry(f"{type(exc).__name__}: {exc}")))
            logger.info("Flow run %r failed (%s); retrying in %g s.", self.record.name, exc, delay)
            self._failures.clear()
        return delay

    def retry(self) -> None:
        self._body_error = None
        self._enter_body(Retrying())

    def wake_for_timeout(self, run: TaskRun) -> bool:
        """Interrupt ``run``, a called task whose body runs on the main thread, at its timeout:
        through SIGINT, which wakes a sleep or a lock wait there (an exception sent to the
        thread lands only when the sleep returns). False if this flow's handler is not the
        one to receive it (an async flow; a flow not on the main thread)."""
        if signal.SIGINT not in self._previous_handlers:
            return False
        self._waking = run
        interrupt_main_thread()
        return True

    def _on_timeout(self) -> None:
        with self._body_lock:
            self.timed_out = True
        if self._interrupt_body():
            keep_sending(watchdog(), lambda: self._interrupt_body(again=True))
        else:
            self.cancel(FlowRunTimeout(flow_timeout_message(self.record.name, self.options.timeout_seconds or 0)))

    def _interrupt_body(self, again: bool = False) -> bool:
        """Raise the timeout in the body; False once it is over. ``again``: only if the one sent
        before is not on its way out (see `keep_sending`)."""
        with self._body_lock:
            if not self._in_body:
                return False
            on_main = self._thread_id == threading.main_thread().ident
            if again and is_on_its_way_out(self._thread_id, KeyboardInterrupt if on_main else landing(FlowRunTimeout)):
                return True
            if on_main:
                interrupt_main_thread()
            else:
                raise_in_thread(self._thread_id, FlowRunTimeout)
            return True

    def cancel(self, reason: BaseException) -> None:
        """Cancel every task run not started, interrupt the running ones, fail the scopes.

        Once the work is over (the body has ended for good and no task run is left), there
        is nothing to cancel: the cleanups already have their outcome, and a commit that
        runs must not be recorded as cancelled (a scheduler would run the work twice). The
        interrupt is noted in the final state instead, and still ends the process.
        """
        with self._active_lock:
            if self.cancelling or self.late_interrupt is not None:
                return
            if self._ending and not self._active:
                self.late_interrupt = reason
            else:
                self.cancel_reason = reason  # with the flag: whoever sees it cancelling knows why
                self.cancelling = True
        if self.late_interrupt is reason:
            logger.warning(
                "Flow run %r got %s while its resources were being cleaned up, after its work was done; "
                "the cleanups go on with the work's outcome, then the run ends.", self.record.name, _interruption(reason),
            )
            return
        self.cancel_event.set()
        logger.warning(
            "Flow run %r is being cancelled (%s): waiting up to %g s (TETHER_INTERRUPT_GRACE_SECONDS) for its "
            "running task runs to stop, then cleaning up.",
            self.record.name, _interruption(reason), self.settings.interrupt_grace_seconds,
        )
        for scope in list(self.scopes):
            scope.fail(reason)
        with self._active_lock:
            # Newest first: the runs queued at a runner are cancelled before interrupting the
            # running ones frees the workers those queued runs would otherwise get.
            active = sorted(self._active, key=lambda r: r.record.id, reverse=True)
        for run in active:
            run.interrupt_with(TaskRunCancelled)

    # -- the end -------------------------------------------------------------------------

    def end(self) -> State:
        """Wait for every task run and cleanup, decide and record the final state, and
        restore what `begin` changed. Runs in the thread that called `begin`."""
        self._reclaim_signal_handlers()  # a library the body called may have installed its own
        try:
            return self.wait_and_decide()
        finally:
            self.restore()

    def wait_and_decide(self) -> State:
        """The part of `end` that may run in any thread (an async flow runs it in an executor)."""
        with self._active_lock:
            self._ending = True
        try:
            for scope in list(self.scopes):
                scope.close_block(self.cancel_reason or self._body_error)
            self.wait_for_task_runs()
            value = self._value
            if self._body_error is None and not self.cancelling:
                try:
                    value = self._resolve_return_value(value)
                except BaseException as exc:
                    self._body_error = exc
            for scope in list(self.scopes):
                scope.wait_for_cleanup()
                scope.forget()
        finally:
            if self._timer is not None:
                watchdog().cancel(self._timer)
            if isinstance(self.runner, RemoteRunner):
                close_copies_held_by(self.runner)  # scopes of an outer flow run its workers still hold
            self.runner.stop()
        state = self._final_state(value)
        self.events.emit(transition(self.record, state))
        self._run_hooks(state)
        return state

    def restore(self) -> None:
        if self.parent is None:
            flush_store(until="safe")  # the helper process, if there is one, goes on writing
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}
        if self._context_token is not None:
            current_run.reset(self._context_token)
            self._context_token = None

    def _resolve_return_value(self, value: Any) -> Any:
        """Futures in the returned value become their values; a State (or a list of states)
        returned is the flow's own verdict, and a state inside other data stays a state, as in Prefect."""
        if is_state(value) or is_state_iterable(value):
            return value

        def resolve_future(leaf: Any) -> Any:
            if isinstance(leaf, TaskFuture):
                return leaf.result()
            return leaf

        return rewrite(value, resolve_future)  # the very same object when there is nothing to resolve

    def _final_state(self, value: Any) -> State:
        """The kernel's verdict on the ended run; the returned value's state if nothing failed it."""
        returned = is_state(value) or is_state_iterable(value)  # the flow looked at failures itself
        unresolved = [] if returned else [r for r in self._failures if not r.observed]
        if unresolved:  # blame a run that failed of itself, not for its upstream's sake
            root = next((r for r in unresolved if r.record.state.name != "Failed" or not r.upstreams), unresolved[0])
            unresolved = [root]
        reason = self.cancel_reason if self.cancelling else None
        state = flow_failure(
            self.record.name, cancel_reason=reason, timed_out=isinstance(reason, FlowRunTimeout), body_error=self._body_error,
            unresolved=[(r.record.name, r.record.state) for r in unresolved], cleanup_errors=self.cleanup_errors,
            unresolved_error=UnresolvedFailureError, cleanup_error=CleanupError,
        ) or return_value_to_state(value)
        late = self.late_interrupt
        return state if late is None else with_late_interrupt(state, self.record.name, _interruption(late))

    def _run_hooks(self, state: State, hooks: tuple[Callable[..., Any], ...] | None = None) -> None:
        options = self.options
        if hooks is None:
            hooks = {
                StateType.COMPLETED: options.on_completion,
                StateType.FAILED: options.on_failure,
                StateType.CANCELLED: options.on_cancellation,
                StateType.CRASHED: options.on_crashed,
            }[state.type]
        for hook in hooks:
            try:
                hook(self.flow, FlowRunView(self), state)
            except Exception:
                logger.exception("Hook %r of flow run %r raised; the run's state is unchanged.", hook, self.record.name)

    def outcome(self, state: State, return_state: bool) -> Any:
        late = self.late_interrupt
        if late is not None and not isinstance(late, FlowRunTimeout):
            # The signal still ends the process (exit status 143 for SIGTERM), even for a
            # caller that asked for the state: the state, recorded, says the work was done.
            late.state = state  # type: ignore[attr-defined]  # for the caller that reports it (tether run)
            raise late
        if return_state:
            return state
        if state.is_cancelled() and isinstance(self.cancel_reason, BaseException):
            raise self.cancel_reason
        return state.result()


def _without_resource_values(parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters as recorded: a resource's value is never persisted, only named."""
    def describe(node: Any) -> Any:
        scope = scope_of(node)
        return node if scope is None else f"<resource {scope.name}>"

    return {k: rewrite(v, describe) for k, v in parameters.items()}


def _interruption(reason: BaseException) -> str:
    """How an interrupt is named in logs and state messages."""
    if isinstance(reason, Terminated):
        return "SIGTERM"
    if isinstance(reason, KeyboardInterrupt):
        return "Ctrl-C (SIGINT)"
    if isinstance(reason, FlowRunTimeout):
        return "The flow's timeout"
    return type(reason).__name__


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True

