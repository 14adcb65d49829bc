"""tether serve end to end: real serve processes racing on one store (SQLite, PostgreSQL), killed at
each step of a claim, stopped with SIGTERM; judged by the store's rows and a file each run appends to."""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import _waiting
from tether.store import DeploymentTable, open_store

TETHER = [sys.executable, "-m", "tether.cli"]

FLOWS = """
import json, os, pathlib, time
from tether import flow
from tether.runtime import deployment, flow_run
from tether.store import flush

RECORD = pathlib.Path(os.environ["RECORD"])

@flow
def tick(n: int = 1):
    flush()  # the flow run is in the store before the body says it started (a crash test kills it then)
    line = {"scheduled": flow_run.scheduled_start_time.timestamp(), "deployment": deployment.name, "pid": os.getpid(), "n": n}
    with RECORD.open("a") as f:
        f.write(json.dumps(line) + "\\n")
    hold = os.environ.get("HOLD")  # a run that goes on until this file exists
    while hold and not pathlib.Path(hold).exists():
        time.sleep(0.05)
    return n

@flow
def other():
    return 0


from tether import resource, task

STEPS = pathlib.Path(os.environ["RECORD"]).with_name("steps.jsonl")


def step(what):
    with STEPS.open("a") as f:
        f.write(json.dumps({"step": what, "pid": os.getpid()}) + "\\n")


@resource
def connection():
    step("setup")
    try:
        yield "conn"
        step("cleanup succeeded")
    except BaseException as exc:
        step(f"cleanup after {type(exc).__name__}")
        raise


@task
def work(conn):
    step("task started")
    release = pathlib.Path(os.environ["RELEASE"])
    while not release.exists():
        time.sleep(0.02)


@flow
def held():
    with connection() as conn:
        work(conn)
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, tmp_path):
    """The serve processes' environment: a store of the test's own (a SQLite file, or a PostgreSQL schema)."""
    flows = tmp_path / "flows.py"
    flows.write_text(FLOWS)
    values = {**os.environ, "TETHER_HOME": str(tmp_path / "home"), "RECORD": str(tmp_path / "record.jsonl"),
              "TETHER_LOGGING_LEVEL": "WARNING", "TETHER_SERVE_GRACE_SECONDS": "5", "TETHER_SERVE_CANCEL_SECONDS": "10"}  # fmt: skip
    for name in ("TETHER_DATABASE_URL", "TETHER_STORE", "TETHER_STORE_HELPER"):
        values.pop(name, None)
    if request.param == "sqlite":
        yield values
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"tether_serve_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield {**values, "TETHER_DATABASE_URL": f"{base}?options=-csearch_path%3D{schema}"}
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def store_url(env: dict[str, str]) -> str:
    return env.get("TETHER_DATABASE_URL") or f"sqlite:///{env['TETHER_HOME']}/tether.db"


def start_serve(env: dict[str, str], tmp_path: Path, *args: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TETHER, "serve", f"{tmp_path / 'flows.py'}:tick", "--name", "ticker", *args],
        env={**env, **extra}, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


#: Serve processes start slowly on a loaded machine: what they do is awaited this long.
wait_until = functools.partial(_waiting.wait_until, timeout=90.0)


def wait_serving(process: subprocess.Popen[str]) -> None:
    """Wait until ``tether serve`` has registered its deployment (the store exists from then on)."""
    read_until(process.stdout, "Serving deployment")


def records(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "record.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Rows:
    """The test's view of the store's deployment rows."""

    def __init__(self, env: dict[str, str]) -> None:
        self.url = store_url(env)
        self.store: Any = None

    def table(self) -> DeploymentTable | None:
        if self.store is None:
            if self.url.startswith("sqlite") and not Path(self.url.removeprefix("sqlite:///")).exists():
                return None
            self.store = open_store(self.url)
        return DeploymentTable(self.store.engine)

    def registered(self) -> bool:
        table = self.table()
        return table is not None and any(d.name == "ticker" for d in table.deployments())

    def runs(self, status: str | None = None) -> list[Any]:
        table = self.table()
        if not self.registered():
            return []
        assert table is not None
        found = table.runs("ticker", limit=None)
        return [r for r in found if status is None or r.status == status]

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


@pytest.fixture
def rows(env):
    view = Rows(env)
    yield view
    view.close()


def stop(process: subprocess.Popen[str], expect: int = 143) -> str:
    """SIGTERM the serve process and wait for it; what it printed."""
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == expect, f"serve exited {process.returncode}\n{out}\n{err}"
    return out


def test_serve_processes_racing_and_restarted_run_each_scheduled_time_once(env, rows, tmp_path):
    serves = [start_serve(env, tmp_path, "--interval", "1") for _ in range(3)]
    try:
        wait_serving(serves[0])
        wait_until(lambda: len(rows.runs("completed")) >= 3, "three completed runs")
        serves[0].send_signal(signal.SIGKILL)  # one of them dies and another comes
        serves[0].wait()
        serves.append(start_serve(env, tmp_path, "--interval", "1"))
        wait_until(lambda: len(rows.runs("completed")) >= 8, "eight completed runs")
    finally:
        for serve in serves[1:]:
            stop(serve)
    ran = sorted((r for r in rows.runs() if r.status in ("completed", "crashed")), key=lambda r: r.scheduled_time)
    times = [r.scheduled_time for r in ran]
    seen = [line["scheduled"] for line in records(tmp_path)]
    assert len(seen) == len(set(seen)), "a scheduled time ran twice"
    assert {r.scheduled_time for r in ran if r.status == "completed"} <= set(seen) <= set(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and max(gaps) <= 1.0 + 1e-6, f"a gap beyond one interval: {gaps}"
    skipped = [r for r in rows.runs("skipped") if times[0] < r.scheduled_time < times[-1]]
    assert skipped == []
    assert len({r.flow_run_id for r in ran if r.status == "completed"}) == len(
        [r for r in ran if r.status == "completed"]
    )
    assert {line["deployment"] for line in records(tmp_path)} == {"ticker"}


def only_run(rows: Rows, run_id: int) -> Any:
    return next(r for r in rows.runs() if r.id == run_id)


# A real `tether serve` whose store calls stop and wait at one step of a claim, so that the test
# SIGKILLs it there: the test's own stand-in for DeploymentTable's methods (inherited by the forked
# run's process), nothing in tether itself. argv: POINT MARKER, then tether's arguments.
STALLED_SERVE = """
import os, sys, threading
from tether.cli import main
from tether.store import DeploymentTable

