"""A task called outside any flow run: a real task run, as in Prefect 3.

Retries (on the fake clock), timeouts, caching (in one process and across two), hooks,
``return_state``, the runtime and the run logger in the body, tag limits through the store,
transactions and resources around the call, Ctrl-C and SIGTERM, and the run store's record of
a task run with no flow run (and that the CLI and the dashboard still read the store).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import sqlalchemy as sa

import tether
import tether.store
from tether import TaskRunTimeout, get_run_logger, resource, task, task_input_hash
from tether._core import LogEmitted, RunCreated
from tether._errors import Terminated, UsageError
from tether.transactions import get_transaction, transaction


@pytest.fixture
def sqlite_store(tmp_path, monkeypatch):
    """The process records to a SQLite store of the test's own until the test ends."""
    monkeypatch.setenv("TETHER_DATABASE_URL", f"sqlite:///{tmp_path / 'store' / 'tether.db'}")
    monkeypatch.delenv("TETHER_STORE", raising=False)
    monkeypatch.setenv("TETHER_STORE_HELPER", "never")
    store = tether.store.enable()
    assert store is not None
    yield store
    tether.store.disable()


def created(recorder, name: str) -> RunCreated:
    [event] = [e for e in recorder.runs("task") if e.name == name]
    return event


def states_of(recorder, run_id: str) -> list[str]:
    return [e.new.name for e in recorder.state_changes(run_id)]


# -- the run ------------------------------------------------------------------------------


def test_a_failing_task_retries_with_its_delays_on_the_clock_then_returns_its_value(clock, recorder):
    calls: list[int] = []

    @task(retries=2, retry_delay_seconds=[10, 20])
    def flaky() -> str:
        calls.append(len(calls) + 1)
        if len(calls) < 3:
            raise ConnectionError(f"attempt {len(calls)} failed")
        return "ok"

    assert flaky() == "ok"
    assert calls == [1, 2, 3] and clock.waits == [10, 20]
    run = created(recorder, "flaky")
    assert run.flow_run_id is None and run.parent_id is None
    assert states_of(recorder, run.run_id) == ["Running", "AwaitingRetry", "Retrying", "AwaitingRetry", "Retrying", "Completed"]


def test_a_failure_raises_its_own_exception_to_the_caller_once_retries_are_spent(clock, recorder):
    @task(retries=1, retry_delay_seconds=5)
    def broken() -> None:
        raise KeyError("still broken")

    with pytest.raises(KeyError, match="still broken"):
        broken()
    assert clock.waits == [5]
    assert states_of(recorder, created(recorder, "broken").run_id)[-1] == "Failed"


def test_return_state_gives_the_final_state_failed_or_completed():
    @task
    def double(x: int) -> int:
        return 2 * x

    @task
    def fails() -> None:
        raise ValueError("no good")

    done = double(21, return_state=True)
    assert done.is_completed() and done.result() == 42
    failed = fails(return_state=True)  # not raised: the caller has the state
    assert failed.is_failed() and isinstance(failed.result(raise_on_failure=False), ValueError)


def test_a_timeout_interrupts_a_sleeping_body_on_the_main_thread():
    assert threading.current_thread() is threading.main_thread()

    @task(timeout_seconds=0.2)
    def sleeps() -> None:
        time.sleep(30)  # woken by the timeout (SIGINT to this thread), not left to finish

    begun = time.monotonic()
    with pytest.raises(TaskRunTimeout, match="exceeded its timeout of 0.2 s"):
        sleeps()
    assert time.monotonic() - begun < 10
    state = sleeps.with_options(timeout_seconds=0.2)(return_state=True)
    assert state.name == "TimedOut"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the call's handler is gone


def test_a_timeout_fires_when_the_fake_clock_passes_it(clock):
    started = threading.Event()
    stop = threading.Event()

    @task(timeout_seconds=30)
    def busy() -> None:
        started.set()
        while not stop.is_set():  # busy in Python code: the interrupt lands at once
            pass

    def driver() -> None:
        assert started.wait(10)
        clock.advance(30)
        if not finished.wait(20):  # a safety valve, not an ordering: the timeout did not fire
            stop.set()

    finished = threading.Event()
    thread = threading.Thread(target=driver)
    thread.start()
    begun = time.monotonic()
    try:
        state = busy(return_state=True)
    finally:
        finished.set()
        thread.join()
    assert state.name == "TimedOut" and not stop.is_set()
    assert time.monotonic() - begun < 20, "the 30 s timeout took real time"


def test_a_cached_result_is_reused_by_a_second_call_until_it_expires(clock):
    calls: list[int] = []

    @task(cache_key_fn=task_input_hash, cache_expiration=datetime.timedelta(seconds=60))
    def expensive(x: int) -> int:
        calls.append(x)
        return x * 10

    assert expensive(4) == 40
    second = expensive(4, return_state=True)
    assert second.name == "Cached" and second.result() == 40 and calls == [4]
    assert expensive(5) == 50 and calls == [4, 5]  # other inputs, another key
    clock.advance(61)
    assert expensive(4) == 40 and calls == [4, 5, 4]


