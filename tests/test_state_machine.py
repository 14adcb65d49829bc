"""The run-state machine alone: `tether._core` with no threads, no engine, no sleeps.

These tests feed states to `transition` and check what it allows, what it refuses
(and how it says so), what it records and which events it returns. They also pin
what `State.result()` does for every kind of state.
"""

from __future__ import annotations

import ast
import datetime
import pathlib

import pytest

import tether._core as core
from tether._core import (
    FINAL_TYPES,
    AwaitingConcurrencySlot,
    AwaitingRetry,
    Cached,
    Cancelled,
    Completed,
    Crashed,
    EventStream,
    Failed,
    InMemoryRecorder,
    InvalidTransition,
    Pending,
    Retrying,
    RunCancelled,
    RunCrashed,
    RunFailed,
    Running,
    RunRecord,
    State,
    StateChanged,
    StateType,
    TimedOut,
    UnfinishedRun,
    is_final,
    transition,
)

FINAL_MAKERS = {
    "Completed": Completed,
    "Failed": Failed,
    "Cancelled": Cancelled,
    "Crashed": Crashed,
    "Cached": Cached,
    "TimedOut": TimedOut,
}

EVERY_MAKER = {
    **FINAL_MAKERS,
    "Pending": Pending,
    "Running": Running,
    "AwaitingRetry": AwaitingRetry,
    "Retrying": Retrying,
    "AwaitingConcurrencySlot": AwaitingConcurrencySlot,
}


def make(name: str) -> State:
    return EVERY_MAKER[name]()


def walk(run: RunRecord, *names: str) -> list[StateChanged]:
    return [transition(run, make(n)) for n in names]


def task_run(name: str = "extract") -> RunRecord:
    return RunRecord("task", name, flow_run_id="f" * 32, parent_id="p" * 32)


# -- RunRecord -------------------------------------------------------------------------


def test_a_new_run_is_pending_with_a_one_step_history_and_no_attempts():
    run = task_run()
    assert run.state.type is StateType.PENDING
    assert run.state.name == "Pending"
    assert run.history == [run.state]
    assert run.run_count == 0
    assert not is_final(run)
    assert isinstance(run.id, str) and len(run.id) == 32


def test_run_ids_are_unique_and_can_be_given():
    assert task_run().id != task_run().id
    assert RunRecord("flow", "etl", run_id="abc").id == "abc"


def test_a_run_can_start_in_a_given_state():
    initial = AwaitingConcurrencySlot("waiting for tag:mysql")
    run = RunRecord("task", "load", initial=initial)
    assert run.state is initial
    assert run.history == [initial]


def test_story_names_kind_name_short_id_and_every_state():
    run = RunRecord("task", "extract", run_id="0123456789abcdef")
    walk(run, "Running", "AwaitingRetry", "Retrying", "Failed")
    assert run.story() == "task run 'extract' (01234567): Pending -> Running -> AwaitingRetry -> Retrying -> Failed"


# -- allowed transitions ------------------------------------------------------------------


def test_pending_to_running_to_completed_returns_one_event_per_step():
    run = task_run()
    first, second = walk(run, "Running", "Completed")
    assert isinstance(first, StateChanged)
    assert (first.old.name, first.new.name) == ("Pending", "Running")
    assert (second.old.name, second.new.name) == ("Running", "Completed")
    assert run.state is second.new
    assert [s.name for s in run.history] == ["Pending", "Running", "Completed"]
    assert is_final(run)


def test_the_event_describes_the_run():
    run = task_run("load")
    event = transition(run, Running())
    assert event.run_id == run.id
    assert event.kind == "task"
    assert event.name == "load"
    assert event.flow_run_id == "f" * 32
    assert event.parent_id == "p" * 32
    assert event.run_count == 1


def test_the_new_state_object_is_stored_as_given():
    run = task_run()
    running = Running(message="on worker 3")
    transition(run, running)
    done = Completed(42, message="ok")
    transition(run, done)
    assert run.state is done
    assert run.history[1] is running
    assert run.state.data == 42


