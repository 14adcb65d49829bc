"""One task run, from submission to its final state.

The life of a run: created Pending; waits for its upstreams (by callback, no
thread held); fails at once if one of them did not complete; looks up the cache;
takes its concurrency slots (AwaitingConcurrencySlot meanwhile, no thread held);
is handed to the runner; runs its attempts (Running, then AwaitingRetry/Retrying
as needed); ends in a final state, which releases its slots, tells its resource
scopes and wakes whoever waits.

`run_sync` and `run_async` are the two thin shells that execute attempts; all
decisions are in `TaskRun`'s methods, shared by both.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether._cache import MISSING, results
from tether._cache_policies import DEFAULT, CachePolicy, run_cache_key
from tether._clock import get_clock
from tether._context import RunContext, current_run, events
from tether._core import (
    AwaitingConcurrencySlot,
    Failure,
    Cached,
    Completed,
    Crashed,
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
from tether._errors import (
    RunInterrupted,
    TaskRunTimeout,
    UpstreamFailedError,
)
from tether._interrupt import clear_in_thread, raise_in_thread, wait_interruptibly, watchdog
from tether._logging import log_for_run, logger
from tether._run_views import TaskRun as TaskRunView
from tether._run_views import TaskRunContext
from tether._shield import unshielded
from tether._stand_in import local_arguments

if TYPE_CHECKING:
    from tether._engine._flow_run import FlowRun
    from tether._task import Task

_completion_lock = threading.Lock()


_MAIN_THREAD = threading.main_thread().ident


class TaskRun:
    __slots__ = (
        "_callbacks",
        "allowed_failures",
        "_done",
        "_waiters",
        "args",
        "async_task",
        "cache_key",
        "flow_run",
        "holds_slots",
        "in_body",
        "interrupt",
        "kwargs",
        "lock",
        "observed",
        "on_ready",
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
        task: Task[Any],
        flow_run: FlowRun,
        record: RunRecord,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        parameters: dict[str, Any],
        upstreams: list[TaskRun],
        scopes: list[Any],
    ) -> None:
        self.record = record
        self.task = task
        self.flow_run = flow_run
        self.args = args
        self.kwargs = kwargs
        self.parameters = parameters
        self.upstreams = upstreams
        self.allowed_failures: tuple[TaskRun, ...] = ()  # upstreams passed through allow_failure()
        self.scopes = scopes
        self.slot_keys: list[str] = []
        self.slot_request: Any = None
        self.holds_slots = False
        self.observed = False
        self.thread_id: int | None = None
        self.in_body = False
        self.interrupt: type[BaseException] | None = None
        self.lock = threading.Lock()
        self.timer: int | None = None
        self.cache_key: str | None = None
        self.async_task: Any = None
        self.on_ready: Callable[[], None] | None = None
        self._callbacks: list[Callable[[TaskRun], None]] | None = None
        self._waiters: list[threading.Event] | None = None
        self._done = False

    # -- completion --------------------------------------------------------------

    def is_done(self) -> bool:
        return self._done

    def wait(self, timeout: float | None = None) -> bool:
        if self._done:
            return True
        event = threading.Event()
        with _completion_lock:
            if self._done:
                return True
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(event)
        return wait_interruptibly(event, timeout)

    def add_done_callback(self, fn: Callable[[TaskRun], None]) -> None:
        with _completion_lock:
            if not self._done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)

    def _complete(self) -> None:
        with _completion_lock:
            self._done = True
            waiters, self._waiters = self._waiters, None
            callbacks, self._callbacks = self._callbacks, None
        if waiters:
            for event in waiters:
                event.set()
        if callbacks:
            for fn in callbacks:
                fn(self)

    # -- from submission to dispatch --------------------------------------------

    def start(self) -> None:
        """Wait (by callback) for the upstreams, then continue with `_upstreams_done`."""
        pending = [u for u in self.upstreams if not u._done]
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
            self.args, self.kwargs = self.flow_run.resolve_arguments(self.args, self.kwargs)
        policy = self.task.cache_policy
        if policy is None and self.task.inherits_persistence and self.flow_run.flow.persist_result:
            policy = DEFAULT  # the flow keeps its results, so its tasks cache as Prefect's do
        if policy is not None and self._cache_hit(policy):
            return
        self.slot_keys = self.flow_run.slot_keys(self)
        if not self.slot_keys:
            self.flow_run.dispatch(self)
            return
        try:
            self.slot_request = self.flow_run.limiter.acquire(self, self.slot_keys, self._slots_granted)
        except Exception as exc:
            self.slot_keys = []
            self.finish(Failed(exc, message=str(exc)))
            return
        if self.slot_request is not None:
            with self.lock:
                # Unless the slot came (from another thread) and the run started meanwhile.
                if self.record.state.name != "Pending":
                    return
                event = transition(self.record, AwaitingConcurrencySlot(f"waiting for a slot of {', '.join(self.slot_keys)}"))
            events.emit(event)

    def _slots_granted(self) -> None:
        self.slot_request = None
        if self.record.state.is_final():  # cancelled while waiting
            self.flow_run.limiter.release(self.slot_keys, self)
            return
        self.holds_slots = True
        self.flow_run.dispatch(self)

    def _cache_hit(self, policy: CachePolicy) -> bool:
        inputs = self.flow_run.cacheable_parameters(self)  # tether's walk: an error here is not the user's
        try:
            self.cache_key = run_cache_key(policy, TaskRunContext(self, inputs), inputs, self.flow_run.parameters)
        except Exception as exc:
            self.finish(Failed(exc, message=f"The cache key (cache_key_fn / cache_policy {policy!r}) of task {self.task.name!r} raised: {exc!r}"))
            return True
        if self.cache_key is None or self.task.refresh_cache:  # refresh_cache: run, then store anew
            return False
        value = results.get(self.cache_key)
        if value is MISSING:
            return False
        self.finish(Cached(value, message=f"result found in cache (key {self.cache_key[:16]})"))
        return True

    # -- attempts ------------------------------------------------------------------

    def begin_attempt(self) -> bool:
        """Move to Running (or Retrying); False if the run is already final (cancelled)."""
        with self.lock:
            state = self.record.state
            if state.is_final():
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
        events.emit(event)
        if self.task.on_running:
            self._run_hooks(new, self.task.on_running)
        timeout = self.task.timeout_seconds
        if timeout is not None and self.async_task is None:
            attempt = self.record.run_count
            self.timer = watchdog.schedule(timeout, lambda: self._on_deadline(attempt, TaskRunTimeout))
        return True

    def end_body(self) -> None:
        """The body returned or raised: no interrupt may land after this."""
        with self.lock:
            self.in_body = False
            if self.interrupt is not None and self.thread_id is not None:
                clear_in_thread(self.thread_id)
        if self.timer is not None:
            watchdog.cancel(self.timer)
            self.timer = None

    def succeeded(self, value: Any) -> None:
        if type(value) is State and value.is_final():  # the task returned its own state: kept as given, as in Prefect
            self.finish(value)
            return
        if self.cache_key is not None:
            results.put(self.cache_key, value, self.task.cache_expiration)
        self.finish(Completed(value))

    def failed(self, exc: BaseException) -> float | None:
        """Apply the kernel's verdict on a failed attempt; returns the retry delay, or None if final."""
        interrupt, self.interrupt = self.interrupt, None
        timed_out = isinstance(exc, TaskRunTimeout) or interrupt is TaskRunTimeout
        failure = classify_failure(
            timed_out=timed_out,
            interrupted=isinstance(exc, (RunInterrupted, KeyboardInterrupt, asyncio.CancelledError)),
            cancelling=self.flow_run.cancelling,
            is_exception=isinstance(exc, Exception),
        )
        error = exc
        if timed_out and not (isinstance(exc, TaskRunTimeout) and exc.args):
            error = TaskRunTimeout(self._timeout_message())
        retries_done = self.record.run_count - 1
        retrying = retries_done < self.task.retries and failure in (Failure.FAILED, Failure.TIMED_OUT)
        verdict = after_failed_attempt(
            failure, error, retries_done=retries_done, retries=self.task.retries,
            # This attempt's delay, jittered once here so the message says the delay waited.
            retry_delays=(self.task.retry_delay(retries_done),) if retrying else self.task.retry_delays,
            may_retry=not retrying or self.task.may_retry(TaskRunView(self), error),
        )
        if verdict.retry_delay is not None:
            self._move(verdict.state)
            log_for_run(self.record, self.flow_run.record.id, logging.WARNING, f"{verdict.state.message} (retry {self.record.run_count} of {self.task.retries})")
        else:
            self.finish(verdict.state)
        return verdict.retry_delay

    def wait_before_retry(self, delay: float) -> bool:
        """Wait out a retry delay; False (and Cancelled) if the flow is cancelled meanwhile."""
        if delay > 0 and get_clock().wait(self.flow_run.cancel_event, delay):
            self.finish(cancelled_awaiting_retry())
            return False
        return not self.record.state.is_final()

    def _timeout_message(self) -> str:
        return timeout_message(self.record.name, self.task.timeout_seconds or 0)

    # -- interruption ----------------------------------------------------------------

    def interrupt_with(self, exc_type: type[BaseException]) -> None:
        """Cancel the run: not started -> Cancelled; running -> an exception in its thread."""
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
        if self.async_task is not None:
            self.async_task.get_loop().call_soon_threadsafe(self.async_task.cancel)
        else:
            self._on_deadline(self.record.run_count, exc_type)

    def _on_deadline(self, attempt: int, exc_type: type[BaseException]) -> None:
        with self.lock:
            if not self.in_body or self.record.run_count != attempt or self.thread_id is None:
                return
            self.interrupt = exc_type
            on_main = self.thread_id == _MAIN_THREAD and exc_type is TaskRunTimeout
            if not (on_main and self.flow_run.wake_for_timeout(self)):
                raise_in_thread(self.thread_id, exc_type)
        if self.on_ready is not None:
            # A called task: its caller is the thread that runs it, so nothing goes on if it is
            # given up on; it ends TimedOut when it does stop, and its state says so then.
            return
        grace = self.flow_run.settings.interrupt_grace_seconds
        watchdog.schedule(grace, lambda: self._abandon(attempt, exc_type))

    def _abandon(self, attempt: int, exc_type: type[BaseException]) -> None:
        """The interrupted body did not stop (blocked in C): give up on it."""
        with self.lock:
            if not self.in_body or self.record.run_count != attempt:
                return
            self.in_body = False
        self.finish(
            after_abandon(
                timed_out=exc_type is TaskRunTimeout, run_name=self.record.name, timeout_seconds=self.task.timeout_seconds,
                grace_seconds=self.flow_run.settings.interrupt_grace_seconds, error_type=TaskRunTimeout,
            )
        )

    # -- the end ---------------------------------------------------------------------

    def _move(self, state: State) -> None:
        with self.lock:
            if self.record.state.is_final():
                return
            event = transition(self.record, state)
        events.emit(event)

    def finish(self, state: State) -> bool:
        """Move to a final state; the first caller wins (a late thread's result is dropped)."""
        with self.lock:
            if self.record.state.is_final():
                return False
            event = transition(self.record, state)
            self.in_body = False
        if self.timer is not None:
            watchdog.cancel(self.timer)
            self.timer = None
        events.emit(event)
        if state.type is StateType.FAILED or state.type is StateType.CRASHED:
            log_for_run(self.record, self.flow_run.record.id, logging.ERROR, f"Finished in state {state.name}: {state.message}")
        if self.holds_slots:
            self.holds_slots = False
            self.flow_run.limiter.release(self.slot_keys, self)
        if self.task.on_completion or self.task.on_failure:
            self._run_hooks(state)
        self.args = self.kwargs = self.parameters = None  # type: ignore[assignment]
        self.upstreams = []
        self.flow_run.task_run_ended(self)
        self._complete()
        return True

    def _run_hooks(self, state: State, hooks: tuple[Callable[..., Any], ...] | None = None) -> None:
        if hooks is None:
            hooks = self.task.on_completion if state.is_completed() else self.task.on_failure if state.type in (StateType.FAILED, StateType.CRASHED) else ()
        for hook in hooks:
            try:
                hook(self.task, TaskRunView(self), state)
            except Exception:
                logger.exception("Hook %r of task run %r raised; the run's state is unchanged.", hook, self.record.name)


