"""Several flow processes writing to one SQLite store at once lose nothing and never see "database is locked"."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import tether.store

PROCESSES = 4
TASKS = 1000

CHILD = textwrap.dedent(
    """
    import sys
    import tether.store
    from tether import flow, task

    @task
    def inc(x):
        return x + 1

    @flow
    def many(n):
        return sum(f.result() for f in [inc.submit(i) for i in range(n)])

    store = tether.store.enable()   # all four open (and create) the new store at once
    print("ready", flush=True)
    sys.stdin.readline()            # then all four run their flow at once
    assert many({tasks}) == sum(range(1, {tasks} + 1))
    assert tether.store.flush(60)
    print(store.recorder.failure or "ok", flush=True)
    """
)


@pytest.mark.parametrize("helper", ["never", "always"])
def test_four_processes_with_a_thousand_tasks_each_lose_nothing(tmp_path, helper):
    """Each process writes in-process, or through a writer process of its own: eight writers then."""
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tasks=TASKS))
    env = {
        **os.environ,
        "TETHER_HOME": str(tmp_path / "home"),
        "TETHER_LOGGING_LEVEL": "WARNING",
        "TETHER_STORE_HELPER": helper,
    }
    env.pop("TETHER_DATABASE_URL", None)
    env.pop("TETHER_STORE", None)
    children = [
        subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        for child in children:  # release them together
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=120) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for child, (stdout, stderr) in zip(children, outputs):
        assert child.returncode == 0, stderr
        assert stdout.strip() == "ok"
        assert "locked" not in stderr.lower() and "busy" not in stderr.lower(), stderr

    store = tether.store.open_store(f"sqlite:///{tmp_path / 'home' / 'tether.db'}")
    try:
        counts = store.counts()
        runs = store.flow_runs(limit=None)
    finally:
        store.close()
    assert counts["flow_runs"] == PROCESSES
    assert counts["task_runs"] == PROCESSES * TASKS
    assert counts["state_changes"] == PROCESSES * (TASKS + 1) * 2  # Running and Completed, for each task and flow
    assert {r.pid for r in runs} == {c.pid for c in children}
    assert all(r.state_name == "Completed" and r.task_counts == {"COMPLETED": TASKS} for r in runs)
