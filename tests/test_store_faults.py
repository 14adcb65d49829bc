"""What the store does about dead processes, on a real database (SQLite and PostgreSQL), in-process.

Flow runs whose process is gone are recorded Crashed at store open (this host, by
pid) and by reap (other hosts, by heartbeat); a late write does not bring them back;
a reap claim names its process, so a dead reaper's row is taken over exactly once;
a cleanup recorded by the copy's own process is final. Plus the rules of redaction
and of flow calls while reaping. The subprocess stories are in test_reap_faults.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from test_store import _dead_pid, _ledger_row
from tether import flow
from tether._known_secrets import REDACTED
from tether._reaping import FlowCalledWhileReaping, reaping, reaping_process
from tether.store import open_store, reap_orphans
from tether.store._crashed import OPEN_LOOKBACK_SECONDS
from tether.store._db import write
from tether.store._ledger import ProcessInfo, process_started_at
from tether.store._plan import Planner
from tether.store._redact import is_secret_name, redact_text, redact_value
from tether.store._schema import flow_runs, resources, state_changes, task_runs

HOST = socket.gethostname()


def _flow_row(engine, name, pid, host=HOST, state="RUNNING", created=None, heartbeat=None, tasks=()):
    """A flow run (and its task runs, by state) as a process would have left it."""
    now = time.time()
    created = now if created is None else created
    run_id = uuid.uuid4().hex
    with engine.begin() as conn:
        conn.execute(
            sa.insert(flow_runs).values(
                id=run_id, name=name, state_type=state, state_name=state.capitalize(), run_count=1,
                created=created, start_time=created, updated=created, pid=pid, host=host,
                heartbeat=created if heartbeat is None else heartbeat,
            )
        )  # fmt: skip
        for i, task_state in enumerate(tasks):
            conn.execute(
                sa.insert(task_runs).values(
                    id=f"{run_id[:24]}task{i:04d}", flow_run_id=run_id, name=f"t{i}", state_type=task_state,
                    state_name=task_state.capitalize(), run_count=1, created=created, start_time=created,
                )
            )  # fmt: skip
    return run_id


def _states(engine, table):
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(table.c.id, table.c.state_type)).all())


def test_runs_whose_process_is_gone_are_crashed_at_open_here_and_by_reap_elsewhere(store_url):
    dead, me, now = _dead_pid(), os.getpid(), time.time()
    my_start = process_started_at(me)
    store = open_store(store_url)
    engine = store.engine
    try:
        runs = {
            "dead": _flow_row(engine, "dead", dead, tasks=("RUNNING", "PENDING", "COMPLETED")),
            "alive": _flow_row(engine, "alive", me),
            "ended": _flow_row(engine, "ended", dead, state="COMPLETED"),
            "far-fresh": _flow_row(engine, "far-fresh", 1, host="another-host"),
            "far-stale": _flow_row(engine, "far-stale", 1, host="another-host", heartbeat=now - 3600),
            "old": _flow_row(engine, "old", dead, created=now - OPEN_LOOKBACK_SECONDS - 60),
        }
        if my_start is not None:  # a live pid that started after the run, with a stale heartbeat: reused
            runs["reused"] = _flow_row(engine, "reused", me, created=my_start - 100, heartbeat=my_start - 100)
            runs["paused"] = _flow_row(engine, "paused", me, created=my_start - 100, heartbeat=now)
    finally:
        store.close()

    opened = open_store(store_url)
    try:
        assert sorted(r.name for r in opened.crashed_at_open) == sorted(["dead"] + (["reused"] if my_start else []))
        crashed = next(r for r in opened.crashed_at_open if r.name == "dead")
        assert crashed.task_runs == 2 and crashed.reason == f"process {dead} on this host is gone"
        engine = opened.engine
        flows, tasks = _states(engine, flow_runs), _states(engine, task_runs)
        assert flows[runs["dead"]] == "CRASHED" and flows[runs["alive"]] == "RUNNING"
        assert [flows[runs[n]] for n in ("ended", "far-fresh", "far-stale", "old")] == ["COMPLETED"] + ["RUNNING"] * 3
        assert sorted(s for t, s in tasks.items() if t.startswith(runs["dead"][:24])) == [
            "COMPLETED",
            "CRASHED",
            "CRASHED",
        ]
        if my_start is not None:
            assert flows[runs["reused"]] == "CRASHED" and flows[runs["paused"]] == "RUNNING"
        detail = opened.flow_run(runs["dead"])
        assert (
            detail.flow_run.end_time is not None and "Recorded Crashed by a store open" in detail.flow_run.state_message
        )
        assert [(c.kind, c.type) for c in detail.state_changes] == [
            ("flow", "CRASHED"),
            ("task", "CRASHED"),
            ("task", "CRASHED"),
        ]

        # tether reap also judges other hosts, by their heartbeat, and every run however old.
        by_reap = opened.record_crashed_runs("tether reap", other_hosts=True, stale_after=60)
        assert sorted(r.name for r in by_reap) == ["far-stale", "old"]
        assert "no heartbeat from process 1 on another-host" in next(r.reason for r in by_reap if r.name == "far-stale")
        assert opened.record_crashed_runs("tether reap", other_hosts=True, stale_after=60) == []

        # A late write of the dead process's records (its helper's) neither revives the run nor leaves
        # a task run it held running: the next open ends that one too.
        planner = Planner(ProcessInfo(dead, HOST, None))
        late_task = uuid.uuid4().hex
        planner.add([
            ("state", runs["dead"], "flow", runs["dead"], "RUNNING", "Running", None, time.time(), 1, None),
            ("run", late_task, "task", "late", runs["dead"], None, {}, "[]", time.time()),
            ("state", late_task, "task", runs["dead"], "RUNNING", "Running", None, time.time(), 1, None),
        ])  # fmt: skip
        write(engine, planner.take(everything=True).apply)
        assert _states(engine, flow_runs)[runs["dead"]] == "CRASHED"
        assert _states(engine, task_runs)[late_task] == "RUNNING"
    finally:
        opened.close()
    again = open_store(store_url)
    try:
        assert again.crashed_at_open == []  # not news: the run was recorded Crashed before
        assert _states(again.engine, task_runs)[late_task] == "CRASHED"
        with again.engine.connect() as conn:
            flow_changes = conn.execute(
                sa.select(sa.func.count()).where(state_changes.c.run_id == runs["dead"])
            ).scalar_one()
        assert flow_changes == 2  # Crashed once, and the late Running as it was written
    finally:
        again.close()


reaped: list[object] = []


def counting_reaper(handle: object) -> None:
    reaped.append(handle)


def test_a_row_left_reaping_by_a_dead_reaper_is_taken_over_exactly_once(store_url):
    reaped.clear()
    store = open_store(store_url)
    try:
        module = __name__
        _ledger_row(store, "left", _dead_pid(), reaper=f"{module}:counting_reaper", handle="left")
        _ledger_row(store, "busy", _dead_pid(), reaper=f"{module}:counting_reaper", handle="busy")
        _ledger_row(store, "far", _dead_pid(), reaper=f"{module}:counting_reaper", handle="far")
        rows = {o.name: o for o in store.orphans()}
        assert store.claim_for_reaping(rows["left"], ProcessInfo(_dead_pid(), HOST, None))  # its reap was killed
        assert store.claim_for_reaping(rows["busy"])  # this process is reaping it
        assert store.claim_for_reaping(rows["far"], ProcessInfo(7, "another-host", None))  # with a fresh heartbeat

        (left,) = store.orphans(stale_after=60)
        assert (
            left.name == "left" and left.status == "reaping" and "its reaper stopped before it finished" in left.orphan
        )
        assert left.reaping_by is not None and left.as_dict()["cleanup_error"] is None
        # Two reaps that both saw the dead claim: it is compared and swapped, so one of them wins.
        assert store.claim_for_reaping(left, ProcessInfo(_dead_pid(), HOST, None)) is not None
        assert store.claim_for_reaping(left) is None
        results = reap_orphans(store, stale_after=60)
        assert [(r.entry.name, r.outcome) for r in results] == [("left", "reaped")] and reaped == ["left"]
        # The far reaper is judged by its heartbeat, which it renews while it reaps.
        assert [o.name for o in store.orphans(now=time.time() + 3600, stale_after=60)] == ["far"]
        assert reap_orphans(store, stale_after=60) == [] and reaped == ["left"]
    finally:
        store.close()


def test_a_row_left_reaping_by_a_tether_that_did_not_say_who_is_judged_by_its_heartbeat(store_url):
    store = open_store(store_url)
    try:
        _ledger_row(store, "legacy", _dead_pid(), reaper=f"{__name__}:counting_reaper", heartbeat=time.time() - 3600)
        write(store.engine, lambda c: c.execute(sa.update(resources).values(cleanup_outcome="reaping")))
        (orphan,) = store.orphans(stale_after=60)
        assert orphan.reaping_by is None and "a reap of it stopped before it finished" in orphan.orphan
        assert store.claim_for_reaping(orphan) is not None and store.claim_for_reaping(orphan) is None
    finally:
        store.close()


def test_secrets_in_log_lines_are_not_stored(store_url):
    store = open_store(store_url)
    try:
        planner = Planner(ProcessInfo(os.getpid(), HOST, None))
        planner.add([("log", "r" * 32, "f" * 32, 20, "connecting with host=db password=log-secret", time.time())])
        write(store.engine, planner.take(everything=True).apply)
        with store.engine.connect() as conn:
            (stored,) = conn.execute(sa.text("SELECT message FROM logs")).scalars().all()
        assert stored == f"connecting with host=db password={REDACTED}"
    finally:
        store.close()


closing_meanwhile: dict[str, object] = {}


def reaper_racing_its_worker(handle: object) -> None:
    """While this reaper runs, the copy's own process records that its cleanup ran."""
    store, scope, pid = closing_meanwhile["store"], closing_meanwhile["scope"], closing_meanwhile["pid"]
    write(store.engine, lambda c: c.execute(  # type: ignore[attr-defined]
        sa.update(resources).where(resources.c.scope_id == scope).where(resources.c.pid == pid)
        .values(cleanup_outcome="succeeded", scope_outcome="failed", cleaned_at=time.time())
    ))  # fmt: skip


