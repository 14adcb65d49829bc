"""Catch-up after downtime, overlap with a run still going, schedule changes, runs whose process dies
(their spooled records written before they are settled), limits and the ledger in scheduled runs, async
flows and the live display, through a `Server` driven tick by tick in this process (each run still
forked into a process of its own), judged by the store's rows."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from rich.console import Console

import tether.limits
from _waiting import wait_until
from tether import flow, resource, task
from tether._serve import Server, ServeSettings
from tether._serve_display import SHOWN_SKIPS, ServeDisplay
from tether.cli import main
from tether.runtime import deployment, flow_run
from tether.store import ProcessInfo, open_store
from tether.store import flush as flush_store
from tether.store._schema import deployment_runs, task_runs
from tether.store._schema import deployments as deployments_table


@flow
def recorded(n: int = 1) -> int:
    line = {"scheduled": flow_run.scheduled_start_time.timestamp(), "deployment": deployment.name, "n": n}
    with pathlib.Path(os.environ["RECORD"]).open("a") as f:
        f.write(json.dumps(line) + "\n")
    hold = os.environ.get("HOLD")
    while hold and not pathlib.Path(hold).exists():
        time.sleep(0.02)
    return n


@pytest.fixture
def server_for(tmp_path, monkeypatch):
    monkeypatch.delenv("TETHER_STORE", raising=False)  # the runs are recorded
    monkeypatch.setenv("RECORD", str(tmp_path / "record.jsonl"))
    made: list[Server] = []

    def make(**options: Any) -> Server:
        settings = ServeSettings(late_seconds=0.0, lookahead_seconds=0.0)
        server = Server([recorded.to_deployment(name="policy", **options)], settings, store=open_store())
        server.register()
        made.append(server)
        return server

    yield make
    for server in made:
        for child in server.children.values():
            child.process.kill()
            child.process.join()
        server.store.close()


def settle(server: Server) -> None:
    """Let every run started so far end, and record it."""
    for child in list(server.children.values()):
        child.process.join(timeout=60)
    server.collect_children()


def records(tmp_path: pathlib.Path) -> list[dict[str, Any]]:
    path = tmp_path / "record.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("catchup", ["latest", "all", "none"])
def test_downtime_under_each_catchup_policy(server_for, tmp_path, catchup):
    server = server_for(interval=1, catchup=catchup)
    now = server.table.now()
    down_since = float(int(now)) - 5.5  # as if no serve process had run for the last five times
    with server.store.engine.begin() as conn:
        conn.execute(sa.update(deployments_table).values(planned_until=down_since))
    server.tick()  # plans the times missed since then (every row up to now) and applies catch-up
    missed_ids = {r.id for r in server.table.runs("policy", limit=None)}
    for _ in range(20):
        settle(server)
        missed = [r for r in server.table.runs("policy", limit=None) if r.id in missed_ids]
        if all(r.status not in ("scheduled", "claimed", "running") for r in missed):
            break
        server.tick()
    missed_until = max(r.scheduled_time for r in missed)
    missed.sort(key=lambda r: r.scheduled_time)
    statuses = [r.status for r in missed]
    assert len(missed) >= 5
    if catchup == "latest":
        assert statuses[:-1] == ["skipped"] * (len(missed) - 1) and statuses[-1] == "completed"
        assert all("catchup=latest" in (r.reason or "") for r in missed[:-1])
    elif catchup == "all":
        assert statuses == ["completed"] * len(missed)
    else:
        assert statuses == ["skipped"] * len(missed) and all("catchup=none" in (r.reason or "") for r in missed)
    ran = sorted(line["scheduled"] for line in records(tmp_path) if line["scheduled"] <= missed_until)
    assert ran == [r.scheduled_time for r in missed if r.status == "completed"]


@pytest.mark.parametrize("overlap", ["queue", "skip", "cancel-new"])
def test_overlap_when_a_run_is_still_going(server_for, tmp_path, monkeypatch, overlap):
    release = tmp_path / "release"
    monkeypatch.setenv("HOLD", str(release))
    server = server_for(overlap=overlap)  # no schedule: runs on request only
    first = server.table.request_run("policy", {"n": 1})
    server.tick()
    wait_until(lambda: records(tmp_path), "the first run's body to start")  # another process writes
    second = server.table.request_run("policy", {"n": 2})
    server.tick()
    by_id = {r.id: r for r in server.table.runs("policy")}
    assert by_id[first].status == "running"
    expected = {"queue": "scheduled", "skip": "skipped", "cancel-new": "cancelled"}[overlap]
    assert by_id[second].status == expected
    release.touch()
    settle(server)
    server.tick()  # queue: the second starts now that the first has ended
    settle(server)
    by_id = {r.id: r for r in server.table.runs("policy")}
    assert by_id[first].status == "completed"
    assert by_id[second].status == ("completed" if overlap == "queue" else expected)
    if overlap != "queue":
        assert f"overlap={overlap}" in (by_id[second].reason or "")
    assert [line["n"] for line in records(tmp_path)] == ([1, 2] if overlap == "queue" else [1])


def test_changing_the_schedule_never_back_fills_and_drops_the_old_future_times(server_for):
    server = server_for(interval=1)
    table = server.table
    table.plan("policy", server.deployments["policy"].times, lookahead=5)
    before = table.runs("policy", limit=None)
    assert len(before) >= 4 and all(r.status == "scheduled" for r in before)
    changed = recorded.to_deployment(name="policy", cron="*/5 * * * *")
    at = table.now()
    assert table.register(changed.spec()) is True
    assert table.register(changed.spec()) is False  # the same schedule again: nothing changes
    assert all(
        r.status == "skipped" and "schedule changed" in (r.reason or "") for r in table.runs("policy", limit=None)
    )
    table.plan("policy", changed.times, lookahead=3600)
    new = [r for r in table.runs("policy", limit=None) if r.status == "scheduled"]
    assert new and all(r.scheduled_time > at for r in new)  # counted from the change on, nothing earlier
    assert all(r.scheduled_time % 300 == 0 for r in new)


def test_runs_ls_by_deployment_lists_the_deployments_flow_runs(server_for):
    server = server_for()
    asked = [server.table.request_run("policy", {"n": n}) for n in (1, 2)]
    for _ in asked:
        server.tick()
        settle(server)
    flow_run_ids = {r.flow_run_id for r in server.table.runs("policy")}
    assert len(flow_run_ids) == 2 and None not in flow_run_ids
    listed = json.loads(CliRunner().invoke(main, ["runs", "ls", "--deployment", "policy", "--json"]).output)
    assert {r["id"] for r in listed} == flow_run_ids
    assert json.loads(CliRunner().invoke(main, ["runs", "ls", "--deployment", "nothing", "--json"]).output) == []


def test_the_live_display_shows_the_next_times_and_the_runs_in_progress(server_for, tmp_path, monkeypatch):
    release = tmp_path / "release"
    monkeypatch.setenv("HOLD", str(release))
    server = server_for(cron="0 0 1 1 *")
    screen = io.StringIO()
    display = ServeDisplay(Console(file=screen, force_terminal=True, width=160))
    try:
        run_id = server.table.request_run("policy", {"n": 3})
        server.tick()
        display.update(server)
        shown = screen.getvalue()
        assert "policy" in shown and "cron 0 0 1 1 * (UTC)" in shown and "-01-01 00:00:00" in shown
        assert str(server.children[run_id].process.pid) in shown
    finally:
        release.touch()
        settle(server)
        display.close()
    piped = io.StringIO()
    lines = ServeDisplay(Console(file=piped, force_terminal=False, width=160))
    second = server.table.request_run("policy", {"n": 4})
    server.tick()
    lines.update(server)
    settle(server)
    lines.update(server)
    assert f"run {second} (scheduled" in piped.getvalue() and f"run {second} completed." in piped.getvalue()


@flow
def dies(n: int = 1) -> int:
    if n == 1:
        flush_store()  # the flow run is in the store (records of the last few ms may die with it)
        os.kill(os.getpid(), signal.SIGKILL)  # the run's process dies under it
    return n


def test_a_run_whose_process_dies_is_recorded_crashed_and_serve_goes_on(tmp_path, monkeypatch):
    monkeypatch.delenv("TETHER_STORE", raising=False)
    server = Server(
        [dies.to_deployment(name="dies")], ServeSettings(late_seconds=0.0, lookahead_seconds=0.0), store=open_store()
    )
    try:
        server.register()
        crashed = server.table.request_run("dies", {"n": 1})
        server.tick()
        settle(server)
        fine = server.table.request_run("dies", {"n": 2})
        server.tick()
        settle(server)
        by_id = {r.id: r for r in server.table.runs("dies")}
        assert by_id[crashed].status == "crashed" and "ended before recording the run" in (by_id[crashed].reason or "")
        assert server.store.flow_run(by_id[crashed].flow_run_id).flow_run.state_type == "CRASHED"
        assert by_id[fine].status == "completed"
    finally:
        server.store.close()


def test_a_paused_deployment_skips_its_scheduled_times_but_runs_what_is_asked_for(server_for):
    server = server_for(interval=1)
    server.table.set_paused("policy", True)
    with server.store.engine.begin() as conn:
        conn.execute(sa.update(deployments_table).values(planned_until=server.table.now() - 3.5))
    asked = server.table.request_run("policy", {"n": 9})
    server.tick()
    settle(server)
    by_id = {r.id: r for r in server.table.runs("policy", limit=None)}
    scheduled = [r for r in by_id.values() if r.trigger == "schedule"]
    assert len(scheduled) >= 3 and all(
        r.status == "skipped" and r.reason == "the deployment was paused" for r in scheduled
    )
    assert by_id[asked].status == "completed"
    server.table.set_paused("policy", False)
    server.tick()  # resumed: the times from now on run, the paused ones stay skipped
    settle(server)
    after = {r.id: r for r in server.table.runs("policy", limit=None)}
    assert all(after[r.id].status == "skipped" for r in scheduled)
    assert all(r.reason != "the deployment was paused" for r in after.values() if r.id not in by_id)


@task
def counted(n: int) -> int:
    return n + 1


@flow
def spools_then_dies() -> int:
    """Says it started, waits to be let go, runs a task, spools its records (not written: the test
    holds the store's write lock) and is SIGKILLed."""
    started, go = pathlib.Path(os.environ["STARTED"]), pathlib.Path(os.environ["GO"])
    started.write_text(str(os.getpid()))
    while not go.exists():
        time.sleep(0.01)
    value = counted(1)
    flush_store(until="safe")  # in the spool: safe from this process's death, not yet in the store
    os.kill(os.getpid(), signal.SIGKILL)
    return value


def gone_process() -> ProcessInfo:
    """A process of this host that has ended."""
    done = subprocess.run(
        [sys.executable, "-c", "from tether.store import ProcessInfo; print(ProcessInfo.current().as_json())"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    found = ProcessInfo.from_json(done.stdout.strip())
    assert found is not None
    return found


@pytest.mark.parametrize("who", ["its-serve-process", "another-serve-process"])
def test_a_dead_runs_spooled_records_are_written_before_its_run_is_settled_crashed(tmp_path, monkeypatch, who):
    """The run's process dies with records spooled and not written: the serve process that sees it die
    (or, its serve process gone too, the next one) writes them from the spool, then settles the run."""
    monkeypatch.delenv("TETHER_STORE", raising=False)
    monkeypatch.setenv("STARTED", str(tmp_path / "started"))
    monkeypatch.setenv("GO", str(tmp_path / "go"))
    settings = ServeSettings(late_seconds=0.0, lookahead_seconds=0.0)
    server = Server([spools_then_dies.to_deployment(name="dies")], settings, store=open_store())
    try:
        server.register()
        run_id = server.table.request_run("dies", {})
        server.tick()
        wait_until((tmp_path / "started").exists, "the run's process to be in the flow's body")
        locked = sqlite3.connect(server.store.location.path, isolation_level=None, timeout=30)
        try:
            locked.execute("BEGIN IMMEDIATE")  # from now on the run's process can only spool
            (tmp_path / "go").touch()
            child = server.children[run_id].process
            child.join(timeout=60)
            assert child.exitcode == -signal.SIGKILL
        finally:
            locked.execute("ROLLBACK")
            locked.close()
        flow_run_id = next(r.flow_run_id for r in server.table.runs("dies") if r.id == run_id)
        assert flow_run_id is not None
        with server.store.engine.connect() as conn:  # the task run is only in the dead process's spool
            assert conn.execute(sa.select(task_runs.c.id).where(task_runs.c.flow_run_id == flow_run_id)).all() == []
        if who == "its-serve-process":
            server.collect_children()
        else:  # its serve process is gone too: the next one to look settles it
            with server.store.engine.begin() as conn:
                conn.execute(
                    sa.update(deployment_runs).where(deployment_runs.c.id == run_id)
                    .values(claimed_by=gone_process().as_json())
                )  # fmt: skip
            server.children.clear()
            server.tick()
        settled = next(r for r in server.table.runs("dies") if r.id == run_id)
        after = server.store.flow_run(flow_run_id)
        assert settled.status == "crashed"
        assert after.flow_run.state_type == "CRASHED"
        assert [t.state_type for t in after.task_runs] == ["COMPLETED"]
        assert after.task_runs[0].name.startswith("counted")
        assert not any(f"-{child.pid}-" in p.name for p in (tmp_path / "tether-home" / "spool").glob("*.spool"))
    finally:
        server.store.close()


@resource
def connection() -> Any:
    yield "conn"


@task(tags=["serve-db"])
def query(conn: str) -> str:
    hold = pathlib.Path(os.environ["HOLD"])
    with pathlib.Path(os.environ["RECORD"]).open("a") as f:
        f.write(json.dumps({"task": deployment.name}) + "\n")
    while not hold.exists():
        time.sleep(0.02)
    return conn


@flow
def uses_the_database() -> str:
    with connection() as conn:
        return query(conn)


def test_limits_and_the_resource_ledger_hold_in_scheduled_runs(tmp_path, monkeypatch):
    """Two deployments' runs, each in its own process, share a tag limit of 1 through the store: one
    task runs while the other waits; each run's resource is in the ledger, set up and cleaned up."""
    monkeypatch.delenv("TETHER_STORE", raising=False)
    monkeypatch.setenv("RECORD", str(tmp_path / "record.jsonl"))
    monkeypatch.setenv("HOLD", str(tmp_path / "release"))
    tether.limits.set("serve-db", 1)
    settings = ServeSettings(late_seconds=0.0, lookahead_seconds=0.0)
    made = [uses_the_database.to_deployment(name=name) for name in ("first", "second")]
    server = Server(made, settings, store=open_store())
    try:
        server.register()
        asked = {name: server.table.request_run(name, {}) for name in ("first", "second")}
        server.tick()
        assert len(server.children) == 2  # both runs started, each in a process of its own
        wait_until(lambda: records(tmp_path) and [i.waiting for i in tether.limits.ls() if i.tag == "serve-db"] == [1],
                   "a task holding the slot with the other waiting")
        assert len(records(tmp_path)) == 1  # the other run's task waits for the slot
        assert [(i.held, i.waiting) for i in tether.limits.ls() if i.tag == "serve-db"] == [(1, 1)]
        (tmp_path / "release").touch()
        settle(server)
        rows = {r.deployment: r for r in server.table.runs(limit=None) if r.id in asked.values()}
        assert {r.status for r in rows.values()} == {"completed"}
        assert sorted(line["task"] for line in records(tmp_path)) == ["first", "second"]
        ledger = {e.flow_run_id: e for e in server.store.resources() if e.name == "connection"}
        for row in rows.values():
            entry = ledger[row.flow_run_id]
            assert (entry.setup_outcome, entry.cleanup_outcome) == ("succeeded", "succeeded")
            assert entry.status == "closed" and entry.used_by and entry.orphan is None
    finally:
        tether.limits.remove("serve-db")
        for child in server.children.values():
            child.process.kill()
            child.process.join()
        server.store.close()


def test_a_serve_process_whose_schedule_another_one_changed_plans_no_times_of_the_old_one(server_for, caplog):
    old = server_for(interval=1)
    new = recorded.to_deployment(name="policy", cron="0 0 1 1 *")  # what a serve process started later registers
    assert old.table.register(new.spec()) is True
    before = {r.id for r in old.table.runs("policy", limit=None)}
    with caplog.at_level("WARNING", logger="tether.serve"):
        old.settings = ServeSettings(late_seconds=0.0, lookahead_seconds=5.0)
        old.tick()
        old.tick()
    assert {r.id for r in old.table.runs("policy", limit=None)} == before  # not one time of its interval
    warned = [r.getMessage() for r in caplog.records if "another schedule" in r.getMessage()]
    assert len(warned) == 1 and "cron 0 0 1 1 * (UTC)" in warned[0] and "every 1 s" in warned[0]
    old.table.register(old.deployments["policy"].spec())  # its schedule is the store's again: it plans
    old.tick()
    assert len({r.id for r in old.table.runs("policy", limit=None)} - before) >= 4


def test_a_time_the_old_and_the_new_schedule_share_is_kept_when_the_schedule_changes(server_for):
    server = server_for(interval=60)
    table = server.table
    table.plan("policy", server.deployments["policy"].times, lookahead=600)
    before = [r.scheduled_time for r in table.runs("policy", limit=None)]
    assert len(before) >= 9 and all(t % 60 == 0 for t in before)
    changed = recorded.to_deployment(name="policy", cron="*/2 * * * *")  # every other minute of the old one
    assert table.register(changed.spec(), changed.times) is True
    after = {r.scheduled_time: r for r in table.runs("policy", limit=None)}
    assert {t for t, r in after.items() if r.status == "scheduled"} == {t for t in before if t % 120 == 0}
    assert all(
        "schedule changed" in (after[t].reason or "") for t in before if t % 120
    ) and all(after[t].status == "skipped" for t in before if t % 120)  # fmt: skip
    table.plan("policy", changed.times, lookahead=600)
    scheduled = sorted(r.scheduled_time for r in table.runs("policy", limit=None) if r.status == "scheduled")
    assert scheduled == changed.times(scheduled[0] - 1, scheduled[-1])  # every time of the new schedule, once


def record_line(line: dict[str, Any]) -> None:
    with pathlib.Path(os.environ["RECORD"]).open("a") as f:
        f.write(json.dumps(line) + "\n")


@flow
async def recorded_async(n: int = 1) -> int:
    await asyncio.sleep(0)
    record_line({"scheduled": flow_run.scheduled_start_time.timestamp(), "deployment": deployment.name, "n": n})
    return n


def test_an_async_flow_is_served_like_a_sync_one(tmp_path, monkeypatch):
    monkeypatch.delenv("TETHER_STORE", raising=False)
    monkeypatch.setenv("RECORD", str(tmp_path / "record.jsonl"))
    settings = ServeSettings(late_seconds=0.0, lookahead_seconds=0.0)
    server = Server([recorded_async.to_deployment(name="async", parameters={"n": 4})], settings, store=open_store())
    try:
        server.register()
        asked = server.table.request_run("async", {})
        server.tick()
        settle(server)
        row = next(r for r in server.table.runs("async") if r.id == asked)
        assert (row.status, row.state_name) == ("completed", "Completed")
        assert [(line["deployment"], line["n"]) for line in records(tmp_path)] == [("async", 4)]
        assert server.store.flow_run(row.flow_run_id).flow_run.state_type == "COMPLETED"
    finally:
        server.store.close()


@pytest.mark.parametrize("down_seconds", [4.5, 8.5], ids=["a-line-each", "summed-up"])
def test_the_display_shows_the_times_catch_up_skipped_and_why(server_for, down_seconds):
    server = server_for(interval=1)  # --catchup latest
    with server.store.engine.begin() as conn:
        conn.execute(sa.update(deployments_table).values(planned_until=float(int(server.table.now())) - down_seconds))
    piped, screen = io.StringIO(), io.StringIO()
    lines = ServeDisplay(Console(file=piped, force_terminal=False, width=200))
    live = ServeDisplay(Console(file=screen, force_terminal=True, width=200))
    try:
        server.tick()  # the newest missed time runs, the ones before it are skipped
        lines.update(server)
        live.update(server)
        lines.update(server)  # nothing new: nothing printed twice
    finally:
        live.close()
        settle(server)
    skipped = sorted(r.scheduled_time for r in server.table.runs("policy", limit=None) if r.status == "skipped")
    assert len(skipped) >= 3
    printed = " ".join(piped.getvalue().split())  # as printed, without the console's line breaks
    if len(skipped) <= SHOWN_SKIPS:  # one line each (a slow machine may let more times pass before the tick)
        assert printed.count("was skipped: missed:") == len(skipped) == printed.count("(catchup=latest)")
    else:  # summed up in one line
        assert printed.count("times scheduled from") == 1 and f"{len(skipped)} times scheduled from" in printed
        assert "(catchup=latest)" in printed and "See: tether deployments runs policy" in printed
    assert "SKIPPED" in screen.getvalue() and "catchup=latest" in screen.getvalue()
