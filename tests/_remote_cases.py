"""What every runner with workers in other processes must do; run by the process, Dask and Ray tests.

Each test module imports the ``test_*`` functions below (``from _remote_cases import *``)
and provides the fixtures ``make_runner`` (a function returning a fresh runner on that
module's workers), ``worker_count`` (worker processes) and ``capacity`` (task bodies
that can run at once). Resources here record their steps in a file (one JSON line per
step, appended), since a worker's memory cannot be looked at from the test.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from _waiting import wait_until
from tether import UnpicklableArgumentError, flow, get_run_logger, resource, task
from tether.store import active_store
from tether.testing import FakeClock, RecordingStore

# -- a resource that records its life in a file ------------------------------------------


class StepLog:
    """Steps appended to a file by any process: ``{"step", "pid", ...}`` per line, in order."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def add(self, step: str, **fields: Any) -> None:
        line = json.dumps({"step": step, "pid": os.getpid(), "t": time.time(), **fields}) + "\n"
        with open(self.path, "a") as f:  # O_APPEND: lines from several processes do not mix
            f.write(line)

    def entries(self, step: str | None = None) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return [r for r in rows if step is None or r["step"] == step]


class Handle:
    """A resource value that cannot be pickled (it holds a lock), like a connection."""

    def __init__(self, log: StepLog) -> None:
        self.log = log
        self.lock = threading.Lock()
        self.closed = False

    def use(self, i: int) -> int:
        self.log.add("used-after-close" if self.closed else "used", i=i)
        return os.getpid()


@resource
def recorded(log: StepLog):
    log.add("setup")
    handle = Handle(log)
    try:
        yield handle
    except BaseException as exc:
        log.add("cleanup", error=f"{type(exc).__name__}: {exc}")
        raise
    else:
        log.add("cleanup", error=None)
    finally:
        handle.closed = True


@resource
def derived(outer: Handle, log: StepLog):
    """A resource opened with another one's value: on a worker, from that worker's copy."""
    log.add("inner-setup", outer_pid=outer.use(-1))
    try:
        yield {"outer": outer}
    finally:
        log.add("inner-cleanup", outer_closed=outer.closed)


@task
def use(handle: Handle, i: int) -> int:
    return handle.use(i)


@task
def use_inner(inner: dict[str, Handle], i: int) -> int:
    return inner["outer"].use(i)


@task
def use_or_fail(handle: Handle, i: int, bad: int) -> int:
    handle.use(i)
    if i == bad:
        raise ValueError(f"task {i} failed")
    return os.getpid()


def worker_steps(log: StepLog, step: str) -> list[dict[str, Any]]:
    """The steps taken in worker processes (not in this, the flow's, process)."""
    return [e for e in log.entries(step) if e["pid"] != os.getpid()]


# -- the shared tests --------------------------------------------------------------------


