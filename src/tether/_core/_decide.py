"""The rules that fix a run's fate, as pure functions of what happened.

The engine (`TaskRun`, the drivers of its attempts, `FlowRun`) gathers the facts of an
attempt that ended badly (did it time out, was it interrupted or lost with its worker, is
the flow being cancelled, how many retries are left) and of a flow run's end (was it
cancelled, did its body fail, which failures did nobody look at, did a cleanup fail), and
asks these functions for the verdict: the state to move to and, when it retries, after
how long. The texts of those states are written here, once. The functions do no I/O,
take no lock and start no thread, so they are tested as a table
(``tests/test_decisions.py``). Carrying out a verdict (transitions, events, hooks,
timers) is the engine's; the engine's error types are handed in, as the kernel imports
nothing of tether.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tether._core._states import AwaitingRetry, Cancelled, Crashed, Failed, State, TimedOut


class Failure(enum.Enum):
    """What kind of end an attempt came to, other than success."""

    TIMED_OUT = "timed out"  # its timeout interrupted it: retried like a failure, then TimedOut
    CANCELLED = "cancelled"  # its flow is being cancelled: never retried
    CRASHED = "crashed"  # a BaseException that is not an interrupt (SystemExit...): never retried
    LOST = "lost"  # the runner lost the call with its worker: retried while retries are left, then Crashed
    FAILED = "failed"  # the body raised an Exception: retried while retries are left


_RETRIED = frozenset((Failure.TIMED_OUT, Failure.LOST, Failure.FAILED))


def classify_failure(*, timed_out: bool, interrupted: bool, cancelling: bool, is_exception: bool, lost: bool = False) -> Failure:
    """The kind of a failed attempt, from the facts the engine knows (``lost``: its worker died)."""
    if timed_out:
        return Failure.TIMED_OUT
    if interrupted or cancelling:
        return Failure.CANCELLED
    if lost:
        return Failure.LOST
    if not is_exception:
        return Failure.CRASHED
    return Failure.FAILED


def retries_left(failure: Failure, *, retries_done: int, retries: int) -> bool:
    """Whether an attempt that ended so may be retried at all (``retry_condition_fn`` aside):
    the engine asks the condition, and draws the jittered delay, only then."""
    return failure in _RETRIED and retries_done < retries


@dataclass(frozen=True)
class Verdict:
    """The state a failed attempt leads to; ``retry_delay`` is set when it is AwaitingRetry."""

    state: State
    retry_delay: float | None = None


def after_failed_attempt(
    failure: Failure,
    error: BaseException,
    *,
    retries_done: int,
    retries: int,
    retry_delays: Sequence[float],
    may_retry: bool = True,
    run_name: str = "",
) -> Verdict:
    """Retry (AwaitingRetry, after the delay for this attempt) or end the run.

    ``may_retry`` is what the task's ``retry_condition_fn`` said, if it has one; ``run_name``
    names the run in the state of a run lost with its worker."""
    if failure is Failure.CANCELLED:
        return Verdict(Cancelled(error, message=f"Cancelled while running: {type(error).__name__}"))
    if failure is Failure.CRASHED:
        return Verdict(Crashed(error, message=f"The task run was interrupted by {type(error).__name__}."))
    said = str(error) if failure is Failure.TIMED_OUT else f"{type(error).__name__}: {error}"
    if retries_left(failure, retries_done=retries_done, retries=retries) and may_retry:
        delay = float(retry_delays[min(retries_done, len(retry_delays) - 1)]) if retry_delays else 0.0
        return Verdict(AwaitingRetry(f"attempt {retries_done + 1} failed: {said}; retrying in {delay:g} s"), delay)
    if failure is Failure.TIMED_OUT:
        return Verdict(TimedOut(error, message=said))
    if failure is Failure.LOST:
        return Verdict(Crashed(error, message=f"Task run {run_name!r} was lost with its worker: {error}"))
    return Verdict(Failed(error, message=said))


def timeout_message(run_name: str, timeout_seconds: float) -> str:
    return f"Task run {run_name!r} exceeded its timeout of {timeout_seconds:g} s."


def flow_timeout_message(run_name: str, timeout_seconds: float) -> str:
    return f"Flow run {run_name!r} exceeded its timeout of {timeout_seconds:g} s."


def after_abandon(*, timed_out: bool, run_name: str, timeout_seconds: float | None, grace_seconds: float, error_type: Any = None) -> State:
    """An interrupted body did not stop within the grace period (blocked in C): the run ends
    without it. ``error_type`` builds the timeout's error (the engine's TaskRunTimeout)."""
    if timed_out and timeout_seconds is not None:
        message = timeout_message(run_name, timeout_seconds) + f" It did not stop within {grace_seconds:g} s, so it was abandoned."
        return TimedOut(error_type(message) if error_type is not None else None, message=message)
    return Crashed(message=f"Task run {run_name!r} did not stop within {grace_seconds:g} s of its flow's cancellation, so it was abandoned.")


def cancelled_before_start() -> State:
    return Cancelled(message="The flow run was cancelled before this task run started.")


def cancelled_awaiting_retry() -> State:
    return Cancelled(message="The flow run was cancelled while this task run awaited a retry.")


# -- a flow run ------------------------------------------------------------------------------


def flow_retry_delay(*, retries_done: int, retries: int, retry_delays: Sequence[float], cancelling: bool) -> float | None:
    """The delay before the flow body runs again after it raised an Exception, or None if it does not."""
    if retries_done >= retries or cancelling:
        return None
    return float(retry_delays[min(retries_done, len(retry_delays) - 1)]) if retry_delays else 0.0


def flow_failure(
    run_name: str,
    *,
    cancel_reason: BaseException | None,
    timed_out: bool,
    body_error: BaseException | None,
    unresolved: Sequence[tuple[str, State]],
    cleanup_errors: Sequence[BaseException],
    unresolved_error: Callable[[str], BaseException],
    cleanup_error: Callable[[str], BaseException],
) -> State | None:
    """What cancelled or failed a flow run that has ended, in this order: its cancellation
    (``cancel_reason``; ``timed_out`` if its timeout was the reason), its body's error, a
    failed task run nobody looked at (``unresolved``: names and states, the first one
    blamed), a failed cleanup. None if nothing did: the body's returned value decides."""
    if cancel_reason is not None:
        label = "TimedOut" if timed_out else "Cancelled"
        said = f"{type(cancel_reason).__name__} {cancel_reason or ''}".strip()
        return Cancelled(cancel_reason, name=label, message=f"Flow run {run_name!r} was cancelled: {said}")
    if body_error is not None:
        return Failed(body_error, message=f"Flow run {run_name!r} failed: {type(body_error).__name__}: {body_error}")
    if unresolved:
        name, state = unresolved[0]
        error = unresolved_error(
            f"Task run {name!r} ended {state.name} ({state.message}) and nothing resolved its future, so flow run "
            f"{run_name!r} failed. Call .result() on the future, or pass it to a task, to handle the failure."
        )
        error.__cause__ = state.error()
        return Failed(error, message=str(error))
    if cleanup_errors:
        error = cleanup_error(f"Flow run {run_name!r} failed because a resource's cleanup failed: {cleanup_errors[0]}")
        error.__cause__ = cleanup_errors[0]
        return Failed(error, message=str(error))
    return None


def with_late_interrupt(state: State, run_name: str, interrupt: str) -> State:
    """``state``, noting that ``interrupt`` (named as in logs: "SIGTERM") came during the
    cleanup, after the work was over: it changed nothing but the message."""
    said = state.message or f"Flow run {run_name!r} completed."
    return state.copy(message=f"{said} {interrupt} came during the cleanup, after the work was done, and changed nothing.")
