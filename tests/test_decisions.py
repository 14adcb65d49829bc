"""The kernel's rules for a failed attempt and for a flow run's end, as tables: no threads,
no sleeps, no engine."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from tether._core import (
    Completed,
    EventStream,
    Failed,
    Failure,
    RunRecord,
    StateType,
    after_abandon,
    after_failed_attempt,
    cancelled_awaiting_retry,
    cancelled_before_start,
    classify_failure,
)
from tether._core._decide import flow_failure, flow_retry_delay, flow_timeout_message, retries_left, with_late_interrupt
from tether._engine._task_run import TaskRun
from tether._errors import TaskRunCancelled, TaskRunTimeout, WorkerLost
from tether._limits import Limiter
from tether._task import task


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


# -- TaskRun applies the verdicts: with a fake host, no flow, no runner, no thread -------------


class _FakeHost:
    """The little a TaskRun needs of its flow run (`TaskRunHost`), and a note of what it was told."""

    def __init__(self) -> None:
        self.record = RunRecord("flow", "etl")
        self.options = SimpleNamespace(name="etl", persist_result=None, log_prints=False)
        self.flow = None
        self.parameters: dict = {}
        self.limiter = Limiter()
        self.events = EventStream()  # nobody listens
        self.cancel_event = threading.Event()  # only looked at, never waited on
        self.cancelling = False
        self.run_id = self.record.id
        self.grace_seconds = 2.0
        self.dispatched: list = []
        self.ended: list = []

    def dispatch(self, run):
        self.dispatched.append(run)

    def task_run_ended(self, run):
        self.ended.append(run)

    def wake_for_timeout(self, run):
        return False

    def submit_task(self, *args):
        raise AssertionError("not asked")

    def call_task(self, *args):
        raise AssertionError("not asked")


class _FakeAttempt:
    def __init__(self, lets_go: bool) -> None:
        self.lets_go = lets_go
        self.cancelled = self.abandoned = 0

    def cancel(self):
        self.cancelled += 1

    def abandon(self):
        self.abandoned += 1
        return self.lets_go


def _running(retries: int = 0, timeout_seconds: float | None = None) -> tuple[TaskRun, _FakeHost]:
    def load():
        return None

    options = task(retries=retries, timeout_seconds=timeout_seconds)(load).options
    host = _FakeHost()
    record = RunRecord("task", "load-1", host.record.id, host.record.id)
    run = TaskRun(None, options, host, record, (), {}, {}, [], [])
    run.start()
    assert host.dispatched == [run]  # no upstream, no cache, no slot: straight to the runner
    run.attempt = _FakeAttempt(lets_go=True)  # a driver of its own: no timer in this thread
    assert run.begin_attempt() and run.record.state.name == "Running"
    return run, host


@pytest.mark.parametrize(
    ("retries", "error", "lost", "cancelling", "state_name", "delay"),
    [
        (1, ValueError("bad row"), False, False, "AwaitingRetry", 0.0),
        (0, ValueError("bad row"), False, False, "Failed", None),
        (1, WorkerLost("worker 3 died"), True, False, "AwaitingRetry", 0.0),
        (0, WorkerLost("worker 3 died"), True, False, "Crashed", None),
        (3, WorkerLost("worker 3 died"), True, True, "Cancelled", None),  # lost while the flow is cancelled
        (3, ValueError("bad row"), False, True, "Cancelled", None),
        (3, KeyboardInterrupt(), False, False, "Cancelled", None),
        (3, SystemExit(1), False, False, "Crashed", None),
        (1, TaskRunTimeout("Task run 'load-1' exceeded its timeout of 1 s."), False, False, "AwaitingRetry", 0.0),
        (0, TaskRunTimeout("Task run 'load-1' exceeded its timeout of 1 s."), False, False, "TimedOut", None),
    ],
)
def test_a_task_run_applies_the_kernels_verdict(retries, error, lost, cancelling, state_name, delay):
    run, host = _running(retries)
    run.end_body()
    host.cancelling = cancelling
    assert run.failed(error, lost=lost) == delay
    assert run.record.state.name == state_name
    assert (host.ended == [run]) is (delay is None)  # only a final state ends the run
    if state_name == "Crashed" and lost:
        assert run.record.state.message == "Task run 'load-1' was lost with its worker: worker 3 died"


@pytest.mark.parametrize(
    ("lets_go", "timed_out", "state_name", "message"),
    [
        (True, False, "Crashed", "Task run 'load-1' did not stop within 2 s of its flow's cancellation, so it was abandoned."),
        (True, True, "TimedOut", "Task run 'load-1' exceeded its timeout of 1 s. It did not stop within 2 s, so it was abandoned."),
        (False, False, "Running", None),  # the driver's attempt is ending after all: its own end decides
    ],
)
def test_a_task_run_gives_up_on_an_attempt_through_its_driver(lets_go, timed_out, state_name, message):
    run, host = _running(timeout_seconds=1)
    run.attempt = attempt = _FakeAttempt(lets_go)
    run._abandon(run.record.run_count, TaskRunTimeout if timed_out else TaskRunCancelled)
    assert attempt.abandoned == 1
    assert run.record.state.name == state_name
    if message is not None:
        assert run.record.state.message == message and host.ended == [run]
    run._abandon(run.record.run_count - 1, TaskRunCancelled)  # an earlier attempt's grace period: nothing
    assert attempt.abandoned == 1


def test_a_task_run_awaiting_a_retry_is_cancelled_with_the_kernels_text():
    run, host = _running(retries=1)
    run.end_body()
    assert run.failed(ValueError("bad row")) == 0.0
    run.cancelled_awaiting_retry()
    assert run.record.state.name == "Cancelled"
    assert run.record.state.message == "The flow run was cancelled while this task run awaited a retry."


def test_the_timeout_texts_name_the_run_and_its_timeout():
    assert flow_timeout_message("etl", 3600) == "Flow run 'etl' exceeded its timeout of 3600 s."
    assert flow_timeout_message("etl", 0.25) == "Flow run 'etl' exceeded its timeout of 0.25 s."