def test_each_worker_opens_one_copy_and_closes_it_after_its_last_task(make_runner, worker_count, tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")

    @flow(task_runner=make_runner())
    def pipeline():
        with recorded(log) as handle:
            futures = [use.submit(handle, i) for i in range(100)]
        return [f.result() for f in futures]

    pids = pipeline()
    setups, cleanups = worker_steps(log, "setup"), worker_steps(log, "cleanup")
    assert len(set(pids)) == worker_count and os.getpid() not in pids
    assert sorted(e["pid"] for e in setups) == sorted(set(pids))  # once per worker process
    assert sorted(e["pid"] for e in cleanups) == sorted(set(pids))
    assert all(e["error"] is None for e in cleanups)
    assert log.entries("used-after-close") == []
    rows = log.entries()
    for pid in set(pids):
        mine = [i for i, e in enumerate(rows) if e["pid"] == pid]
        last_use = max(i for i in mine if rows[i]["step"] == "used")
        (cleanup,) = [i for i in mine if rows[i]["step"] == "cleanup"]
        assert cleanup > last_use, f"worker {pid} cleaned up before its last task of the scope"
    # The flow process opened no copy of its own: exactly one setup and one cleanup per worker.
    assert len(log.entries("setup")) == len(log.entries("cleanup")) == worker_count


def test_setup_failure_raises_at_the_with_statement_and_nothing_is_cleaned_up(make_runner, tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")

    @resource
    def broken(log: StepLog):
        log.add("setup")
        raise ConnectionRefusedError("no database on port 1")
        yield  # pragma: no cover

    reached: list[str] = []

    @flow(task_runner=make_runner())
    def pipeline():
        try:
            with broken(log) as handle:
                reached.append("body")
                use.submit(handle, 0)
        except ConnectionRefusedError as exc:
            reached.append(f"caught at with: {exc}")
            raise

    with RecordingStore() as store:
        state = pipeline(return_state=True)
    assert state.is_failed() and "no database on port 1" in state.message
    assert reached == ["caught at with: no database on port 1"]
    (setup,) = log.entries("setup")
    assert setup["pid"] != os.getpid()  # it ran on a worker
    assert [e.step for e in store.resource_steps("broken")] == ["setup-started", "setup-failed"]


def test_the_flow_process_opens_its_own_copy_only_when_it_uses_the_value(make_runner, worker_count, tmp_path):
    from tether.resources import local

    log = StepLog(tmp_path / "steps.jsonl")
    seen: dict[str, Any] = {}

    @flow(task_runner=make_runner())
    def pipeline():
        with recorded(log) as handle:
            futures = [use.submit(handle, i) for i in range(20)]
            seen["before"] = [e["pid"] for e in log.entries("setup")]
            here = use(handle, 100)  # a called task runs in the flow process, on its own copy
            seen["attribute"] = handle.use(101)  # so does the flow body
            seen["local"] = type(local(handle)).__name__
        return here, [f.result() for f in futures]

    here, remote = pipeline()
    assert here == seen["attribute"] == os.getpid()
    assert seen["local"] == "Handle"
    assert os.getpid() not in seen["before"]  # nothing here until the value was used here
    setups = [e["pid"] for e in log.entries("setup")]
    assert setups.count(os.getpid()) == 1 and len(setups) == len(set(remote)) + 1
    cleanups = [e["pid"] for e in log.entries("cleanup")]
    assert sorted(cleanups) == sorted(setups)


def test_a_failing_task_fails_every_copy_with_its_error(make_runner, worker_count, tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")

    @flow(task_runner=make_runner())
    def pipeline():
        with recorded(log) as handle:
            futures = [use_or_fail.submit(handle, i, 50) for i in range(100)]
        return [f.result() for f in futures]

    state = pipeline(return_state=True)
    assert state.is_failed() and "task 50 failed" in state.message
    cleanups = worker_steps(log, "cleanup")
    assert len(cleanups) == worker_count
    assert {e["error"] for e in cleanups} == {"ValueError: task 50 failed"}


def test_the_ledger_records_each_copy_with_its_worker(make_runner, worker_count, tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")

    @flow(task_runner=make_runner())
    def pipeline():
        with recorded(log) as handle:
            return [f.result() for f in [use.submit(handle, i) for i in range(20)]]

    with RecordingStore() as store:
        pids = set(pipeline())
    steps = [e for e in store.resource_steps("recorded") if e.pid != os.getpid()]
    by_pid: dict[int, list[str]] = {}
    for event in steps:
        by_pid.setdefault(event.pid, []).append(event.step)
        assert event.worker == socket.gethostname() and event.details["worker"]
    assert set(by_pid) == pids
    assert all(s == ["setup-started", "setup", "cleanup"] for s in by_pid.values()), by_pid


def test_workers_write_their_copies_ledger_rows_and_the_flow_process_none(make_runner, worker_count, tmp_path, monkeypatch):
    monkeypatch.delenv("TETHER_STORE", raising=False)  # the store, in this test's TETHER_HOME
    log = StepLog(tmp_path / "steps.jsonl")

    @flow(task_runner=make_runner())
    def pipeline():
        with recorded(log) as handle:
            return sorted({f.result() for f in [use.submit(handle, i) for i in range(40)]})

    pipeline()  # the store exists now
    store = active_store()
    assert store is not None
    written: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if re.search(r"\bresources\b", statement) and not statement.lstrip().upper().startswith("SELECT"):
            written.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", seen)
    try:
        with RecordingStore() as events:
            pids = pipeline()
        store.flush()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", seen)
    assert written == []  # every step of the workers' copies was written by the worker itself
    steps = [e for e in events.resource_steps("recorded") if e.step != "used"]
    assert {e.pid for e in steps} == set(pids) and len(pids) == worker_count  # every recorder still sees them...
    assert all(e.details["stored_in"] == store.location.url for e in steps)  # ...marked as stored
    scope_id = steps[0].scope_id
    rows = [r for r in store.resources() if r.scope_id == scope_id]
    assert sorted(r.pid for r in rows) == pids
    assert all((r.setup_outcome, r.cleanup_outcome, r.flow_run_id) == ("succeeded", "succeeded", steps[0].flow_run_id) for r in rows)


@dataclasses.dataclass
class Connection:
    host: str
    conn: Any


def test_unpicklable_arguments_fail_at_submit_naming_them(make_runner, tmp_path):
    lock = threading.Lock()
    raw = socket.socket()
    errors: list[str] = []

    @task
    def takes(value):
        return value

    @flow(task_runner=make_runner())
    def pipeline():
        for argument in (lock, raw, [1, 2, {"conn": raw}], Connection(host="db", conn=raw)):
            with pytest.raises(UnpicklableArgumentError) as caught:
                takes.submit(argument)
            errors.append(str(caught.value))

    class Holder:
        def __init__(self, handle):
            self.handle = handle

    @flow(task_runner=make_runner())
    def hidden(log):
        with recorded(log) as handle:
            with pytest.raises(UnpicklableArgumentError) as caught:
                takes.submit(Holder(handle))
            errors.append(str(caught.value))

    try:
        pipeline()
        hidden(StepLog(tmp_path / "steps.jsonl"))
    finally:
        raw.close()
    assert "argument 'value' is a _thread.lock" in errors[0]
    assert "argument 'value' is a socket.socket" in errors[1]
    assert "argument 'value' holds, at value[2]['conn'], a socket.socket" in errors[2]
    assert "argument 'value' holds, at value.conn, a socket.socket" in errors[3]  # a dataclass's field
    assert all("@resource" in e and "cannot be pickled" in e for e in errors[:4])
    assert "A value of resource 'recorded' is inside an object" in errors[4]


def test_a_resource_opened_with_another_ones_value_nests_on_each_worker(make_runner, worker_count, tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")

    @flow(task_runner=make_runner())
    def pipeline():
        with recorded(log) as outer, derived(outer, log) as inner:
            return [f.result() for f in [use_inner.submit(inner, i) for i in range(20)]]

    pids = set(pipeline())
    assert len(pids) == worker_count
    for pid in pids:
        steps = [e["step"] for e in log.entries() if e["pid"] == pid and e["step"] != "used"]
        assert steps == ["setup", "inner-setup", "inner-cleanup", "cleanup"], steps  # inner first, on each worker
    assert all(not e["outer_closed"] for e in worker_steps(log, "inner-cleanup"))


def test_closures_run_remotely_and_results_come_back(make_runner):
    offset = 1000

    @task
    def add(x):
        return x + offset, os.getpid()

    @flow(task_runner=make_runner())
    def pipeline():
        return [f.result() for f in add.map(range(10))]

    results = pipeline()
    assert [value for value, _ in results] == list(range(1000, 1010))
    assert os.getpid() not in {pid for _, pid in results}


def test_worker_logs_reach_the_run_log(make_runner):
    @task
    def chatty(i):
        get_run_logger().info("hello from task %d in process %d", i, os.getpid())
        return os.getpid()

    @flow(task_runner=make_runner())
    def pipeline():
        return [f.result() for f in chatty.map(range(3))]

    with RecordingStore() as store:
        pids = pipeline()
    messages = sorted(e.message for e in store.logs() if "hello from task" in e.message)
    assert messages == [f"hello from task {i} in process {pid}" for i, pid in enumerate(pids)]
    task_runs = {r.run_id for r in store.runs("task")}
    assert {e.run_id for e in store.logs() if "hello from task" in e.message} == task_runs


def test_retries_are_decided_in_the_flow_process(make_runner, tmp_path):
    log = StepLog(tmp_path / "attempts.jsonl")

    @task(retries=2)
    def flaky():
        log.add("attempt")
        if len(log.entries("attempt")) < 3:
            raise ConnectionError("not yet")
        return "done"

    @flow(task_runner=make_runner())
    def pipeline():
        return flaky.submit().result()

    with RecordingStore() as store:
        assert pipeline() == "done"
    (run,) = store.runs("task")
    assert store.states_of(run.run_id) == ["Running", "AwaitingRetry", "Retrying", "AwaitingRetry", "Retrying", "Completed"]
    assert os.getpid() not in {e["pid"] for e in log.entries("attempt")}


def test_a_timeout_interrupts_the_body_on_its_worker(make_runner, tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")

    @task(timeout_seconds=0.5)
    def slow():
        log.add("started")
        try:
            for _ in range(1200):
                time.sleep(0.05)
        except BaseException as exc:
            log.add("stopped", error=type(exc).__name__)
            raise

    @flow(task_runner=make_runner())
    def pipeline():
        return slow.submit().wait()

    with RecordingStore() as store:
        pipeline(return_state=True)
    (run,) = store.runs("task")
    assert store.states_of(run.run_id)[-1] == "TimedOut"
    # What lands in the body is a BaseException, as in Prefect, which its `except Exception` cannot swallow.
    assert [e["error"] for e in log.entries("stopped")] == ["TimeoutInterrupt"]


def test_a_timeout_that_lands_in_a_finalizer_is_sent_again_on_its_worker(make_runner, tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")

    class SpinsUntilInterrupted:
        def __del__(self):  # Python drops what lands here ("Exception ignored in")
            log.add("finalizing")
            spin_until = time.monotonic() + 30  # a bound, should no interrupt ever come
            while time.monotonic() < spin_until:
                pass

    @task(timeout_seconds=0.5)
    def spins():
        SpinsUntilInterrupted()  # freed at once: the timeout lands in its __del__
        log.add("went on")
        try:
            spin_until = time.monotonic() + 30
            while time.monotonic() < spin_until:
                pass
        except BaseException as exc:
            log.add("stopped", error=type(exc).__name__)
            raise

    states = []

    @flow(task_runner=make_runner())
    def pipeline():
        future = spins.submit()
        future.wait()
        states.append(future.state)

    pipeline()
    assert [s.name for s in states] == ["TimedOut"]
    assert "abandoned" not in states[0].message  # stopped by the interrupt sent again, not given up on
    assert [e["step"] for e in log.entries()] == ["finalizing", "went on", "stopped"]
    assert [e["error"] for e in log.entries("stopped")] == ["TimeoutInterrupt"]


def test_cancelling_the_flow_interrupts_running_tasks_and_cancels_waiting_ones(make_runner, worker_count, capacity, tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")
    futures: list[Any] = []

    @task
    def long(handle, i):
        handle.use(i)
        log.add("started", i=i)
        try:
            for _ in range(1200):
                time.sleep(0.05)
        except BaseException as exc:
            log.add("stopped", i=i, error=type(exc).__name__)
            raise

    @flow(task_runner=make_runner())
    def pipeline():
        with recorded(log) as handle:
            futures.extend(long.submit(handle, i) for i in range(capacity))
            wait_until(lambda: len(log.entries("started")) == capacity, what="every worker thread to run a task")
            futures.extend(long.submit(handle, i) for i in range(capacity, capacity + 4))
            os.kill(os.getpid(), signal.SIGTERM)  # cancels the flow, as `kill` would
            time.sleep(60)

    state = pipeline(return_state=True)
    assert state.is_cancelled()
    started = {e["i"] for e in log.entries("started")}
    assert started == set(range(capacity))  # the waiting ones never started
    assert sorted(e["i"] for e in log.entries("stopped")) == sorted(started), log.entries()
    assert {e["error"] for e in log.entries("stopped")} == {"TaskRunCancelled"}
    assert {f.state.name for f in futures} == {"Cancelled"}
    cleanups = worker_steps(log, "cleanup")
    assert len(cleanups) == worker_count, cleanups
    assert {e["error"] for e in cleanups} == {"Terminated: 143"}, cleanups


@resource
def gated(log: StepLog, gate: str):
    """Setup waits on a worker until the file ``gate`` exists."""
    log.add("setup-entered")
    wait_until(lambda: os.path.exists(gate), what=f"the gate file {gate}")
    log.add("setup")
    try:
        yield Handle(log)
    except BaseException as exc:
        log.add("cleanup", error=f"{type(exc).__name__}: {exc}")
        raise
    else:
        log.add("cleanup", error=None)


class _Warned(logging.Handler):
    """Sets ``seen`` once a warning containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


def test_sigterm_during_a_workers_setup_still_cleans_that_copy_up(make_runner, tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")
    gate = str(tmp_path / "gate")
    warned = _Warned("while resource 'gated' was being set up on a worker")
    logging.getLogger("tether").addHandler(warned)

    def interrupt_then_open_the_gate() -> None:
        wait_until(lambda: log.entries("setup-entered"), what="the worker to begin the setup")
        os.kill(os.getpid(), signal.SIGTERM)
        warned.seen.wait(60)  # the `with` statement was interrupted and waits for the setup
        Path(gate).touch()

    @flow(task_runner=make_runner())
    def pipeline():
        with gated(log, gate) as handle:
            use.submit(handle, 0).result()

    helper = threading.Thread(target=interrupt_then_open_the_gate)
    helper.start()
    try:
        state = pipeline(return_state=True)
    finally:
        helper.join()
        logging.getLogger("tether").removeHandler(warned)
    assert warned.seen.is_set()
    assert state.is_cancelled()
    assert log.entries("used") == []  # the body never got past the `with`
    (setup,) = log.entries("setup")
    (cleanup,) = log.entries("cleanup")
    assert setup["pid"] == cleanup["pid"] != os.getpid()
    assert cleanup["error"] == "Terminated: 143"


# -- against a real MariaDB ---------------------------------------------------------------


@resource
def mariadb_connection(database: str):
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database=database, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


class InUse:
    """How many task bodies use this process's connection right now, and the most ever."""

    lock = threading.Lock()
    now = 0
    most = 0


@task
def connection_seen(conn: Any, database: str) -> tuple[int, int, int, int]:
    # No lock here: pymysql says threadsafety 1, so tether gives each worker's copy to
    # one task body at a time, although a Dask worker runs several bodies at once.
    with InUse.lock:
        InUse.now += 1
        InUse.most = max(InUse.most, InUse.now)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            (connection_id,) = cur.fetchone()
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (database,))
            (open_here,) = cur.fetchone()
        time.sleep(0.01)  # the task's work: keeps workers busy together
    finally:
        with InUse.lock:
            InUse.now -= 1
    return os.getpid(), connection_id, open_here, InUse.most


def test_mariadb_sees_one_connection_per_worker_and_none_after(make_runner, worker_count, mariadb_url):
    import pymysql

    database = f"tether_remote_{uuid.uuid4().hex[:10]}"
    admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    admin.cursor().execute(f"CREATE DATABASE {database}")
    try:
        @flow(task_runner=make_runner())
        def pipeline():
            with mariadb_connection(database) as conn:
                futures = [connection_seen.submit(conn, database) for _ in range(60)]
            return [f.result() for f in futures]

        seen = pipeline()
        by_pid: dict[int, set[int]] = {}
        for pid, connection_id, _, _ in seen:
            by_pid.setdefault(pid, set()).add(connection_id)
        assert len(by_pid) == worker_count, by_pid
        assert all(len(ids) == 1 for ids in by_pid.values()), by_pid  # one connection per worker
        # The server never saw more than one per worker: the flow process opened none.
        assert max(open_here for _, _, open_here, _ in seen) <= worker_count
        assert max(most for _, _, _, most in seen) == 1  # each copy served one task at a time

        def closed() -> bool:
            with admin.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (database,))
                return cur.fetchone()[0] == 0

        # Counted on this test's own database: other clients of the server do not move it.
        wait_until(closed, timeout=10, what="the server to see every connection to the test database closed")
    finally:
        admin.cursor().execute(f"DROP DATABASE {database}")
        admin.close()


#: Every test above: each runner's module runs them all, with ``from _remote_cases import *``.
def test_a_retry_delay_passes_on_a_fake_clock_as_in_the_flow_process(make_runner, tmp_path):
    log = StepLog(tmp_path / "attempts.jsonl")

    @task(retries=2, retry_delay_seconds=[60, 600])
    def flaky():
        log.add("attempt")
        if len(log.entries("attempt")) < 3:
            raise ConnectionError("not yet")
        return "done"

    @flow(task_runner=make_runner())
    def pipeline():
        return flaky.submit().result()

    with FakeClock() as clock, RecordingStore() as store:
        begun = time.monotonic()
        assert pipeline() == "done"
        elapsed = time.monotonic() - begun
    assert clock.waits == [60, 600]
    assert elapsed < 60, f"the retries took {elapsed:.0f} s of real time"
    (run,) = store.runs("task")
    assert store.states_of(run.run_id) == ["Running", "AwaitingRetry", "Retrying", "AwaitingRetry", "Retrying", "Completed"]


__all__ = sorted(name for name in dict(globals()) if name.startswith("test_"))