def test_a_cached_result_is_reused_by_a_call_in_another_process(tmp_path):
    script = tmp_path / "cached_task.py"
    script.write_text(textwrap.dedent('''
        from tether import task, task_input_hash

        @task(cache_key_fn=task_input_hash)
        def expensive(x):
            print("ran", flush=True)
            return {"value": x * 2}

        print(expensive(21), flush=True)
    '''))
    env = {**os.environ, "TETHER_HOME": str(tmp_path / "home")}
    first = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60, check=True)
    second = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert first.stdout.split() == ["ran", "{'value':", "42}"], first.stderr
    assert second.stdout.split() == ["{'value':", "42}"], second.stderr


def test_hooks_get_the_task_the_run_and_its_state():
    seen: list[tuple[str, str, str | None, str]] = []

    def hook(kind: str):
        return lambda tsk, run, state: seen.append((kind, tsk.name, run.flow_run_id, state.name))

    @task(on_running=[hook("running")], on_completion=[hook("completion")], on_failure=[hook("failure")])
    def works(fail: bool) -> str:
        if fail:
            raise RuntimeError("as asked")
        return "done"

    assert works(False) == "done"
    with pytest.raises(RuntimeError):
        works(True)
    assert seen == [
        ("running", "works", None, "Running"), ("completion", "works", None, "Completed"),
        ("running", "works", None, "Running"), ("failure", "works", None, "Failed"),
    ]


def test_the_body_sees_its_task_run_and_no_flow_run_and_logs_to_its_run(recorder):
    seen = {}

    @task(task_run_name="load-{table}", tags=["etl"])
    def load(table: str) -> None:
        seen["task_run"] = (tether.runtime.task_run.name, tether.runtime.task_run.task_name, tether.runtime.task_run.parameters)
        seen["flow_run"] = (tether.runtime.flow_run.id, tether.runtime.flow_run.name, tether.runtime.flow_run.tags)
        seen["tags"] = tether.runtime.task_run.tags
        get_run_logger().info("loading %s", table)

    load("users")
    assert seen["task_run"] == ("load-users", "load", {"table": "users"})
    assert seen["flow_run"] == (None, None, [])
    assert seen["tags"] == ["etl"]
    run = created(recorder, "load")
    assert run.run_name == "load-users"  # recorded under its own name, as a flow's task run is
    [log] = [e for e in recorder.events if isinstance(e, LogEmitted) and e.message == "loading users"]
    assert log.run_id == run.run_id and log.flow_run_id is None


def test_the_body_has_no_flow_run_context_and_a_flow_it_calls_is_a_top_level_flow_run(recorder):
    from tether import flow
    from tether.context import FlowRunContext

    seen = {}

    @flow
    def inner() -> str | None:
        seen["root"] = tether.runtime.flow_run.root_flow_run_id
        seen["id"] = tether.runtime.flow_run.id
        return tether.runtime.flow_run.parent_flow_run_id

    @task
    def outer() -> str | None:
        seen["context"] = FlowRunContext.get()  # None, as in Prefect: no flow run here
        return inner()

    assert outer() is None  # the flow has no parent flow run
    assert seen["context"] is None
    assert seen["root"] == seen["id"] is not None  # its own root


def test_a_task_called_in_the_body_is_a_run_of_its_own_and_submit_is_refused(recorder):
    @task
    def inner(x: int) -> int:
        return x + 1

    @task
    def outer(x: int) -> int:
        return inner(x) * 2

    @task
    def submits() -> None:
        inner.submit(1)

    assert outer(1) == 4
    assert [e.name for e in recorder.runs("task")] == ["outer", "inner"]
    assert all(e.flow_run_id is None for e in recorder.runs("task"))
    with pytest.raises(UsageError, match="no runner to run it"):
        submits()


