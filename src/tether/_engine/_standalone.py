"""A task called outside any flow run: a real task run, as in Prefect 3.

`run_standalone` runs the call through the same `TaskRun` a flow's called task goes
through: retries (their delays on the injectable clock), the timeout, the cache, concurrency
slots for its tags (through the run store, as in a flow), hooks, ``return_state``, and the
same events (`RunCreated`, then each transition), so the run store keeps it as a task run
with no flow run. `StandaloneHost` is that run's `TaskRunHost`: it dispatches on the
calling thread (no runner, no thread pool) and is never cancelled; only Ctrl-C or SIGTERM
on the main thread stops the run, which then ends Cancelled, and the interrupt goes on
up to the caller. A task called in such a run's body is a standalone run of its own.

Inside the body, `tether.runtime.task_run` and `get_run_logger()` answer for the run;
the context's flow run is the host, whose record has no id or name (`tether.runtime.flow_run.id`
is None). What it does not do: ``.submit()`` and ``.map()`` need a flow run's runner, so
they are refused in the body; ``wait_for`` has nothing to wait for (a future outside a flow
run has ended already) and is ignored.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterable
from typing import Any, ClassVar, cast

from tether._arguments import rewrite
from tether._context import RunContext, current_tags, events, open_blocks
from tether._core import Cancelled, EventStream, RunCreated, RunRecord, State, StateType
from tether._engine._shells import run_async, run_sync
from tether._engine._task_run import TaskDefinition, TaskRun, TaskRunHost
from tether._errors import Terminated, UsageError
from tether._futures import TaskFuture
from tether._interrupt import interrupt_main_thread, wait_interruptibly
from tether._leases import use_store
from tether._limits import Limiter, limiter
from tether._logging import configure_logging, enable_log_prints
from tether._resources import join_scopes, scope_of
from tether._run_names import render_run_name
from tether._run_views import with_defaults
from tether._settings import Settings
from tether._shield import active as shield_active
from tether._shield import defer as defer_interrupt
from tether._shield import shielded
from tether.store import enable as enable_store
from tether.store import flush as flush_store

_MAIN_THREAD = threading.main_thread().ident
#: Never set: nothing cancels a standalone run but a signal, which raises in its body.
_NEVER = threading.Event()


class _NoFlowRun:
    """The record of the flow run there is not: `tether.runtime.flow_run` answers as
    Prefect's does outside a flow (no id, no name, no tags)."""

    __slots__ = ()
    id = None
    name = None
    parent_id = None
    flow_run_id = None
    tags: frozenset[str] = frozenset()
    run_count = 0


class _NoFlowOptions:
    """The options of the flow there is not: nothing persisted for it, prints as the task says."""

    __slots__ = ()
    name = None
    log_prints = None
    persist_result = None


