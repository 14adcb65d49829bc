"""The kernel's rules for a failed attempt, as a table: no threads, no sleeps, no engine."""

from __future__ import annotations

import pytest

from tether._core import (
    Failure,
    StateType,
    after_abandon,
    after_failed_attempt,
    classify_failure,
)


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