@pytest.mark.parametrize("final", sorted(FINAL_MAKERS))
def test_a_pending_run_may_end_without_running(final):
    # A cache hit (Cached), a failed upstream (Failed), a cancelled flow (Cancelled)...
    run = task_run()
    event = transition(run, make(final))
    assert event.new.name == final
    assert run.run_count == 0
    assert is_final(run)


@pytest.mark.parametrize("final", sorted(FINAL_MAKERS))
def test_a_running_run_may_end_in_any_final_state(final):
    run = task_run()
    walk(run, "Running", final)
    assert run.state.name == final
    assert is_final(run)


def test_a_run_may_wait_for_a_concurrency_slot_then_run():
    run = task_run()
    walk(run, "AwaitingConcurrencySlot", "Running", "Completed")
    assert [s.name for s in run.history] == ["Pending", "AwaitingConcurrencySlot", "Running", "Completed"]
    assert run.run_count == 1


def test_a_retry_goes_running_awaiting_retry_retrying():
    run = task_run()
    events = walk(run, "Running", "AwaitingRetry", "Retrying", "AwaitingRetry", "Retrying", "Completed")
    assert [e.new.name for e in events] == [
        "Running",
        "AwaitingRetry",
        "Retrying",
        "AwaitingRetry",
        "Retrying",
        "Completed",
    ]
    assert [e.run_count for e in events] == [1, 1, 2, 2, 3, 3]
    assert run.run_count == 3


def test_run_count_counts_every_move_into_running():
    run = task_run()
    assert run.run_count == 0
    transition(run, Running())
    assert run.run_count == 1
    transition(run, AwaitingRetry())
    assert run.run_count == 1  # waiting is not an attempt
    transition(run, Retrying())
    assert run.run_count == 2
    transition(run, Failed())
    assert run.run_count == 2


def test_an_awaiting_retry_run_may_be_cancelled_before_retrying():
    run = task_run()
    walk(run, "Running", "AwaitingRetry", "Cancelled")
    assert run.state.is_cancelled()


# -- refused transitions ----------------------------------------------------------------


@pytest.mark.parametrize("final", sorted(FINAL_MAKERS))
@pytest.mark.parametrize("target", sorted(EVERY_MAKER))
def test_final_states_are_final(final, target):
    run = task_run()
    walk(run, "Running", final)
    before = list(run.history)
    with pytest.raises(InvalidTransition) as caught:
        transition(run, make(target))
    message = str(caught.value)
    assert "is final" in message
    assert f"from {final} to {target}" in message
    # Refusal changes nothing.
    assert run.history == before
    assert run.state is before[-1]
    assert run.run_count == 1
    error = caught.value
    assert (error.run_id, error.old, error.new.name) == (run.id, before[-1], target)
    assert error.story == run.story() and error.story.endswith(f"Pending -> Running -> {final}")


def test_an_invalid_transition_pickles_with_its_fields():
    import pickle

    run = task_run()
    walk(run, "Running", "Completed")
    with pytest.raises(InvalidTransition) as caught:
        transition(run, make("Running"))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value) and copy.run_id == run.id and copy.story == run.story()
    assert copy.old.name == "Completed" and copy.new.name == "Running"


@pytest.mark.parametrize("target", ["Running", "Retrying"])
def test_a_running_run_cannot_start_again(target):
    run = task_run()
    walk(run, "Running")
    with pytest.raises(InvalidTransition, match="already running"):
        transition(run, make(target))
    assert run.run_count == 1
    assert [s.name for s in run.history] == ["Pending", "Running"]


@pytest.mark.parametrize("target", ["Pending", "AwaitingConcurrencySlot"])
def test_running_goes_back_to_pending_only_to_await_a_retry(target):
    run = task_run()
    walk(run, "Running")
    with pytest.raises(InvalidTransition, match="await a retry"):
        transition(run, make(target))
    assert run.state.name == "Running"


