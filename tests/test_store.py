"""The run store on a real database, SQLite and PostgreSQL alike: recording flows, the ledger, limits, errors."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import tether.store
from _waiting import wait_until
from tether import flow, get_run_logger, resource, task
from tether._core import ResourceEvent
from tether._resources import remember
from tether.store import StoreError, StoreSchemaError, open_store, reap_orphans
from tether.store._db import make_engine, write
from tether.store._encode import Encoder
from tether.store._ledger import ProcessInfo
from tether.store._location import StoreLocation
from tether.store._migrate import run_migrations
from tether.store._plan import Planner
from tether.store._schema import HEAD, metadata

# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(params=["in-process", "writer-process"])
def writer_mode(request, monkeypatch):
    """Where rows are planned and written: in the flow's process, or in the writer process."""
    monkeypatch.setenv("TETHER_STORE_HELPER", "never" if request.param == "in-process" else "always")
    return request.param


@pytest.fixture
def recording(store_url, writer_mode, monkeypatch):
    """The process records to ``store_url`` (as the engine would enable it) until the test ends."""
    monkeypatch.setenv("TETHER_DATABASE_URL", store_url)
    monkeypatch.delenv("TETHER_STORE", raising=False)  # on, even if the suite turns recording off by default
    store = tether.store.enable()
    assert store is not None
    yield store
    writer = store.recorder.writer_process_pid if store.recorder is not None else None
    assert (writer is not None) == (writer_mode == "writer-process")
    tether.store.disable()
    if writer is not None:  # the writer process ends with the store
        with pytest.raises(ProcessLookupError):
            os.kill(writer, 0)


