"""Limits under faults, on SQLite and PostgreSQL: a paused holder keeps its slots, a killed
holder's slot goes to a waiter within seconds, and waiter rows go when their wait ends.

Every holder and waiter is a real process (tests/scripts/limit_fault_flow.py), paused or
killed with real signals. Each test judges from what happened: the record its task bodies
append ("enter PID I" / "exit PID I", in the order they happened, across processes),
``tether limit ls --json``, and the store's own rows.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import _waiting
import tether.limits

SCRIPT = Path(__file__).parent / "scripts" / "limit_fault_flow.py"
#: Before slots were locks they were leases; with this lease a holder paused for more than
#: a second lost its slots. Set so that these tests would fail on that code, and ignored now.
OLD_LEASE_SECONDS = 1.0


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request, tmp_path, monkeypatch) -> dict[str, str]:
    env = {"TETHER_HOME": str(tmp_path / "home"), "TETHER_STORE": "on", "TETHER_LOGGING_LEVEL": "WARNING",
           "TETHER_SLOT_LEASE_SECONDS": str(OLD_LEASE_SECONDS)}
    if request.param == "postgres":
        env["TETHER_DATABASE_URL"] = request.getfixturevalue("postgres_store_url")  # a schema of the test's own
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def unique_tag() -> str:
    return f"faults-{uuid.uuid4().hex[:10]}"


def tether_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "tether.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def limit_of(env: dict[str, str], tag: str) -> dict[str, Any]:
    """``tether limit ls --json``'s entry for ``tag``."""
    (entry,) = [e for e in json.loads(tether_cli(env, "limit", "ls", "--json")) if e["tag"] == tag]
    return entry


def waiting(tag: str) -> int:
    """How many runs wait for ``tag``, as `tether.limits.ls` says (in this process: quicker than the CLI)."""
    (info,) = [i for i in tether.limits.ls() if i.tag == tag]
    return info.waiting


def start(tag: str, tasks: int, record: Path, env: dict[str, str], hold_until: Path | None = None,
          timeout: float | None = None) -> subprocess.Popen[str]:
    args = [sys.executable, str(SCRIPT), tag, str(tasks), str(record)]
    if hold_until is not None:
        args += ["--hold-until", str(hold_until)]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    errors = record.parent / f"stderr-{len(_started)}"
    with open(errors, "w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, **env})
    _started.append((proc, errors))
    return proc


_started: list[tuple[subprocess.Popen[str], Path]] = []


@pytest.fixture(autouse=True)
def _forget_started():
    yield
    _started.clear()


def story() -> str:
    """What the processes this test started said on stderr (for a failure's message)."""
    return "\n".join(f"--- pid {p.pid} (exit {p.poll()}):\n{path.read_text()[-3000:]}" for p, path in _started)


def events(record: Path) -> list[tuple[str, int]]:
    """(what, pid) for every line of the record, in order."""
    if not record.exists():
        return []
    return [(what, int(pid)) for what, pid, *_ in (line.split() for line in record.read_text().splitlines())]


def entered(record: Path, pid: int) -> int:
    return sum(1 for what, p in events(record) if what == "enter" and p == pid)


def peak(record: Path) -> int:
    """The most bodies inside their slots at once; a "died PID" line ends all of PID's."""
    inside: dict[int, int] = {}
    most = 0
    for what, pid in events(record):
        if what == "enter":
            inside[pid] = inside.get(pid, 0) + 1
        elif what == "exit":
            inside[pid] -= 1
        elif what == "died":
            inside[pid] = 0
        most = max(most, sum(inside.values()))
    return most


def note_death(record: Path, pid: int) -> None:
    with open(record, "a") as f:
        f.write(f"died {pid}\n")


#: What other processes do, awaited (a loaded machine starts them slowly); a failure tells their stderr.
wait_until = functools.partial(_waiting.wait_until, timeout=120.0, story=story)


def rows(env: dict[str, str], table: str, tag: str) -> list[Any]:
    """The store's own rows of ``table`` for ``tag``, dead processes' included."""
    url = env.get("TETHER_DATABASE_URL") or f"sqlite:///{env['TETHER_HOME']}/tether.db"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(f"SELECT * FROM {table} WHERE tag = :tag"), {"tag": tag}))
    finally:
        engine.dispose()


def finish(*processes: subprocess.Popen[str]) -> None:
    for proc in processes:
        proc.communicate(timeout=120)
        assert proc.returncode == 0, story()


def kill_all(*processes: subprocess.Popen[str]) -> None:
    for proc in processes:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()