point, marker = sys.argv[1], sys.argv[2]
claim, finish = DeploymentTable.claim, DeploymentTable.finish


def reached():
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(marker + ".tmp", marker)  # the test sees the marker whole or not at all
    threading.Event().wait()


def stalling_claim(self, name, owner, late_seconds):
    if point == "before-claim":
        reached()  # its first claim: the test asks for a run now, which this serve process never claims
    claimed = claim(self, name, owner, late_seconds)
    if claimed is not None and point == "after-claim":
        reached()  # claimed, and its process not started
    return claimed


def stalling_finish(self, *args, **kwargs):
    if point == "after-run":
        reached()  # in the run's process: the flow run ended and is written, the row not yet
    return finish(self, *args, **kwargs)


DeploymentTable.claim = stalling_claim
DeploymentTable.finish = stalling_finish
main(sys.argv[3:], prog_name="tether")
"""


@pytest.mark.parametrize("point", ["before-claim", "after-claim", "mid-run", "after-run"])
def test_a_serve_killed_at_each_step_of_a_claim_leaves_the_run_once_or_crashed_never_twice(env, rows, tmp_path, point):
    marker = tmp_path / "reached"
    yearly = ("--name", "ticker", "--cron", "0 0 1 1 *")  # a yearly schedule: only requested runs
    if point == "mid-run":
        first = start_serve(env, tmp_path, *yearly[2:], HOLD=str(tmp_path / "never"))
    else:
        script = tmp_path / "stalled_serve.py"
        script.write_text(STALLED_SERVE)
        first = subprocess.Popen(
            [sys.executable, str(script), point, str(marker), "serve", f"{tmp_path / 'flows.py'}:tick", *yearly],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    wait_serving(first)
    table = rows.table()
    assert table is not None
    if point == "before-claim":  # asked for once the serve process stopped where it claims: due, not claimed
        wait_until(marker.exists, f"the serve process to reach {point}", process=first)
    run_id = table.request_run("ticker", {"n": 7})
    if point == "mid-run":
        wait_until(lambda: len(records(tmp_path)) == 1, "the run's body to start", process=first)
        assert only_run(rows, run_id).status == "running"
    elif point != "before-claim":
        wait_until(marker.exists, f"the serve process to reach {point}", process=first)
    status_when_killed = only_run(rows, run_id).status
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    second = start_serve(env, tmp_path, "--cron", "0 0 1 1 *", HOLD="")
    try:
        wait_until(
            lambda: only_run(rows, run_id).status not in ("scheduled", "claimed", "running"), "the run to be settled"
        )
        after = table.request_run("ticker", {"n": 8})  # the second serve goes on: a later request runs
        wait_until(lambda: only_run(rows, after).status == "completed", "the second request to run")
    finally:
        stop(second)
    settled = only_run(rows, run_id)
    bodies = [line for line in records(tmp_path) if line["n"] == 7]
    assert len(bodies) <= 1, "the run's body ran twice"
    assert rows.store is not None
    if point in ("before-claim", "after-claim"):
        assert status_when_killed == ("scheduled" if point == "before-claim" else "claimed")
        assert settled.status == "completed" and len(bodies) == 1  # nothing had run: it runs, once
    elif point == "mid-run":
        assert settled.status == "crashed" and "not run again" in (settled.reason or "")
        assert len(bodies) == 1
        assert rows.store.flow_run(settled.flow_run_id).flow_run.state_type == "CRASHED"
    else:
        assert status_when_killed == "running"
        assert settled.status == "completed" and "recorded from its flow run" in (settled.reason or "")
        assert len(bodies) == 1
        assert rows.store.flow_run(settled.flow_run_id).flow_run.state_type == "COMPLETED"


def steps(tmp_path: Path) -> list[str]:
    path = tmp_path / "steps.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def start_held(env: dict[str, str], tmp_path: Path, grace: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TETHER, "serve", f"{tmp_path / 'flows.py'}:held", "--name", "ticker", "--cron", "0 0 1 1 *"],
        env={**env, "RELEASE": str(tmp_path / "release"), "TETHER_SERVE_GRACE_SECONDS": grace}, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def read_until(stream: Any, text: str) -> str:
    seen = ""
    while text not in seen:
        line = stream.readline()
        assert line, f"the stream ended before {text!r}:\n{seen}"
        seen += line
    return seen


@pytest.mark.parametrize("env", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("signum", "finishes"),
    [(signal.SIGTERM, True), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigterm-finishes-within-grace", "sigterm-cancelled-after-grace", "ctrl-c-finishes-within-grace"],
)
def test_sigterm_stops_taking_runs_lets_the_running_one_finish_or_cancels_it_with_cleanup(
    env, rows, tmp_path, signum, finishes
):
    serve = start_held(env, tmp_path, grace="60" if finishes else "0.5")
    try:
        wait_serving(serve)
        table = rows.table()
        assert table is not None
        running = table.request_run("ticker", {})
        wait_until(lambda: "task started" in steps(tmp_path), "the run's task to start")
        serve.send_signal(signum)  # Ctrl-C reaches serve alone: each run has a session of its own
        read_until(serve.stderr, "stopping; 1 run(s) still going")
        later = table.request_run("ticker", {})  # asked for after the stop: not taken
        if finishes:
            (tmp_path / "release").touch()
        _, err = serve.communicate(timeout=60)
    finally:
        if serve.poll() is None:
            serve.kill()
    assert serve.returncode == (143 if signum == signal.SIGTERM else 130), err
    by_id = {r.id: r for r in rows.runs()}
    assert by_id[later].status == "scheduled"
    if finishes:
        assert by_id[running].status == "completed"
        assert steps(tmp_path) == ["setup", "task started", "cleanup succeeded"]
    else:
        assert by_id[running].status == "cancelled"
        assert steps(tmp_path)[:2] == ["setup", "task started"] and steps(tmp_path)[2].startswith("cleanup after")
        assert rows.store.flow_run(by_id[running].flow_run_id).flow_run.state_type == "CANCELLED"
    assert table.get("ticker").paused is False  # stopping never pauses the schedule


SCRIPT = """
import json, os, pathlib, sys
from tether import flow, serve
from tether.runtime import deployment, flow_run

