"""The kernel's rules for a failed attempt and for a flow run's end, as tables: no threads,
no sleeps, no engine."""

from __future__ import annotations

import pytest

from tether._core import (
    Completed,
    Failed,
    Failure,
    StateType,
    after_abandon,
    after_failed_attempt,
    cancelled_awaiting_retry,
    cancelled_before_start,
    classify_failure,
)
from tether._core._decide import flow_failure, flow_retry_delay, retries_left, with_late_interrupt


class Timeout(Exception):
    pass


@pytest.mark.parametrize(
    ("timed_out", "interrupted", "cancelling", "is_exception", "expected"),
    [
        (True, False, False, True, Failure.TIMED_OUT),
        (True, True, True, False, Failure.TIMED_OUT),  # the timeout's own interrupt is a timeout
        (False, True, False, False, Failure.CANCELLED),
        (False, False, True, True, Failure.CANCELLED),  # any error while the flow is cancelled
        (False, False, False, False, Failure.CRASHED),  # SystemExit, say
        (False, False, False, True, Failure.FAILED),
    ],
)
def test_classify_failure(timed_out, interrupted, cancelling, is_exception, expected):
    assert classify_failure(timed_out=timed_out, interrupted=interrupted, cancelling=cancelling, is_exception=is_exception) is expected


@pytest.mark.parametrize(
    ("cancelling", "expected"),
    [
        (False, Failure.LOST),
        (True, Failure.CANCELLED),  # a worker lost while the flow is cancelled: cancelled, not retried
    ],
)
def test_a_lost_worker_is_its_own_kind_of_failure(cancelling, expected):
    assert classify_failure(timed_out=False, interrupted=False, cancelling=cancelling, is_exception=True, lost=True) is expected


@pytest.mark.parametrize(
    ("failure", "retries_done", "retries", "expected"),
    [
        (Failure.FAILED, 0, 1, True),
        (Failure.FAILED, 1, 1, False),
        (Failure.TIMED_OUT, 0, 1, True),
        (Failure.LOST, 0, 1, True),
        (Failure.LOST, 1, 1, False),
        (Failure.CANCELLED, 0, 5, False),
        (Failure.CRASHED, 0, 5, False),
    ],
)
def test_retries_left(failure, retries_done, retries, expected):
    assert retries_left(failure, retries_done=retries_done, retries=retries) is expected


@pytest.mark.parametrize(
    ("failure", "retries_done", "retries", "delays", "may_retry", "state_name", "delay"),
    [
        (Failure.FAILED, 0, 0, [0.0], True, "Failed", None),
        (Failure.FAILED, 0, 2, [1.0, 10.0], True, "AwaitingRetry", 1.0),
        (Failure.FAILED, 1, 2, [1.0, 10.0], True, "AwaitingRetry", 10.0),
        (Failure.FAILED, 2, 2, [1.0, 10.0], True, "Failed", None),
        (Failure.FAILED, 1, 5, [3.0], True, "AwaitingRetry", 3.0),  # the last delay repeats
        (Failure.FAILED, 0, 2, [1.0], False, "Failed", None),  # retry_condition_fn said no
        (Failure.TIMED_OUT, 0, 1, [0.0], True, "AwaitingRetry", 0.0),
        (Failure.TIMED_OUT, 1, 1, [0.0], True, "TimedOut", None),
        (Failure.CANCELLED, 0, 3, [0.0], True, "Cancelled", None),  # never retried
        (Failure.CRASHED, 0, 3, [0.0], True, "Crashed", None),
        (Failure.LOST, 0, 1, [4.0], True, "AwaitingRetry", 4.0),  # a worker lost with retries left is retried
        (Failure.LOST, 1, 1, [4.0], True, "Crashed", None),  # ... else Crashed
        (Failure.LOST, 0, 1, [4.0], False, "Crashed", None),  # retry_condition_fn said no: Crashed all the same
    ],
)
def test_after_failed_attempt(failure, retries_done, retries, delays, may_retry, state_name, delay):
    error = ValueError("boom")
    verdict = after_failed_attempt(failure, error, retries_done=retries_done, retries=retries, retry_delays=delays, may_retry=may_retry)
    assert verdict.state.name == state_name
    assert verdict.retry_delay == delay
    if delay is None:
        assert verdict.state.is_final() and verdict.state.data is error
    else:
        assert verdict.state.type is StateType.PENDING and "attempt" in verdict.state.message


def test_the_retry_message_says_which_attempt_and_when():
    verdict = after_failed_attempt(Failure.FAILED, ValueError("boom"), retries_done=0, retries=1, retry_delays=[2.5])
    assert verdict.state.message == "attempt 1 failed: ValueError: boom; retrying in 2.5 s"


def test_after_abandon_says_what_happened():
    timed_out = after_abandon(timed_out=True, run_name="load-1", timeout_seconds=0.5, grace_seconds=2, error_type=Timeout)
    assert timed_out.name == "TimedOut" and isinstance(timed_out.data, Timeout)
    assert timed_out.message == "Task run 'load-1' exceeded its timeout of 0.5 s. It did not stop within 2 s, so it was abandoned."
    crashed = after_abandon(timed_out=False, run_name="load-1", timeout_seconds=None, grace_seconds=2)
    assert crashed.type is StateType.CRASHED and "of its flow's cancellation" in crashed.message


