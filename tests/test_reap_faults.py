"""The store's side of faults, through the real ``tether`` entry point in subprocesses with real signals.

A flow process is SIGKILLed mid-run: the next store open or ``tether reap`` records its
flow run and unfinished task runs ``Crashed``, and reap closes its resource once. A
``tether reap`` is SIGKILLed while its reaper blocks: the row is not reaping for ever,
a later reap takes it over and the reaper completes exactly once. A script without a
``__main__`` guard is reaped without its flow running again. Secrets given as
parameters, remembered in a handle or written in an error are not printed.
Each story is judged from a record file the script writes, the ledger and the run store.
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
SECRETS = ("hunter2", "s3cret-pass", "pwd-secret", "passwd-secret", "dsn-secret", "err-secret")


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, tmp_path):
    """The subprocesses' environment: a store of the test's own (a SQLite file, or a PostgreSQL schema)."""
    values = {**os.environ, "TETHER_HOME": str(tmp_path / "home"), "TETHER_LOGGING_LEVEL": "WARNING"}
    for name in ("TETHER_DATABASE_URL", "TETHER_STORE", "TETHER_STORE_HELPER"):
        values.pop(name, None)
    if request.param == "sqlite":
        yield values
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"tether_reap_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield {**values, "TETHER_DATABASE_URL": f"{base}?options=-csearch_path%3D{schema}"}
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def tether(env, *args, expect=0):
    done = subprocess.run([*TETHER, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == expect, f"tether {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def tether_json(env, *args):
    return json.loads(tether(env, *args, "--json").stdout)


#: A flow whose resource's reaper notes when it starts and ends, and blocks while ``block`` exists.
DOOMED = textwrap.dedent(
    """
    import os
    import sys
    import tether.store
    from tether import flow, task, resource
    from tether.resources import remember

    def note(line):
        with open({record!r}, "a") as f:
            f.write(line + "\\n")

    def close_it(handle):
        note("reap-start")
        if os.path.exists(handle["block"]):
            print("REAPING", flush=True)
            sys.stdin.readline()  # until the test kills this reap
        note("reap-done")

    @resource(reaper=close_it)
    def thing(block):
        remember({{"block": block, "url": "postgresql://app:hunter2@db/x", "password": "hunter2"}})
        note("setup")
        yield "thing"
        note("cleanup")

    @task
    def explode(dsn):
        raise ConnectionError("cannot connect with host=db user=app password=err-secret")

    @task
    def wait_here(value):
        tether.store.flush()
        print("READY", flush=True)
        sys.stdin.readline()  # until the test kills this flow

    PARAMETERS = dict(
        db_pass="s3cret-pass", pwd="pwd-secret", passwd="passwd-secret",
        dsn="host=db user=app password=dsn-secret dbname=x", rows=3,
    )

    @flow
    def doomed(db_pass, pwd, passwd, dsn, rows):
        note("flow-ran")
        explode(dsn, return_state=True)
        with thing({block!r}) as t:
            wait_here(t)

    {call}
    """
)
GUARDED = 'if __name__ == "__main__":\n    doomed(**PARAMETERS)'
# No guard: loading this script runs the flow; code after the call must not run while reaping either.
UNGUARDED = 'try:\n    doomed(**PARAMETERS)\nexcept Exception:\n    note("swallowed")\nnote("module-end")'


def write_script(tmp_path, call=GUARDED):
    record, block = tmp_path / "record.txt", tmp_path / "block"
    script = tmp_path / "doomed.py"
    script.write_text(DOOMED.format(record=str(record), block=str(block), call=call))
    return script, record, block


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def start_and_wait_for(command, env, word):
    """Start ``command`` and return it once it printed ``word`` on a line of its own."""
    child = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    for line in child.stdout:
        if line.strip() == word:
            return child
    child.wait(timeout=30)
    raise AssertionError(f"{command} ended (rc {child.returncode}) before {word}:\n{child.stderr.read()}")


def sigkill(child):
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    for stream in (child.stdin, child.stdout, child.stderr):
        stream.close()
    assert child.returncode == -signal.SIGKILL


def kill_flow_mid_run(script, env):
    child = start_and_wait_for([sys.executable, str(script)], env, "READY")
    sigkill(child)
    return child.pid


def test_a_sigkilled_flow_is_recorded_crashed_by_reap_which_closes_its_resource_once(env, tmp_path):
    script, record, _ = write_script(tmp_path)
    pid = kill_flow_mid_run(script, env)

    done = tether(env, "reap")
    assert "recorded Crashed flow run 'doomed'" in done.stdout and f"process {pid} on this host is gone" in done.stdout
    assert "reaped 'thing'" in done.stdout
    assert lines(record) == ["flow-ran", "setup", "reap-start", "reap-done"]

    (run,) = tether_json(env, "runs", "ls")
    detail = tether_json(env, "runs", "show", run["id"])
    assert (run["state_type"], run["pid"]) == ("CRASHED", pid) and run["end_time"] is not None
    assert {t["name"]: t["state_type"] for t in detail["task_runs"]} == {"explode": "FAILED", "wait_here": "CRASHED"}
    assert (
        "while the task run was running"
        in next(t for t in detail["task_runs"] if t["name"] == "wait_here")["state_message"]
    )
    (entry,) = detail["resources"]
    assert entry["status"] == "reaped" and entry["orphan"] is None
    # A later reap has nothing to do: the run stays Crashed once, the resource reaped once.
    again = tether(env, "reap")
    assert "No orphaned resources." in again.stdout and "recorded Crashed" not in again.stdout
    assert lines(record) == ["flow-ran", "setup", "reap-start", "reap-done"]
    crashed = [c for c in tether_json(env, "runs", "show", run["id"])["state_changes"] if c["type"] == "CRASHED"]
    assert [c["kind"] for c in crashed] == ["flow", "task"]


@pytest.mark.parametrize("env", ["sqlite"], indirect=True)  # redaction does not depend on the database
def test_secrets_in_parameters_handles_and_errors_are_never_printed(env, tmp_path):
    script, _, _ = write_script(tmp_path)
    kill_flow_mid_run(script, env)
    shown = {
        "runs ls": tether(env, "runs", "ls", "--json").stdout,
        "runs show": tether(env, "runs", "show", tether_json(env, "runs", "ls")[0]["id"], "--json").stdout,
        "runs show (text)": tether(env, "runs", "show", tether_json(env, "runs", "ls")[0]["id"]).stdout,
        "resources": tether(env, "resources", "--json").stdout,
        "resources (text)": tether(env, "resources").stdout,
        "orphans": tether(env, "resources", "--orphans", "--json").stdout,
        "reap --dry-run": tether(env, "reap", "--dry-run").stdout,
    }
    for command, text in shown.items():
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, f"tether {command} printed {leaked}:\n{text}"
    run = json.loads(shown["runs ls"])[0]
    assert run["parameters"] == {
        "db_pass": "********", "pwd": "********", "passwd": "********",
        "dsn": "host=db user=app password=******** dbname=x", "rows": 3,
    }  # fmt: skip
    (entry,) = json.loads(shown["resources"])
    assert entry["handle"] == {
        "block": str(tmp_path / "block"), "url": "postgresql://app:********@db/x", "password": "********",
    }  # fmt: skip
    explode = next(t for t in json.loads(shown["runs show"])["task_runs"] if t["name"] == "explode")
    assert "ConnectionError: cannot connect with host=db user=app password=********" in explode["error"]
    # The reaper still gets the handle as setup remembered it.
    done = tether(env, "reap")
    assert "reaped 'thing'" in done.stdout and not [s for s in SECRETS if s in done.stdout + done.stderr]


def test_a_reap_killed_while_its_reaper_runs_is_taken_over_and_the_reaper_completes_once(env, tmp_path):
    script, record, block = write_script(tmp_path)
    block.touch()
    kill_flow_mid_run(script, env)

    reap = start_and_wait_for([*TETHER, "reap"], env, "REAPING")
    try:
        (entry,) = tether_json(env, "resources")
        assert entry["status"] == "reaping" and entry["reaping_by"]["pid"] == reap.pid
        # While its reaper lives, the row is nobody else's to reap.
        assert tether_json(env, "resources", "--orphans") == []
        assert "No orphaned resources." in tether(env, "reap").stdout
    finally:
        sigkill(reap)
    assert lines(record) == ["flow-ran", "setup", "reap-start"]

    block.unlink()
    (orphan,) = tether_json(env, "resources", "--orphans")
    assert orphan["status"] == "reaping" and f"process {reap.pid} on this host is gone" in orphan["orphan"]
    assert "its reaper stopped before it finished" in orphan["orphan"]
    done = tether(env, "reap")
    assert "reaped 'thing'" in done.stdout
    assert lines(record) == ["flow-ran", "setup", "reap-start", "reap-start", "reap-done"]
    (entry,) = tether_json(env, "resources")
    assert entry["status"] == "reaped" and entry["cleanup_error"] is None and entry["reaping_by"] is None
    assert "No orphaned resources." in tether(env, "reap").stdout
    assert lines(record) == ["flow-ran", "setup", "reap-start", "reap-start", "reap-done"]


@pytest.mark.parametrize("env", ["sqlite"], indirect=True)
def test_reaping_a_script_without_a_main_guard_never_runs_its_flow(env, tmp_path):
    script, record, _ = write_script(tmp_path, call=UNGUARDED)
    kill_flow_mid_run(script, env)
    assert lines(record) == ["flow-ran", "setup"]

    done = tether(env, "reap")
    assert "reaped 'thing'" in done.stdout
    assert "Flow 'doomed' was not run" in done.stderr and "__main__" in done.stderr
    # The flow did not run again, and nothing after its call ran (not even an `except Exception`).
    assert lines(record) == ["flow-ran", "setup", "reap-start", "reap-done"]
    assert [r["name"] for r in tether_json(env, "runs", "ls")] == ["doomed"]
