"""``tether runs cancel`` (and `tether.store.cancel_flow_run`): a running flow run in another process is
cancelled, its resources cleaned up once with a failure outcome, and every case it cannot cancel says why.

The flows run with ``tether run`` in processes of their own, over a store in the
test's directory; their resource writes each setup and cleanup to a file, so the
test counts what really ran in that process. The refusals that need a process in
a particular condition (its pid reused, no SIGTERM handler) use a store row of the
test's own pointing at a process the test started.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
import sqlalchemy as sa

from _dashboard import STUCK, TETHER, env_for, own_postgres_database, resource_log, running_run, start_flow, wait_until
from tether.store import CannotCancel, RunNotFound, cancel_flow_run, open_store
from tether.store._db import write
from tether.store._schema import flow_runs, resources


@pytest.fixture
def env(tmp_path):
    values = env_for(tmp_path / "home")
    values["CANCEL_LOG"] = str(tmp_path / "resource.log")
    return values


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "flows.py"
    path.write_text(STUCK)
    return path


@pytest.fixture
def store(env):
    opened = open_store(f"sqlite:///{env['TETHER_HOME']}/tether.db")
    yield opened
    opened.close()


def cancel(env, *args: str) -> subprocess.CompletedProcess[str]:
    command = [*TETHER, "runs", "cancel", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out + err


def test_the_cli_cancels_a_running_flow_run_and_its_resource_is_cleaned_up_once_as_failed(env, script, store):
    process = start_flow(env, script, "stuck")
    try:
        wait_until(lambda: "waiting with conn-main" in resource_log(env), "the task holding the resource", process)
        run = running_run(store, "stuck", process)
        wait_until(lambda: any(e.flow_run_id == run.id for e in store.resources()), "the ledger row", process)

        done = cancel(env, run.id[:12])  # a part of the id is enough, as for tether runs show
    finally:
        if process.poll() is None and "done" not in locals():
            process.kill()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Sent SIGTERM to process {process.pid} on this host" in done.stdout
    assert f"Flow run 'stuck' ({run.id}) ended Cancelled" in done.stdout
    code, said = finish(process)
    assert code == 143, said  # tether run's exit status after SIGTERM

    assert resource_log(env) == ["setup main", "waiting with conn-main", "cleanup main failed Terminated"]
    ended = store.flow_run(run.id)
    assert ended.flow_run.state_type == "CANCELLED"
    assert [t.state_type for t in ended.task_runs] == ["CANCELLED"]
    [copy] = ended.resources
    assert (copy.scope_outcome, copy.cleanup_outcome) == ("failed", "succeeded")  # told it failed; cleanup ran

    again = cancel(env, run.id)
    assert again.returncode == 1
    assert f"Flow run 'stuck' ({run.id}) already ended Cancelled" in again.stderr
    assert "nothing left to cancel" in again.stderr


def test_a_subflow_run_is_cancelled_with_its_top_level_run(env, script, store):
    process = start_flow(env, script, "outer")
    try:
        wait_until(lambda: "waiting with conn-inner" in resource_log(env), "the subflow's task", process)
        top = running_run(store, "outer", process)
        sub = running_run(store, "inner", process)
        assert sub.parent_id == top.id

        refused = cancel(env, sub.id)
        assert refused.returncode == 1
        assert f"Flow run 'inner' ({sub.id}) is a subflow run" in refused.stderr
        assert f"Cancel its top-level run 'outer': tether runs cancel {top.id}" in refused.stderr
        assert process.poll() is None  # nothing was signalled

        done = cancel(env, top.id)
    finally:
        if process.poll() is None and "done" not in locals():
            process.kill()
    assert done.returncode == 0, done.stdout + done.stderr
    assert finish(process)[0] == 143
    assert resource_log(env)[-1] == "cleanup inner failed Terminated"
    assert [line for line in resource_log(env) if line.startswith("cleanup")] == ["cleanup inner failed Terminated"]
    assert {r.name: r.state_type for r in store.flow_runs(limit=5)} == {"outer": "CANCELLED", "inner": "CANCELLED"}


def test_a_run_on_another_host_or_whose_process_is_gone_is_not_signalled(env, script, store):
    process = start_flow(env, script, "stuck")
    sent: list[tuple[int, int]] = []
    try:
        wait_until(lambda: "waiting with conn-main" in resource_log(env), "the task holding the resource", process)
        run = running_run(store, "stuck", process)

        with pytest.raises(CannotCancel) as elsewhere:
            cancel_flow_run(store, run.id, this_host="another-machine", send=lambda *a: sent.append(a))
        assert elsewhere.value.reason == "other-host"
        message = str(elsewhere.value)
        assert f"Flow run 'stuck' ({run.id}) runs on host {run.host!r} (process {process.pid})" in message
        assert f"Run this command on {run.host}: tether runs cancel {run.id}" in message
    finally:
        process.kill()  # SIGKILL: the run's end is never recorded
        process.communicate()
    with pytest.raises(CannotCancel) as gone:
        cancel_flow_run(store, run.id, send=lambda *a: sent.append(a))  # opened before the kill: still Running
    assert gone.value.reason == "gone"
    assert f"its process {process.pid} on this host is gone" in str(gone.value)
    assert "run `tether reap`" in str(gone.value)
    assert sent == []

    # The next store open (tether runs cancel opens one) records the run Crashed: then it is final.
    done = cancel(env, run.id)
    assert done.returncode == 1
    assert f"Flow run 'stuck' ({run.id}) already ended Crashed" in done.stderr


def test_unknown_ids_and_bad_options_say_how_to_find_the_run(env, store):
    with pytest.raises(RunNotFound):
        cancel_flow_run(store, "no-such-run")
    done = cancel(env, "no-such-run")
    assert done.returncode == 1
    assert "No flow run in the store" in done.stderr and "tether runs ls" in done.stderr
    assert cancel(env, "x", "--timeout", "-1").returncode == 2


# -- a pid that is not the run's process any more, or has no SIGTERM handler ---------------------------


def _insert_run(store, pid: int, created: float, pid_started: str | None = None) -> str:
    run_id = uuid.uuid4().hex
    row = {"id": run_id, "name": "synthetic", "state_type": "RUNNING", "state_name": "Running", "run_count": 1,
           "created": created, "start_time": created, "updated": created, "pid": pid,
           "host": socket.gethostname(), "heartbeat": time.time()}

    def work(conn: sa.Connection) -> None:
        conn.execute(sa.insert(flow_runs).values(row))
        if pid_started is not None:
            conn.execute(sa.insert(resources).values(
                scope_id=uuid.uuid4().hex, name="db", flow_run_id=run_id, host=row["host"], pid=pid,
                pid_started=pid_started, created=created, setup_outcome="succeeded",
            ))

    write(store.engine, work)
    return run_id


#: A process that handles SIGTERM (by writing a line and exiting 0), ready once it printed "ready".
HANDLER = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: (print('terminated', flush=True), sys.exit(0)))\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def handler():
    process = subprocess.Popen([sys.executable, "-c", HANDLER], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    yield process
    process.kill()
    process.communicate()


def test_a_reused_pid_is_not_signalled(store, handler):
    sent: list[tuple[int, int]] = []
    # The run was created long before this process started: its pid now belongs to another process.
    old = _insert_run(store, handler.pid, created=time.time() - 3600)
    with pytest.raises(CannotCancel) as reused:
        cancel_flow_run(store, old, this_host=socket.gethostname(), send=lambda *a: sent.append(a))
    assert reused.value.reason == "reused"
    assert f"pid {handler.pid} is now another process" in str(reused.value)
    assert "after the flow run was created" in str(reused.value)

    # The ledger recorded another start time for the run's process: another process too, whatever the times.
    recorded = _insert_run(store, handler.pid, created=time.time(), pid_started="1")
    with pytest.raises(CannotCancel) as other:
        cancel_flow_run(store, recorded, this_host=socket.gethostname(), send=lambda *a: sent.append(a))
    assert other.value.reason == "reused"
    assert sent == []

    # Created after the process started, at the start time the ledger recorded: it is the run's process.
    with open(f"/proc/{handler.pid}/stat") as f:
        ticks = f.read().rsplit(")", 1)[1].split()[19]
    mine = _insert_run(store, handler.pid, created=time.time(), pid_started=ticks)
    result = cancel_flow_run(store, mine, this_host=socket.gethostname())
    assert (result.id, result.pid, result.state_name) == (mine, handler.pid, "Running")
    assert handler.stdout.readline().strip() == "terminated"
    assert handler.wait(timeout=30) == 0


def test_a_process_without_a_sigterm_handler_is_not_killed(store):
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        run_id = _insert_run(store, sleeper.pid, created=time.time())
        with pytest.raises(CannotCancel) as refused:
            cancel_flow_run(store, run_id, this_host=socket.gethostname())
        assert refused.value.reason == "no-handler"
        assert f"process {sleeper.pid}, which does not handle SIGTERM" in str(refused.value)
        assert "the signal would kill it with nothing cleaned up, so it was not sent" in str(refused.value)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cancel_without_waiting_returns_once_the_signal_is_sent(env, script, store):
    process = start_flow(env, script, "stuck")
    try:
        wait_until(lambda: "waiting with conn-main" in resource_log(env), "the task holding the resource", process)
        run = running_run(store, "stuck", process)
        done = cancel(env, run.id, "--no-wait")
        assert done.returncode == 0, done.stderr
        assert f"Sent SIGTERM to process {process.pid}" in done.stdout
        assert f"see it with: tether runs show {run.id}" in done.stdout
        assert finish(process)[0] == 143
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    wait_until(lambda: store.flow_run(run.id).flow_run.state_type == "CANCELLED", "the run recorded Cancelled")
    assert json.loads(subprocess.run([*TETHER, "runs", "ls", "--json"], env=env, capture_output=True, text=True,
                                     check=True).stdout)[0]["state_type"] == "CANCELLED"


#: A flow holding a MariaDB connection with an uncommitted insert while its task waits for ever.
MARIADB_FLOW = textwrap.dedent(
    """
    import os, time
    import pymysql
    from tether import flow, task, resource

    def note(line):
        with open(os.environ["CANCEL_LOG"], "a") as f:
            f.write(line + "\\n")

    @resource
    def mariadb(database):
        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database=database)
        with conn.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            connection_id = cur.fetchone()[0]
        note(f"connected {connection_id}")
        try:
            yield conn
        except BaseException as exc:
            conn.rollback()
            note(f"rolled back {connection_id} {type(exc).__name__}")
            raise
        else:
            conn.commit()
            note(f"committed {connection_id}")
        finally:
            conn.close()

    @task
    def load_then_wait(conn):
        with conn.cursor() as cur:
            cur.execute("INSERT INTO loads VALUES (1)")
        note("inserted")
        while True:
            time.sleep(0.05)

    @flow
    def loading(database: str):
        with mariadb(database) as conn:
            load_then_wait.submit(conn).result()
    """
)


def test_a_cancelled_run_rolls_back_and_closes_its_mariadb_connection_on_the_server(env, tmp_path, store,
                                                                                     mariadb_database):
    import pymysql

    admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", database=mariadb_database, autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute("CREATE TABLE loads (n INT)")
        script = tmp_path / "loading.py"
        script.write_text(MARIADB_FLOW)
        process = subprocess.Popen([*TETHER, "run", f"{script}:loading", "-p", f"database={mariadb_database}"],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: "inserted" in resource_log(env), "the task's insert", process)
            connection_id = int(resource_log(env)[0].split()[1])

            def open_ids() -> set[int]:
                with admin.cursor() as cur:
                    cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s", (mariadb_database,))
                    return {int(row[0]) for row in cur.fetchall()}

            assert connection_id in open_ids()
            run = running_run(store, "loading", process)
            done = cancel(env, run.id)
        finally:
            if process.poll() is None and "done" not in locals():
                process.kill()
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"Flow run 'loading' ({run.id}) ended Cancelled" in done.stdout
        # The run is recorded Cancelled after its cleanup closed the connection (its process may still be
        # exiting); the server lists a connection that sent its quit for a moment more.
        wait_until(lambda: connection_id not in open_ids(), "the server to drop the closed connection", timeout=10)
        assert finish(process)[0] == 143
        assert resource_log(env) == [f"connected {connection_id}", "inserted", f"rolled back {connection_id} Terminated"]
        with admin.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM loads")
            assert cur.fetchone()[0] == 0  # the uncommitted insert was rolled back
        [copy] = store.flow_run(run.id).resources
        assert (copy.scope_outcome, copy.cleanup_outcome) == ("failed", "succeeded")
    finally:
        admin.close()


def test_a_deployment_run_of_tether_serve_is_cancelled_and_serve_goes_on(env, script, store):
    serving = subprocess.Popen([*TETHER, "serve", f"{script}:stuck", "--name", "stuck-nightly", "--interval",
                                "86400", "--catchup", "none"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert "Serving deployment 'stuck-nightly'" in serving.stdout.readline()
        asked = subprocess.run([*TETHER, "deployments", "run", "stuck-nightly"], env=env, capture_output=True,
                               text=True, timeout=60, check=False)
        assert asked.returncode == 0, asked.stderr
        wait_until(lambda: "waiting with conn-main" in resource_log(env), "the deployment's run", serving)
        run = wait_until(lambda: next((r for r in store.flow_runs(limit=5) if r.state_type == "RUNNING"), None),
                         "the run recorded running", serving)
        assert run.pid != serving.pid  # each deployment run has a process of its own

        done = cancel(env, run.id)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"Flow run 'stuck' ({run.id}) ended Cancelled" in done.stdout

        def last_run():
            listed = subprocess.run([*TETHER, "deployments", "ls", "--json"], env=env, capture_output=True,
                                    text=True, timeout=60, check=True)
            last = json.loads(listed.stdout)[0]["last_run"]
            return last if last and last["status"] != "running" else None

        last = wait_until(last_run, "serve to record how the deployment's run ended", serving)
        assert (last["status"], last["flow_run_id"]) == ("cancelled", run.id)
        assert serving.poll() is None  # serve goes on: only the run was cancelled
    finally:
        serving.send_signal(signal.SIGTERM)
        try:
            serving.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            serving.kill()
            serving.communicate()
    assert resource_log(env)[-1] == "cleanup main failed Terminated"


def test_cancel_on_a_postgresql_store(env, script, postgres_url):
    with own_postgres_database(postgres_url) as url:
        pg = {**env, "TETHER_DATABASE_URL": url}
        pg_store = open_store(url)
        process = start_flow(pg, script, "stuck")
        try:
            wait_until(lambda: "waiting with conn-main" in resource_log(env), "the task holding the resource", process)
            run = running_run(pg_store, "stuck", process)
            done = cancel(pg, run.id)
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"Flow run 'stuck' ({run.id}) ended Cancelled" in done.stdout
            assert finish(process)[0] == 143
            [copy] = pg_store.flow_run(run.id).resources
            assert (copy.scope_outcome, copy.cleanup_outcome) == ("failed", "succeeded")
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
            pg_store.close()
    assert resource_log(env) == ["setup main", "waiting with conn-main", "cleanup main failed Terminated"]
