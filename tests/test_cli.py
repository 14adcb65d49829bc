"""The ``tether`` command through its real entry point, in subprocesses, on a real store.

Includes the SIGKILL story: a flow process is killed mid-flow while its resources
are open; ``tether resources --orphans`` lists them; ``tether reap`` closes them
through their reapers (a real MariaDB table among them) and the ledger says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

_SCRIPT = Path(sys.executable).with_name("tether")
TETHER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tether.cli"]


@pytest.fixture
def env(tmp_path):
    """The environment of the subprocesses: a store of the test's own, quiet logs."""
    values = {**os.environ, "TETHER_HOME": str(tmp_path / "home"), "TETHER_LOGGING_LEVEL": "WARNING"}
    values.pop("TETHER_DATABASE_URL", None)
    values.pop("TETHER_STORE", None)
    return values


def tether(env, *args, cwd=None, expect=0):
    done = subprocess.run([*TETHER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == expect, f"tether {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def tether_json(env, *args, cwd=None):
    return json.loads(tether(env, *args, "--json", cwd=cwd).stdout)


FLOWS = textwrap.dedent(
    """
    from tether import flow, task, resource, get_run_logger
    from tether.resources import remember

    @resource
    def connection(name):
        remember({"db": name, "url": "postgresql://app:hunter2@db/x"})
        yield name

    @task
    def add(a, b):
        get_run_logger().info("adding %s and %s", a, b)
        return a + b

    @task
    def explode(x):
        raise ValueError(f"exploded on {x}")

    @flow
    def sums(n: int = 3, password: str = "pw"):
        with connection("main") as conn:
            futures = [add.submit(i, len(conn)) for i in range(n)]
        return sum(f.result() for f in futures)

    @flow(name="echo-types")
    def echo(items, name, flag=False):
        return [type(items).__name__, type(name).__name__, type(flag).__name__]

    @flow
    def fails():
        return explode(1)
    """
)


@pytest.fixture
def flows_file(tmp_path):
    path = tmp_path / "flows.py"
    path.write_text(FLOWS)
    return path


def test_run_records_the_flow_and_runs_show_puts_tasks_and_resources_on_one_timeline(env, flows_file):
    env["TETHER_LOGGING_LEVEL"] = "INFO"  # run logs below the logging level are not recorded either
    done = tether(env, "run", f"{flows_file}:sums", "-p", "n=4", "-p", "password=s3cret")
    assert "Completed" in done.stdout and "Result: 22" in done.stdout
    (run,) = tether_json(env, "runs", "ls")
    assert (run["name"], run["state_name"], run["parameters"]) == (
        "sums",
        "Completed",
        {"n": 4, "password": "********"},
    )
    assert run["task_counts"] == {"COMPLETED": 4}

    shown = tether(env, "runs", "show", run["id"][-6:]).stdout  # the end of the id will do
    assert run["id"] in shown and "Completed" in shown
    lines = shown.splitlines()
    # Each task run by its own name; the resource copy by its ledger row, as tether resources names it.
    assert sorted(line.split()[0] for line in lines if line.startswith("add-")) == ["add-0", "add-1", "add-2", "add-3"]
    assert any(line.split()[:1] == ["connection"] and line.split()[1].startswith("#") for line in lines)
    assert "adding 0 and 4" in shown and "s3cret" not in shown

    detail = tether_json(env, "runs", "show", run["id"])
    assert len(detail["task_runs"]) == 4
    (entry,) = detail["resources"]
    assert entry["status"] == "closed" and len(entry["used_by"]) == 4


def test_a_failed_flow_exits_non_zero_and_its_error_is_shown_with_the_traceback(env, flows_file):
    done = tether(env, "run", f"{flows_file}:fails", expect=1)
    assert "Failed" in done.stderr and "tether runs show" in done.stderr
    (run,) = tether_json(env, "runs", "ls", "--state", "failed")
    shown = tether(env, "runs", "show", run["id"]).stdout
    assert "Errors" in shown and "Traceback (most recent call last)" in shown
    assert 'raise ValueError(f"exploded on {x}")' in shown and "ValueError: exploded on 1" in shown
    assert tether_json(env, "runs", "ls", "--state", "completed") == []


def test_parameters_are_json_when_they_parse_and_strings_otherwise(env, flows_file):
    done = tether(env, "run", f"{flows_file}:echo-types", "-p", "items=[1, 2]", "-p", "name=hello", "-p", "flag=true")
    assert "Result: ['list', 'str', 'bool']" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.py:sums"], "No such file: missing.py"),
        (["run", "flows.py"], "is not FILE.py:FLOW"),
        (["run", "flows.py:nope"], "'nope' is not defined in flows.py. Flows in that file: echo, fails, sums."),
        (["run", "flows.py:add"], "'add' is not a @flow in flows.py"),
        (["run", "flows.py:sums", "-p", "n"], "-p 'n' is not NAME=VALUE"),
        (["run", "flows.py:sums", "-p", "rows=3"], "got an unexpected keyword argument 'rows'"),
    ],
)
def test_bad_input_is_a_clear_message_and_exit_code_2(env, flows_file, args, message):
    done = tether(env, *args, cwd=flows_file.parent, expect=2)
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_limits_are_kept_in_the_store(env):
    tether(env, "limit", "set", "mysql", "3")
    tether(env, "limit", "set", "api", "1")
    assert {e["tag"]: e["limit"] for e in tether_json(env, "limit", "ls")} == {"api": 1, "mysql": 3}
    assert "mysql" in tether(env, "limit", "ls").stdout
    tether(env, "limit", "rm", "api")
    assert {e["tag"]: e["limit"] for e in tether_json(env, "limit", "ls")} == {"mysql": 3}
    assert "no limit on tag 'api'" in tether(env, "limit", "rm", "api", expect=1).stderr
    tether(env, "limit", "set", "mysql", "-1", expect=2)


