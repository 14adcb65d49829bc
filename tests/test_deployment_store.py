"""The store's deployment rows: created once per (deployment, scheduled time), claimed by one process,
and settled when the process that holds them is gone (by its pid here, by its lease elsewhere)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from tether.store import DeploymentSpec, DeploymentTable, ProcessInfo, open_store
from tether.store._deployments import replay_spools_of
from tether.store._schema import deployment_runs, flow_runs
from tether.store._spool import Spool, store_key
from tether.testing import FakeClock


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """A fresh store: a SQLite file, or a PostgreSQL schema of its own (dropped afterwards)."""
    if request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path / 'store' / 'tether.db'}")
        yield opened
        opened.close()
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"tether_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    opened = open_store(f"{base}?options=-csearch_path%3D{schema}")
    try:
        yield opened
    finally:
        opened.close()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def spec(name: str = "d", flow: str = "f", key: str = "k1") -> DeploymentSpec:
    return DeploymentSpec(name, flow, "/x/flows.py:f", "{}", "[]", None, None, "[]", key, "latest", "queue")


def every_second(after: float, until: float) -> list[float]:
    first = int(after) + 1
    return [float(t) for t in range(first, int(until) + 1)]


def test_each_scheduled_time_is_one_row_however_many_plan_it(store):
    table = DeploymentTable(store.engine)
    table.register(spec())
    start = threading.Barrier(4)

    def plan() -> None:
        start.wait()
        for _ in range(5):
            table.plan("d", every_second, lookahead=5)

    threads = [threading.Thread(target=plan) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = [r.scheduled_time for r in table.runs("d", limit=None)]
    assert times and len(times) == len(set(times))
    with pytest.raises(IntegrityError), store.engine.begin() as conn:  # the key itself refuses a second row
        conn.execute(
            sa.insert(deployment_runs).values(
                deployment="d", scheduled_time=times[0], trigger="schedule", status="scheduled", created=0.0
            )
        )


def test_concurrent_claimers_start_each_run_once(store):
    table = DeploymentTable(store.engine)
    table.register(spec())
    asked = [table.request_run("d", {"n": n}) for n in range(6)]
    won: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def claim(pid: int) -> None:
        me = ProcessInfo(pid, "host-a", None)
        start.wait()
        for _ in range(10):
            got = table.claim("d", me, late_seconds=60)
            if got is not None:
                with lock:
                    won.append(got.id)
                table.begin_run(got.id, me, ProcessInfo(pid + 1000, "host-a", None))
                table.finish(got.id, "COMPLETED", "Completed", pid + 1000)

    threads = [threading.Thread(target=claim, args=(10 + i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == sorted(set(won))
    assert all(r.status == "completed" for r in table.runs("d") if r.id in won)
    assert set(won) <= set(asked)


def test_the_runs_of_a_serve_process_on_another_host_are_settled_when_its_lease_runs_out(store):
    table = DeploymentTable(store.engine)
    table.register(spec())
    claimed_id, running_id = table.request_run("d", {}), table.request_run("d", {})
    elsewhere = ProcessInfo(4242, "other-host", "1")
    with store.engine.begin() as conn:
        conn.execute(sa.insert(flow_runs).values(id="f" * 32, name="f", state_type="RUNNING", state_name="Running",
                                                 run_count=1, created=1.0, host="other-host", pid=77))  # fmt: skip
        conn.execute(
            sa.update(deployment_runs)
            .where(deployment_runs.c.id == claimed_id)
            .values(status="claimed", claimed_by=elsewhere.as_json(), lease=sa.literal(0.0))
        )
        conn.execute(sa.update(deployment_runs).where(deployment_runs.c.id == running_id).values(
            status="running", claimed_by=elsewhere.as_json(), lease=sa.literal(0.0), child_pid=77, flow_run_id="f" * 32))  # fmt: skip
    now = table.now()
    with store.engine.begin() as conn:  # a fresh lease: nothing happens
        conn.execute(sa.update(deployment_runs).values(lease=now))
    assert table.recover(lease_seconds=30, seen_by="a test") == []
    with store.engine.begin() as conn:
        conn.execute(sa.update(deployment_runs).values(lease=now - 100))
    settled = {r.id: r for r in table.recover(lease_seconds=30, seen_by="a test")}
    assert settled[claimed_id].status == "scheduled" and "nothing ran" in (settled[claimed_id].reason or "")
    assert settled[running_id].status == "crashed" and "renewed no lease" in (settled[running_id].reason or "")
    assert store.flow_run("f" * 32).flow_run.state_type == "CRASHED"
    assert table.recover(lease_seconds=30, seen_by="a test") == []  # settled once


def test_serve_processes_registering_a_new_deployment_at_once_all_succeed(store):
    tables = [DeploymentTable(store.engine) for _ in range(4)]
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def register(table: DeploymentTable) -> None:
        start.wait()
        try:
            table.register(spec("together"))
            table.request_run("together", {})
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(t,)) for t in tables]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [d.name for d in tables[0].deployments()] == ["together"]
    times = [r.scheduled_time for r in tables[0].runs("together")]
    assert len(times) == 4 == len(set(times))


class ClockThatActs(FakeClock):
    """A fake clock that calls ``act(n)`` at its n-th wait (from 0), before time moves on."""

    def __init__(self, act: Callable[[int], None]) -> None:
        super().__init__()
        self.act = act

    def wait(self, event: threading.Event, seconds: float) -> bool:
        self.act(len(self.waits))
        return super().wait(event, seconds)


def dead_process() -> ProcessInfo:
    done = subprocess.run(
        [sys.executable, "-c", "from tether.store import ProcessInfo; print(ProcessInfo.current().as_json())"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    found = ProcessInfo.from_json(done.stdout.strip())
    assert found is not None
    return found


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
@pytest.mark.parametrize("writer_finishes", [True, False], ids=["writer-finishes", "writer-never-finishes"])
def test_settling_waits_for_the_spool_a_dead_runs_writer_process_still_writes(store, writer_finishes):
    """A dead run's spool whose lock its writer process holds is waited for (the wait ends once the
    writer lets go and the spool is written), at most the time given; other dead spools are not waited for."""
    gone, other = dead_process(), dead_process()
    mine, theirs = (Spool(store_key(store.engine.url), p) for p in (gone, other))
    for spool in (mine, theirs):
        spool.close()
    held = os.open(mine.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)  # as the dead run's writer process does while it writes

    def act(n: int) -> None:
        if writer_finishes and n == 0:
            os.close(held)  # the writer process wrote everything and let go

    try:
        with ClockThatActs(act) as clock:
            replay_spools_of(store.engine, [gone.pid], wait_seconds=10.0)
    finally:
        if not writer_finishes:
            os.close(held)
    left = {p.name.split("-")[-3] for p in mine.directory.glob("*.spool")}
    assert str(other.pid) not in left  # nobody writes it: written at once, not waited for
    if writer_finishes:
        assert clock.waits == [0.05] and str(gone.pid) not in left
    else:
        assert sum(clock.waits) == pytest.approx(10.0, abs=0.1) and str(gone.pid) in left