@pytest.mark.parametrize("before", [(), ("AwaitingConcurrencySlot",)])
def test_retrying_is_refused_unless_the_run_awaits_a_retry(before):
    run = task_run()
    walk(run, *before)
    with pytest.raises(InvalidTransition, match="only a run AwaitingRetry can be retried"):
        transition(run, Retrying())
    assert run.run_count == 0


def test_an_invalid_transition_names_the_run_and_tells_its_story():
    run = RunRecord("task", "extract_sales", run_id="deadbeef" * 4)
    walk(run, "Running", "AwaitingRetry", "Retrying", "Completed")
    with pytest.raises(InvalidTransition) as caught:
        transition(run, Failed(message="late failure"))
    message = str(caught.value)
    assert "task run 'extract_sales'" in message
    assert "from Completed to Failed" in message
    assert "Completed is final." in message
    assert "deadbeef" in message
    assert "Pending -> Running -> AwaitingRetry -> Retrying -> Completed" in message


def test_invalid_transition_is_a_runtime_error():
    assert issubclass(InvalidTransition, RuntimeError)


def test_a_flow_run_story_says_flow():
    run = RunRecord("flow", "etl")
    walk(run, "Running", "Cancelled")
    with pytest.raises(InvalidTransition, match=r"flow run 'etl'.*Pending -> Running -> Cancelled"):
        transition(run, Running())


# -- State --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("maker", "type_", "name"),
    [
        (Pending, StateType.PENDING, "Pending"),
        (Running, StateType.RUNNING, "Running"),
        (Completed, StateType.COMPLETED, "Completed"),
        (Failed, StateType.FAILED, "Failed"),
        (Cancelled, StateType.CANCELLED, "Cancelled"),
        (Crashed, StateType.CRASHED, "Crashed"),
        (AwaitingRetry, StateType.PENDING, "AwaitingRetry"),
        (Retrying, StateType.RUNNING, "Retrying"),
        (AwaitingConcurrencySlot, StateType.PENDING, "AwaitingConcurrencySlot"),
        (TimedOut, StateType.FAILED, "TimedOut"),
        (Cached, StateType.COMPLETED, "Cached"),
    ],
)
def test_named_states_refine_one_of_six_types(maker, type_, name):
    state = maker()
    assert state.type is type_
    assert state.name == name
    assert state.is_final() == (type_ in FINAL_TYPES)


def test_final_types_are_the_four_ends():
    assert FINAL_TYPES == {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}


def test_predicates():
    assert Pending().is_pending() and not Pending().is_running()
    assert Running().is_running() and not Running().is_final()
    assert Completed().is_completed() and Completed().is_successful()
    assert Cached().is_completed() and Cached().is_successful()
    assert Failed().is_failed() and not Failed().is_successful()
    assert TimedOut().is_failed()
    assert Cancelled().is_cancelled()
    assert Crashed().is_crashed()


def test_result_of_a_completed_state_is_its_data():
    assert Completed(42).result() == 42
    assert Cached([1, 2]).result() == [1, 2]
    assert Completed().result() is None


def test_result_of_a_failed_state_raises_its_exception():
    error = ValueError("bad row 7")
    with pytest.raises(ValueError, match="bad row 7") as caught:
        Failed(error).result()
    assert caught.value is error


def test_result_without_raising_returns_the_exception():
    error = ValueError("bad row 7")
    assert Failed(error).result(raise_on_failure=False) is error
    assert Completed(3).result(raise_on_failure=False) == 3


def test_result_of_a_failed_state_without_exception_raises_run_failed_with_its_message():
    with pytest.raises(RunFailed, match="upstream 'extract' failed"):
        Failed(message="upstream 'extract' failed").result()
    with pytest.raises(RunFailed, match="The run ended Failed"):
        Failed().result()


def test_result_of_a_cancelled_state_raises_a_base_exception():
    with pytest.raises(RunCancelled, match="flow cancelled"):
        Cancelled(message="flow cancelled").result()
    assert not issubclass(RunCancelled, Exception)


