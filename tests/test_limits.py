"""Concurrency limits by tag: in one process and across processes (faults: test_limits_faults.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

import tether.limits
import tether.store
from tether import flow, tags, task
from tether._limits import LimitIsZeroError
from tether.runners import ThreadPoolRunner
from tether.store import StoreError

SCRIPT = Path(__file__).parent / "scripts" / "limited_flow.py"


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request, tmp_path, monkeypatch):
    """The environment of a run store on SQLite (under TETHER_HOME) or on PostgreSQL."""
    env = {"TETHER_HOME": str(tmp_path / "home"), "TETHER_STORE": "on"}
    if request.param == "postgres":
        env["TETHER_DATABASE_URL"] = request.getfixturevalue("postgres_store_url")  # a schema of the test's own
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def unique_tag() -> str:
    return f"db-{uuid.uuid4().hex[:8]}"


def rows_left(tag: str) -> tuple[int, int]:
    """The store's own rows of holders and waiters of ``tag`` (dead processes' included)."""
    store = tether.store.active_store()
    assert store is not None
    with store.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE tag = :tag"), {"tag": tag}).scalar()
            for table in ("limit_slots", "limit_waiters")
        )


def test_a_tag_limit_holds_in_one_process(store_env):
    tag = unique_tag()
    tether.limits.set(tag, 2)
    lock = threading.Lock()
    running, peak = [0], [0]
    both = threading.Barrier(2, timeout=10)

    @task(tags=[tag])
    def work(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if i < 2:
            both.wait()  # the first two meet: the limit is reached
        with lock:
            running[0] -= 1
        return i

    @flow(task_runner=ThreadPoolRunner(8))
    def main():
        return [f.result() for f in [work.submit(i) for i in range(20)]]

    try:
        assert main() == list(range(20))
        assert rows_left(tag) == (0, 0)  # 18 runs waited, and each stopped waiting
    finally:
        tether.limits.remove(tag)
    assert peak[0] == 2


def test_tags_block_adds_a_limited_tag(store_env):
    tag = unique_tag()
    tether.limits.set(tag, 1)
    lock = threading.Lock()
    running, peak = [0], [0]

    @task
    def work(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        with lock:
            running[0] -= 1
        return i

    @flow(task_runner=ThreadPoolRunner(8))
    def main():
        with tags(tag):
            futures = [work.submit(i) for i in range(10)]
        return [f.result() for f in futures]

    try:
        assert main() == list(range(10))
    finally:
        tether.limits.remove(tag)
    assert peak[0] == 1


def test_a_zero_limit_fails_at_once_naming_the_limit(store_env):
    tag = unique_tag()
    tether.limits.set(tag, 0)

    @task(tags=[tag])
    def never():
        raise AssertionError("must not run")

    @flow
    def main():
        return never.submit().result()

    try:
        with pytest.raises(LimitIsZeroError, match=f"tag:{tag}.*concurrency limit is 0.*tether limit set {tag} N"):
            main()
    finally:
        tether.limits.remove(tag)


def test_two_tags_in_either_order_do_not_deadlock(store_env):
    a, b = unique_tag(), unique_tag()
    tether.limits.set(a, 1)
    tether.limits.set(b, 1)

    @task(tags=[a, b])
    def ab(i):
        return i

    @task(tags=[b, a])
    def ba(i):
        return -i

    @flow(task_runner=ThreadPoolRunner(8))
    def main():
        futures = [(ab if i % 2 else ba).submit(i) for i in range(20)]
        return sorted(abs(f.result()) for f in futures)

    try:
        assert main() == list(range(20))
    finally:
        tether.limits.remove(a)
        tether.limits.remove(b)


def run_flow_processes(tag: str, processes: int, tasks: int, counter: Path, env: dict[str, str]) -> list[subprocess.Popen[str]]:
    full_env = {**os.environ, **env, "TETHER_LOGGING_LEVEL": "WARNING"}
    return [
        subprocess.Popen([sys.executable, str(SCRIPT), tag, str(tasks), str(counter)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
        for _ in range(processes)
    ]


def run_under_a_limit(
    limit: int, processes: int, tasks: int, tmp_path: Path, env: dict[str, str], timeout: float
) -> tuple[list[str], tuple[int, int, int]]:
    """Set a limit on a new tag, run ``processes`` flow processes of ``tasks`` tagged tasks each,
    remove the limit; their outputs, and (running, peak, done) as the tasks counted them."""
    tag = unique_tag()
    tether.limits.set(tag, limit)
    counter = tmp_path / "counter"
    counter.write_text("0 0 0")
    outputs = []
    try:
        for proc in run_flow_processes(tag, processes, tasks, counter, env):
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err
            outputs.append(out)
        assert rows_left(tag) == (0, 0)  # no holder and no waiter row outlives the runs
    finally:
        tether.limits.remove(tag)
    running, peak, done = map(int, counter.read_text().split())
    return outputs, (running, peak, done)


def test_a_limit_holds_across_four_processes(store_env, tmp_path):
    outputs, (running, peak, done) = run_under_a_limit(3, 4, 50, tmp_path, store_env, timeout=240)
    assert all(out.strip().splitlines()[-1] == str(sum(range(50))) for out in outputs)
    assert done == 200 and running == 0
    assert peak == 3  # never more than the limit, and the limit was reached


def test_limit_cli_shows_holders_and_frees_them(store_env, tmp_path):
    tag = unique_tag()
    env = {**os.environ, **store_env}
    tether_cli = [sys.executable, "-m", "tether.cli"]
    subprocess.run([*tether_cli, "limit", "set", tag, "1"], check=True, env=env, capture_output=True)
    counter = tmp_path / "counter"
    counter.write_text("0 0 0")
    holder = subprocess.Popen([sys.executable, str(SCRIPT), tag, "1", str(counter), "--hold"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**env, "TETHER_LOGGING_LEVEL": "WARNING"})
    try:
        assert holder.stdout.readline().strip() == "holding"
        listed = subprocess.run([*tether_cli, "limit", "ls", "--json"], env=env, capture_output=True, text=True, check=True)
        (entry,) = [e for e in __import__("json").loads(listed.stdout) if e["tag"] == tag]
        assert entry["limit"] == 1 and entry["holders"][0]["pid"] == holder.pid and entry["holders"][0]["task"] == "work"
        assert entry["holders"][0]["slot"] == 0
        removed = subprocess.run([*tether_cli, "limit", "rm", tag], env=env, capture_output=True, text=True, check=True)
        assert "1 held slot(s) freed" in removed.stdout
    finally:
        holder.kill()
        holder.wait()


def test_across_machines_postgres_notices_wake_the_waiters(postgres_store_url, tmp_path, monkeypatch):
    """With no local wake-ups at all (as between machines), a released slot still wakes the
    other processes at once: PostgreSQL's NOTIFY, not the periodic retry (here 600 s)."""
    env = {"TETHER_HOME": str(tmp_path / "home"), "TETHER_STORE": "on", "TETHER_DATABASE_URL": postgres_store_url,
           "TETHER_SLOT_WAKEUPS": "store", "TETHER_SLOT_RETRY_SECONDS": "600"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _, counted = run_under_a_limit(1, 2, 10, tmp_path, env, timeout=120)  # far below the 600 s retry
    assert counted == (0, 1, 20)


def test_a_limit_in_a_store_without_locks_that_die_fails_the_run_saying_why(mariadb_url, monkeypatch):
    """MySQL/MariaDB stores record runs, but tether holds no slots there: a run that needs one
    fails at once, naming the tag and the way out, rather than being let through or left waiting."""
    import pymysql

    database = f"tether_limits_{uuid.uuid4().hex[:8]}"
    server = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    server.cursor().execute(f"CREATE DATABASE {database}")
    monkeypatch.setenv("TETHER_STORE", "on")
    monkeypatch.setenv("TETHER_DATABASE_URL", mariadb_url.rsplit("/", 1)[0] + f"/{database}")
    tag = unique_tag()

    @task(tags=[tag])
    def limited():
        raise AssertionError("must not run")

    @task
    def free():
        return 1

    @flow
    def main(use_limit: bool):
        return (limited if use_limit else free).submit().result()

    try:
        assert main(False) == 1
        tether.limits.set(tag, 1)
        with pytest.raises(StoreError, match=f"'limited' needs a slot of tag '{tag}'.*is mysql.*tether limit rm {tag}"):
            main(True)
        assert [(i.tag, i.capacity, i.held, i.waiting) for i in tether.limits.ls()] == [(tag, 1, 0, 0)]
        assert tether.limits.remove(tag)
    finally:
        tether.store.disable()
        server.cursor().execute(f"DROP DATABASE {database}")
        server.close()
