"""Records that left the engine survive a SIGKILL of the flow's process (issue 17's first goal).

A flow process finishes task runs, says which, and is killed with a real SIGKILL 0.2 s
later, while its flow still runs. Every one of those task runs must then be
``Completed`` in the store, on SQLite and PostgreSQL, whether its rows were to be
written by the flow's own process (the spool is replayed by the next store open) or
by the writer process (which writes the spool once the flow process is gone).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import psutil
import pytest
import sqlalchemy as sa

from tether.store import open_store

CHILD = textwrap.dedent(
    """
    import sys
    from tether import flow, task
    from tether.runners import ThreadPoolRunner

    @task
    def noop(x):
        return x

    @flow(task_runner=ThreadPoolRunner(4))
    def busy(n: int) -> None:
        futures = [noop.submit(i) for i in range(n)]
        for f in futures:
            f.wait()
        print(" ".join(f.task_run_id for f in futures), flush=True)
        sys.stdin.read()  # the flow goes on until it is killed

    busy(int(sys.argv[1]))
    """
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'tether.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"tether_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.mark.parametrize("helper", ["never", "always"])
def test_task_runs_finished_before_a_sigkill_are_completed_in_the_store(tmp_path, store_url, helper, monkeypatch):
    home = tmp_path / "home"
    env = {**os.environ, "TETHER_HOME": str(home), "TETHER_DATABASE_URL": store_url, "TETHER_STORE_HELPER": helper,
           "TETHER_LOGGING_LEVEL": "WARNING"}  # fmt: skip
    env.pop("TETHER_STORE", None)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "300"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        finished = proc.stdout.readline().split()
        assert len(finished) == 300, "the flow process ended before its task runs did"
        time.sleep(0.2)  # the rule under test: done 0.2 s before the kill
        writers = psutil.Process(proc.pid).children(recursive=True)  # the writer process, if any
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert bool(writers) == (helper == "always")
    _, alive = psutil.wait_procs(writers, timeout=60)  # a writer process writes what is spooled, then ends
    assert not alive

    monkeypatch.setenv("TETHER_HOME", str(home))  # where the spool is
    store = open_store(store_url)
    try:
        runs = store.flow_runs()
        (run,) = runs
        assert run.name == "busy" and run.state_name == "Crashed"  # its process is gone
        states = {t.id: t.state_name for t in store.flow_run(run.id).task_runs}
        assert {states.get(rid) for rid in finished} == {"Completed"}
        assert not list((home / "spool").glob("*.spool"))  # written, and gone
    finally:
        store.close()


# A writer killed between committing rows and saying so in its spool's header: the next store open
# replays that batch again, with a planner that knows nothing of the rows already written.
CHILD_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, threading
    from tether import flow, task
    from tether.store import _recorder, _spool
    from tether.store._active import active_store

    # Rows are written only when the flow asks (a flush), one spooled batch at a time.
    _recorder.QUIET_SECONDS = _recorder.DEFER_SECONDS = 3600.0
    _recorder.IN_PROCESS_READ_BYTES = 1
    written = set()
    write_records, commit = _recorder.StoreRecorder._write_records, _spool.Drain._commit

    def write_and_note(self, records):
        write_records(self, records)
        written.update(r[1] for r in records if r[0] == "run2")

    def commit_unless_the_task_is_written(self, position):
        if task_run_id in written:  # its creation is committed in the store, not yet in the spool's header
            os.kill(os.getpid(), signal.SIGKILL)
        commit(self, position)

    _recorder.StoreRecorder._write_records = write_and_note
    _spool.Drain._commit = commit_unless_the_task_is_written
    started, go = threading.Event(), threading.Event()

    @task
    def slow():
        started.set()
        go.wait()
        return 1

    @flow
    def outer():
        global task_run_id
        recorder = active_store().recorder
        future = slow.submit()
        task_run_id = future.task_run_id
        started.wait()
        recorder.flush(until="safe")  # spooled: the task run's creation and start
        go.set()
        future.wait()
        recorder.flush(until="safe")  # then its end, in a later batch
        print(task_run_id, flush=True)
        recorder.flush()  # written one batch at a time: killed once the first holding the task run is

    outer()
    """
)