def test_result_of_a_crashed_state_raises_run_crashed():
    with pytest.raises(RunCrashed, match="worker died"):
        Crashed(message="worker died").result()


def test_result_of_a_timed_out_state_raises_its_timeout():
    error = TimeoutError("took too long")
    with pytest.raises(TimeoutError, match="took too long"):
        TimedOut(error).result()


@pytest.mark.parametrize("maker", [Pending, Running, AwaitingRetry, Retrying, AwaitingConcurrencySlot])
def test_result_of_an_unfinished_state_says_to_wait(maker):
    with pytest.raises(UnfinishedRun, match=r"has no result yet.*Wait for it"):
        maker().result()
    with pytest.raises(UnfinishedRun):
        maker().result(raise_on_failure=False)


def test_error_is_none_unless_the_run_ended_badly():
    assert Completed(1).error() is None
    assert Running().error() is None
    error = KeyError("k")
    assert Failed(error).error() is error
    assert isinstance(Crashed().error(), RunCrashed)


def test_states_carry_message_data_and_timestamp():
    state = State(StateType.FAILED, "TimedOut", "slow", data=1, timestamp=12.5)
    assert (state.type, state.name, state.message, state.data, state.time) == (
        StateType.FAILED,
        "TimedOut",
        "slow",
        1,
        12.5,
    )
    # Prefect's State.timestamp is a datetime: the same moment, in UTC.
    assert state.timestamp == datetime.datetime(1970, 1, 1, 0, 0, 12, 500000, tzinfo=datetime.timezone.utc)
    assert isinstance(Completed().time, float)
    given = datetime.datetime(2026, 12, 2, 1, 0, tzinfo=datetime.timezone.utc)
    assert State(StateType.COMPLETED, timestamp=given).timestamp == given


def test_copy_changes_only_what_is_asked():
    original = Failed(ValueError("x"), message="first")
    changed = original.copy(message="second")
    assert changed is not original
    assert changed.message == "second"
    assert (changed.type, changed.name, changed.data, changed.timestamp) == (
        original.type,
        original.name,
        original.data,
        original.timestamp,
    )
    assert original.message == "first"


def test_repr_shows_the_name_and_the_type_when_they_differ():
    assert repr(Completed()) == "<Completed>"
    assert repr(Cached()) == "<Cached (Completed)>"
    assert repr(Failed(message="boom")) == "<Failed: 'boom'>"


# -- events ------------------------------------------------------------------------------


def test_the_in_memory_recorder_keeps_events_in_order():
    stream = EventStream()
    recorder = InMemoryRecorder()
    assert not stream.active
    stream.subscribe(recorder)
    assert stream.active
    run = task_run()
    for event in walk(run, "Running", "AwaitingRetry", "Retrying", "Completed"):
        stream.emit(event)
    assert recorder.states_of(run.id) == ["Running", "AwaitingRetry", "Retrying", "Completed"]
    assert recorder.states_of("someone else") == []
    stream.unsubscribe(recorder)
    assert not stream.active
    stream.emit(transition(task_run(), Running()))
    assert len(recorder.events) == 4


def test_a_failing_recorder_does_not_stop_the_others():
    class Broken:
        def record(self, event):
            raise RuntimeError("disk full")

    stream = EventStream()
    good = InMemoryRecorder()
    stream.subscribe(Broken())
    stream.subscribe(good)
    event = transition(task_run(), Running())
    stream.emit(event)  # does not raise
    assert good.events == [event]


# -- the kernel stands alone -------------------------------------------------------------


def test_the_kernel_imports_nothing_else_from_tether():
    kernel = pathlib.Path(core.__file__).parent
    offenders = []
    for path in sorted(kernel.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("tether") and not name.startswith("tether._core"):
                    offenders.append(f"{path.name}: {name}")
                if name.split(".")[0] in {"threading", "socket", "subprocess", "sqlite3", "asyncio"}:
                    if name == "threading" and path.name == "_events.py":
                        continue  # the recorder and the stream hold a lock; they start no thread
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []
