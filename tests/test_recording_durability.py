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