def test_a_cleanup_its_own_process_recorded_is_final_even_while_it_is_reaped(store_url):
    store = open_store(store_url)
    try:
        dead = _dead_pid()
        scope = _ledger_row(store, "raced", dead, reaper=f"{__name__}:reaper_racing_its_worker")
        _ledger_row(store, "cleaned", dead, reaper=f"{__name__}:counting_reaper", cleaned=True)
        closing_meanwhile.update(store=store, scope=scope, pid=dead)
        (result,) = reap_orphans(store)
        assert (result.entry.name, result.outcome) == ("raced", "closed-meanwhile")
        status = {e.name: e.status for e in store.resources()}
        assert status == {"raced": "closed", "cleaned": "closed"}
        assert store.orphans() == [] and reap_orphans(store) == []
    finally:
        store.close()


# -- flows while reaping ---------------------------------------------------------------


def test_a_flow_called_while_reaping_does_not_run_and_other_threads_are_not_touched():
    ran = []

    @flow
    def marker_flow() -> str:
        ran.append(threading.current_thread().name)
        return "ran"

    elsewhere = []
    with reaping("scripts.cleanup:drop_table"):
        with pytest.raises(FlowCalledWhileReaping, match=r"Flow 'marker_flow' was not run.*__main__"):
            marker_flow()
        other = threading.Thread(target=lambda: elsewhere.append(marker_flow()), name="other")
        other.start()
        other.join()
    assert elsewhere == ["ran"] and ran == ["other"]
    assert marker_flow() == "ran"