def run_sync(run: TaskRun) -> None:
    """Run a task's attempts in this thread."""
    token = current_run.set(RunContext(run.flow_run, run))
    try:
        while run.begin_attempt():
            try:
                try:
                    args, kwargs = run.args, run.kwargs
                    if run.scopes:
                        args, kwargs = local_arguments(args, kwargs)
                    value = unshielded(run.task.fn, *args, **kwargs)  # a called task's body: interruptible
                finally:
                    run.end_body()
            except BaseException as exc:
                delay = run.failed(exc)
                if delay is None or not unshielded(run.wait_before_retry, delay):  # interruptible, like the body
                    return
            else:
                run.succeeded(value)
                return
    finally:
        current_run.reset(token)


def run_guarded(run: TaskRun) -> None:
    """`run_sync` for runners that give no future: an engine failure crashes the run."""
    try:
        run_sync(run)
    except BaseException as exc:  # the run must end, whatever broke
        crash_if_unfinished(run, exc)


async def run_async(run: TaskRun) -> None:
    """Run an async task's attempts on the current event loop."""
    token = current_run.set(RunContext(run.flow_run, run))
    run.async_task = asyncio.current_task()
    try:
        while run.begin_attempt():
            try:
                try:
                    args, kwargs = run.args, run.kwargs
                    if run.scopes:
                        args, kwargs = local_arguments(args, kwargs)
                    coro = run.task.fn(*args, **kwargs)
                    timeout = run.task.timeout_seconds
                    value = await (asyncio.wait_for(coro, timeout) if timeout else coro)
                finally:
                    run.end_body()
            except asyncio.TimeoutError:
                delay = run.failed(TaskRunTimeout(run._timeout_message()))
            except BaseException as exc:
                delay = run.failed(exc)
            else:
                run.succeeded(value)
                return
            if delay is None:
                return
            if delay > 0:
                loop = asyncio.get_running_loop()
                if await loop.run_in_executor(None, get_clock().wait, run.flow_run.cancel_event, delay):
                    run.finish(cancelled_awaiting_retry())
                    return
    finally:
        current_run.reset(token)


def crash_if_unfinished(run: TaskRun, error: BaseException | None) -> None:
    """The runner's future ended: if the run is not final, the engine failed it."""
    if not run.record.state.is_final():
        run.finish(Crashed(error, message=f"The runner lost task run {run.record.name!r}: {error!r}"))