@pytest.fixture
def store_log():
    """Records of the ``tether.store`` logger (tether's logger does not propagate to pytest's)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    target = logging.getLogger("tether.store")
    target.addHandler(handler)
    yield records
    target.removeHandler(handler)


# -- a flow, recorded ------------------------------------------------------------------------

opened: list[str] = []


@resource
def scratch_table(name: str):
    remember({"table": name})
    opened.append(name)
    yield name


@task(tags=["db"])
def add(a: int, b: int) -> int:
    get_run_logger().info("adding %d and %d", a, b)
    return a + b


@task
def fail(token: str) -> None:
    raise ValueError("no good: postgresql://app:hunter2@db/x")


@flow
def child(x: int) -> int:
    return add(x, 100)


@flow
def recorded_flow(n: int, password: str = "pw") -> int:
    with scratch_table("tmp_1") as table:
        futures = [add.submit(i, len(table)) for i in range(n)]
    failed = fail(token="abc", return_state=True)
    assert failed.is_failed()
    return sum(f.result() for f in futures) + child(1)


def test_a_flow_run_is_recorded_end_to_end(recording):
    assert recorded_flow(5, password="s3cret") == sum(range(5)) + 5 * 5 + 101
    assert tether.store.flush()

    (run,) = [r for r in recording.flow_runs() if r.parent_id is None]
    assert (run.name, run.state_type, run.state_name) == ("recorded_flow", "COMPLETED", "Completed")
    assert run.parameters == {"n": 5, "password": "********"}
    assert run.task_counts == {"COMPLETED": 5, "FAILED": 1}
    assert run.start_time <= run.end_time and run.pid == os.getpid() and run.host == socket.gethostname()

    detail = recording.flow_run(run.id)
    assert len(detail.task_runs) == 6
    adds = [t for t in detail.task_runs if t.name == "add"]
    assert sorted(t.parameters["a"] for t in adds) == [0, 1, 2, 3, 4]
    assert all(t.tags == ["db"] and t.state_name == "Completed" and t.start_time <= t.end_time for t in adds)
    (failed,) = [t for t in detail.task_runs if t.name == "fail"]
    assert failed.state_type == "FAILED" and failed.parameters == {"token": "********"}
    assert "ValueError: no good" in failed.error and "hunter2" not in failed.error

    states_of = {}
    for change in detail.state_changes:
        states_of.setdefault(change.run_id, []).append(change.name)
    assert states_of[run.id] == ["Running", "Completed"]
    assert all(states_of[t.id] == ["Running", "Completed"] for t in adds)
    assert states_of[failed.id] == ["Running", "Failed"]
    stamps = [c.timestamp for c in detail.state_changes]
    assert stamps == sorted(stamps)

    added = {t.id for t in adds}
    assert sorted(line.message for line in detail.logs if line.run_id in added) == [f"adding {i} and 5" for i in range(5)]
    (failure,) = [line.message for line in detail.logs if line.run_id == failed.id]  # the engine logs a failure
    assert "Finished in state Failed: ValueError: no good" in failure and "hunter2" not in failure
    (entry,) = detail.resources
    assert (entry.name, entry.status, entry.setup_outcome, entry.scope_outcome) == (
        "scratch_table",
        "closed",
        "succeeded",
        "succeeded",
    )
    assert entry.handle == {"table": "tmp_1"} and entry.orphan is None
    assert sorted(entry.used_by) == sorted(t.id for t in adds)
    assert entry.created <= entry.setup_at <= entry.cleaned_at and entry.cleanup_seconds >= 0

    (sub,) = detail.subflows
    assert (sub.name, sub.parent_id, sub.state_name) == ("child", run.id, "Completed")
    assert recording.flow_run(sub.id).task_runs[0].name == "add"


@pytest.mark.parametrize("writer_mode", ["writer-process"], indirect=True)
def test_records_safe_in_the_writer_process_are_written_once_the_stream_pauses(recording):
    """A flow run's end waits until its records are safe in the writer process, which keeps them while
    records stream in and writes them once the stream pauses, without being asked to."""

    @flow
    def burst(n: int) -> int:
        return sum(f.result() for f in [add.submit(i, 1) for i in range(n)])

    assert burst(50) == sum(range(50)) + 50
    wait_until(
        lambda: [r for r in recording.flow_runs() if r.name == "burst" and r.task_counts == {"COMPLETED": 50}],
        timeout=30,
        what="the writer process to write the flow's records",
    )


def test_runs_are_listed_newest_first_and_filtered_by_state(recording):
    @flow
    def ok() -> int:
        return 1

    @flow
    def broken() -> None:
        raise RuntimeError("broken on purpose")

    ok()
    broken(return_state=True)
    ok()
    tether.store.flush()
    assert [r.name for r in recording.flow_runs()] == ["ok", "broken", "ok"]
    assert [r.name for r in recording.flow_runs(limit=1)] == ["ok"]
    (failed,) = recording.flow_runs(state="failed")
    assert failed.name == "broken" and "RuntimeError: broken on purpose" in failed.error
    with pytest.raises(tether.store.RunNotFound, match="tether runs ls"):
        recording.flow_run("ffffffffff")
    assert recording.flow_run(failed.id[-6:]).flow_run.id == failed.id  # the end of an id will do
    common = os.path.commonprefix([r.id for r in recording.flow_runs()])
    if common:  # ids made in one process share their start
        with pytest.raises(tether.store.RunNotFound, match="more than one flow run"):
            recording.flow_run(common)


def test_setup_intent_and_the_handle_are_durable_before_setup_goes_on(recording, store_url):
    """What another process sees while setup is still running: the ledger row, then the handle."""
    seen = []
    observer = open_store(store_url)

    @resource
    def cluster():
        (row,) = observer.resources()
        seen.append((row.status, row.handle))
        remember({"cluster_id": "c-42"})
        (row,) = observer.resources()
        seen.append((row.status, row.handle))
        yield "client"

    @flow
    def uses_cluster() -> None:
        with cluster():
            pass

    try:
        uses_cluster()
    finally:
        observer.close()
    assert seen == [("setting-up", None), ("setting-up", {"cluster_id": "c-42"})]


def test_enable_is_cheap_idempotent_and_follows_the_configured_store(tmp_path, monkeypatch):
    monkeypatch.delenv("TETHER_DATABASE_URL", raising=False)
    monkeypatch.delenv("TETHER_STORE", raising=False)
    try:
        first = tether.store.enable()
        assert first is not None and tether.store.enable() is first
        assert first.location.path == tmp_path / "tether-home" / "tether.db"
        monkeypatch.setenv("TETHER_HOME", str(tmp_path / "elsewhere"))
        second = tether.store.enable()
        assert second is not first and second.location.path == tmp_path / "elsewhere" / "tether.db"
        assert first.recorder is None  # the first one was closed
        monkeypatch.setenv("TETHER_STORE", "off")
        assert tether.store.enable() is None and tether.store.active_store() is None
    finally:
        tether.store.disable()


def test_sqlite_store_is_a_private_wal_file(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'new' / 'tether.db'}")
    try:
        assert oct((tmp_path / "new" / "tether.db").stat().st_mode & 0o777) == "0o600"
        assert oct((tmp_path / "new").stat().st_mode & 0o777) == "0o700"
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        store.close()


def test_the_migrations_build_exactly_the_schema_the_code_uses(store_url):
    location = StoreLocation.resolve(store_url)
    engine = make_engine(location)
    try:
        write(engine, lambda conn: run_migrations(conn, "head"))
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == HEAD
    finally:
        engine.dispose()
    open_store(store_url).close()  # and the store accepts it as current


def test_a_store_with_a_newer_schema_is_refused_naming_it_and_the_fix(store_url):
    open_store(store_url).close()
    engine = make_engine(StoreLocation.resolve(store_url))
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(StoreSchemaError) as caught:
        open_store(store_url)
    message = str(caught.value)
    assert "'9999'" in message and "Upgrade tether" in message
    assert StoreLocation.resolve(store_url).shown in message


def test_a_corrupt_sqlite_file_is_refused_naming_it_and_the_fix(tmp_path):
    path = tmp_path / "tether.db"
    path.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(StoreError) as caught:
        open_store(f"sqlite:///{path}")
    assert str(path) in str(caught.value) and f"mv {path} {path}.bad" in str(caught.value)


def test_an_unreachable_store_warns_once_and_the_flows_still_run(monkeypatch, store_log):
    monkeypatch.delenv("TETHER_STORE", raising=False)
    monkeypatch.setenv("TETHER_DATABASE_URL", "postgresql+psycopg://postgres:topsecret@127.0.0.1:1/nothing")

    @flow
    def still_runs() -> int:
        return 7

    try:
        assert tether.store.enable() is None
        assert tether.store.enable() is None
        assert still_runs() == 7
    finally:
        tether.store.disable()
    (warning,) = store_log
    assert "127.0.0.1:1" in warning.getMessage() and "not recorded" in warning.getMessage()
    assert "topsecret" not in warning.getMessage()


def test_a_flow_does_not_wait_for_the_store_to_open(store_url, monkeypatch):
    """A flow's start only begins recording: its records are spooled, and the store is opened
    (schema checked, dead processes' runs recorded Crashed) when they are written."""
    monkeypatch.setenv("TETHER_DATABASE_URL", store_url)
    monkeypatch.delenv("TETHER_STORE", raising=False)
    seen = {}

    @flow
    def starts_at_once(n: int) -> int:
        store = tether.store.active_store()
        seen["opened"] = store.opened
        seen["spooled"] = store.recorder.flush(until="safe") and store.opened  # safe: spooled, not written
        return sum(add.submit(i, 1).result() for i in range(n))

    try:
        assert starts_at_once(3) == 6
        store = tether.store.active_store()
        assert seen == {"opened": False, "spooled": False}
        assert tether.store.flush() and store.opened
        (run,) = store.flow_runs()
        assert run.name == "starts_at_once" and run.state_name == "Completed"
        assert [t.state_name for t in store.flow_run(run.id).task_runs] == ["Completed"] * 3
    finally:
        tether.store.disable()


def test_a_store_that_cannot_be_opened_after_the_flow_began_says_once_which_runs_are_not_recorded(
    monkeypatch, store_log, tmp_path
):
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TETHER_STORE", raising=False)
    monkeypatch.setenv("TETHER_DATABASE_URL", "postgresql+psycopg://postgres:topsecret@127.0.0.1:1/nothing")

    @flow
    def unrecorded(n: int) -> int:
        return sum(add.submit(i, 1).result() for i in range(n))

    try:
        assert unrecorded(2) == 3
        assert unrecorded(1) == 1
        store = tether.store.active_store()
        assert tether.store.flush()
        assert store.recorder.failure is not None and store.recorder.dropped > 0
    finally:
        tether.store.disable()
    (warning,) = store_log
    text = warning.getMessage()
    assert "unrecorded" in text and "not recorded" in text and "127.0.0.1:1" in text and "topsecret" not in text
    assert "Connection refused" in text and "TETHER_DATABASE_URL" in text  # why, and how to fix it
    assert not list((tmp_path / "home" / "spool").glob("*.spool"))  # declared not recorded: not left to replay


def test_a_store_that_breaks_mid_run_says_once_what_is_not_recorded(recording, store_log):
    @flow
    def keeps_going(n: int) -> int:
        return sum(add.submit(i, 1).result() for i in range(n))

    with recording.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE task_runs")
    assert keeps_going(3) == 6
    assert keeps_going(2) == 3
    tether.store.flush()
    (warning,) = store_log
    text = warning.getMessage()
    assert recording.location.shown in text and "keeps_going" in text and "not recorded" in text
    assert recording.recorder.failure == text and recording.recorder.dropped > 0


@pytest.mark.parametrize("writer_mode", ["writer-process"], indirect=True)
def test_a_failure_of_the_writer_process_after_the_flow_ended_is_said_without_a_flush(recording, store_log):
    """The writer process writes a flow's records after the flow ended; if that fails, the flow's
    process says so by itself, though nothing waits for the records to be written."""

    @flow
    def ends_before_its_records_are_written(n: int) -> int:
        return sum(add.submit(i, 1).result() for i in range(n))

    assert ends_before_its_records_are_written(1) == 1
    assert tether.store.flush() and recording.recorder.writer_process_pid is not None  # the writer process writes from now on
    with recording.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE task_runs")
    assert ends_before_its_records_are_written(3) == 6
    wait_until(lambda: recording.recorder.failure is not None, timeout=30, what="the failure to be reported")
    (warning,) = store_log
    assert "ends_before_its_records_are_written" in warning.getMessage() and "not recorded" in warning.getMessage()


def test_limits_are_set_listed_and_removed(store_url):
    store = open_store(store_url)
    try:
        store.set_limit("mysql", 3)
        store.set_limit("mysql", 2)
        store.set_limit("api", 0)
        assert store.limits() == {"api": 0, "mysql": 2}
        assert store.remove_limit("api") and not store.remove_limit("api")
        assert store.limits() == {"mysql": 2}
        with pytest.raises(ValueError):
            store.set_limit("x", -1)
    finally:
        store.close()


# -- the ledger: orphans and reaping ------------------------------------------------------

reaped: list[object] = []


def good_reaper(handle: object) -> None:
    reaped.append(handle)


def broken_reaper(handle: object) -> None:
    raise ConnectionError(f"cannot drop {handle}")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _ledger_row(store, name, pid, host=None, reaper=None, handle=None, cleaned=False, heartbeat=None):
    """Write a ledger row as a flow process would have, through the writer's own planner."""
    host = host or socket.gethostname()
    scope = uuid.uuid4().hex
    base = {"scope_id": scope, "name": name, "flow_run_id": "f" * 32, "worker": host, "pid": pid, "reaper": reaper}
    stamp = heartbeat if heartbeat is not None else time.time()
    planner = Planner(ProcessInfo(pid, host, None))
    encoder = Encoder(host, pid)
    steps = [
        ResourceEvent(step="setup-started", timestamp=stamp, **base),
        ResourceEvent(step="setup", timestamp=stamp, handle=handle, **base),
    ]
    if cleaned:
        steps.append(ResourceEvent(step="cleanup", timestamp=stamp, outcome="succeeded", **base))
    planner.add(encoder.encode(steps))
    write(store.engine, planner.take(everything=True).apply)
    return scope


def test_orphans_are_not_cleaned_up_rows_whose_process_is_gone_and_reap_runs_their_reapers(store_url):
    reaped.clear()
    dead = _dead_pid()
    module = __name__
    store = open_store(store_url)
    try:
        _ledger_row(store, "good", dead, reaper=f"{module}:good_reaper", handle={"table": "t1"})
        _ledger_row(store, "broken", dead, reaper=f"{module}:broken_reaper", handle={"table": "t2"})
        _ledger_row(store, "manual", dead, handle={"cluster": "c-9"})
        _ledger_row(store, "closed", dead, reaper=f"{module}:good_reaper", cleaned=True)
        _ledger_row(store, "alive", os.getpid(), reaper=f"{module}:good_reaper")
        _ledger_row(store, "far-fresh", 1, host="another-host", reaper=f"{module}:good_reaper")
        _ledger_row(
            store,
            "far-stale",
            1,
            host="another-host",
            reaper=f"{module}:good_reaper",
            handle="x",
            heartbeat=time.time() - 3600,
        )

        assert sorted(o.name for o in store.orphans(stale_after=60)) == ["broken", "far-stale", "good", "manual"]
        assert "another-host" in next(o.orphan for o in store.orphans(stale_after=60) if o.name == "far-stale")

        dry = reap_orphans(store, dry_run=True, stale_after=60)
        assert sorted((r.entry.name, r.outcome) for r in dry) == [
            ("broken", "would-reap"), ("far-stale", "would-reap"), ("good", "would-reap"), ("manual", "no-reaper"),
        ]  # fmt: skip
        assert reaped == []

        results = {r.entry.name: r for r in reap_orphans(store, stale_after=60)}
        assert {name: r.outcome for name, r in results.items()} == {
            "good": "reaped", "broken": "failed", "manual": "no-reaper", "far-stale": "reaped",
        }  # fmt: skip
        assert sorted(reaped, key=str) == ["x", {"table": "t1"}]
        assert "ConnectionError: cannot drop {'table': 't2'}" in results["broken"].error

        status = {e.name: e for e in store.resources()}
        assert status["good"].status == "reaped" and status["good"].cleaned_at is not None
        assert status["broken"].status == "reap-failed" and "ConnectionError" in status["broken"].cleanup_error
        # What is still open is still an orphan: the failed one (to try again) and the one without a reaper.
        assert sorted(o.name for o in store.orphans(stale_after=60)) == ["broken", "manual"]
        assert store.mark_reaped(status["manual"].id) and not store.mark_reaped(status["manual"].id)
        assert [o.name for o in store.orphans(stale_after=60)] == ["broken"]
    finally:
        store.close()


def test_an_orphan_is_claimed_so_two_reapers_cannot_both_reap_it(store_url):
    store = open_store(store_url)
    try:
        _ledger_row(store, "once", _dead_pid(), reaper=f"{__name__}:good_reaper")
        (orphan,) = store.orphans()
        assert store.claim_for_reaping(orphan.id)
        assert not store.claim_for_reaping(orphan.id)
        assert store.orphans() == []
    finally:
        store.close()


def test_the_writer_keeps_the_heartbeat_of_open_resources(recording, store_url):
    beats = []

    @resource
    def held():
        yield "value"

    @flow
    def beating() -> None:
        with held():
            (before,) = recording.resources()
            assert recording.recorder.heartbeat_now(30)
            (after,) = recording.resources()
            beats.append((before.heartbeat, after.heartbeat))

    beating()
    ((before, after),) = beats
    assert after > before


@pytest.mark.parametrize("writer_mode", ["in-process"], indirect=True)
def test_a_writer_process_that_was_never_used_does_not_hold_up_the_process_exit(recording):
    """A heavy burst starts the writer process; if the process ends before it is ready, the
    writer process holds nothing of the flow's (this process wrote it all): it is killed, not awaited."""
    recorder = recording.recorder
    closed = []

    class Starting:  # a writer process still starting
        pid = 1

        def close(self, timeout):
            closed.append(timeout)

    recorder._writer_process = Starting()
    tether.store.disable()
    assert closed == [0.0]


def test_reaper_names_are_checked_before_they_are_called():
    with pytest.raises(tether.store.ReaperNotFound, match="inside a function"):
        tether.store.load_reaper("mod:make.<locals>.reap")
    with pytest.raises(tether.store.ReaperNotFound, match="module:function"):
        tether.store.load_reaper("no_colon")
    assert tether.store.load_reaper(f"{__name__}:good_reaper") is good_reaper


def test_public_names_are_sorted_and_exported():
    assert tether.store.__all__ == sorted(tether.store.__all__)
    assert all(hasattr(tether.store, name) for name in tether.store.__all__)