def test_an_async_task_called_outside_a_flow_is_awaited_as_a_run(clock, recorder):
    calls: list[int] = []

    @task(retries=1, retry_delay_seconds=3)
    async def fetch(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise ConnectionError("first try")
        await asyncio.sleep(0)
        return x * 3

    assert asyncio.run(fetch(2)) == 6
    assert calls == [2, 2] and clock.waits == [3]
    assert states_of(recorder, created(recorder, "fetch").run_id)[-1] == "Completed"


# -- interrupts ------------------------------------------------------------------------------


def test_ctrl_c_in_the_body_ends_the_run_cancelled_and_goes_on_up(recorder):
    @task(retries=3)
    def interrupted() -> None:
        raise KeyboardInterrupt  # as Ctrl-C would, at this line

    with pytest.raises(KeyboardInterrupt):
        interrupted(return_state=True)  # an interrupt is raised whatever was asked for
    assert states_of(recorder, created(recorder, "interrupted").run_id) == ["Running", "Cancelled"]


def test_sigterm_on_the_main_thread_ends_the_run_cancelled_and_exits_with_143(recorder):
    before = signal.getsignal(signal.SIGTERM)

    @task
    def terminated() -> None:
        signal.raise_signal(signal.SIGTERM)  # the call's handler raises it in the body

    with pytest.raises(Terminated) as raised:
        terminated()
    assert raised.value.code == 143
    assert states_of(recorder, created(recorder, "terminated").run_id) == ["Running", "Cancelled"]
    assert signal.getsignal(signal.SIGTERM) is before


# -- transactions and resources around the call ----------------------------------------------


def test_in_a_transaction_the_called_task_is_a_member_run_with_its_own_child_transaction(recorder):
    log: list[str] = []

    @task(on_commit=[lambda txn: log.append(f"commit {txn.get('seen')}")], on_rollback=[lambda txn: log.append("rollback")])
    def step() -> int:
        own = get_transaction()
        assert own is not None and own is not outer and own.get_parent() is outer
        own.set("seen", "by the run")
        return 1

    with transaction() as outer:
        assert step() == 1
    assert outer.is_committed() and log == ["commit by the run"]
    assert created(recorder, "step").flow_run_id is None

    @task(retries=1)
    def fails() -> None:
        raise ValueError("in the transaction")

    log.clear()
    with pytest.raises(ValueError), transaction() as outer:
        step()
        fails()
    assert outer.is_rolled_back() and log == ["rollback"]


def test_a_plain_resources_value_is_passed_to_the_task_as_it_is(recorder):
    opened: list[str] = []

    @resource
    def connection(name: str):
        opened.append(f"open {name}")
        yield {"name": name}
        opened.append(f"close {name}")

    @task
    def query(conn: dict) -> str:
        return conn["name"]

    with connection("db") as conn:
        assert query(conn) == "db"
    assert opened == ["open db", "close db"]
    assert created(recorder, "query").parameters == {"conn": {"name": "db"}}


# -- the run store ----------------------------------------------------------------------------


def test_the_store_keeps_the_task_run_with_no_flow_run_and_its_states(sqlite_store):
    @task(retries=1)
    def flaky_once(x: int) -> int:
        if not hasattr(flaky_once, "failed"):
            flaky_once.failed = True
            raise ConnectionError("once")
        get_run_logger().info("second attempt")
        return x

    assert flaky_once(7) == 7
    assert tether.store.flush()
    with sqlite_store.engine.connect() as conn:
        [row] = conn.execute(sa.text("SELECT id, flow_run_id, name, state_name, run_count FROM task_runs")).all()
        steps = conn.execute(sa.text("SELECT name, flow_run_id FROM state_changes WHERE run_id = :id ORDER BY id"), {"id": row.id}).all()
        logs = conn.execute(sa.text("SELECT message, flow_run_id FROM logs WHERE run_id = :id"), {"id": row.id}).all()
        flows = conn.execute(sa.text("SELECT count(*) FROM flow_runs")).scalar()
    assert (row.flow_run_id, row.name, row.state_name, row.run_count) == (None, "flaky_once", "Completed", 2)
    assert [s.name for s in steps] == ["Running", "AwaitingRetry", "Retrying", "Completed"]
    assert all(s.flow_run_id is None for s in steps)
    assert ("second attempt", None) in [tuple(x) for x in logs]
    assert flows == 0

    # The CLI and the dashboard list flow runs, and show a task run with its flow run: a task
    # run with none is not listed, and asking for it is a "not found" (the dashboard's 404).
    assert tether.store.runs_page(sqlite_store).runs == []
    with pytest.raises(tether.store.RunNotFound, match="ran outside any flow"):
        tether.store.task_run_view(sqlite_store, row.id)
    env = {**os.environ, "TETHER_LOGGING_LEVEL": "WARNING"}
    listed = subprocess.run([sys.executable, "-m", "tether.cli", "runs", "ls", "--json"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def test_a_tag_limit_in_the_store_holds_a_slot_for_the_run(sqlite_store):
    sqlite_store.set_limit("db", 1)
    held = {}

    @task(tags=["db"])
    def uses_db() -> None:
        [view] = [v for v in tether.store.limit_views(sqlite_store) if v.tag == "db"]
        held["holders"] = [(h.tag, h.task) for h in view.holders]

    uses_db()
    assert held["holders"] == [("db", "uses_db")]
    [view] = [v for v in tether.store.limit_views(sqlite_store) if v.tag == "db"]
    assert view.holders == []  # released at the end