def test_a_corrupt_store_is_an_error_naming_the_file_and_the_fix(env, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "tether.db").write_bytes(b"garbage" * 500)
    done = tether(env, "runs", "ls", expect=1)
    assert str(home / "tether.db") in done.stderr and "Move it aside" in done.stderr


# -- the SIGKILL story ---------------------------------------------------------------


@pytest.fixture(params=["sqlite", "sqlite-helper", "postgresql"])
def store_env(request, env):
    """``env``, with the store in SQLite (written in-process or by the helper process) or in a
    PostgreSQL schema of its own."""
    if request.param.startswith("sqlite"):
        yield {**env, "TETHER_STORE_HELPER": "always" if request.param == "sqlite-helper" else "never"}
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"tether_cli_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield {**env, "TETHER_DATABASE_URL": f"{base}?options=-csearch_path%3D{schema}"}
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


KILLED = textwrap.dedent(
    """
    import os
    import sys
    import tether.store
    from tether import flow, task, resource
    from tether.resources import remember

    def remove_file(handle):
        os.remove(handle["path"])

    def broken_reaper(handle):
        raise PermissionError(f"not allowed to remove {{handle['path']}}")

    @resource(reaper=remove_file)
    def marker(path):
        open(path, "w").close()
        remember({{"path": path}})
        yield path

    @resource(reaper=broken_reaper)
    def stubborn(path):
        remember({{"path": path}})
        yield path

    @resource
    def unreapable():
        remember({{"cluster": "c-17"}})
        yield "c-17"

    @task
    def block_forever(*values):
        tether.store.flush()
        print("READY", flush=True)
        sys.stdin.readline()

    @flow
    def doomed():
        with marker({marker!r}) as a, stubborn({stubborn!r}) as b, unreapable() as c:
            block_forever(a, b, c)

    if __name__ == "__main__":
        tether.store.enable()
        doomed()
    """
)


def _kill_mid_flow(command, env, cwd):
    child = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "READY", child.stderr.read() if child.poll() is not None else line
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()
        child.stderr.close()
    return child.pid


