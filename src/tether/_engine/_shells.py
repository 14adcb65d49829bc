"""The shells that run a task run's attempts in this process: in a thread, or on an event loop.

They are thin and the only place where the sync and async ways of running a body part:
each asks `TaskRun` what to do at every step (begin, succeeded, failed, wait for a retry)
and decides nothing. The async shell is an `Attempt` of its run (`_AsyncAttempt`), so that
cancelling the flow cancels its asyncio task from any thread; the thread shell has none (the
run raises in its thread). Attempts on another process are `_remote`'s; a flow body's
shells are `_flow_shells`'.
"""

from __future__ import annotations

import asyncio

from tether._context import RunContext, current_run
from tether._core import Crashed
from tether._engine._task_run import TaskRun
from tether._errors import TaskRunTimeout
from tether._interrupt import let_go_of_logging_locks
from tether._runtime import get_clock
from tether._shield import unshielded
from tether._stand_in import local_arguments


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
                    value = unshielded(run.options.fn, *args, **kwargs)  # a called task's body: interruptible
                finally:
                    run.end_body()
            except BaseException as exc:
                let_go_of_logging_locks(exc)  # an interrupt may have left a log handler's lock held
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


class _AsyncAttempt:
    """An async task run's asyncio task, as the run's `Attempt`: cancelled from any thread."""

    __slots__ = ("loop", "task")

    def __init__(self, task: asyncio.Task[None], loop: asyncio.AbstractEventLoop) -> None:
        self.task = task
        self.loop = loop

    def cancel(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)

    def abandon(self) -> bool:
        # Nothing of the flow's to let go of: the coroutine is left to its loop, and what it
        # does when it ends is dropped (the run's first final state wins).
        return True


async def run_async(run: TaskRun) -> None:
    """Run an async task's attempts on the current event loop."""
    token = current_run.set(RunContext(run.flow_run, run))
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None  # a coroutine awaited on a running loop runs in a task
    run.attempt = _AsyncAttempt(task, loop)
    try:
        while run.begin_attempt():
            try:
                try:
                    args, kwargs = run.args, run.kwargs
                    if run.scopes:
                        args, kwargs = local_arguments(args, kwargs)
                    coro = run.options.fn(*args, **kwargs)
                    timeout = run.options.timeout_seconds
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
                try:
                    cancelled = await loop.run_in_executor(None, get_clock().wait, run.flow_run.cancel_event, delay)
                except asyncio.CancelledError:  # the flow's cancel reached this task before its event did
                    cancelled = True
                if cancelled:
                    run.cancelled_awaiting_retry()
                    return
    finally:
        current_run.reset(token)


def crash_if_unfinished(run: TaskRun, error: BaseException | None) -> None:
    """The runner's future ended: if the run is not final, the engine failed it."""
    if not run.record.state.is_final():
        run.finish(Crashed(error, message=f"The runner lost task run {run.record.name!r}: {error!r}"))
