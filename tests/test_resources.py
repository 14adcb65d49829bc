"""Resources on threads and inline: scope, outcome, cleanup always, nesting, limits."""

from __future__ import annotations

import contextlib
import threading

import pytest

from tether import (
    CleanupError,
    FlowRunTimeout,
    ResourceClosedError,
    flow,
    resource,
    resource_manager,
    task,
    task_input_hash,
)
from tether.runners import InlineRunner, ThreadPoolRunner
from tether.testing import CountingResource, RecordingStore

RUNNERS = [pytest.param(lambda: ThreadPoolRunner(4), id="threads"), pytest.param(InlineRunner, id="inline")]


@task
def use(value, what=None):
    return value.use(what)


@task
def fail(value=None):
    raise ValueError("task failed")


@pytest.mark.parametrize("make_runner", RUNNERS)
def test_submitted_tasks_keep_the_resource_open_after_the_block(make_runner):
    counting = CountingResource()

    @flow(task_runner=make_runner())
    def main():
        with counting("db") as conn:
            futures = [use.submit(conn, i) for i in range(5)]
        counting.log.add("block-left", 0)
        return [f.result() for f in futures]

    assert main() == [0, 1, 2, 3, 4]
    log = counting.log
    assert log.setups == 1 and log.cleanups == 1
    assert log.count("used-after-close") == 0
    order = [step for step in log.order() if not step.startswith("block-left")]
    assert order[-1] == "cleanup:1"
    assert log.outcomes() == [None]


def test_leaving_the_block_does_not_wait_for_the_tasks():
    counting = CountingResource()
    release = threading.Event()
    after_block = []

    @task
    def slow(conn):
        assert release.wait(10)
        return conn.use("slow")

    @flow(task_runner=ThreadPoolRunner(2))
    def main():
        with counting() as conn:
            future = slow.submit(conn)
        after_block.append(counting.log.cleanups)  # the task still runs: no cleanup yet
        release.set()
        return future.result()

    assert main() == "slow"
    assert after_block == [0]
    assert counting.log.cleanups == 1 and counting.log.count("used-after-close") == 0


def test_scope_handle_waits_for_its_cleanup():
    counting = CountingResource()

    @flow
    def main():
        scope = counting()
        with scope as conn:
            use.submit(conn)
        assert scope.wait_for_cleanup(10)
        return counting.log.cleanups

    assert main() == 1


@pytest.mark.parametrize("make_runner", RUNNERS)
def test_failing_task_throws_its_error_in_at_yield(make_runner):
    counting = CountingResource()

    @flow(task_runner=make_runner())
    def main():
        with counting() as conn:
            use.submit(conn)
            fail.submit(conn)

    state = main(return_state=True)
    assert state.is_failed()
    (error,) = counting.log.outcomes()
    assert isinstance(error, ValueError) and str(error) == "task failed"


def test_error_in_the_body_throws_in_and_fails_the_flow():
    counting = CountingResource()

    @flow
    def main():
        with counting() as conn:
            use.submit(conn)
            raise KeyError("body")

    state = main(return_state=True)
    assert state.is_failed() and isinstance(state.data, KeyError)
    assert isinstance(counting.log.outcomes()[0], KeyError)


def test_setup_failure_raises_at_with_and_cleans_nothing():
    counting = CountingResource(fail_setup=True)
    reached = []

    @flow
    def main():
        with counting():
            reached.append("body")

    with pytest.raises(RuntimeError, match="setup of copy 1 failed"):
        main()
    assert reached == []
    assert counting.log.cleanups == 0 and counting.log.count("setup-failed") == 1


def test_failing_cleanup_fails_the_flow_and_is_recorded():
    counting = CountingResource(fail_cleanup=True)

    @flow
    def main():
        with counting() as conn:
            use.submit(conn).result()
        return "body done"

    with RecordingStore() as store:
        state = main(return_state=True)
    assert state.is_failed()
    assert isinstance(state.data, CleanupError)
    assert "cleanup of copy 1 failed" in state.message
    steps = [e.step for e in store.resource_steps("counting")]
    assert steps[0] == "setup-started" and steps[-1] == "cleanup-failed"


def test_failing_cleanup_does_not_hide_the_first_error():
    counting = CountingResource(fail_cleanup=True)

    @flow
    def main():
        with counting():
            raise KeyError("first")

    state = main(return_state=True)
    assert state.is_failed() and isinstance(state.data, KeyError)


def test_flow_timeout_cleans_up_with_the_error():
    counting = CountingResource()
    started = threading.Event()

    @task
    def busy(conn):
        started.set()
        while True:  # pure Python: the cancellation lands here
            conn.use()

    @flow(timeout_seconds=0.5)
    def main():
        with counting() as conn:
            busy.submit(conn)

    state = main(return_state=True)
    assert started.is_set()
    assert state.is_cancelled() and state.name == "TimedOut"
    assert counting.log.cleanups == 1
    assert isinstance(counting.log.outcomes()[0], FlowRunTimeout)
    assert counting.log.count("used-after-close") == 0