def test_a_run_lost_with_its_worker_is_named_in_its_state():
    lost = ConnectionError("worker 3 died")
    verdict = after_failed_attempt(Failure.LOST, lost, retries_done=0, retries=0, retry_delays=[0.0], run_name="load-7")
    assert verdict.state.name == "Crashed" and verdict.state.data is lost
    assert verdict.state.message == "Task run 'load-7' was lost with its worker: worker 3 died"
    retried = after_failed_attempt(Failure.LOST, lost, retries_done=0, retries=1, retry_delays=[0.0], run_name="load-7")
    assert retried.state.message == "attempt 1 failed: ConnectionError: worker 3 died; retrying in 0 s"


def test_the_cancelled_texts_are_the_kernels():
    assert cancelled_before_start().message == "The flow run was cancelled before this task run started."
    assert cancelled_awaiting_retry().message == "The flow run was cancelled while this task run awaited a retry."
    assert cancelled_before_start().is_final() and cancelled_awaiting_retry().is_final()


@pytest.mark.parametrize(
    ("retries_done", "retries", "delays", "cancelling", "expected"),
    [
        (0, 0, (0.0,), False, None),
        (0, 2, (1.0, 5.0), False, 1.0),
        (1, 2, (1.0, 5.0), False, 5.0),
        (2, 2, (1.0, 5.0), False, None),
        (1, 3, (2.0,), False, 2.0),  # the last delay repeats
        (0, 2, (1.0,), True, None),  # a cancelled flow is not retried
    ],
)
def test_flow_retry_delay(retries_done, retries, delays, cancelling, expected):
    assert flow_retry_delay(retries_done=retries_done, retries=retries, retry_delays=delays, cancelling=cancelling) == expected


class Unresolved(Exception):
    pass


class Cleanup(Exception):
    pass


def _flow_failure(**facts):
    given = {"cancel_reason": None, "timed_out": False, "body_error": None, "unresolved": [], "cleanup_errors": []}
    return flow_failure("etl", **{**given, **facts}, unresolved_error=Unresolved, cleanup_error=Cleanup)


_task_failed = Failed(ValueError("bad row"), message="ValueError: bad row")


@pytest.mark.parametrize(
    ("facts", "name", "message"),
    [
        ({}, None, None),  # nothing failed it: the returned value decides
        ({"cancel_reason": KeyboardInterrupt()}, "Cancelled", "Flow run 'etl' was cancelled: KeyboardInterrupt"),
        ({"cancel_reason": TimeoutError("1 s"), "timed_out": True}, "TimedOut", "Flow run 'etl' was cancelled: TimeoutError 1 s"),
        ({"body_error": ValueError("x")}, "Failed", "Flow run 'etl' failed: ValueError: x"),
        (
            {"unresolved": [("load-1", _task_failed)]},
            "Failed",
            "Task run 'load-1' ended Failed (ValueError: bad row) and nothing resolved its future, so flow run 'etl' "
            "failed. Call .result() on the future, or pass it to a task, to handle the failure.",
        ),
        ({"cleanup_errors": [OSError("disk")]}, "Failed", "Flow run 'etl' failed because a resource's cleanup failed: disk"),
        # The order: cancellation, then the body's error, then unresolved failures, then cleanups.
        ({"cancel_reason": KeyboardInterrupt(), "body_error": ValueError("x")}, "Cancelled", None),
        ({"body_error": ValueError("x"), "unresolved": [("load-1", _task_failed)]}, "Failed", "Flow run 'etl' failed: ValueError: x"),
        ({"unresolved": [("load-1", _task_failed)], "cleanup_errors": [OSError("disk")]}, "Failed", None),
    ],
)
def test_flow_failure(facts, name, message):
    state = _flow_failure(**facts)
    if name is None:
        assert state is None
        return
    assert state.name == name and state.is_final()
    if message is not None:
        assert state.message == message


def test_a_flow_failed_by_what_nobody_looked_at_says_why_and_keeps_the_cause():
    unresolved = _flow_failure(unresolved=[("load-1", _task_failed), ("load-2", _task_failed)])
    assert isinstance(unresolved.data, Unresolved) and "'load-1'" in unresolved.message  # the first is blamed
    assert unresolved.data.__cause__ is _task_failed.data
    cleanup_error = OSError("disk")
    cleanup = _flow_failure(cleanup_errors=[cleanup_error])
    assert isinstance(cleanup.data, Cleanup) and cleanup.data.__cause__ is cleanup_error


def test_a_late_interrupt_changes_only_the_message():
    state = with_late_interrupt(Completed(42), "etl", "SIGTERM")
    assert state.name == "Completed" and state.result() == 42
    assert state.message == "Flow run 'etl' completed. SIGTERM came during the cleanup, after the work was done, and changed nothing."
    failed = with_late_interrupt(Failed(ValueError("x"), message="Flow run 'etl' failed: ValueError: x"), "etl", "Ctrl-C (SIGINT)")
    assert failed.message.startswith("Flow run 'etl' failed: ValueError: x Ctrl-C (SIGINT) came during the cleanup")