class StandaloneHost:
    """The `TaskRunHost` of the task runs of one call outside any flow run (the call's own
    run, and the runs its body calls). Made per top-level call: it holds the signal handlers
    of that call while it runs on the main thread."""

    __slots__ = ("_previous_handlers", "_waking")

    record = _NoFlowRun()
    options = _NoFlowOptions()
    parameters: ClassVar[dict[str, Any]] = {}  # the flow's, for cache keys: there is none; never written
    cancel_event = _NEVER
    cancelling = False
    flow = None
    parent = None
    run_id = None

    def __init__(self) -> None:
        self._previous_handlers: dict[int, Any] = {}
        self._waking: TaskRun | None = None  # a run on the main thread whose timeout sent SIGINT

    @property
    def limiter(self) -> Limiter:
        return limiter()

    @property
    def events(self) -> EventStream:
        return events()

    @property
    def grace_seconds(self) -> float:
        return Settings.from_env().interrupt_grace_seconds  # read only when a timeout gives up on a body

    # -- what code in a run may ask of its flow run (`RunView`) ----------------------------

    def submit_task(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] | None, /) -> TaskFuture[Any]:
        raise UsageError(
            f"Task {task.name!r} was submitted (.submit() or .map()) inside a task run that is not part of any flow "
            "run, so there is no runner to run it. Call the task directly (it runs as a task run of its own), or run "
            "the outer task inside a function decorated with @flow."
        )

    def call_task(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] | None, return_state: bool, /) -> Any:
        return self.call(task, args, kwargs, return_state, outermost=False)

    # -- what a task run needs of its host (`TaskRunHost`) -----------------------------

    def dispatch(self, run: TaskRun) -> None:
        assert run.on_ready is not None  # every run here is a called one
        run.on_ready()

    def task_run_ended(self, run: TaskRun) -> None:
        state = run.record.state
        for scope in run.scopes:
            scope.member_ended(run, state)

    def wake_for_timeout(self, run: TaskRun) -> bool:
        """Interrupt ``run``'s body on the main thread at its timeout through SIGINT (which
        wakes a sleep there, as an exception sent to the thread does not): only if this
        call's handler receives it."""
        if signal.SIGINT not in self._previous_handlers:
            return False
        self._waking = run
        interrupt_main_thread()
        return True

    # -- one call ------------------------------------------------------------------------

    def call(self, task: TaskDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool, *, outermost: bool, scopes: tuple[Any, ...] = ()) -> Any:
        if task.options.is_async:
            return self._call_async(task, args, kwargs, return_state, outermost, scopes)
        if outermost:
            _begin(task)
            if threading.get_ident() == _MAIN_THREAD:
                self._previous_handlers = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            run, ready = shielded(self._start, task, args, kwargs, scopes)
            try:
                if not run.is_done():
                    if not ready.acquire(blocking=False):  # usually released already, in start()
                        wait_interruptibly(ready)  # for a concurrency slot
                    shielded(run_sync, run)  # the engine's steps around the body; the body is not shielded
            except BaseException as exc:  # Ctrl-C or SIGTERM while waiting for a slot or a retry
                _end_interrupted(run, exc)
                raise
        finally:
            if outermost:
                self._end()
        return _outcome(run.record.state, return_state)

    async def _call_async(self, task: TaskDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool, outermost: bool, scopes: tuple[Any, ...]) -> Any:
        if outermost:
            _begin(task)
        try:
            loop = asyncio.get_running_loop()
            ready = loop.create_future()
            run = self._create(task, args, kwargs, scopes)
            run.on_ready = lambda: (loop.call_soon_threadsafe(ready.set_result, None), None)[1]
            run.start()
            try:
                if not run.is_done():
                    await ready
                    await run_async(run)
            except BaseException as exc:  # cancelled while waiting for a slot (a retry's wait ends the run itself)
                _end_interrupted(run, exc)
                raise
        finally:
            if outermost:
                flush_store(until="safe")
        return _outcome(run.record.state, return_state)

    def _start(self, task: TaskDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], scopes: tuple[Any, ...]) -> tuple[TaskRun, Any]:
        run = self._create(task, args, kwargs, scopes)
        ready = threading.Lock()  # released once the run may start; cheaper than an Event
        ready.acquire()
        run.on_ready = ready.release
        run.start()
        return run, ready

    def _create(self, task: TaskDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], scopes: tuple[Any, ...]) -> TaskRun:
        options = task.options
        parameters = options.bind(args, kwargs)
        members = [*open_blocks.get(), *scopes]  # the transactions around the call (resources outside a flow are plain)
        extra_tags = current_tags.get()
        tags = options.tags | extra_tags if extra_tags else options.tags
        record = RunRecord("task", options.name, None, None, tags)
        # The protocol's record has a str id; this host's is None, as Prefect reports "no flow run".
        run = TaskRun(task, options, cast(TaskRunHost, self), record, args, kwargs, parameters, [], members)
        run.observed = True
        if options.task_run_name is not None:
            context = with_defaults(options.signature, parameters)
            record.name = render_run_name(options.owner, "task_run_name", options.task_run_name, context, RunContext(cast(Any, self), run))
        join_scopes(members, options.name, record.id, run)
        stream = events()
        if stream.active:
            stream.emit(RunCreated(record.id, "task", options.name, None, None, tags, _recorded(parameters), record.state.time, record.name))
        if tags:
            store = enable_store(open_now=False)  # opened when first used: the records are spooled meanwhile
            if store is not None:
                use_store(store, self.limiter)  # the tags' limits as the store knows them now
        return run

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Ctrl-C or SIGTERM: raise in the body (after the engine step it interrupted, if it
        interrupted one: see `_shield`)."""
        waking, self._waking = self._waking, None
        if waking is not None and signum == signal.SIGINT:  # not Ctrl-C: a timeout
            if waking.in_body:
                raise KeyboardInterrupt  # into the body; TaskRun.failed sees the timeout it was for
            return
        reason: BaseException = KeyboardInterrupt() if signum == signal.SIGINT else Terminated()
        if shield_active():
            defer_interrupt(reason)
            return
        raise reason

    def _end(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}
        flush_store(until="safe")  # as a top-level flow run's end: the records outlive this process


def run_standalone(task: TaskDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] | None, return_state: bool, scopes: tuple[Any, ...] = ()) -> Any:
    """Run ``task`` called outside any flow run (a coroutine for an async task, as in Prefect);
    ``scopes``: the plain transaction the call is a member of, if any."""
    return StandaloneHost().call(task, args, kwargs, return_state, outermost=True, scopes=scopes)


def _begin(task: TaskDefinition) -> None:
    configure_logging()
    enable_store(open_now=False)  # record this run (idempotent; a changed TETHER_HOME switches stores)
    if task.options.log_prints:
        enable_log_prints()


def _recorded(parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters as recorded: a resource's value is never persisted, only named."""
    def describe(node: Any) -> Any:
        scope = scope_of(node)
        return node if scope is None else f"<resource {scope.name}>"

    return {k: rewrite(v, describe) for k, v in parameters.items()}


def _end_interrupted(run: TaskRun, exc: BaseException) -> None:
    """The call was interrupted outside the body (waiting for a slot or for a retry): the run
    ends Cancelled, and the interrupt goes on up."""
    if run.record.state.is_final():
        return
    if run.slot_request is not None:
        run.flow_run.limiter.withdraw(run.slot_request)
    how = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C (SIGINT)" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__
    run.finish(Cancelled(exc, message=f"Task run {run.record.name!r} was interrupted by {how} while it waited ({run.record.state.name})."))


def _outcome(state: State, return_state: bool) -> Any:
    error = state.data if state.type is StateType.CANCELLED else None
    if isinstance(error, (KeyboardInterrupt, Terminated)):
        raise error  # Ctrl-C or SIGTERM stops the caller too, whatever it asked for
    return state if return_state else state.result()


__all__ = ["StandaloneHost", "run_standalone"]