def test_a_batch_written_again_after_its_writer_was_killed_leaves_each_run_in_its_last_state(tmp_path, store_url,
                                                                                               monkeypatch):
    home = tmp_path / "home"
    env = {**os.environ, "TETHER_HOME": str(home), "TETHER_DATABASE_URL": store_url, "TETHER_STORE_HELPER": "never",
           "TETHER_LOGGING_LEVEL": "WARNING"}  # fmt: skip
    env.pop("TETHER_STORE", None)
    proc = subprocess.run([sys.executable, "-c", CHILD_KILLED_WRITER], env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (task_run_id,) = proc.stdout.split()
    monkeypatch.setenv("TETHER_HOME", str(home))
    store = open_store(store_url)
    try:
        (run,) = store.flow_runs()
        assert run.state_name == "Crashed"
        (task_run,) = store.flow_run(run.id).task_runs
        assert (task_run.id, task_run.state_name) == (task_run_id, "Completed")
        assert task_run.start_time is not None and task_run.end_time is not None
    finally:
        store.close()


def test_rows_inserted_again_take_what_the_later_insert_carries_and_keep_a_final_state(store_url):
    """What a replay writes over rows written before: the runs' later states and the ledger's later
    steps; a run recorded Crashed meanwhile (by another process) is not taken back to Running."""
    from tether._core import Completed, ResourceEvent, RunCreated, Running, StateChanged
    from tether.store._db import write
    from tether.store._encode import Encoder
    from tether.store._ledger import ProcessInfo
    from tether.store._plan import Planner

    process = ProcessInfo(pid=4242, host="here", started="1")

    def created(run_id: str, kind: str) -> RunCreated:
        return RunCreated(run_id, kind, kind, "f1", "f1" if kind == "task" else None, frozenset(), {}, 1.0)

    def moved(run_id: str, kind: str, new) -> StateChanged:
        return StateChanged(run_id, kind, kind, "f1", "f1", None, new, 1)

    def step(name: str, **details) -> ResourceEvent:
        return ResourceEvent(step=name, timestamp=2.0, scope_id="s1", name="db", flow_run_id="f1", **details)

    begun = [created("f1", "flow"), moved("f1", "flow", Running()), created("t1", "task"),
             moved("t1", "task", Running()), created("t2", "task"), moved("t2", "task", Running()),
             step("setup-started", handle="dsn"), step("setup")]  # fmt: skip
    later = [moved("t1", "task", Completed(1)), moved("f1", "flow", Completed()),
             step("cleanup", outcome="completed", details={"seconds": 0.5})]  # fmt: skip

    def write_rows(events: list) -> None:
        planner = Planner(process)  # a fresh one each time, as a replay's
        planner.add(Encoder(process.host, process.pid).encode(events))
        write(store.engine, planner.take(everything=True).apply)

    store = open_store(store_url)
    try:
        write_rows(begun)  # what the killed writer committed
        with store.engine.begin() as conn:  # t2 recorded Crashed meanwhile
            conn.exec_driver_sql("UPDATE task_runs SET state_type = 'CRASHED', state_name = 'Crashed' WHERE id = 't2'")
        write_rows(begun + later)  # the replay, from where the spool's header said
        with store.engine.connect() as conn:
            tasks = dict(conn.exec_driver_sql("SELECT id, state_type FROM task_runs").all())
            flow_state, flow_start = conn.exec_driver_sql("SELECT state_type, start_time FROM flow_runs").one()
            ledger = conn.exec_driver_sql("SELECT handle, setup_outcome, cleanup_outcome, cleanup_seconds FROM resources").all()
        assert tasks == {"t1": "COMPLETED", "t2": "CRASHED"}
        assert flow_state == "COMPLETED" and flow_start is not None
        assert ledger == [('"dsn"', "succeeded", "succeeded", 0.5)]
    finally:
        store.close()
