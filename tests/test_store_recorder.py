"""The store's recorder in one process: records reach the spool (and so outlive a SIGKILL) on time,
whatever the writer thread is busy with."""

from __future__ import annotations

import threading

import pytest

from tether._core import Completed, Pending, RunCreated, Running, StateChanged
from tether.store import open_store
from tether.store._encode import RUN, split_records
from tether.store._recorder import StoreRecorder
from tether.store._spool import Drain
from tether.store._writer_process_main import DEFER_SECONDS, QUIET_SECONDS
from tether.testing import FakeClock

BLOCKED_SECONDS = 30.0


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TETHER_STORE_HELPER", "never")  # rows are written by the recorder's own thread
    opened = open_store(f"sqlite:///{tmp_path / 'home' / 'tether.db'}")
    yield opened
    opened.close()


def task_run(recorder: StoreRecorder, run_id: str) -> None:
    """A task run of a flow that is not open in this process: its rows are due at once."""
    recorder.record(RunCreated(run_id, "task", "t", "flow1", "flow1", frozenset(), {"x": 1}, 1.0))
    recorder.record(StateChanged(run_id, "task", "t", "flow1", "flow1", Pending(), Running(), 1))
    recorder.record(StateChanged(run_id, "task", "t", "flow1", "flow1", Running(), Completed(1), 1))


def spooled_run_ids(recorder: StoreRecorder) -> set[str]:
    """The run ids in the spool from where it was last committed (read aside, as a replay would)."""
    assert recorder._spool is not None
    reader = Drain(recorder._spool.directory, recorder._spool.stem, lambda records: None)
    items, _ = reader._read(None, 1 << 24)  # reads only: the recorder's drain commits, and holds the lock
    reader.release()
    return {record[1] for record in split_records(items) if record[0] == RUN.kind}


def test_records_are_spooled_while_the_writer_thread_is_stuck_writing_rows(store):
    """A write of rows that takes long (a loaded machine, a slow server) must not keep records from
    the spool: the threads that record spool them themselves meanwhile."""
    recorder = StoreRecorder(store, batch_size=10)
    writing, release = threading.Event(), threading.Event()
    send = recorder._rows.send

    def slow_send(records: list, everything: bool = False) -> None:
        writing.set()
        assert release.wait(BLOCKED_SECONDS)
        send(records, everything)

    recorder._rows.send = slow_send  # type: ignore[method-assign]
    during = [f"during-{i}" for i in range(20)]  # 60 records, six batches of 10
    try:
        task_run(recorder, "first")
        assert writing.wait(BLOCKED_SECONDS), "the writer thread did not start writing rows"
        for run_id in during:
            task_run(recorder, run_id)
        spooled = spooled_run_ids(recorder)
        # Spooled a batch at a time, by this thread: at most the last, unfinished batch is still queued.
        unspooled = [run_id for run_id in during if run_id not in spooled]
        assert unspooled == during[len(during) - len(unspooled) :]
        assert len(recorder._queue) < recorder._batch_items
        assert len(unspooled) <= 4
    finally:
        release.set()
    assert recorder.flush(BLOCKED_SECONDS)
    recorder.close()
    assert recorder.failure is None
    with store.engine.connect() as conn:
        stored = dict(conn.exec_driver_sql("SELECT id, state_type FROM task_runs").all())
    assert stored == {run_id: "COMPLETED" for run_id in ["first", *during]}


def test_a_full_batch_is_spooled_by_the_thread_that_filled_it(store):
    """A batch is spooled by the recording thread that fills it, before its `record` returns: the
    writer thread is not woken for it (each hand-over costs the recording threads two waits for
    the GIL). What is left over is the writer thread's to spool."""
    recorder = StoreRecorder(store, batch_size=3)  # a task run's three records
    spooling_threads: list[str] = []
    spool_items = recorder._spool_items

    def noted(items: list) -> int:
        spooling_threads.append(threading.current_thread().name)
        return spool_items(items)

    recorder._spool_items = noted  # type: ignore[method-assign]
    try:
        recorder.record(RunCreated("flow1", "flow", "f", "flow1", None, frozenset(), {}, 1.0))
        recorder.record(StateChanged("flow1", "flow", "f", "flow1", None, Pending(), Running(), 1))  # open: rows wait
        recorder.flush(BLOCKED_SECONDS, until="safe")
        spooling_threads.clear()
        task_run(recorder, "filled")  # its third record fills the batch
        assert "filled" in spooled_run_ids(recorder)
        assert spooling_threads == [threading.current_thread().name]
        assert recorder._queue == []
        recorder.record(RunCreated("left", "task", "t", "flow1", "flow1", frozenset(), {}, 1.0))
        assert recorder.flush(BLOCKED_SECONDS)  # the writer thread spools and writes what is left over
        assert spooling_threads[1:] == ["tether-store-writer"]
    finally:
        recorder.close()
    with store.engine.connect() as conn:
        stored = dict(conn.exec_driver_sql("SELECT id, state_type FROM task_runs").all())
    assert stored == {"filled": "COMPLETED", "left": "PENDING"}


def test_the_recorders_timers_run_on_its_clock(store):
    """When spooled rows are written (after a quiet spell, while a flow runs) is decided on the
    recorder's clock: on a fake one, no real time counts, and moving it makes them due."""
    clock = FakeClock()
    recorder = StoreRecorder(store, clock=clock)
    try:
        recorder.record(RunCreated("flow1", "flow", "f", "flow1", None, frozenset(), {}, 1.0))
        recorder.record(StateChanged("flow1", "flow", "f", "flow1", None, Pending(), Running(), 1))  # open: rows wait
        task_run(recorder, "quiet")
        assert recorder.flush(BLOCKED_SECONDS, until="safe")  # spooled, at fake time 0
        assert recorder._due_in() == pytest.approx(min(QUIET_SECONDS, DEFER_SECONDS))
        clock.advance(QUIET_SECONDS / 2)
        assert recorder._due_in() == pytest.approx(min(QUIET_SECONDS / 2, DEFER_SECONDS - QUIET_SECONDS / 2))
        assert not recorder._drain_due()
        clock.advance(max(QUIET_SECONDS, DEFER_SECONDS))
        assert recorder._drain_due()
        assert recorder.flush(BLOCKED_SECONDS)
    finally:
        recorder.close()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT state_type FROM task_runs WHERE id = 'quiet'").scalar() == "COMPLETED"
