"""`Store.wait_for_change`: a reader wakes when another process commits runs (PostgreSQL NOTIFY), or polls (SQLite)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa

from tether.store import open_store
from tether.store._changes import POLL_SECONDS, ChangeWaiter
from tether.store._db import write
from tether.testing import FakeClock

#: A flow run in another process, recording to the store named by TETHER_DATABASE_URL.
WRITER = """
from tether import flow, task

@task
def add(x, y):
    return x + y

@flow
def adds(n):
    return sum(add.submit(i, 1).result() for i in range(n))

assert adds(5) == 15
"""


def _run_writer(url: str, home: str) -> None:
    env = {**os.environ, "TETHER_DATABASE_URL": url, "TETHER_HOME": home, "TETHER_STORE": "on"}
    done = subprocess.run([sys.executable, "-c", WRITER], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_reader_on_postgresql_wakes_when_another_process_commits_a_run(postgres_database, tmp_path):
    store = open_store(postgres_database)
    # A waiter that would poll only once an hour: what wakes it can only be a notification.
    notified_only = ChangeWaiter(store.engine, poll_seconds=3600.0)
    try:
        assert not store.wait_for_change(0.0)  # listening from now on; nothing has changed
        assert not notified_only.wait(0.0)
        writer = threading.Thread(target=_run_writer, args=(postgres_database, str(tmp_path / "home")))
        writer.start()
        try:
            # Woken by the commit of the writer's first batch: its rows are there to read.
            assert store.wait_for_change(60.0)
            assert [run.name for run in store.flow_runs()] == ["adds"]
            assert notified_only.wait(60.0)
        finally:
            writer.join()
        # Its later batches, committed meanwhile, are reported to the next wait at once.
        while store.wait_for_change(0.0):
            pass
        (run,) = store.flow_runs()
        assert run.state_name == "Completed" and run.task_counts == {"COMPLETED": 5}
        # Nobody writes now: a wait runs out. A write that rolls back notifies nobody either.
        assert not store.wait_for_change(0.2)

        def fails(conn: sa.Connection) -> None:
            conn.exec_driver_sql("UPDATE flow_runs SET name = 'renamed'")
            raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            write(store.engine, fails, changes=True)
        assert not store.wait_for_change(0.2)
        write(store.engine, lambda conn: conn.exec_driver_sql("UPDATE flow_runs SET name = 'renamed'"), changes=True)
        assert store.wait_for_change(10.0)
    finally:
        notified_only.close()
        store.close()
    assert not [t for t in threading.enumerate() if t.name == "tether-store-changes"]  # close stopped listening


def test_a_closed_store_wakes_its_waiters_and_stops_listening(postgres_database):
    store = open_store(postgres_database)
    assert not store.wait_for_change(0.0)
    answers: list[bool] = []
    waiting = threading.Thread(target=lambda: answers.append(store.wait_for_change(600.0)))
    waiting.start()
    store.close()
    waiting.join(10)
    assert answers == [False] and not waiting.is_alive()


def test_a_reader_on_sqlite_polls_the_change_token(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'tether.db'}")
    try:
        clock = FakeClock()
        waiter = ChangeWaiter(store.engine, clock=clock)
        assert not waiter.wait(3.0)  # nothing changed: one look every POLL_SECONDS until the timeout
        assert clock.waits == [POLL_SECONDS] * round(3.0 / POLL_SECONDS)
        store.set_limit("db", 2)  # committed between two waits: the next one reports it at once
        clock.waits.clear()
        assert waiter.wait(3.0) and clock.waits == []
        assert not waiter.wait(1.0)
        # The store's own waiter, on the real clock.
        assert not store.wait_for_change(0.0)
        store.set_limit("db", 3)
        assert store.wait_for_change(10.0)
    finally:
        store.close()