def test_nested_resources_clean_up_inner_first():
    outer, inner = CountingResource("outer"), CountingResource("inner")
    order = []

    @task
    def both(a, b):
        return a.use(), b.use()

    @flow
    def main():
        with outer() as a, inner() as b:
            both.submit(a, b)

    outer_log, inner_log = outer.log, inner.log
    original_add = outer_log.add

    def add(step, copy, detail=None):
        order.append(("outer", step))
        original_add(step, copy, detail)

    outer_log.add = add  # type: ignore[method-assign]
    inner_add = inner_log.add
    inner_log.add = lambda step, copy, detail=None: (order.append(("inner", step)), inner_add(step, copy, detail))  # type: ignore[method-assign]
    main()
    assert order[:2] == [("outer", "setup"), ("inner", "setup")]
    assert order[-2:] == [("inner", "cleanup"), ("outer", "cleanup")]  # inner first, after every use


def test_resource_set_up_from_another_resource_is_nested_in_it():
    events = []

    @resource
    def engine():
        events.append("engine-setup")
        yield "engine"
        events.append("engine-cleanup")

    @resource
    def session(eng):
        events.append(f"session-setup({eng})")
        yield "session"
        events.append("session-cleanup")

    release = threading.Event()

    @task
    def slow(value):
        release.wait(10)
        return value

    @flow
    def main():
        with engine() as eng:
            keeps_engine_open = slow.submit(eng)
        # The engine's block has ended, but its scope lives on; a session set up from its
        # value is nested in it, so the engine is cleaned up only after the session.
        with session(eng) as s:
            future = slow.submit(s)
        release.set()
        return keeps_engine_open.result(), future.result()

    assert main() == ("engine", "session")
    assert events == ["engine-setup", "session-setup(engine)", "session-cleanup", "engine-cleanup"]


def test_thousand_tasks_one_cleanup_after_the_last():
    counting = CountingResource()

    @flow(task_runner=ThreadPoolRunner(8))
    def main():
        with counting() as conn:
            futures = [use.submit(conn, i) for i in range(1000)]
        return sum(f.result() for f in futures)

    assert main() == sum(range(1000))
    log = counting.log
    assert log.setups == 1 and log.cleanups == 1 and log.count("used") == 1000
    assert log.order()[-1] == "cleanup:1"


def test_task_submitted_outside_the_block_with_the_value_keeps_it_alive():
    counting = CountingResource()
    gate = threading.Event()

    @task
    def wait_then_use(conn):
        gate.wait(10)
        return conn.use("late")

    @flow
    def main():
        holder = threading.Event()
        with counting() as conn:
            first = use.submit(conn, "early")
        # still inside the scope: the value keeps the resource alive because `first` may still run
        first.result()
        return conn, holder

    # A task outside the block keeps the scope alive while it runs:
    @flow
    def main2():
        with counting() as conn:
            pass_through = conn
        later = None
        try:
            later = wait_then_use.submit(pass_through)
        except ResourceClosedError:
            return "closed"
        gate.set()
        return later.result()

    result = main2()
    # The block ended with no member, so cleanup may have begun before the submit: either the
    # submit is refused, or the task ran on an open resource. Never a use after close.
    assert result in ("late", "closed")
    assert counting.log.count("used-after-close") == 0


def test_value_passed_outside_the_block_extends_the_scope():
    counting = CountingResource()
    gate = threading.Event()

    @task
    def hold(conn):
        gate.wait(10)
        return conn.use("held")

    @flow
    def main():
        with counting() as conn:
            holder = hold.submit(conn)  # keeps the scope open
        outside = use.submit(conn, "outside")  # submitted after the block, still in scope
        gate.set()
        return holder.result(), outside.result()

    assert main() == ("held", "outside")
    assert counting.log.cleanups == 1 and counting.log.count("used-after-close") == 0


def test_value_used_after_cleanup_raises_resource_closed_error():
    counting = CountingResource("db")

    @flow
    def main():
        scope = counting()
        with scope as conn:
            pass
        scope.wait_for_cleanup()
        with pytest.raises(ResourceClosedError, match="Resource 'db' was already cleaned up, so task 'use'"):
            use.submit(conn)
        return "ok"

    assert main() == "ok"


def test_value_inside_containers_joins_the_scope():
    counting = CountingResource()
    gate = threading.Event()

    @task
    def take(bundle):
        gate.wait(10)
        return bundle["conns"][0].use("in-dict")

    @flow
    def main():
        scope = counting()
        with scope as conn:
            pass
        return scope, conn

    @flow
    def main2():
        with counting() as conn:
            keeper = take.submit({"conns": [conn]})
        gate.set()
        return keeper.result()

    assert main2() == "in-dict"
    assert counting.log.count("used-after-close") == 0


