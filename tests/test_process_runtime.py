"""The process's tether state hangs off one `Runtime` (issue #14): each part is made on
first use, a fresh runtime starts every part anew, and closing it closes what it made."""

from __future__ import annotations

import logging
import threading

import pytest

from tether import flow, task
from tether._cache import MISSING, results
from tether._context import events
from tether._interrupt import watchdog
from tether._limits import limiter
from tether._resources import values
from tether._runtime import Part, Runtime, current_runtime, get_clock
from tether.store import active_store
from tether.testing import FakeClock, RecordingStore, fresh_runtime


def test_a_part_is_made_once_per_runtime_on_first_use_and_closed_last_made_first():
    made: list[str] = []
    closed: list[str] = []
    first = Part("first", lambda runtime: made.append("first") or "one", close=closed.append)
    second = Part("second", lambda runtime: made.append("second") or "two", close=closed.append)
    with fresh_runtime() as runtime:
        assert made == []  # nothing is made before it is asked for
        assert first() == "one" and first() == "one" and second() == "two"
        assert runtime.made(first) == "one"
        with fresh_runtime() as inner:
            assert first() == "one" and made == ["first", "second", "first"]  # the inner runtime's own
            assert inner.made(second) is None
        assert closed == ["one"]  # the inner one closed what it made
        assert current_runtime() is runtime
    assert closed == ["one", "two", "one"]  # second made last, closed first


def test_a_part_that_fails_to_close_is_logged_and_the_others_still_close(caplog):
    closed: list[str] = []

    def fail(value: str) -> None:
        raise OSError("disk gone")

    kept = Part("kept", lambda runtime: "kept", close=closed.append)
    broken = Part("broken", lambda runtime: "broken", close=fail)
    with caplog.at_level(logging.ERROR, logger="tether"), fresh_runtime():
        kept(), broken()
    assert closed == ["kept"]
    assert "closing the runtime's broken failed" in caplog.text


def test_a_closed_runtime_says_so_instead_of_making_a_part():
    runtime = Runtime()
    runtime.close()
    with pytest.raises(RuntimeError, match=r"runtime .* is closed, so its part 'late' cannot be made"):
        runtime.part(Part("late", lambda runtime: 1))


def test_a_fresh_runtime_sees_nothing_the_process_kept_before():
    outer_stream, outer_limiter, outer_cache, outer_values = events(), limiter(), results(), values()
    outer_limiter.set_limit("tag:db", 1)
    in_memory = threading.Lock()  # unpicklable: cached in memory only, not on disk for every process
    outer_cache.put("key", in_memory, None)
    with fresh_runtime():
        assert events() is not outer_stream and limiter() is not outer_limiter
        assert limiter().limit("tag:db") is None
        assert results().get("key") is MISSING
        assert values() is not outer_values
    assert limiter() is outer_limiter and outer_limiter.limit("tag:db") is not None
    assert results().get("key") is in_memory
    outer_limiter.remove_limit("tag:db")


def test_runs_are_seen_by_the_recorders_of_the_runtime_they_ran_on():
    @task
    def one():
        return 1

    @flow
    def main():
        return one()

    with RecordingStore() as outside:
        with fresh_runtime(), RecordingStore() as inside:
            assert main() == 1
        assert main() == 1
    assert len(inside.runs("flow")) == 1  # only the run on its runtime
    assert len(outside.runs("flow")) == 1  # only the run after the block


def test_closing_a_runtime_stops_its_watchdog_and_closes_its_store(monkeypatch, tmp_path):
    monkeypatch.setenv("TETHER_STORE", "on")

    @task(timeout_seconds=30)
    def quick():
        return "done"

    @flow
    def main():
        return quick()

    with fresh_runtime():
        assert main() == "done"
        store = active_store()
        assert store is not None and store.recorder is not None
        dog = watchdog()
        assert dog._thread is not None and dog._thread.is_alive()  # it kept the task's timeout
    assert not dog._thread.is_alive()
    assert store.recorder is None  # flushed and closed with the runtime
    assert active_store() is not store


def test_a_fresh_runtime_on_a_fake_clock_keeps_every_deadline_on_it():
    attempts: list[float] = []
    gate = threading.Event()

    @task(retries=1, retry_delay_seconds=3600)
    def flaky():
        attempts.append(get_clock().monotonic())
        if len(attempts) == 1:
            raise ValueError("first try")
        gate.set()
        return "second"

    @flow
    def main():
        return flaky()

    clock = FakeClock()
    with fresh_runtime(clock) as runtime:
        assert runtime.clock is clock and get_clock() is clock
        assert main() == "second"  # the hour's delay passed on the fake clock, at once
    assert gate.is_set() and attempts[1] - attempts[0] == 3600
    assert get_clock() is not clock