def test_sigkill_leaves_orphans_that_reap_closes_and_records(store_env, tmp_path):
    kept, stubborn = tmp_path / "marker.txt", tmp_path / "stubborn.txt"
    script = tmp_path / "doomed.py"
    script.write_text(KILLED.format(marker=str(kept), stubborn=str(stubborn)))
    pid = _kill_mid_flow([sys.executable, str(script)], store_env, tmp_path)
    assert kept.exists()

    # The first store open after the death records the run Crashed, with its unfinished task run.
    (run,) = tether_json(store_env, "runs", "ls")
    assert (run["state_name"], run["pid"], run["task_counts"]) == ("Crashed", pid, {"CRASHED": 1})
    assert f"process {pid} on this host is gone" in run["state_message"] and "a store open" in run["state_message"]
    detail = tether_json(store_env, "runs", "show", run["id"])
    assert [c["name"] for c in detail["state_changes"] if c["kind"] == "flow"] == ["Running", "Crashed"]
    assert [t["state_name"] for t in detail["task_runs"]] == ["Crashed"]

    orphans = {o["name"]: o for o in tether_json(store_env, "resources", "--orphans")}
    assert sorted(orphans) == ["marker", "stubborn", "unreapable"]
    assert orphans["marker"]["handle"] == {"path": str(kept)} and orphans["marker"]["reaper"] == "__main__:remove_file"
    assert all(o["pid"] == pid and "is gone" in o["orphan"] and len(o["used_by"]) == 1 for o in orphans.values())

    dry = tether(store_env, "reap", "--dry-run").stdout
    assert "would reap 'marker'" in dry and kept.exists()

    moved = tmp_path / "elsewhere"
    moved.mkdir()  # reap from another directory: the reapers are found through the ledger alone
    done = tether(store_env, "reap", cwd=moved, expect=1)
    assert not kept.exists()
    assert "reaped 'marker'" in done.stdout
    assert "FAILED 'stubborn'" in done.stdout and "PermissionError: not allowed to remove" in done.stdout
    assert "no reaper 'unreapable'" in done.stdout and '"cluster": "c-17"' in done.stdout
    assert "tether reap --mark-closed" in done.stdout

    ledger = {e["name"]: e for e in tether_json(store_env, "resources")}
    assert ledger["marker"]["status"] == "reaped" and ledger["marker"]["cleaned_at"] is not None
    assert ledger["stubborn"]["status"] == "reap-failed" and "PermissionError" in ledger["stubborn"]["cleanup_error"]
    assert ledger["unreapable"]["status"] == "open"
    tether(store_env, "reap", "--mark-closed", str(ledger["unreapable"]["id"]))
    assert [o["name"] for o in tether_json(store_env, "resources", "--orphans")] == ["stubborn"]


MARIADB_FLOW = textwrap.dedent(
    """
    import sys
    import pymysql
    import tether.store
    from tether import flow, task, resource
    from tether.resources import remember

    URL = dict(host="127.0.0.1", port=3306, user="root", database="test")

    def drop_table(handle):
        conn = pymysql.connect(**URL)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS `{{handle['table']}}`")
        finally:
            conn.close()

    @resource(reaper=drop_table)
    def temp_table(name):
        conn = pymysql.connect(**URL)
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE `{{name}}` (id INT PRIMARY KEY)")
        remember({{"table": name}})
        try:
            yield name
        finally:
            drop_table({{"table": name}})
            conn.close()

    @task
    def fill(table):
        tether.store.flush()
        print("READY", flush=True)
        sys.stdin.readline()

    @flow
    def etl():
        with temp_table({table!r}) as table:
            fill(table)
    """
)


def _mariadb_tables(name):
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test")
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES LIKE %s", (name,))
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def test_sigkill_story_with_a_real_mariadb_table(mariadb_url, env, tmp_path):
    table = f"tether_tmp_{uuid.uuid4().hex[:10]}"
    flow_file = tmp_path / "etl_flow.py"
    flow_file.write_text(MARIADB_FLOW.format(table=table))
    try:
        _kill_mid_flow([*TETHER, "run", f"{flow_file}:etl"], env, tmp_path)
        assert _mariadb_tables(table) == [table]  # the process died: nothing dropped it

        (orphan,) = tether_json(env, "resources", "--orphans")
        assert orphan["name"] == "temp_table" and orphan["handle"] == {"table": table}
        assert table in tether(env, "resources", "--orphans").stdout

        done = tether(env, "reap", cwd="/")
        assert "reaped 'temp_table'" in done.stdout
        assert _mariadb_tables(table) == []  # checked on the server
        (entry,) = tether_json(env, "resources")
        assert entry["status"] == "reaped" and entry["cleanup_error"] is None
        assert tether_json(env, "resources", "--orphans") == []
    finally:
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test")
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        conn.close()
