"""The ledger on remote workers: each worker writes its copy's row before setup, and its cleanup.

The fault tests run ``scripts/worker_ledger_flow.py`` in a subprocess (its own
TETHER_HOME, a SQLite store there) with real signals: two tasks, one per worker, each
with its worker's copy of a resource that has a reaper. They are judged from the
script's record file (setups, cleanups, reaps, per process), the ledger in the store,
and the CLI (``tether resources --orphans``, ``tether reap``). That the flow process
writes no row its workers wrote is a shared test of every remote runner (`_remote_cases`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tether.store import open_store
from tether.store._ledger import process_alive
from tether.store._worker_ledger import LedgerTarget, record_copy_step

SCRIPT = Path(__file__).parent / "scripts" / "worker_ledger_flow.py"
TETHER = Path(sys.executable).with_name("tether")


def _runner(name: str, module: str) -> Any:
    # Looked up, not imported: Ray must not be imported in this process before its own tests set it up.
    if importlib.util.find_spec(module) is None:
        return pytest.param(name, marks=pytest.mark.skip(reason=f"{module} is not installed"))
    return name


RUNNERS = ["processes", _runner("dask", "distributed"), _runner("ray", "ray")]


class Cell:
    """One run of the script: its process, its record file and its store."""

    def __init__(self, tmp_path: Path, runner: str, mode: str) -> None:
        self.home = tmp_path / "home"
        self.record = tmp_path / "record.txt"
        self.env = {**os.environ, "TETHER_HOME": str(self.home), "TETHER_INTERRUPT_GRACE_SECONDS": "0.5"}
        for name in ("TETHER_STORE", "TETHER_DATABASE_URL"):
            self.env.pop(name, None)
        self.fifo = Path(f"{self.record}.fifo")
        os.mkfifo(self.fifo)
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), runner, mode, str(self.record)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self._release: int | None = None

    def lines(self, step: str) -> list[list[str]]:
        if not self.record.exists():
            return []
        return [line.split() for line in self.record.read_text().splitlines() if line.split()[0] == step]

    def pids(self, step: str) -> list[int]:
        return [int(words[-1]) for words in self.lines(step)]

    def wait_for(self, predicate: Any, what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None and not predicate():
                raise AssertionError(
                    f"the flow exited ({self.proc.returncode}) before {what}: {self.proc.stderr.read()}"
                )  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; record: {self.record.read_text()}")
            time.sleep(0.02)

    def release_stuck_bodies(self) -> None:
        """Open the FIFO's other end: a body blocked opening it returns (O_RDWR never blocks)."""
        self._release = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)

    def finish(self, timeout: float = 120.0) -> tuple[str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            if self._release is not None:
                os.close(self._release)
        return out, err

    def cli(self, *args: str) -> Any:
        done = subprocess.run(
            [str(TETHER), *args, "--json"], check=False, capture_output=True, text=True, env=self.env, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def ledger(self) -> dict[int, Any]:
        store = open_store(f"sqlite:///{self.home / 'tether.db'}")
        try:
            rows = store.resources()
        finally:
            store.close()
        assert len({r.pid for r in rows}) == len(rows), rows  # one row per copy
        return {r.pid: r for r in rows}


def _gone(pid: int) -> bool:
    return not process_alive(pid, None)


# -- faults ---------------------------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_copy_whose_worker_is_killed_in_its_task_is_an_orphan_reaped_once(tmp_path, runner):
    cell = Cell(tmp_path, runner, "killed")
    out, err = cell.finish()
    assert cell.proc.returncode == 0 and "flow Failed" in out, err
    setups = cell.pids("setup")
    assert len(setups) == 2 and sorted(cell.pids("body")) == sorted(setups)  # one copy per worker, each killed
    assert cell.pids("cleanup") == []
    rows = cell.ledger()
    assert sorted(rows) == sorted(setups)  # a row for the copy a task opened and never reported
    for pid, row in rows.items():
        assert (
            row.setup_outcome == "succeeded"
            and row.handle == {"pid": pid, "record": str(cell.record)}
            and row.cleanup_outcome is None
        )
        assert row.reaper == "__main__:reap" and row.reaper_file == str(SCRIPT)
    orphans = cell.cli("resources", "--orphans")
    assert sorted(o["pid"] for o in orphans) == sorted(setups)
    reaped = cell.cli("reap")
    assert sorted(r["outcome"] for r in reaped) == ["reaped", "reaped"], reaped
    assert cell.cli("reap") == []
    assert sorted(int(words[1]) for words in cell.lines("reaped")) == sorted(setups)  # each exactly once


def test_workers_record_their_cleanups_when_the_flow_process_is_killed(tmp_path):
    cell = Cell(tmp_path, "processes", "hold")
    cell.wait_for(lambda: len(cell.pids("body")) == 2, "both tasks to hold their copies")
    os.kill(cell.proc.pid, signal.SIGKILL)
    cell.finish()
    setups = cell.pids("setup")
    # Not Cell.wait_for, which fails once the flow has exited: here it is dead on purpose, and a
    # worker's pipe to it closes an instant before the worker is gone.
    deadline = time.monotonic() + 60
    while not all(_gone(pid) for pid in setups):
        assert time.monotonic() < deadline, f"the workers did not notice the flow process die and exit: {setups}"
        time.sleep(0.02)
    assert sorted(cell.pids("cleanup")) == sorted(setups)  # each closed its copy (as failed) before exiting
    rows = cell.ledger()
    assert sorted(rows) == sorted(setups)
    for row in rows.values():
        assert (row.scope_outcome, row.cleanup_outcome) == ("failed", "succeeded"), row
    assert cell.cli("resources", "--orphans") == []
    assert cell.cli("reap") == []
    assert cell.lines("reaped") == []  # a copy that was cleaned up is never reaped


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_copy_of_a_task_abandoned_on_cancel_is_closed_or_left_an_orphan(tmp_path, runner):
    """SIGTERM to the flow while both tasks are blocked in C: they are abandoned after the
    grace period. A process worker is ended, so its copy is an orphan (unless the task's
    timeout came first and the worker answered for it: then its copy is closed); a Dask or Ray
    worker lives on, and is asked to close its copy, including the one the abandoned
    call opened and never reported."""
    cell = Cell(tmp_path, runner, "stuck")
    cell.wait_for(lambda: len(cell.pids("body")) == 2, "both tasks to block")
    os.kill(cell.proc.pid, signal.SIGTERM)
    setups = cell.pids("setup")
    assert len(setups) == 2
    cell.wait_for(
        lambda: all(pid in cell.pids("cleanup") or _gone(pid) for pid in setups),
        "each copy to be closed or its worker to end",
    )
    cell.release_stuck_bodies()
    cell.finish()
    # A process worker is ended, unless its task's own timeout came first: then the worker
    # answered for its stuck call and its copy was closed. Either is right, per copy.
    _closed_or_orphaned(cell, setups, expect_closed=None if runner == "processes" else True)


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_copy_of_a_task_abandoned_on_timeout_is_closed_or_left_an_orphan(tmp_path, runner):
    """Both tasks block in C past their timeout and the grace period: each worker answers
    for its call while the body runs on (a process worker then exits once its copies are
    closed), and each copy is closed at the scope's end, as on a thread runner."""
    cell = Cell(tmp_path, runner, "stuck")
    cell.wait_for(lambda: len(cell.pids("body")) == 2, "both tasks to block")
    setups = cell.pids("setup")
    assert len(setups) == 2
    cell.wait_for(
        lambda: all(pid in cell.pids("cleanup") or _gone(pid) for pid in setups),
        "each copy to be closed or its worker to end",
    )
    cell.release_stuck_bodies()
    out, err = cell.finish()
    assert "flow Failed" in out, err
    _closed_or_orphaned(cell, setups, expect_closed=True)


def _closed_or_orphaned(cell: Cell, setups: list[int], expect_closed: bool | None) -> None:
    """Each copy closed once (``expect_closed``), or an orphan not closed; None: either one."""
    rows = cell.ledger()
    assert sorted(rows) == sorted(setups)
    orphans = {o["pid"] for o in cell.cli("resources", "--orphans")}
    cleanups = cell.pids("cleanup")
    for pid, row in rows.items():
        if expect_closed or (expect_closed is None and pid in cleanups):
            assert cleanups.count(pid) == 1 and row.cleanup_outcome == "succeeded" and row.scope_outcome == "failed", (
                row
            )
            assert pid not in orphans
        else:
            assert pid not in cleanups and row.cleanup_outcome is None and pid in orphans, row


# -- in this process ---------------------------------------------------------------------


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_worker_that_cannot_reach_the_store_leaves_the_record_to_the_flow_process(tmp_path):
    other_host = LedgerTarget(
        sa.make_url(f"sqlite:///{tmp_path / 'x.db'}"), "not-" + socket.gethostname(), "f", None, None
    )
    warnings = _Warnings()
    logging.getLogger("tether.store").addHandler(warnings)
    try:
        assert record_copy_step(other_host, "setup-started", "s", "db") is False
        assert record_copy_step(other_host, "setup", "s", "db") is False
    finally:
        logging.getLogger("tether.store").removeHandler(warnings)
    assert not (tmp_path / "x.db").exists()  # a SQLite file is only the flow's host's
    (warning,) = warnings.messages  # said once
    assert "cannot write its resource copies to the run store" in warning and "records them" in warning


def test_a_worker_writes_each_step_before_it_returns(tmp_path):
    url = sa.make_url(f"sqlite:///{tmp_path / 'ledger.db'}")
    open_store(url).close()
    target = LedgerTarget(url, socket.gethostname(), "flow-1", "mod:reap", "/x/mod.py")
    store = open_store(url)
    try:
        assert record_copy_step(target, "setup-started", "scope-1", "db")
        (row,) = store.resources()
        assert (row.pid, row.setup_outcome, row.cleanup_outcome, row.reaper, row.reaper_file) == (
            os.getpid(),
            None,
            None,
            "mod:reap",
            "/x/mod.py",
        )
        assert row.orphan is None  # this process lives
        assert record_copy_step(target, "handle", "scope-1", "db", handle={"table": "t1"})
        assert store.resources()[0].handle == {"table": "t1"}
        assert record_copy_step(target, "setup", "scope-1", "db")
        assert record_copy_step(target, "cleanup", "scope-1", "db", outcome="failed", seconds=0.5)
        (row,) = store.resources()
        assert (row.setup_outcome, row.scope_outcome, row.cleanup_outcome, row.cleanup_seconds) == (
            "succeeded",
            "failed",
            "succeeded",
            0.5,
        )
    finally:
        store.close()


def test_a_worker_keeps_the_heartbeat_of_the_copies_it_holds(tmp_path, monkeypatch):
    """A worker on another host is judged by its heartbeat: the worker beats for its open copies."""
    monkeypatch.setenv("TETHER_HEARTBEAT_SECONDS", "0.05")
    url = sa.make_url(f"sqlite:///{tmp_path / 'ledger.db'}")
    target = LedgerTarget(url, socket.gethostname(), "flow-1", None, None)
    store = open_store(url)
    try:
        assert record_copy_step(target, "setup-started", "scope-1", "db")
        (row,) = store.resources()
        deadline = time.monotonic() + 30
        while store.resources()[0].heartbeat == row.heartbeat:
            assert time.monotonic() < deadline, "the heartbeat never moved"
            time.sleep(0.02)
        assert record_copy_step(target, "cleanup", "scope-1", "db", outcome="succeeded")
        assert store.resources()[0].status == "closed"
    finally:
        store.close()