def test_map_over_a_resource_value_with_unmapped():
    from tether import unmapped

    counting = CountingResource()

    @flow
    def main():
        with counting() as conn:
            futures = use.map(unmapped(conn), [1, 2, 3])
        return futures.result()

    assert main() == [1, 2, 3]
    assert counting.log.cleanups == 1


def test_max_concurrency_limits_running_tasks_and_waiters_hold_no_thread():
    limited = CountingResource(max_concurrency=1)
    first_running = threading.Event()
    release_first = threading.Event()
    free_task_ran = threading.Event()

    @task
    def hold(conn):
        first_running.set()
        assert release_first.wait(10)
        return conn.use()

    @task
    def free():
        free_task_ran.set()
        release_first.set()

    @flow(task_runner=ThreadPoolRunner(2))
    def main():
        with limited() as conn:
            a = hold.submit(conn)
            first_running.wait(10)
            b = use.submit(conn, "second")  # waits for a slot, holding no worker thread
            assert b.state.name == "AwaitingConcurrencySlot"
            c = free.submit()  # runs on the second worker while b waits
        return a.result(), b.result(), c.result()

    main()
    assert free_task_ran.is_set()


def test_max_concurrency_is_never_exceeded():
    limited = CountingResource(max_concurrency=3)
    lock = threading.Lock()
    running = [0]
    peak = [0]
    barrier = threading.Barrier(3, timeout=10)

    @task
    def work(conn, i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if i < 3:
            barrier.wait()  # the first three meet: the limit is reached
        with lock:
            running[0] -= 1
        return conn.use(i)

    @flow(task_runner=ThreadPoolRunner(8))
    def main():
        with limited() as conn:
            futures = [work.submit(conn, i) for i in range(30)]
        return [f.result() for f in futures]

    assert main() == list(range(30))
    assert peak[0] == 3


def test_outside_a_flow_a_resource_is_a_plain_context_manager():
    counting = CountingResource()
    with counting() as conn:
        assert conn.use("plain") == "plain"
        assert counting.log.cleanups == 0
    assert counting.log.cleanups == 1
    with pytest.raises(KeyError), counting():
        raise KeyError("x")
    assert isinstance(counting.log.outcomes()[-1], KeyError)


def test_contextmanager_factory_adapted_in_one_line():
    events = []

    @contextlib.contextmanager
    def get_conn(db):
        events.append(f"open {db}")
        try:
            yield f"conn:{db}"
        finally:
            events.append(f"close {db}")

    conn_resource = resource(get_conn)
    gate = threading.Event()

    @task
    def read(conn):
        gate.wait(10)
        events.append(f"read {conn}")
        return conn

    @flow
    def main():
        with conn_resource("mytestdb") as conn:
            a = read.submit(conn)
            b = read.submit(conn)
        gate.set()
        return a.result(), b.result()

    assert main() == ("conn:mytestdb", "conn:mytestdb")
    assert events[0] == "open mytestdb" and events[-1] == "close mytestdb"
    assert events.count("read conn:mytestdb") == 2


def test_resource_manager_class_gets_the_outcome():
    seen = []

    @resource_manager
    class Connection:
        def __init__(self, database="db"):
            self.database = database

        def setup(self):
            return {"database": self.database}

        def cleanup(self, conn, error=None):
            seen.append((conn["database"], error))

    @resource_manager
    class Simple:
        def setup(self):
            return "simple"

        @staticmethod
        def cleanup(conn):
            seen.append((conn, "static"))

    @flow
    def ok():
        with Connection("sales") as conn, Simple() as s:
            use_value.submit(conn)
            use_value.submit(s)

    @task
    def use_value(v):
        return v

    @flow
    def bad():
        with Connection("bad") as conn:
            fail.submit(conn)

    ok()
    assert ("sales", None) in seen and ("simple", "static") in seen
    bad(return_state=True)
    name, error = seen[-1]
    assert name == "bad" and isinstance(error, ValueError)


def test_resource_values_are_left_out_of_cache_keys():
    calls = []

    @resource
    def conn(label):
        yield object()

    @task(cache_key_fn=task_input_hash)
    def cached(c, x):
        calls.append(x)
        return x * 2

    @flow
    def main():
        with conn("a") as c1:
            first = cached(c1, 21)
        with conn("b") as c2:
            second = cached(c2, 21)
        return first, second

    assert main() == (42, 42)
    assert calls == [21]  # the second call was a cache hit despite another connection


def test_resource_values_are_never_recorded_only_named():
    counting = CountingResource("warehouse")

    @task
    def use_bundle(bundle, what):
        return bundle["conn"].use(what)

    @flow
    def main():
        with counting() as conn:
            use_bundle.submit({"conn": conn, "n": 1}, "x").result()

    with RecordingStore() as store:
        main()
    (created,) = [e for e in store.runs("task")]
    assert created.parameters == {"bundle": {"conn": "<resource warehouse>", "n": 1}, "what": "x"}