def pause_outside_sqlite_writes(proc: subprocess.Popen[str], env: dict[str, str]) -> None:
    """SIGSTOP ``proc`` at a moment it holds no SQLite write lock (a paused writer would stall
    every other process's writes, which is SQLite's and not what this test is about)."""
    while True:
        os.kill(proc.pid, signal.SIGSTOP)
        if env.get("TETHER_DATABASE_URL"):
            return
        db = sqlite3.connect(Path(env["TETHER_HOME"]) / "tether.db", timeout=0, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            os.kill(proc.pid, signal.SIGCONT)  # it was inside a write: let it finish, then again
        finally:
            db.close()


def test_a_paused_holder_keeps_its_slots_however_long_it_is_paused(store_env, tmp_path):
    tag = unique_tag()
    tether_cli(store_env, "limit", "set", tag, "2")
    record, go = tmp_path / "record", tmp_path / "go"
    holder = start(tag, 2, record, store_env, hold_until=go)
    others: list[subprocess.Popen[str]] = []
    try:
        wait_until(lambda: entered(record, holder.pid) == 2, "the holder's two bodies inside their slots")
        pause_outside_sqlite_writes(holder, store_env)
        others = [start(tag, 3, record, store_env) for _ in range(2)]
        wait_until(lambda: waiting(tag) == 6, "the other processes' six runs waiting")
        time.sleep(3 * OLD_LEASE_SECONDS)  # paused for three old leases: nothing was renewed meanwhile
        assert {pid for _, pid in events(record)} == {holder.pid}
        entry = limit_of(store_env, tag)
        assert [h["pid"] for h in entry["holders"]] == [holder.pid, holder.pid] and entry["waiting"] == 6
        assert all(p.poll() is None for p in others)
        go.touch()
        os.kill(holder.pid, signal.SIGCONT)
        finish(holder, *others)
    finally:
        kill_all(holder, *others)
    assert peak(record) == 2
    assert sum(1 for what, _ in events(record) if what == "exit") == 8
    entry = limit_of(store_env, tag)
    assert entry["holders"] == [] and entry["waiting"] == 0
    assert rows(store_env, "limit_slots", tag) == [] and rows(store_env, "limit_waiters", tag) == []


def test_the_slot_of_a_killed_holder_goes_to_a_waiter_within_seconds(store_env, tmp_path):
    tag = unique_tag()
    tether_cli(store_env, "limit", "set", tag, "1")
    record = tmp_path / "record"
    holder = start(tag, 1, record, store_env, hold_until=tmp_path / "never")
    waiter: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: entered(record, holder.pid) == 1, "the holder inside its slot")
        waiter = start(tag, 2, record, store_env)
        wait_until(lambda: waiting(tag) == 2, "the waiter's two runs waiting")
        holder.kill()
        holder.wait()
        killed = time.monotonic()
        note_death(record, holder.pid)
        wait_until(lambda: entered(record, waiter.pid) >= 1, "the waiter inside the slot", timeout=30)
        # The waiters retry every second while they wait; the rest leaves room for a loaded machine.
        assert time.monotonic() - killed < 10
        finish(waiter)
    finally:
        kill_all(holder, *([waiter] if waiter else []))
    assert peak(record) == 1
    entry = limit_of(store_env, tag)
    assert entry["holders"] == [] and entry["waiting"] == 0
    assert rows(store_env, "limit_slots", tag) == [] and rows(store_env, "limit_waiters", tag) == []


def test_waiter_rows_go_when_the_wait_ends_and_dead_waiters_do_not_count(store_env, tmp_path):
    tag = unique_tag()
    tether_cli(store_env, "limit", "set", tag, "1")
    record, go = tmp_path / "record", tmp_path / "go"
    holder = start(tag, 1, record, store_env, hold_until=go)
    doomed: subprocess.Popen[str] | None = None
    patient: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: entered(record, holder.pid) == 1, "the holder inside its slot")
        doomed, patient = start(tag, 3, record, store_env), start(tag, 2, record, store_env)
        wait_until(lambda: waiting(tag) == 5, "five runs waiting in two processes")
        assert {r.pid for r in rows(store_env, "limit_waiters", tag)} == {doomed.pid, patient.pid}
        doomed.kill()
        doomed.wait()
        assert waiting(tag) == 2  # the dead process's runs do not count
        assert [r.pid for r in rows(store_env, "limit_waiters", tag)] == [patient.pid]  # and its row went
        go.touch()
        finish(holder, patient)
    finally:
        kill_all(holder, *[p for p in (doomed, patient) if p])
    assert peak(record) == 1
    assert rows(store_env, "limit_waiters", tag) == [] and rows(store_env, "limit_slots", tag) == []
    assert limit_of(store_env, tag)["waiting"] == 0


def test_a_process_whose_waiting_runs_are_withdrawn_leaves_no_waiter_row(store_env, tmp_path):
    tag = unique_tag()
    tether_cli(store_env, "limit", "set", tag, "1")
    record, go = tmp_path / "record", tmp_path / "go"
    holder = start(tag, 1, record, store_env, hold_until=go)
    quitter: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: entered(record, holder.pid) == 1, "the holder inside its slot")
        quitter = start(tag, 3, record, store_env, timeout=2)  # its flow times out while its runs wait
        wait_until(lambda: [r.pid for r in rows(store_env, "limit_waiters", tag)] == [quitter.pid], "its waiter row")
        quitter.communicate(timeout=60)
        assert quitter.returncode == 1
        # Read before any reader could drop a dead process's rows: it removed its own.
        assert rows(store_env, "limit_waiters", tag) == []
        go.touch()
        finish(holder)
    finally:
        kill_all(holder, *([quitter] if quitter else []))
    assert {pid for _, pid in events(record)} == {holder.pid}
    assert rows(store_env, "limit_slots", tag) == []
