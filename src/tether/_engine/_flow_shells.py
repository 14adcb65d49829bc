"""The shells that run a flow body: `run_flow_sync` in the calling thread, `run_flow_async`
on the caller's event loop.

They are thin: they make the `FlowRun`, call the body, and ask the flow run what every
outcome leads to (retry, cancel, the final state). Both treat an interrupt that lands in
the engine's own steps around the body (not in the body) alike: the flow run is cancelled
with it and still ends. The decorator that calls them is `tether._flow`; the shells of
task attempts are `_shells`.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
from typing import Any, Protocol

from tether._context import current_run
from tether._engine._flow_run import FlowRun
from tether._errors import Terminated
from tether._interrupt import let_go_of_logging_locks
from tether._options import FlowOptions
from tether._runtime import get_clock


class FlowDefinition(Protocol):
    """A flow as the engine takes it (`FlowFunction` is the one): its checked options."""

    @property
    def options(self) -> FlowOptions: ...


def _new_flow_run(flow: FlowDefinition, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[FlowRun, tuple[Any, ...], dict[str, Any]]:
    """The flow run, and the arguments to call its body with (coerced, if validated)."""
    options = flow.options
    parameters = options.bind(args, kwargs)
    if options.validator is not None:
        validated = options.validator.validate(parameters)
        if validated is not parameters:
            parameters = validated
            bound = inspect.BoundArguments(options.signature, parameters)
            args, kwargs = bound.args, bound.kwargs
    ctx = current_run.get()
    # A flow called inside a task that runs outside any flow is a top-level flow run: the
    # task's host is no flow run (its record has no id).
    parent = ctx.flow_run if ctx is not None and ctx.flow_run.record.id is not None else None
    return FlowRun(options, flow, parameters, parent), args, kwargs


def run_flow_sync(flow: FlowDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool) -> Any:
    flow_run, args, kwargs = _new_flow_run(flow, args, kwargs)
    fn = flow_run.options.fn
    flow_run.begin()
    try:
        while True:
            try:
                value = fn(*args, **kwargs)
            except BaseException as exc:
                let_go_of_logging_locks(exc)  # an interrupt may have left a log handler's lock held
                delay = flow_run.body_failed(exc)
                if delay is None:
                    break
                if delay > 0 and get_clock().wait(flow_run.cancel_event, delay):
                    break  # cancelled while awaiting the retry
                flow_run.retry()
            else:
                flow_run.body_returned(value)
                break
    except BaseException as exc:  # a signal landed in the engine's own steps around the body
        flow_run.cancel(exc)
    finally:
        state = flow_run.end()
    return flow_run.outcome(state, return_state)


async def run_flow_async(flow: FlowDefinition, args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool) -> Any:
    flow_run, args, kwargs = _new_flow_run(flow, args, kwargs)
    fn = flow_run.options.fn
    flow_run.begin()
    sigterm = _SigtermCancels(flow_run)
    try:
        while True:
            try:
                sigterm.in_body = True
                value = await fn(*args, **kwargs)
            except BaseException as exc:
                sigterm.in_body = False
                if isinstance(exc, asyncio.CancelledError):
                    exc = KeyboardInterrupt() if flow_run.timed_out else (sigterm.reason or exc)
                delay = flow_run.body_failed(exc)
                if delay is None:
                    break
                if delay > 0 and await _wait_on_clock(flow_run.cancel_event, delay):
                    break  # cancelled while awaiting the retry
                flow_run.retry()
            else:
                sigterm.in_body = False
                flow_run.body_returned(value)
                break
    except BaseException as exc:  # an interrupt (a cancellation of this task) in the engine's own steps
        flow_run.cancel(exc)
    finally:
        try:
            state = await asyncio.get_running_loop().run_in_executor(None, flow_run.wait_and_decide)
        finally:
            sigterm.remove()
            flow_run.restore()
    return flow_run.outcome(state, return_state)


class _SigtermCancels:
    """SIGTERM for an async flow on the main thread: ``asyncio.run`` turns Ctrl-C into a
    cancellation of the flow's task, but leaves SIGTERM to end the process at once, with
    nothing cleaned up. This handler, on the loop, cancels the body the same way with
    `Terminated` as the reason (so the run ends Cancelled, its resources cleaned up, and
    the process exits 143), or, once the body is over, cancels what is left of the run."""

    def __init__(self, flow_run: FlowRun) -> None:
        self.flow_run = flow_run
        self.in_body = False
        self.reason: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Any = None
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread's loop only
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        previous = signal.getsignal(signal.SIGTERM)
        try:
            loop.add_signal_handler(signal.SIGTERM, self._on_sigterm, task)
        except (NotImplementedError, RuntimeError, ValueError):  # no signals on this loop
            return
        self._loop, self._previous = loop, previous

    def _on_sigterm(self, task: asyncio.Task[Any] | None) -> None:
        reason = Terminated()
        if self.in_body and self.reason is None and task is not None:
            # A loop callback, not a signal handler: nothing it interrupts holds a lock, so the
            # run is cancelled first (its scopes fail with `Terminated`, not with the body's
            # CancelledError), then the body.
            self.reason = reason
            self.flow_run.cancel(reason)
            task.cancel()
            return
        # The body is over: cancel the rest on a thread of its own, as the sync flow's handler does
        # (the wait for task runs and cleanups must not be cut short, and may hold locks).
        threading.Thread(target=self.flow_run.cancel, args=(reason,), name="tether-cancel", daemon=True).start()

    def remove(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._previous)
            self._loop = None


async def _wait_on_clock(event: threading.Event, seconds: float) -> bool:
    """`Clock.wait` without blocking the event loop; True if ``event`` was set."""
    return await asyncio.get_running_loop().run_in_executor(None, get_clock().wait, event, seconds)
