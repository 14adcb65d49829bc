"""`WorkerRuntime`, the worker side of a remote runner, made fresh in this process.

Each test builds its own runtime with the strategies it wants to see used (how to
interrupt a thread, what to do with a call stuck past its timeout, which watchdog keeps
the deadlines) and feeds it `Call`s as a runner's worker would; deadlines run on a
`FakeClock`, so nothing here sleeps.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import cloudpickle
import pytest

from tether import TaskRunTimeout, get_run_logger
from tether._errors import TaskRunCancelled
from tether._interrupt import Watchdog, raise_in_thread
from tether.runners import _worker
from tether.runners._wire import Call, load_error
from tether.runners._worker import WorkerRuntime
from tether.testing import FakeClock


def make_call(fn, *args, timeout: float | None = None, grace: float = 1.0, **kwargs) -> Call:
    return Call(
        call_id=uuid.uuid4().hex, function=cloudpickle.dumps(fn), arguments=cloudpickle.dumps((args, kwargs)),
        has_resources=False, flow_run_id="flow-run-id", task_run_id="task-run-id", task_run_name="t-0",
        log_prints=False, timeout=timeout, grace=grace,
    )


# Bodies are module-level functions (a call's function travels pickled, and these are
# pickled by reference), sharing two events that each test starts clear.
_started = threading.Event()
_release = threading.Event()


@pytest.fixture(autouse=True)
def _fresh_events() -> Iterator[None]:
    _started.clear()
    _release.clear()
    yield
    _release.set()  # a body a test failed to stop stops now


def _busy() -> None:
    _started.set()
    while not _release.is_set():
        pass  # Python code: an interrupt lands here


def _blocked() -> str:
    _started.set()
    _release.wait()  # blocked in C: an async exception would not land
    return "returned at last"


@pytest.fixture
def runtimes() -> Iterator[list[WorkerRuntime]]:
    """The runtimes a test makes; each stops capturing logs when the test ends."""
    made: list[WorkerRuntime] = []
    yield made
    for runtime in made:
        runtime.close()


def test_a_fresh_runtime_runs_a_call_and_reports_as_its_worker(runtimes):
    runtime = WorkerRuntime("worker-a")
    runtimes.append(runtime)

    def body(x):
        get_run_logger().info("working on %s", x)
        return x * 2

    result = runtime.run_call(make_call(body, 21))
    assert result.ok and cloudpickle.loads(result.payload) == 42
    assert (result.worker, result.timed_out) == ("worker-a", False)
    assert [record["msg"] for record in result.logs] == ["working on 21"]
    assert result.logs[0]["run_id"] == "task-run-id"


def test_two_runtimes_in_one_process_use_their_own_interrupters(runtimes):
    seen: dict[str, list[tuple[str, type[BaseException]]]] = {"a": [], "b": []}

    def recording(label):
        def interrupter(runtime, thread_id, exc_type, call_id):
            seen[label].append((call_id, exc_type))
            return raise_in_thread(thread_id, exc_type)
        return interrupter

    a = WorkerRuntime("a", interrupter=recording("a"))
    b = WorkerRuntime("b", interrupter=recording("b"))
    runtimes += [a, b]
    call = make_call(_busy)
    results = []
    worker = threading.Thread(target=lambda: results.append(b.run_call(call)))
    worker.start()
    try:
        assert _started.wait(10)
        assert a.interrupt(call.call_id, TaskRunCancelled) is False  # not a's call: remembered there
        assert b.interrupt(call.call_id, TaskRunCancelled) is True
        worker.join(10)
    finally:
        _release.set()
        worker.join(10)
    assert seen == {"a": [], "b": [(call.call_id, TaskRunCancelled)]}
    [result] = results
    assert not result.ok and isinstance(load_error(result.payload, "in the test"), TaskRunCancelled)


def test_an_interrupt_that_came_before_its_call_stops_it_before_the_body(runtimes):
    runtime = WorkerRuntime("early")
    runtimes.append(runtime)
    ran = []
    call = make_call(ran.append, "ran")
    assert runtime.interrupt_many([(call.call_id, TaskRunCancelled)]) == []  # not here yet
    result = runtime.run_call(call)
    assert ran == []
    assert not result.ok and isinstance(load_error(result.payload, "in the test"), TaskRunCancelled)


def test_a_call_stuck_past_its_timeout_goes_to_the_runtimes_stuck_handler_on_a_fake_clock(runtimes):
    clock = FakeClock()
    interrupted: list[type[BaseException]] = []
    stuck: list[tuple[WorkerRuntime, str]] = []
    runtime = WorkerRuntime(
        "stuck",
        # A body blocked in C does not see an async exception: this interrupter sends none.
        interrupter=lambda runtime, thread_id, exc_type, call_id: interrupted.append(exc_type) or True,
        on_stuck=lambda runtime, call: stuck.append((runtime, call.call_id)),
        watchdog=Watchdog(clock),
    )
    runtimes.append(runtime)
    call = make_call(_blocked, timeout=5, grace=2)
    results = []
    worker = threading.Thread(target=lambda: results.append(runtime.run_call(call)))
    worker.start()
    try:
        assert _started.wait(10)
        clock.advance(4)
        assert interrupted == []
        clock.advance(1)  # the timeout: interrupted, and given its grace period
        assert interrupted == [TaskRunTimeout] and stuck == []
        clock.advance(1.5)
        assert stuck == []
        clock.advance(0.5)  # the grace period is over and the body still runs
        assert stuck == [(runtime, call.call_id)]
        answer = runtime.stuck_result(call, TaskRunTimeout("abandoned"))
        assert (answer.ok, answer.timed_out, answer.worker) == (False, True, "stuck")
        assert runtime.is_running(call.call_id)
    finally:
        _release.set()
        worker.join(10)
    [result] = results
    assert result.ok and result.timed_out  # it returned, but its timeout had been sent
    assert not runtime.is_running(call.call_id)


def test_a_call_that_ends_in_time_cancels_its_timeout(runtimes):
    clock = FakeClock()
    stuck: list[str] = []
    runtime = WorkerRuntime("quick", on_stuck=lambda runtime, call: stuck.append(call.call_id), watchdog=Watchdog(clock))
    runtimes.append(runtime)
    result = runtime.run_call(make_call(sum, [1, 2, 3], timeout=5, grace=1))
    clock.advance(60)
    assert result.ok and not result.timed_out and cloudpickle.loads(result.payload) == 6
    assert stuck == []


def test_the_functions_shipped_to_workers_use_the_runtime_installed_in_the_process(runtimes):
    runtime = WorkerRuntime("installed")
    runtimes.append(runtime)
    previous = _worker.install(runtime)
    try:
        assert _worker.current() is runtime
        result = _worker.run_call(make_call(len, "four"))
        assert result.worker == "installed" and cloudpickle.loads(result.payload) == 4
        assert cloudpickle.loads(cloudpickle.dumps(_worker.run_call)) is _worker.run_call  # sent by reference
    finally:
        _worker.install(previous)