@flow
def first(n: int = 1):
    with pathlib.Path(os.environ["RECORD"]).open("a") as f:
        f.write(json.dumps({"deployment": deployment.name, "n": n, "scheduled": flow_run.scheduled_start_time.timestamp()}) + "\\n")

@flow
def second():
    first.fn(n=0)

if __name__ == "__main__":
    sys.exit(serve(first.to_deployment(name="ticker", cron="0 0 1 1 *", parameters={"n": 5}), second.to_deployment(name="second")))
"""


@pytest.mark.parametrize("env", ["sqlite"], indirect=True)
def test_serve_of_several_deployments_from_a_script_and_what_the_runs_see(env, rows, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    serve = subprocess.Popen(
        [sys.executable, str(script)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(
            lambda: rows.registered() and len(rows.table().deployments()) == 2, "both deployments", process=serve
        )
        table = rows.table()
        one = table.request_run("ticker", {})
        two = table.request_run("second", {})
        wait_until(lambda: len(records(tmp_path)) == 2, "both runs", process=serve)
    finally:
        printed = stop(serve)
    seen = {line["deployment"]: line for line in records(tmp_path)}
    runs = {r.id: r for d in ("ticker", "second") for r in table.runs(d)}
    assert "Serving deployment 'ticker' (cron 0 0 1 1 * (UTC); next run " in printed
    assert "'second' (no schedule: runs on request; next run -)" in printed
    assert seen["ticker"]["n"] == 5 and seen["second"]["n"] == 0
    assert seen["ticker"]["scheduled"] == pytest.approx(runs[one].scheduled_time)
    assert seen["second"]["scheduled"] == pytest.approx(runs[two].scheduled_time)
    assert runs[one].status == runs[two].status == "completed"


@pytest.mark.parametrize("env", ["sqlite"], indirect=True)
def test_after_downtime_a_restarted_serve_runs_the_latest_missed_time_only_and_records_the_others(env, rows, tmp_path):
    late = {"TETHER_SERVE_LATE_SECONDS": "0.5"}  # a time half a second overdue was missed
    first = start_serve(env, tmp_path, "--interval", "1", **late)
    try:
        wait_serving(first)
        wait_until(lambda: len(rows.runs("completed")) >= 1, "a first run", process=first)
    finally:
        stop(first)
    table = rows.table()
    assert table is not None
    stopped_at = table.now()
    wait_until(lambda: table.now() > stopped_at + 4.5, "four scheduled times to pass with no serve process")
    second = start_serve(env, tmp_path, "--interval", "1", **late)  # --catchup latest, the default
    try:
        wait_serving(second)
        wait_until(
            lambda: any(r.scheduled_time > stopped_at for r in rows.runs("completed")), "a run after the restart"
        )
    finally:
        stop(second)
    caught_up = min(r.scheduled_time for r in rows.runs("completed") if r.scheduled_time > stopped_at)
    missed = sorted(
        (r for r in rows.runs() if stopped_at < r.scheduled_time < caught_up), key=lambda r: r.scheduled_time
    )
    assert len(missed) >= 4
    assert all(r.status == "skipped" and "(catchup=latest)" in (r.reason or "") for r in missed), missed
    assert caught_up - missed[-1].scheduled_time == pytest.approx(1.0)  # the newest due time ran, none before it
    ran = {line["scheduled"] for line in records(tmp_path)}
    assert not ran & {r.scheduled_time for r in missed}
