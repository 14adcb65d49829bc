"""One task run, from submission to its final state.

The life of a run: created Pending; waits for its upstreams (by callback, no
thread held); fails at once if one of them did not complete; looks up the cache;
takes its concurrency slots (AwaitingConcurrencySlot meanwhile, no thread held);
is handed to the runner; runs its attempts (Running, then AwaitingRetry/Retrying
as needed); ends in a final state, which releases its slots, tells its resource
scopes and wakes whoever waits.

`TaskRun` applies the kernel's verdicts (`tether._core._decide`) and carries them out;
it runs no body. The drivers that run attempts are `_shells` (in a thread, on an event
loop) and `_remote` (on a worker process); the two that run off the calling thread's
stack implement `Attempt`. What a task run needs of its flow run is `TaskRunHost`, and
of its task only the checked options (`TaskOptions`): this module names neither
`FlowRun` nor `Task`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tether._arguments import resolve, rewrite
from tether._cache import MISSING, results
from tether._cache_policies import DEFAULT, CachePolicy, run_cache_key
from tether._context import RunView
from tether._core import (
    FINAL_TYPES,
    AwaitingConcurrencySlot,
    Cached,
    Completed,
    EventStream,
    Failed,
    Retrying,
    Running,
    RunRecord,
    State,
    StateType,
    after_abandon,
    after_failed_attempt,
    cancelled_awaiting_retry,
    cancelled_before_start,
    classify_failure,
    timeout_message,
    transition,
)
from tether._core._decide import retries_left
from tether._errors import (
    RunInterrupted,
    TaskRunTimeout,
    UpstreamFailedError,
)
from tether._interrupt import clear_in_thread, is_on_its_way_out, keep_sending, landing, raise_in_thread, wait_interruptibly, watchdog
from tether._limits import Limiter
from tether._logging import log_for_run, logger
from tether._options import FlowOptions, TaskOptions
from tether._resources import scope_of
from tether._run_views import TaskRun as TaskRunView
from tether._run_views import TaskRunContext
from tether._runtime import get_clock


class TaskDefinition(Protocol):
    """A task as the engine takes it (`Task` is the one): its checked options."""

    @property
    def options(self) -> TaskOptions: ...


class TaskRunHost(RunView, Protocol):
    """What a task run needs of its flow run (`FlowRun`; for a task called outside any flow,
    `_standalone.StandaloneHost`, whose record has no id), besides what any code in a run
    may ask of it (`RunView`: the current run of a body is its flow run)."""

    record: RunRecord
    options: FlowOptions  # persist_result, and the flow's name in messages
    parameters: dict[str, Any]  # the flow's, for cache keys
    limiter: Limiter
    events: EventStream  # where its runs' events go: the runtime's it started on
    cancel_event: threading.Event  # set once the flow is cancelled: ends a wait for a retry
    cancelling: bool

    @property
    def run_id(self) -> str: ...

    @property
    def grace_seconds(self) -> float: ...

    def dispatch(self, run: TaskRun) -> None:
        """Hand a run whose upstreams, cache and slots are settled to its runner."""

    def task_run_ended(self, run: TaskRun) -> None:
        """``run`` reached its final state."""

    def wake_for_timeout(self, run: TaskRun) -> bool:
        """Interrupt a called task on the main thread at its timeout, if the flow can."""


class Attempt(Protocol):
    """A driver running a task run's attempts off the stack of the thread that cancels it
    (the asyncio shell; `RemoteAttempt`). A driver in a thread of this process has none:
    `TaskRun` raises in that thread itself."""

    def cancel(self) -> None:
        """The flow is cancelled: stop the attempt in flight (or the wait for a retry)."""

    def abandon(self) -> bool:
        """The attempt did not stop within the grace period: let go of it (a remote runner
        ends its worker). False if it is ending after all: its own end decides the state."""


_completion_lock = threading.Lock()
#: A complete run's ``_callbacks``: done-ness and the callbacks share a slot, which keeps a
#: TaskRun within a smaller allocation (100,000 runs in a flow are held at once).
_COMPLETE: Any = object()


_MAIN_THREAD = threading.main_thread().ident


class TaskRun:
    __slots__ = (
        "_callbacks",
        "_waiters",
        "allowed_failures",
        "args",
        "attempt",
        "cache_key",
        "flow_run",
        "holds_slots",
        "in_body",
        "interrupt",
        "kwargs",
        "lock",
        "observed",
        "on_ready",
        "options",
        "parameters",
        "record",
        "scopes",
        "slot_keys",
        "slot_request",
        "task",
        "thread_id",
        "timer",
        "upstreams",
    )

    def __init__(
        self,
        task: object,
        options: TaskOptions,
        flow_run: TaskRunHost,
        record: RunRecord,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        parameters: dict[str, Any],
        upstreams: Sequence[TaskRun],
        scopes: Sequence[Any],
    ) -> None:
        self.record = record
        self.task = task  # the user's object: handed to hooks and to views, never read here
        self.options = options
        self.flow_run = flow_run
        self.args = args
        self.kwargs = kwargs
        self.parameters = parameters
        self.upstreams = upstreams
        self.allowed_failures: tuple[TaskRun, ...] = ()  # upstreams passed through allow_failure()
        self.scopes = scopes
        self.slot_keys: Sequence[str] = ()
        self.slot_request: Any = None
        self.holds_slots = False
        self.observed = False
        self.thread_id: int | None = None
        self.in_body = False
        self.interrupt: type[BaseException] | None = None
        self.lock = threading.Lock()
        self.timer: int | None = None
        self.cache_key: str | None = None
        self.attempt: Attempt | None = None
        self.on_ready: Callable[[], None] | None = None
        self._callbacks: list[Callable[[TaskRun], None]] | None = None  # or _COMPLETE
        self._waiters: list[threading.Event] | None = None

    # -- completion --------------------------------------------------------------

    def is_done(self) -> bool:
        return self._callbacks is _COMPLETE

    def wait(self, timeout: float | None = None) -> bool:
        if self._callbacks is _COMPLETE:
            return True
        event = threading.Event()
        with _completion_lock:
            if self._callbacks is _COMPLETE:
                return True
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(event)
        return wait_interruptibly(event, timeout)

    def add_done_callback(self, fn: Callable[[TaskRun], None]) -> None:
        with _completion_lock:
            callbacks = self._callbacks
            if callbacks is not _COMPLETE:
                if callbacks is None:
                    self._callbacks = [fn]
                else:
                    callbacks.append(fn)
                return
        fn(self)

    def _complete(self) -> None:
        with _completion_lock:
            waiters, self._waiters = self._waiters, None
            callbacks, self._callbacks = self._callbacks, _COMPLETE
        if waiters:
            for event in waiters:
                event.set()
        if callbacks:
            for fn in callbacks:
                fn(self)

    # -- from submission to dispatch --------------------------------------------

    def start(self) -> None:
        """Wait (by callback) for the upstreams, then continue with `_upstreams_done`."""
        pending = [u for u in self.upstreams if u._callbacks is not _COMPLETE] if self.upstreams else None
        if not pending:
            self._upstreams_done()
            return
        remaining = [len(pending)]
        lock = threading.Lock()

        def one_done(_: TaskRun) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self._upstreams_done()

        for upstream in pending:
            upstream.add_done_callback(one_done)

    def _upstreams_done(self) -> None:
        for upstream in self.upstreams:
            if upstream.record.state.type is not StateType.COMPLETED and upstream not in self.allowed_failures:
                upstream.observed = True
                state = upstream.record.state
                error = UpstreamFailedError(
                    f"Task run {self.record.name!r} did not run because its upstream task run "
                    f"{upstream.record.name!r} ended {state.name}"
                    + (f": {state.message}" if state.message else ".")
                )
                self.finish(Failed(error, message=str(error)))
                return
        if self.flow_run.cancelling:
            self.finish(cancelled_before_start())
            return
        if self.upstreams:
            self.args = tuple(resolve(a) for a in self.args)
            self.kwargs = {k: resolve(v) for k, v in self.kwargs.items()}
        options = self.options
        policy = options.cache_policy
        if policy is None and options.inherits_persistence and self.flow_run.options.persist_result:
            policy = DEFAULT  # the flow keeps its results, so its tasks cache as Prefect's do
        if policy is not None and self._cache_hit(policy):
            return
        if self.record.tags:  # every limited key the run needs: its resources' (found at creation) and its tags'
            self.slot_keys = [*self.slot_keys, *self.flow_run.limiter.limited_keys(frozenset(f"tag:{t}" for t in self.record.tags))]
        if len(self.slot_keys) > 1:
            self.slot_keys = sorted(self.slot_keys)
        if not self.slot_keys:
            self.flow_run.dispatch(self)
            return
        try:
            self.slot_request = self.flow_run.limiter.acquire(self, self.slot_keys, self._slots_granted)
        except Exception as exc:
            self.slot_keys = ()
            self.finish(Failed(exc, message=str(exc)))
            return
        if self.slot_request is not None:
            with self.lock:
                # Unless the slot came (from another thread) and the run started meanwhile.
                if self.record.state.name != "Pending":
                    return
                event = transition(self.record, AwaitingConcurrencySlot(f"waiting for a slot of {', '.join(self.slot_keys)}"))
            self.flow_run.events.emit(event)

    def _slots_granted(self) -> None:
        self.slot_request = None
        if self.record.state.is_final():  # cancelled while waiting
            self.flow_run.limiter.release(self.slot_keys, self)
            return
        self.holds_slots = True
        self.flow_run.dispatch(self)

    def _cache_hit(self, policy: CachePolicy) -> bool:
        inputs = self._cacheable_parameters()  # tether's walk: an error here is not the user's
        try:
            self.cache_key = run_cache_key(policy, TaskRunContext(self, inputs), inputs, self.flow_run.parameters)
        except Exception as exc:
            self.finish(Failed(exc, message=f"The cache key (cache_key_fn / cache_policy {policy!r}) of task {self.options.name!r} raised: {exc!r}"))
            return True
        if self.cache_key is None or self.options.refresh_cache:  # refresh_cache: run, then store anew
            return False
        value = results().get(self.cache_key)
        if value is MISSING:
            return False
        self.finish(Cached(value, message=f"result found in cache (key {self.cache_key[:16]})"))
        return True

    def _cacheable_parameters(self) -> dict[str, Any]:
        """The run's parameters, resolved, with resource values left out."""
        resolved = {k: resolve(v) for k, v in self.parameters.items()}
        return {k: rewrite(v, lambda node: "<resource>" if scope_of(node) is not None else node) for k, v in resolved.items()}

    # -- attempts ------------------------------------------------------------------

    def begin_attempt(self) -> bool:
        """Move to Running (or Retrying); False if the run is already final (cancelled)."""
        with self.lock:
            state = self.record.state
            if state.type in FINAL_TYPES:
                return False
            if self.flow_run.cancelling:
                cancelled = True
            else:
                cancelled = False
                new = Retrying() if state.name == "AwaitingRetry" else Running()
                event = transition(self.record, new)
                self.in_body = True
                self.thread_id = threading.get_ident()
        if cancelled:
            self.finish(cancelled_before_start())
            return False
        self.flow_run.events.emit(event)
        if self.options.on_running:
            self._run_hooks(new, self.options.on_running)
        timeout = self.options.timeout_seconds
        if timeout is not None and self.attempt is None:  # a driver counts its own timeout
            attempt = self.record.run_count
            self.timer = watchdog().schedule(timeout, lambda: self._on_deadline(attempt, TaskRunTimeout))
        return True

    def end_body(self) -> None:
        """The body returned or raised: no interrupt may land after this."""
        with self.lock:
            self.in_body = False
            if self.interrupt is not None and self.thread_id is not None:
                clear_in_thread(self.thread_id)
        if self.timer is not None:
            watchdog().cancel(self.timer)
            self.timer = None

    def succeeded(self, value: Any) -> None:
        if type(value) is State and value.is_final():  # the task returned its own state: kept as given, as in Prefect
            self.finish(value)
            return
        if self.cache_key is not None:
            results().put(self.cache_key, value, self.options.cache_expiration)
        self.finish(Completed(value))

    def failed(self, exc: BaseException, lost: bool = False) -> float | None:
        """Apply the kernel's verdict on a failed attempt (``lost``: the runner lost it with its
        worker); returns the retry delay, or None if the run is final."""
        interrupt, self.interrupt = self.interrupt, None
        # A TimeoutInterrupt is this run's timeout only if the run sent it (a flow's timeout sends one too).
        timed_out = isinstance(exc, TaskRunTimeout) or interrupt is TaskRunTimeout
        failure = classify_failure(
            timed_out=timed_out,
            interrupted=isinstance(exc, (RunInterrupted, KeyboardInterrupt, asyncio.CancelledError)),
            cancelling=self.flow_run.cancelling,
            is_exception=isinstance(exc, Exception),
            lost=lost,
        )
        error = exc
        if timed_out and not (isinstance(exc, TaskRunTimeout) and exc.args):
            error = TaskRunTimeout(self._timeout_message())
        options = self.options
        retries_done = self.record.run_count - 1
        retrying = retries_left(failure, retries_done=retries_done, retries=options.retries)
        verdict = after_failed_attempt(
            failure, error, retries_done=retries_done, retries=options.retries,
            # This attempt's delay, jittered once here so the message says the delay waited.
            retry_delays=(options.retry_delay(retries_done),) if retrying else options.retry_delays,
            may_retry=not retrying or self._may_retry(error), run_name=self.record.name,
        )
        if verdict.retry_delay is not None:
            self._move(verdict.state)
            log_for_run(self.record, self.flow_run.run_id, logging.WARNING, f"{verdict.state.message} (retry {self.record.run_count} of {options.retries})")
        else:
            self.finish(verdict.state)
        return verdict.retry_delay

    def _may_retry(self, error: BaseException) -> bool:
        """What ``retry_condition_fn(task, task_run, state)`` says of an attempt that failed with
        ``error`` (yes, without one); ``state`` is that failure's Failed state. A condition that
        raises means no retry, as in Prefect."""
        condition = self.options.retry_condition_fn
        if condition is None:
            return True
        state = Failed(error, message=f"Task run encountered an exception: {error!r}")
        try:
            return bool(condition(self.task, TaskRunView(self), state))
        except Exception:  # noqa: BLE001 - the user's condition failed: no retry, as in Prefect
            logger.exception("retry_condition_fn of %s raised, so the run is not retried.", self.options.owner)
            return False

    def wait_before_retry(self, delay: float) -> bool:
        """Wait out a retry delay; False (and Cancelled) if the flow is cancelled meanwhile."""
        if delay > 0 and get_clock().wait(self.flow_run.cancel_event, delay):
            self.cancelled_awaiting_retry()
            return False
        return not self.record.state.is_final()

    def _timeout_message(self) -> str:
        return timeout_message(self.record.name, self.options.timeout_seconds or 0)

    # -- interruption ----------------------------------------------------------------

    def interrupt_with(self, exc_type: type[BaseException]) -> None:
        """Cancel the run: not started -> Cancelled; running -> an exception in its thread, or
        its driver's `Attempt.cancel`; abandoned if it has not stopped within the grace period."""
        with self.lock:
            state = self.record.state
            if state.is_final():
                return
            running = self.in_body
        if not running and state.type is StateType.PENDING and state.name != "AwaitingRetry":
            if self.slot_request is not None:
                self.flow_run.limiter.withdraw(self.slot_request)
            self.finish(cancelled_before_start())
            return
        attempt = self.attempt
        if attempt is None:
            self._on_deadline(self.record.run_count, exc_type)
            return
        number = self.record.run_count
        attempt.cancel()
        if running and self.on_ready is None:  # a called task is never given up on (see `_on_deadline`)
            watchdog().schedule(self.flow_run.grace_seconds, lambda: self._abandon(number, exc_type))

    def _on_deadline(self, attempt: int, exc_type: type[BaseException]) -> None:
        if not self._send(attempt, exc_type):
            return
        keep_sending(watchdog(), lambda: self._send(attempt, exc_type, again=True))
        if self.on_ready is not None:
            # A called task: its caller is the thread that runs it, so nothing goes on if it is
            # given up on; it ends TimedOut when it does stop, and its state says so then.
            return
        watchdog().schedule(self.flow_run.grace_seconds, lambda: self._abandon(attempt, exc_type))

    def _send(self, attempt: int, exc_type: type[BaseException], again: bool = False) -> bool:
        """Raise ``exc_type`` in the body of attempt ``attempt``; False once that body is over.
        ``again``: only if the interrupt sent before is not on its way out (see `keep_sending`)."""
        with self.lock:
            if not self.in_body or self.record.run_count != attempt or self.thread_id is None:
                return False
            self.interrupt = exc_type
            on_main = self.thread_id == _MAIN_THREAD and exc_type is TaskRunTimeout
            if again and is_on_its_way_out(self.thread_id, (landing(exc_type), KeyboardInterrupt) if on_main else landing(exc_type)):
                return True
            if not (on_main and self.flow_run.wake_for_timeout(self)):
                raise_in_thread(self.thread_id, exc_type)
            return True

    def _abandon(self, attempt: int, exc_type: type[BaseException]) -> None:
        """The interrupted attempt did not stop (blocked in C): give up on it."""
        with self.lock:
            if not self.in_body or self.record.run_count != attempt:
                return
            driver = self.attempt
        if driver is not None and not driver.abandon():
            return
        self.abandoned(attempt, exc_type)

    def abandoned(self, attempt: int, exc_type: type[BaseException]) -> None:
        """End the run without attempt number ``attempt``, given up on after the grace period
        (``exc_type``: what interrupted it). The texts of that end are the kernel's."""
        with self.lock:
            if not self.in_body or self.record.run_count != attempt:
                return
            self.in_body = False
        self.finish(
            after_abandon(
                timed_out=exc_type is TaskRunTimeout, run_name=self.record.name, timeout_seconds=self.options.timeout_seconds,
                grace_seconds=self.flow_run.grace_seconds, error_type=TaskRunTimeout,
            )
        )

    def cancelled_awaiting_retry(self) -> None:
        """The flow was cancelled while this run waited for its next attempt."""
        self.finish(cancelled_awaiting_retry())

    # -- the end ---------------------------------------------------------------------

    def _move(self, state: State) -> None:
        with self.lock:
            if self.record.state.is_final():
                return
            event = transition(self.record, state)
        self.flow_run.events.emit(event)

    def finish(self, state: State) -> bool:
        """Move to a final state; the first caller wins (a late thread's result is dropped)."""
        with self.lock:
            if self.record.state.type in FINAL_TYPES:
                return False
            event = transition(self.record, state)
            self.in_body = False
        if self.timer is not None:
            watchdog().cancel(self.timer)
            self.timer = None
        self.flow_run.events.emit(event)
        if state.type is StateType.FAILED or state.type is StateType.CRASHED:
            log_for_run(self.record, self.flow_run.run_id, logging.ERROR, f"Finished in state {state.name}: {state.message}")
        if self.holds_slots:
            self.holds_slots = False
            self.flow_run.limiter.release(self.slot_keys, self)
        if self.options.on_completion or self.options.on_failure:
            self._run_hooks(state)
        self.args = self.kwargs = self.parameters = None  # type: ignore[assignment]
        self.upstreams = ()
        self.flow_run.task_run_ended(self)
        self._complete()
        return True

    def _run_hooks(self, state: State, hooks: tuple[Callable[..., Any], ...] | None = None) -> None:
        if hooks is None:
            options = self.options
            hooks = options.on_completion if state.is_completed() else options.on_failure if state.type in (StateType.FAILED, StateType.CRASHED) else ()
        for hook in hooks:
            try:
                hook(self.task, TaskRunView(self), state)
            except Exception:
                logger.exception("Hook %r of task run %r raised; the run's state is unchanged.", hook, self.record.name)
