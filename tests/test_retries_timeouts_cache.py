"""Retries, timeouts and caching: the time-based behaviour of tasks and flows.

Retry delays and cache expiry are tested on a fake clock that records every wait and
moves time forward at once, so nothing here sleeps. Task and flow timeouts and the grace
period after them are kept by the watchdog, on the same clock: the tests of them on the
fake clock move time past each deadline by hand and see what fired. A few keep real
(short) deadlines, to check the system clock's path end to end, and asyncio's own
timeouts for async tasks.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tether import FlowRunTimeout, TaskRunTimeout, flow, get_run_logger, task, task_input_hash
from tether._clock import SystemClock
from tether._core import InMemoryRecorder, RunCreated
from tether._engine import _task_run
from tether._interrupt import RESEND_SECONDS, Watchdog
from tether.runners import ThreadPoolRunner
from tether.testing import FakeClock


def run_id_of(recorder: InMemoryRecorder, kind: str, name: str) -> str:
    [created] = [e for e in recorder.events if isinstance(e, RunCreated) and e.kind == kind and e.name == name]
    return created.run_id


def flaky(failures: int, value: str = "ok"):
    """A function that fails ``failures`` times, then returns ``value``; counts its calls."""
    calls = []

    def fn():
        calls.append(len(calls) + 1)
        if len(calls) <= failures:
            raise ConnectionError(f"attempt {len(calls)} failed")
        return value

    return fn, calls


# -- task retries -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["call", "submit"])
def test_a_task_retries_with_a_fixed_delay(runner, clock, recorder, how):
    fn, calls = flaky(2)
    flaky_task = task(retries=3, retry_delay_seconds=5)(fn)

    @flow(task_runner=runner)
    def pipeline():
        return flaky_task() if how == "call" else flaky_task.submit().result()

    assert pipeline() == "ok"
    assert calls == [1, 2, 3]
    assert clock.waits == [5.0, 5.0]
    run_id = run_id_of(recorder, "task", "fn")
    assert recorder.states_of(run_id) == [
        "Running",
        "AwaitingRetry",
        "Retrying",
        "AwaitingRetry",
        "Retrying",
        "Completed",
    ]


def test_a_list_of_retry_delays_is_used_in_order_and_the_last_repeats(runner, clock):
    fn, calls = flaky(4)
    flaky_task = task(retries=4, retry_delay_seconds=[1, 2, 4])(fn)

    @flow(task_runner=runner)
    def pipeline():
        return flaky_task.submit().result()

    assert pipeline() == "ok"
    assert len(calls) == 5
    assert clock.waits == [1.0, 2.0, 4.0, 4.0]


def test_a_task_that_exhausts_its_retries_fails_with_its_last_error(runner, clock, recorder):
    fn, calls = flaky(10)
    failures = []
    flaky_task = task(retries=2, retry_delay_seconds=0.5, on_failure=[lambda t, r, s: failures.append(r.run_count)])(fn)

    seen = {}

    @flow(task_runner=runner)
    def pipeline():
        seen["state"] = flaky_task(return_state=True)

    assert pipeline(return_state=True).is_completed()
    state = seen["state"]
    assert state.is_failed()
    with pytest.raises(ConnectionError, match="attempt 3 failed"):
        state.result()
    assert calls == [1, 2, 3]
    assert clock.waits == [0.5, 0.5]
    assert failures == [3]  # the failure hook runs once, at the end
    run_id = run_id_of(recorder, "task", "fn")
    assert recorder.states_of(run_id)[-1] == "Failed"


def test_a_task_without_retries_runs_once(runner, clock):
    fn, calls = flaky(1)
    once = task(fn)

    @flow(task_runner=runner)
    def pipeline():
        return once.submit().result(raise_on_failure=False)

    assert isinstance(pipeline(), ConnectionError)
    assert calls == [1]
    assert clock.waits == []


def test_zero_delay_retries_do_not_wait(runner, clock):
    fn, calls = flaky(2)
    flaky_task = task(retries=2)(fn)

    @flow(task_runner=runner)
    def pipeline():
        return flaky_task()

    assert pipeline() == "ok"
    assert len(calls) == 3
    assert sum(clock.waits) == 0


def test_an_async_task_retry_waits_on_the_clock(clock):
    attempts = []

    @task(retries=2, retry_delay_seconds=[0.25, 0.5])  # small: a real sleep here is a bug, but a short one
    async def fetch():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "fetched"

    @flow
    def pipeline():
        return fetch.submit().result()

    assert pipeline() == "fetched"
    assert clock.waits == [0.25, 0.5]


# -- flow retries -------------------------------------------------------------------------


def test_a_flow_retries_with_its_delays(runner, clock, recorder):
    attempts = []

    @flow(task_runner=runner, retries=2, retry_delay_seconds=[0.25, 0.5])
    def pipeline():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError(f"flow attempt {len(attempts)} failed")
        return "done"

    assert pipeline() == "done"
    assert len(attempts) == 3
    assert clock.waits == [0.25, 0.5]
    run_id = run_id_of(recorder, "flow", "pipeline")
    assert recorder.states_of(run_id) == ["Running", "AwaitingRetry", "Retrying", "AwaitingRetry", "Retrying", "Completed"]


def test_a_flow_that_exhausts_its_retries_fails(runner, clock):
    attempts = []

    @flow(task_runner=runner, retries=1, retry_delay_seconds=0)
    def pipeline():
        attempts.append(1)
        raise ConnectionError(f"flow attempt {len(attempts)} failed")

    state = pipeline(return_state=True)
    assert state.is_failed()
    assert "flow attempt 2 failed" in state.message
    assert len(attempts) == 2


def test_a_flow_retry_reruns_its_tasks(runner, clock):
    ran = []

    @task
    def step(n):
        ran.append(n)
        if n == 1:
            raise ValueError("first attempt's task fails")
        return n

    attempts = []

    @flow(task_runner=runner, retries=1)
    def pipeline():
        attempts.append(1)
        return step(len(attempts))

    assert pipeline() == 2
    assert ran == [1, 2]


def test_an_unresolved_task_failure_does_not_leak_into_the_retry(runner, clock):
    attempts = []

    @task
    def step(n):
        if n == 1:
            raise ValueError("only the first attempt fails")
        return n

    @flow(task_runner=runner, retries=1)
    def pipeline():
        attempts.append(1)
        step.submit(len(attempts))
        if len(attempts) == 1:
            raise RuntimeError("flow body fails on attempt 1")
        return "second attempt clean"

    assert pipeline() == "second attempt clean"


# -- task timeouts ------------------------------------------------------------------------


@task(timeout_seconds=0.3)
def spin_forever():
    while True:
        pass


# Set when each test ends, so that a body the engine failed to interrupt does not spin
# on for the rest of the session.
_stop = threading.Event()


@pytest.fixture(autouse=True)
def _release_busy_bodies():
    _stop.clear()
    yield
    _stop.set()


@task(timeout_seconds=0.3)
def count_forever():
    n = 0
    while not _stop.is_set():
        n += 1


@task(timeout_seconds=0.2)
def log_forever(stopped: list):
    """Logs in a tight loop: a timeout that lands in the logging module's ``emit`` must not be
    swallowed by its ``except Exception`` (nor by the body's own)."""
    logger = get_run_logger()
    try:
        while not _stop.is_set():
            try:
                logger.info("still going")
            except Exception:  # noqa: BLE001, S110 - what a body that keeps going whatever happens does
                pass
    finally:
        stopped.append(threading.get_ident())


@pytest.mark.parametrize("how", ["call", "submit"])
def test_a_task_that_logs_and_catches_every_exception_in_a_loop_still_stops_at_its_timeout(runner, how):
    stopped: list[int] = []
    states = []

    @flow(task_runner=runner)
    def pipeline():
        if how == "call":
            states.append(log_forever(stopped, return_state=True))
            return
        futures = [log_forever.submit(stopped) for _ in range(6)]
        for future in futures:
            future.wait()
        states.extend(future.state for future in futures)

    pipeline()
    assert [s.name for s in states] == ["TimedOut"] * len(states)
    assert all(isinstance(s.data, TaskRunTimeout) for s in states)
    assert not any("abandoned" in s.message for s in states)  # none was given up on and left running
    assert len(stopped) == len(states)  # each body stopped


class SpinsUntilInterrupted:
    """Its ``__del__`` spins until an interrupt lands there, where Python prints it and drops it
    ("Exception ignored in"): the body that freed it goes on as if nothing had been sent."""

    def __del__(self):
        spin_until = time.monotonic() + 30  # a bound, should no interrupt ever come
        while time.monotonic() < spin_until:
            pass


def loses_its_first_interrupt(stopped: list) -> None:
    try:
        SpinsUntilInterrupted()  # freed at once: the timeout lands in its __del__
        spin_until = time.monotonic() + 30
        while time.monotonic() < spin_until and not _stop.is_set():
            pass
    finally:
        stopped.append(threading.get_ident())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("how", ["call", "submit"])
def test_a_timeout_that_lands_in_a_finalizer_is_sent_again_until_the_body_stops(runner, how):
    stopped: list[int] = []
    states = []
    spins = task(timeout_seconds=0.2)(loses_its_first_interrupt)

    @flow(task_runner=runner)
    def pipeline():
        if how == "call":
            states.append(spins(stopped, return_state=True))
        else:
            future = spins.submit(stopped)
            future.wait()
            states.append(future.state)

    started = time.monotonic()
    pipeline()
    assert [s.name for s in states] == ["TimedOut"]
    assert isinstance(states[0].data, TaskRunTimeout)
    assert "abandoned" not in states[0].message
    assert stopped
    assert time.monotonic() - started < 5  # stopped by the interrupt sent again, not by the 30 s bound


def test_the_timeout_is_not_sent_again_into_the_except_and_finally_it_goes_up_through(runner):
    """A body's cleanup after its timeout landed may take longer than the resend period: the
    interrupt is on its way out, and is not sent again to cut that cleanup short."""
    steps: list[str] = []

    @task(timeout_seconds=0.2)
    def cleans_up_slowly():
        try:
            while not _stop.is_set():
                pass
        except BaseException:
            steps.append("caught")
            spin_until = time.monotonic() + 3 * RESEND_SECONDS
            while time.monotonic() < spin_until:
                pass
            steps.append("handled")
            raise
        finally:
            spin_until = time.monotonic() + 3 * RESEND_SECONDS
            while time.monotonic() < spin_until:
                pass
            steps.append("cleaned up")

    states = []

    @flow(task_runner=runner)
    def pipeline():
        states.append(cleans_up_slowly(return_state=True))

    pipeline()
    assert [s.name for s in states] == ["TimedOut"]
    assert steps == ["caught", "handled", "cleaned up"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("where", ["main thread", "another thread"])
def test_a_flow_timeout_that_lands_in_a_finalizer_is_sent_again_until_the_body_stops(where):
    stopped: list[int] = []
    states = []

    @flow(timeout_seconds=0.2)
    def pipeline():
        loses_its_first_interrupt(stopped)

    started = time.monotonic()
    if where == "main thread":
        states.append(pipeline(return_state=True))
    else:
        thread = threading.Thread(target=lambda: states.append(pipeline(return_state=True)))
        thread.start()
        thread.join()
    assert [s.name for s in states] == ["TimedOut"]
    assert stopped
    assert time.monotonic() - started < 5


def test_a_timeout_that_lands_as_a_log_handler_lock_is_taken_leaves_the_lock_free(monkeypatch):
    """The interrupt is sent while the body waits for a log handler's lock, so it lands as the
    acquire returns, before the handler's ``try``: the shell must let go of that lock."""
    handler = logging.StreamHandler(io.StringIO())
    logger = logging.getLogger(f"tether.tests.gated.{os.getpid()}")
    logger.addHandler(handler)
    logger.propagate = False
    held, sent = threading.Event(), threading.Event()

    def hold_the_handler_lock():
        with handler.lock:
            held.set()
            sent.wait(30)

    holder = threading.Thread(target=hold_the_handler_lock, daemon=True)
    holder.start()
    held.wait(30)
    real = _task_run.raise_in_thread

    def raise_then_free_the_handler(thread_id, exc_type):
        landed = real(thread_id, exc_type)
        sent.set()  # the body, blocked in the handler's acquire, gets the lock with the interrupt pending
        return landed

    monkeypatch.setattr(_task_run, "raise_in_thread", raise_then_free_the_handler)

    @task(timeout_seconds=0.2)
    def waits_for_the_handler():
        logger.warning("waits for the handler's lock")

    states = []

    @flow
    def pipeline():
        future = waits_for_the_handler.submit()
        future.wait()
        states.append(future.state)

    try:
        pipeline()
    finally:
        sent.set()
        holder.join(30)
        logger.removeHandler(handler)
    assert [s.name for s in states] == ["TimedOut"]
    assert "abandoned" not in states[0].message
    assert handler.lock.acquire(timeout=10), "the task's thread still holds the log handler's lock"
    handler.lock.release()


@pytest.mark.parametrize("body", [spin_forever, count_forever], ids=["pass", "count"])
@pytest.mark.parametrize("how", ["call", "submit"])
def test_a_busy_sync_task_times_out(runner, body, how):
    seen = {}

    @flow(task_runner=runner)
    def pipeline():
        if how == "call":
            seen["state"] = body(return_state=True)
            return
        future = body.submit()
        future.wait()
        future.result(raise_on_failure=False)
        seen["state"] = future.state

    pipeline()
    state = seen["state"]
    assert state.is_failed()
    assert state.name == "TimedOut"
    assert isinstance(state.data, TaskRunTimeout)
    assert isinstance(state.data, TimeoutError)
    assert f"'{body.name}'" in state.message
    assert "0.3 s" in state.message


def test_a_timed_out_task_raises_its_timeout_in_the_flow(runner):
    @flow(task_runner=runner)
    def pipeline():
        with pytest.raises(TaskRunTimeout, match="exceeded its timeout"):
            spin_forever()
        return "flow goes on"

    assert pipeline() == "flow goes on"


def test_a_timed_out_task_is_retried(runner, recorder):
    attempts = []

    @task(timeout_seconds=0.2, retries=1)
    def slow_then_fast():
        attempts.append(1)
        if len(attempts) == 1:
            while True:
                pass
        return "fast"

    @flow(task_runner=runner)
    def pipeline():
        return slow_then_fast.submit().result()

    assert pipeline() == "fast"
    run_id = run_id_of(recorder, "task", "slow_then_fast")
    assert recorder.states_of(run_id) == ["Running", "AwaitingRetry", "Retrying", "Completed"]


def test_a_timeout_does_not_hit_the_next_task_on_the_same_thread(runner):
    @task(timeout_seconds=0.2)
    def quick():
        return "quick"

    @flow(task_runner=runner)
    def pipeline():
        state = spin_forever(return_state=True)
        # The worker thread (or the flow thread) is reused: no stray exception may land.
        results = [quick.submit().result() for _ in range(20)]
        sum(i for i in range(200_000))  # Python code a stray interrupt would land in
        return state.name, results

    name, results = pipeline()
    assert name == "TimedOut"
    assert results == ["quick"] * 20


def test_a_task_blocked_in_c_past_its_timeout_is_abandoned(monkeypatch):
    # Blocked in a lock wait, the thread cannot see the interrupt: after the grace
    # period the run is marked TimedOut and the flow goes on without it.
    monkeypatch.setenv("TETHER_INTERRUPT_GRACE_SECONDS", "0.2")
    gate = threading.Event()

    @task(timeout_seconds=0.2)
    def blocked():
        gate.wait(10)

    seen = {}

    @flow(task_runner=ThreadPoolRunner())
    def pipeline():
        future = blocked.submit()
        future.result(raise_on_failure=False)
        seen["state"] = future.state
        return "not held"

    start = time.monotonic()
    try:
        assert pipeline() == "not held"
        elapsed = time.monotonic() - start
    finally:
        gate.set()  # let the abandoned thread go
    state = seen["state"]
    assert state.name == "TimedOut"
    assert isinstance(state.data, TaskRunTimeout)
    assert "abandoned" in state.message
    assert elapsed < 3, f"the flow was held {elapsed:.1f} s by a task abandoned after 0.4 s"


def test_a_task_that_finishes_in_time_is_not_interrupted(runner):
    @task(timeout_seconds=5)
    def fine():
        return sum(range(1000))

    @flow(task_runner=runner)
    def pipeline():
        return fine(), fine.submit().result()

    assert pipeline() == (499500, 499500)


def test_an_async_task_times_out():
    @task(timeout_seconds=0.2)
    async def hang():
        await asyncio.Event().wait()

    seen = {}

    @flow
    def pipeline():
        future = hang.submit()
        future.result(raise_on_failure=False)
        seen["submitted"] = future.state
        seen["called"] = hang(return_state=True)

    pipeline()
    for state in (seen["submitted"], seen["called"]):
        assert state.name == "TimedOut"
        assert state.is_failed()
        assert isinstance(state.data, TaskRunTimeout)
        assert "'hang'" in state.message


def test_an_async_task_awaited_in_an_async_flow_times_out():
    @task(timeout_seconds=0.2)
    async def hang():
        await asyncio.Event().wait()

    seen = {}

    @flow
    async def pipeline():
        seen["state"] = await hang(return_state=True)

    asyncio.run(pipeline())
    state = seen["state"]
    assert state.name == "TimedOut"
    assert isinstance(state.data, TaskRunTimeout)


# -- deadlines on the fake clock ------------------------------------------------------------


def test_a_watchdog_on_a_fake_clock_fires_what_came_due_when_time_moves():
    clock = FakeClock()
    watchdog = Watchdog(clock)
    fired: list[object] = []
    watchdog.schedule(5, lambda: fired.append(("at 5", threading.current_thread().name)))
    dropped = watchdog.schedule(3, lambda: fired.append("cancelled"))
    watchdog.schedule(7, lambda: watchdog.schedule(0, lambda: fired.append("scheduled by a callback, due at once")))
    watchdog.cancel(dropped)
    clock.advance(4.5)
    assert fired == []
    clock.advance(0.5)  # returns once the callback has run, on the watchdog's thread
    assert fired == [("at 5", "tether-watchdog")]
    clock.advance(2)
    assert fired[1:] == ["scheduled by a callback, due at once"]


def test_a_pause_passes_at_once_on_a_fake_clock_and_in_real_time_on_the_system_clock():
    clock = FakeClock()
    watchdog = Watchdog(clock)
    fired: list[str] = []
    resumed = threading.Event()
    watchdog.schedule(30, lambda: fired.append("deadline at 30"))
    watchdog.schedule(60, lambda: fired.append("deadline at 60"))
    watchdog.schedule_pause(45, lambda: (fired.append("pause of 45"), resumed.set()))  # a retry delay
    assert resumed.wait(10)
    assert clock.waits == [45] and clock.monotonic() == 45
    assert fired == ["deadline at 30", "pause of 45"]  # in the order of the fake time
    cancelled = watchdog.schedule_pause(10, lambda: fired.append("cancelled pause"))
    watchdog.cancel(cancelled)
    clock.advance(30)
    assert fired[2:] == ["deadline at 60"]
    real = Watchdog(SystemClock())
    later = threading.Event()
    begun = time.monotonic()
    real.schedule_pause(0.05, later.set)
    assert later.wait(10) and time.monotonic() - begun >= 0.05


def test_the_process_watchdog_follows_the_installed_clock():
    from tether._interrupt import watchdog

    fired = threading.Event()
    with FakeClock() as clock:
        watchdog().schedule(3600, fired.set)
        clock.advance(3599)
        assert not fired.is_set()
        clock.advance(1)
        assert fired.is_set()
    back = threading.Event()
    watchdog().schedule(0.01, back.set)  # the system clock again: real time fires it
    assert back.wait(10)


def test_a_task_timeout_fires_when_the_fake_clock_passes_it(clock, recorder):
    started = threading.Event()
    seen = {}

    @task(timeout_seconds=30)
    def busy():
        started.set()
        while not _stop.is_set():
            pass

    @flow(task_runner=ThreadPoolRunner(1))
    def pipeline():
        future = busy.submit()
        assert started.wait(10)
        clock.advance(29)
        seen["at 29 s"] = future.state.name
        clock.advance(1)
        future.wait()
        seen["state"] = future.state

    begun = time.monotonic()
    pipeline()
    assert time.monotonic() - begun < 10, "the 30 s timeout took real time"
    assert seen["at 29 s"] == "Running"
    state = seen["state"]
    assert state.name == "TimedOut"
    assert isinstance(state.data, TaskRunTimeout)
    assert "'busy'" in state.message and "30 s" in state.message
    assert recorder.states_of(run_id_of(recorder, "task", "busy")) == ["Running", "TimedOut"]


def test_a_timed_out_task_is_retried_on_the_fake_clock(clock, recorder):
    started = [threading.Event(), threading.Event()]

    @task(timeout_seconds=60, retries=1, retry_delay_seconds=120)
    def slow_then_fast():
        attempt = sum(event.is_set() for event in started)
        started[attempt].set()
        while attempt == 0 and not _stop.is_set():
            pass
        return "fast"

    @flow(task_runner=ThreadPoolRunner(1))
    def pipeline():
        future = slow_then_fast.submit()
        assert started[0].wait(10)
        clock.advance(60)  # the timeout; the retry's 120 s pass at once on the fake clock
        return future.result()

    assert pipeline() == "fast"
    assert clock.waits == [120.0]
    run_id = run_id_of(recorder, "task", "slow_then_fast")
    assert recorder.states_of(run_id) == ["Running", "AwaitingRetry", "Retrying", "Completed"]


def test_a_task_blocked_past_its_timeout_is_abandoned_when_the_grace_period_passes(clock, monkeypatch):
    # Blocked in a lock wait, the body cannot see the interrupt; the default grace period
    # (10 s) passes on the fake clock, and the flow goes on without it.
    monkeypatch.delenv("TETHER_INTERRUPT_GRACE_SECONDS", raising=False)
    started, gate = threading.Event(), threading.Event()
    seen = {}

    @task(timeout_seconds=5)
    def blocked():
        started.set()
        gate.wait()

    @flow(task_runner=ThreadPoolRunner(1))
    def pipeline():
        future = blocked.submit()
        assert started.wait(10)
        clock.advance(5)
        seen["interrupted"] = future.state.name
        clock.advance(9.5)
        seen["in its grace period"] = future.state.name
        clock.advance(0.5)
        future.wait()
        seen["state"] = future.state
        return "not held"

    try:
        assert pipeline() == "not held"
    finally:
        gate.set()  # let the abandoned thread go
    assert seen["interrupted"] == seen["in its grace period"] == "Running"
    state = seen["state"]
    assert state.name == "TimedOut"
    assert isinstance(state.data, TaskRunTimeout)
    assert "did not stop within 10 s, so it was abandoned" in state.message


@pytest.mark.timeout(60)
def test_a_flow_timeout_fires_when_the_fake_clock_passes_it(clock, recorder):
    # The hour passes on a plain thread, not in a task: the timeout cancels the flow's task
    # runs, and an interrupt landing in a task while it moves the clock (inside the
    # watchdog's lock) would leave that lock taken.
    mover = threading.Thread(target=clock.advance, args=(3600,), name="moves-the-clock")

    @flow(timeout_seconds=3600)
    def pipeline():
        mover.start()
        # Busy in Python code, where the timeout's interrupt lands at once. (A SIGINT that
        # comes just before the main thread blocks in a wait is seen only when the wait ends.)
        while not _stop.is_set():
            pass
        return "should not get here"

    # A safety valve, not an ordering: if the timeout never fires, the body ends by itself
    # after 20 s, and this test fails instead of hanging.
    valve = threading.Timer(20, _stop.set)
    valve.start()
    begun = time.monotonic()
    try:
        state = pipeline(return_state=True)
    finally:
        valve.cancel()
        mover.join(20)
    assert time.monotonic() - begun < 20, "the flow's timeout did not fire on the fake clock"
    assert state.is_cancelled()
    assert state.name == "TimedOut"
    assert isinstance(state.data, FlowRunTimeout)
    assert "3600 s" in state.message


# -- flow timeouts ------------------------------------------------------------------------


@pytest.mark.timeout(5)
def test_a_busy_flow_times_out_and_is_cancelled(runner):
    @flow(task_runner=runner, timeout_seconds=0.3)
    def pipeline():
        while True:
            pass

    state = pipeline(return_state=True)
    assert state.is_cancelled()
    assert state.name == "TimedOut"
    assert isinstance(state.data, FlowRunTimeout)
    with pytest.raises(FlowRunTimeout, match="'pipeline'.*0.3 s"):
        pipeline()


@pytest.mark.timeout(5)
def test_a_flow_blocked_waiting_times_out_promptly(runner):
    never = threading.Event()

    @flow(task_runner=runner, timeout_seconds=0.2)
    def pipeline():
        never.wait(2)
        return "should not get here"

    start = time.monotonic()
    state = pipeline(return_state=True)
    elapsed = time.monotonic() - start
    assert state.is_cancelled()
    assert elapsed < 1.5, f"the flow took {elapsed:.1f} s to notice its 0.2 s timeout"


@pytest.mark.timeout(10)
def test_a_flow_timeout_interrupts_its_running_tasks(recorder):
    started = threading.Event()

    @task
    def busy():
        started.set()
        while not _stop.is_set():
            pass

    @flow(task_runner=ThreadPoolRunner(), timeout_seconds=0.3)
    def pipeline():
        busy.submit()
        started.wait(5)
        while True:
            pass

    # A safety valve, not an ordering: if the engine fails to interrupt the task, it
    # stops by itself after 3 s, so the flow can end and this test fails instead of hanging.
    valve = threading.Timer(3, _stop.set)
    valve.start()
    try:
        state = pipeline(return_state=True)
    finally:
        valve.cancel()
    assert state.is_cancelled()
    run_id = run_id_of(recorder, "task", "busy")
    assert recorder.states_of(run_id)[-1] == "Cancelled"


@pytest.mark.timeout(5)
def test_a_flow_in_another_thread_times_out():
    result = {}

    @flow(timeout_seconds=0.3)
    def pipeline():
        while True:
            pass

    thread = threading.Thread(target=lambda: result.setdefault("state", pipeline(return_state=True)))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert result["state"].is_cancelled()
    assert isinstance(result["state"].data, FlowRunTimeout)


# -- caching ------------------------------------------------------------------------------


def constant_key(context, parameters):
    return "the-key"


@pytest.mark.parametrize("how", ["call", "submit"])
def test_a_cache_hit_returns_the_earlier_result_without_running(runner, recorder, how):
    calls = []

    @task(cache_key_fn=constant_key)
    def expensive(x):
        calls.append(x)
        return x * 10

    seen = {}

    @flow(task_runner=runner)
    def pipeline():
        seen["first"] = expensive(1, return_state=True)
        if how == "call":
            seen["second"] = expensive(1, return_state=True)
            return
        future = expensive.submit(1)
        future.wait()
        seen["second"] = future.state

    pipeline()
    first, second = seen["first"], seen["second"]
    assert first.name == "Completed"
    assert calls == [1]
    runs = [e.run_id for e in recorder.events if isinstance(e, RunCreated) and e.name == "expensive"]
    assert recorder.states_of(runs[1]) == ["Cached"]
    assert second.is_completed()
    assert second.name == "Cached"
    assert second.result() == 10


def test_a_cache_hit_across_flow_runs(runner):
    calls = []

    @task(cache_key_fn=task_input_hash)
    def expensive(x):
        calls.append(x)
        return x * 10

    @flow(task_runner=runner)
    def pipeline(x):
        return expensive.submit(x).result()

    assert pipeline(1) == 10
    assert pipeline(1) == 10
    assert pipeline(2) == 20
    assert calls == [1, 2]


def test_cache_key_fn_gets_the_context_and_the_resolved_parameters(runner):
    seen = []

    def key(context, parameters):
        seen.append((context.task_run.task.name, dict(parameters)))
        # no caching

    @task(cache_key_fn=key)
    def expensive(x, y=0):
        return x + y

    @flow(task_runner=runner)
    def pipeline():
        upstream = expensive.submit(1)
        return expensive.submit(upstream, y=5).result(), expensive(2)

    assert pipeline() == (6, 2)
    assert ("expensive", {"x": 1, "y": 5}) in seen
    assert ("expensive", {"x": 2}) in seen or ("expensive", {"x": 2, "y": 0}) in seen


def test_a_none_cache_key_always_runs(runner):
    calls = []

    @task(cache_key_fn=lambda ctx, params: None)
    def expensive():
        calls.append(1)

    @flow(task_runner=runner)
    def pipeline():
        expensive()
        expensive()

    pipeline()
    assert len(calls) == 2


def test_a_failed_run_is_not_cached(runner):
    fn, calls = flaky(1)
    flaky_task = task(cache_key_fn=constant_key)(fn)

    @flow(task_runner=runner)
    def pipeline():
        first = flaky_task(return_state=True)
        second = flaky_task(return_state=True)
        return first.name, second.name

    assert pipeline() == ("Failed", "Completed")
    assert calls == [1, 2]


def test_a_cache_key_fn_that_raises_fails_the_run(runner):
    def broken(context, parameters):
        raise KeyError("no key")

    @task(cache_key_fn=broken)
    def expensive():
        return 1

    seen = {}

    @flow(task_runner=runner)
    def pipeline():
        seen["state"] = expensive(return_state=True)

    pipeline()
    state = seen["state"]
    assert state.is_failed()
    assert "cache_key_fn" in state.message
    assert "'expensive'" in state.message


def test_the_cache_expires(runner, clock):
    calls = []

    @task(cache_key_fn=constant_key, cache_expiration=datetime.timedelta(minutes=1))
    def expensive():
        calls.append(clock.time())
        return len(calls)

    @flow(task_runner=runner)
    def pipeline():
        state = expensive(return_state=True)
        return {"state": (state.name, state.result())}

    first = pipeline()["state"]
    clock.advance(59)
    second = pipeline()["state"]
    clock.advance(2)
    third = pipeline()["state"]
    fourth = pipeline()["state"]
    assert [first, second, third, fourth] == [("Completed", 1), ("Cached", 1), ("Completed", 2), ("Cached", 2)]
    assert len(calls) == 2


def test_cache_expiration_in_seconds(runner, clock):
    calls = []

    @task(cache_key_fn=constant_key, cache_expiration=10)
    def expensive():
        calls.append(1)

    @flow(task_runner=runner)
    def pipeline():
        expensive()

    pipeline()
    clock.advance(11)
    pipeline()
    assert len(calls) == 2


def test_a_cache_hit_in_a_new_process_reuses_the_stored_result(tmp_path):
    script = tmp_path / "cached_flow.py"
    script.write_text(textwrap.dedent('''
        import sys
        from tether import flow, task, task_input_hash

        @task(cache_key_fn=task_input_hash)
        def expensive(x):
            print("ran", flush=True)
            return {"value": x * 2}

        @flow
        def main():
            return expensive(21)

        print(main(), flush=True)
    '''))
    env = {**os.environ, "TETHER_HOME": str(tmp_path / "home")}
    first = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60, check=True)
    second = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert first.stdout.split() == ["ran", "{'value':", "42}"], first.stderr
    assert second.stdout.split() == ["{'value':", "42}"], second.stderr