def test_a_process_that_reaps_runs_no_flow_on_any_thread():
    ran = []

    @flow
    def started_on_a_thread() -> None:
        ran.append(True)

    refused = []

    def call() -> None:
        try:
            started_on_a_thread()
        except FlowCalledWhileReaping as exc:
            refused.append(str(exc))

    with reaping_process("tether reap ran"):
        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
    assert ran == [] and "while tether reap ran, and reaping never runs a flow" in refused[0]
    started_on_a_thread()
    assert ran == [True]


def test_an_imported_reaper_module_that_calls_a_flow_is_refused_with_the_fix(tmp_path, monkeypatch):
    (tmp_path / "reaper_mod_calls_flow.py").write_text(
        "from tether import flow\n\n@flow\ndef nightly():\n    open(__file__ + '.ran', 'w').close()\n\n"
        "def drop(handle):\n    pass\n\nnightly()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from tether.store import ReaperNotFound, load_reaper

    with pytest.raises(ReaperNotFound, match="calls flow 'nightly'"):  # load_reaper is reaping by itself
        load_reaper("reaper_mod_calls_flow:drop")
    assert not (tmp_path / "reaper_mod_calls_flow.py.ran").exists()
    sys.modules.pop("reaper_mod_calls_flow", None)


# -- redaction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["password", "db_pass", "pwd", "passwd", "DB_PASSWORD", "dbPassword", "MYSQL_PWD", "api_key", "apiKey",
     "aws_secret_access_key", "x-api-key", "client_secret", "github_token", "credentials", "password_b64", "db_pass2"],
)  # fmt: skip
def test_names_that_hold_secrets(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["key", "cache_key", "primary_key", "sort_key", "bypass", "compass", "passes", "max_tokens", "token_url",
     "secret_name", "author", "rows", "passenger", "tokenizer"],
)  # fmt: skip
def test_names_that_do_not(name):
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("host=db port=5432 user=app password=s3 dbname=x", f"host=db port=5432 user=app password={REDACTED} dbname=x"),
        ("host=db password = 'a b' dbname=x", f"host=db password = '{REDACTED}' dbname=x"),
        ("Server=x;Uid=u;PWD=abc;Database=d", f"Server=x;Uid=u;PWD={REDACTED};Database=d"),
        ("postgresql://u:p@ss@host/db", f"postgresql://u:{REDACTED}@host/db"),
        ("redis://:s3@h:6379/0", f"redis://:{REDACTED}@h:6379/0"),
        ("https://h/x?token=abc&page=2", f"https://h/x?token={REDACTED}&page=2"),
        ('{"password": "x", "n": 1}', f'{{"password": "{REDACTED}", "n": 1}}'),
        ("connect(host='h', passwd='pw')", f"connect(host='h', passwd='{REDACTED}')"),
        ("Authorization: Bearer abcdefghijkl", f"Authorization: {REDACTED} {REDACTED}"),
        ("mysql+pymysql://root@127.0.0.1:3306/test", "mysql+pymysql://root@127.0.0.1:3306/test"),
        ("time: 12:30, cache_key=abc", "time: 12:30, cache_key=abc"),
    ],
)
def test_secrets_in_text_are_hidden_and_the_rest_is_kept(text, shown):
    assert redact_text(text) == shown


def test_a_handle_is_shown_redacted_and_kept_whole_for_the_reaper():
    handle = {"url": "postgresql://a:b@h/x", "dsn": "host=x password=y", "db_pass": "z", "nested": [{"pwd": 1}]}
    assert redact_value(handle) == {
        "url": f"postgresql://a:{REDACTED}@h/x", "dsn": f"host=x password={REDACTED}", "db_pass": REDACTED,
        "nested": [{"pwd": REDACTED}],
    }  # fmt: skip
    assert handle["db_pass"] == "z"


def test_a_dead_pid_is_dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    from tether.store._ledger import flow_process_gone

    assert flow_process_gone(HOST, child.pid, time.time(), None, time.time(), 60) is not None
    assert flow_process_gone(HOST, os.getpid(), time.time(), None, time.time(), 60) is None
    assert flow_process_gone("another-host", 1, 0.0, None, time.time(), 60) is None  # not without other_hosts
