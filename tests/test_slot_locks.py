"""The locks behind concurrency slots (tether.store._slot_locks): file locks and PostgreSQL
advisory locks. Runs of one process never share a slot, a slot is free once its holder is
dead, and a forked child neither keeps its parent's slots alive nor ends its parent's session.
Holders are real processes, killed with real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest
import sqlalchemy as sa

from _waiting import wait_until
from tether.store._slot_locks import AdvisoryLocks, FileLocks


@pytest.fixture(params=["files", "postgres"])
def make_locks(request, tmp_path):
    """A factory of lock sets on one store, and the code a child process uses to build one."""
    if request.param == "files":
        directory = tmp_path / "tether.db-slots"
        yield (lambda: FileLocks(directory)), f"FileLocks(Path({str(directory)!r}))"
        return
    url = request.getfixturevalue("postgres_url")
    engines = []

    def make() -> AdvisoryLocks:
        engines.append(sa.create_engine(url))
        return AdvisoryLocks(engines[-1])

    yield make, f"AdvisoryLocks(sa.create_engine({url!r}))"
    for engine in engines:
        engine.dispose()


def tag() -> str:
    return f"locks-{uuid.uuid4().hex[:10]}"


CHILD_PRELUDE = """
import gc, os, sys, time
from pathlib import Path
import sqlalchemy as sa
from tether.store import _slot_locks
from tether.store._slot_locks import AdvisoryLocks, FileLocks
"""


def holder(code: str, build: str, tag: str) -> subprocess.Popen[str]:
    """A process that takes slot 0 of ``tag``, says "holding" and then runs ``code``."""
    script = CHILD_PRELUDE + f"TAG = {tag!r}\nlocks = {build}\nassert locks.try_take(TAG, 1) == 0\n" + textwrap.dedent(code)
    return subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_runs_of_one_process_never_share_a_slot(make_locks):
    make, _ = make_locks
    locks, t = make(), tag()
    barrier = threading.Barrier(4, timeout=10)
    taken: list[int | None] = []

    def take() -> None:
        barrier.wait()
        taken.append(locks.try_take(t, 3))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken, key=lambda s: -1 if s is None else s) == [None, 0, 1, 2]
    assert locks.taken([(t, 0), (t, 1), (t, 2), (t, 3)]) == {(t, 0), (t, 1), (t, 2)}
    locks.let_go(t, 1)
    assert make().taken([(t, 0), (t, 1), (t, 2)]) == {(t, 0), (t, 2)}  # as another reader sees it
    assert locks.try_take(t, 3) == 1


def test_a_slot_is_held_while_its_holder_is_paused_and_free_once_it_is_killed(make_locks):
    make, build = make_locks
    t = tag()
    proc = holder('print("holding", flush=True)\nsys.stdin.read()\n', build, t)
    try:
        assert proc.stdout.readline().strip() == "holding"
        os.kill(proc.pid, signal.SIGSTOP)
        other = make()
        assert other.try_take(t, 1) is None and other.taken([(t, 0)]) == {(t, 0)}
        proc.kill()
        proc.wait()
        # The kernel lets go at its death; a PostgreSQL backend once it has read the closed socket.
        wait_until(lambda: other.taken([(t, 0)]) == set(), "the dead holder's slot free", timeout=10)
        assert other.try_take(t, 1) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_forked_child_does_not_keep_its_parents_slot_when_the_parent_dies(make_locks):
    make, build = make_locks
    t = tag()
    proc = holder(
        """
        child = os.fork()
        if child == 0:
            sys.stdin.read()  # lives on until the test is done
            os._exit(0)
        print("holding", child, flush=True)
        time.sleep(600)
        """,
        build, t)
    child = None
    try:
        word, child_pid = proc.stdout.readline().split()
        child = int(child_pid)
        assert word == "holding" and make().taken([(t, 0)]) == {(t, 0)}
        proc.kill()
        proc.wait()
        reader = make()
        wait_until(lambda: reader.taken([(t, 0)]) == set(), "the dead parent's slot free", timeout=10)
        assert os.path.exists(f"/proc/{child}")  # while the child lives
    finally:
        if child is not None:
            os.kill(child, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_forked_child_that_exits_does_not_let_go_of_its_parents_slot(make_locks):
    make, build = make_locks
    t = tag()
    proc = holder(
        """
        locks.keep_alive()
        child = os.fork()
        if child == 0:
            _slot_locks._abandoned.clear()  # even if the child's copies of the connection are collected
            gc.collect()
            sys.exit(0)
        os.waitpid(child, 0)
        print("child gone", locks.token, flush=True)
        sys.stdin.read()
        assert locks.try_take(TAG, 2) == 1  # the parent's session still works
        print("still mine", flush=True)
        """,
        build, t)
    try:
        word, token = proc.stdout.readline().rsplit(maxsplit=1)
        assert word == "child gone"
        other = make()
        assert other.taken([(t, 0)]) == {(t, 0)} and other.alive({token}) == {token}
        out, err = proc.communicate("", timeout=30)
        assert proc.returncode == 0, err
        assert out.strip() == "still mine"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
