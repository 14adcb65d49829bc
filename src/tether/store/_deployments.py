"""Deployments and their scheduled times in the store, and the claim that makes each run once.

Every scheduled time of a deployment is a row of ``deployment_runs``, unique on
(deployment, scheduled time): serve processes that plan the same times at once
create it once. A run starts only by claiming its row in a write transaction:
on PostgreSQL the deployment's row and the due rows are taken ``FOR UPDATE SKIP
LOCKED`` (a claimer never waits for another, and two never claim together); on
SQLite the transaction is ``BEGIN IMMEDIATE`` (one writer at a time). "Now" is
the database's clock, so processes on different machines agree on what is due.

A claimed row names its serve process (``claimed_by``) and keeps a lease the
serve process renews. The run's child process moves it to ``running`` (only if
its serve process still holds it) and records the outcome. When the serve
process is gone (its pid, on this host; its lease, elsewhere), `recover` settles
its rows: a claim whose run never started is free again (nothing ran), a run
that started is never started again: it is recorded as its flow run ended, or
``crashed`` with its flow run ``Crashed``. Before a run of this host is settled
from its flow run, the records its dead process left in its spool are written
(`replay_spools_of`), so the flow run and its task runs are settled as they were.

Catch-up and overlap are decided by `tether._core._catchup`; this module applies
the verdict. Computing schedule times is the caller's: `plan` is given a function.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from tether._core._catchup import DueTime, decide, when
from tether._runtime import get_clock
from tether.store._crashed import UNFINISHED, _record
from tether.store._db import read, write
from tether.store._errors import DeploymentNameTaken, DeploymentNotFound
from tether.store._ledger import ProcessInfo, process_alive
from tether.store._location import StoreLocation
from tether.store._records import StoredFlowRun
from tether.store._rows import replay_into
from tether.store._schema import deployment_runs, deployments, flow_runs
from tether.store._spool import glob_escape, orphan_stems, read_header, spool_dir, store_key
from tether.store._store import _flow_run, _task_counts

log = logging.getLogger("tether.store")
T = TypeVar("T")
runs = deployment_runs
#: How long settling a dead run waits for its process's writer process (`_writer_process`) to write what it spooled.
SPOOL_WAIT_SECONDS = 10.0
ACTIVE = ("claimed", "running")
FINAL_STATES = {"COMPLETED": "completed", "FAILED": "failed", "CANCELLED": "cancelled", "CRASHED": "crashed"}


@dataclass(frozen=True)
class DeploymentSpec:
    """What a deployment is, as ``serve`` registers it (parameters and schedules as JSON text)."""

    name: str
    flow_name: str
    entrypoint: str
    parameters: str
    tags: str
    description: str | None
    version: str | None
    schedules: str
    schedule_key: str
    catchup: str
    overlap: str


@dataclass(frozen=True)
class StoredDeployment:
    name: str
    flow_name: str
    entrypoint: str
    parameters: dict[str, Any]
    tags: list[str]
    description: str | None
    version: str | None
    schedules: list[dict[str, Any]]
    catchup: str
    overlap: str
    paused: bool
    created: float
    updated: float
    last_run: ScheduledRun | None = None

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["last_run"] = None if self.last_run is None else self.last_run.as_dict()
        return found


@dataclass(frozen=True)
class ScheduledRun:
    """One row of ``deployment_runs``: a scheduled time (or requested run) and what became of it."""

    id: int
    deployment: str
    scheduled_time: float
    trigger: str
    status: str
    state_name: str | None
    reason: str | None
    flow_run_id: str | None
    claimed_by: str | None
    parameters: dict[str, Any] | None
    started: float | None
    ended: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Claimed:
    """A run this process won: what its child process needs to run it."""

    id: int
    deployment: str
    scheduled_time: float
    trigger: str
    flow_name: str
    entrypoint: str
    parameters: dict[str, Any]
    tags: list[str]


def db_now(conn: sa.Connection) -> float:
    """The database's clock, in seconds since the epoch."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        sql = "SELECT EXTRACT(EPOCH FROM clock_timestamp())"
    elif dialect == "sqlite":
        sql = "SELECT (julianday('now') - 2440587.5) * 86400.0"
    else:
        sql = "SELECT UNIX_TIMESTAMP(NOW(6))"
    return float(conn.exec_driver_sql(sql).scalar_one())


def _locked(conn: sa.Connection, query: sa.Select[Any], skip: bool) -> sa.Select[Any]:
    """``query`` taking row locks where the database has them (SQLite's BEGIN IMMEDIATE locks everything)."""
    if conn.dialect.name == "sqlite":
        return query
    return query.with_for_update(skip_locked=skip)


class DeploymentTable:
    """The deployment rows of one store (``Store.engine``)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- deployments -------------------------------------------------------------------

    def register(self, spec: DeploymentSpec, times: Callable[[float, float], list[float]] | None = None) -> bool:
        """Create or update the deployment; True if its schedule changed. A new schedule counts from now:
        the old one's times not run yet are skipped, except those the new one's ``times`` has too.
        Raises `DeploymentNameTaken` (writing nothing) for a name of another flow; never pauses or resumes."""

        def work(conn: sa.Connection) -> bool:
            now = db_now(conn)
            row = (
                conn.execute(_locked(conn, sa.select(deployments).where(deployments.c.name == spec.name), skip=False))
                .mappings()
                .first()
            )
            values = {k: v for k, v in asdict(spec).items() if k != "name"}
            if row is None:
                conn.execute(
                    sa.insert(deployments).values(
                        name=spec.name, paused=False, planned_until=now, created=now, updated=now, **values
                    )
                )
                return False
            if row["flow_name"] != spec.flow_name:
                raise DeploymentNameTaken(
                    f"The deployment name {spec.name!r} is already used by flow {row['flow_name']!r} "
                    f"(from {row['entrypoint']}), so flow {spec.flow_name!r} cannot take it: a name is one "
                    f"deployment. Give this one another name, e.g. name={spec.name + '-' + spec.flow_name!r}, "
                    "or serve the other flow under it."
                )
            changed = bool(row["schedule_key"] != spec.schedule_key)
            update: dict[str, Any] = {**values, "updated": now}
            if changed:  # never back-fill: the new schedule counts from now, its old future times are dropped
                update["planned_until"] = now
                reason = f"the deployment's schedule changed at {when(now)}"
                old = sa.and_(
                    runs.c.deployment == spec.name, runs.c.status == "scheduled", runs.c.trigger == "schedule"
                )
                pending = list(conn.execute(sa.select(runs.c.scheduled_time).where(old)).scalars())
                kept = set(times(min(pending) - 1.0, max(pending))) & set(pending) if pending and times else set()
                if kept:  # a time both schedules have is one time: it stays, and runs once
                    old = sa.and_(old, runs.c.scheduled_time.notin_(sorted(kept)))
                conn.execute(sa.update(runs).where(old).values(status="skipped", reason=reason, ended=now))
            conn.execute(sa.update(deployments).where(deployments.c.name == spec.name).values(**update))
            return changed

        return _once_more_on_conflict(self.engine, work)

    def set_paused(self, name: str, paused: bool) -> None:
        def work(conn: sa.Connection) -> None:
            done = conn.execute(
                sa.update(deployments).where(deployments.c.name == name).values(paused=paused, updated=db_now(conn))
            )
            if done.rowcount != 1:
                raise self._not_found(conn, name)

        write(self.engine, work)

    def request_run(self, name: str, parameters: dict[str, Any]) -> int:
        """A run now, with ``parameters`` over the deployment's, for a serve process to pick up; its row id."""

        def work(conn: sa.Connection) -> int:
            if conn.execute(sa.select(deployments.c.name).where(deployments.c.name == name)).first() is None:
                raise self._not_found(conn, name)
            now = db_now(conn)
            at = now
            while conn.execute(
                sa.select(runs.c.id).where(runs.c.deployment == name, runs.c.scheduled_time == at)
            ).first():
                at += 0.001  # a scheduled time at this very instant: the key stays unique
            done = conn.execute(
                sa.insert(runs).values(
                    deployment=name, scheduled_time=at, trigger="manual", parameters=json.dumps(parameters),
                    status="scheduled", created=now,
                )
            )  # fmt: skip
            key = done.inserted_primary_key
            assert key is not None
            return int(key[0])

        return _once_more_on_conflict(self.engine, work)

    def _not_found(self, conn: sa.Connection, name: str) -> DeploymentNotFound:
        names = sorted(conn.execute(sa.select(deployments.c.name)).scalars())
        known = ", ".join(names) if names else "none yet (tether serve creates them)"
        return DeploymentNotFound(
            f"No deployment named {name!r} in the run store. Deployments: {known}. See: tether deployments ls"
        )

    def deployments(self) -> list[StoredDeployment]:
        def work(conn: sa.Connection) -> list[StoredDeployment]:
            found = []
            for row in conn.execute(sa.select(deployments).order_by(deployments.c.name)).mappings():
                last = conn.execute(
                    sa.select(runs).where(runs.c.deployment == row["name"], runs.c.status.notin_(("scheduled", "skipped")))
                    .order_by(runs.c.scheduled_time.desc()).limit(1)
                ).mappings().first()  # fmt: skip
                found.append(_deployment(row, None if last is None else _run(last)))
            return found

        return read(self.engine, work)

    def get(self, name: str) -> StoredDeployment:
        def work(conn: sa.Connection) -> StoredDeployment:
            row = conn.execute(sa.select(deployments).where(deployments.c.name == name)).mappings().first()
            if row is None:
                raise self._not_found(conn, name)
            return _deployment(row, None)

        return read(self.engine, work)

    def runs(
        self, name: str | None = None, limit: int | None = 50, statuses: Sequence[str] | None = None
    ) -> list[ScheduledRun]:
        """Rows of ``deployment_runs``, newest scheduled time first."""
        query = sa.select(runs).order_by(runs.c.scheduled_time.desc(), runs.c.id.desc())
        if name is not None:
            query = query.where(runs.c.deployment == name)
        if statuses is not None:
            query = query.where(runs.c.status.in_(tuple(statuses)))
        if limit is not None:
            query = query.limit(limit)
        return read(self.engine, lambda conn: [_run(r) for r in conn.execute(query).mappings()])

    def flow_runs(self, name: str, limit: int | None = 20, state: str | None = None) -> list[StoredFlowRun]:
        """The flow runs of deployment ``name``, newest first (as `Store.flow_runs` shows them)."""
        query = (
            sa.select(flow_runs).join(runs, runs.c.flow_run_id == flow_runs.c.id)
            .where(runs.c.deployment == name).order_by(flow_runs.c.created.desc())
        )  # fmt: skip
        if state:
            wanted = state.upper()
            query = query.where(
                sa.or_(sa.func.upper(flow_runs.c.state_type) == wanted, sa.func.upper(flow_runs.c.state_name) == wanted)
            )
        if limit is not None:
            query = query.limit(limit)

        def work(conn: sa.Connection) -> list[StoredFlowRun]:
            rows = conn.execute(query).mappings().all()
            counts = _task_counts(conn, [r["id"] for r in rows])
            return [_flow_run(r, counts.get(r["id"], {})) for r in rows]

        return read(self.engine, work)

    def now(self) -> float:
        return read(self.engine, db_now)

    # -- planning and claiming -----------------------------------------------------------

    def plan(self, name: str, times: Callable[[float, float], list[float]], lookahead: float) -> int:
        """Create the rows of the deployment's times up to now + ``lookahead`` (each once); how many were new.

        ``times(after, until)`` gives the schedule's times in ``(after, until]``."""

        def work(conn: sa.Connection) -> int:
            row = (
                conn.execute(_locked(conn, sa.select(deployments).where(deployments.c.name == name), skip=True))
                .mappings()
                .first()
            )
            if row is None:
                return 0  # another process is planning or claiming it now
            now = db_now(conn)
            until = now + lookahead
            if until <= row["planned_until"]:
                return 0
            wanted = times(row["planned_until"], until)
            existing = set()
            if wanted:
                existing = set(conn.execute(
                    sa.select(runs.c.scheduled_time).where(runs.c.deployment == name, runs.c.scheduled_time.in_(wanted))
                ).scalars())  # fmt: skip
            new = [
                {"deployment": name, "scheduled_time": t, "trigger": "schedule", "status": "scheduled", "created": now}
                for t in wanted
                if t not in existing
            ]
            if new:
                conn.execute(sa.insert(runs), new)
            conn.execute(sa.update(deployments).where(deployments.c.name == name).values(planned_until=until))
            return len(new)

        return write(self.engine, work)

    def claim(self, name: str, owner: ProcessInfo, late_seconds: float) -> Claimed | None:
        """Claim the deployment's next due run for ``owner``, recording the times catch-up or overlap
        skip on the way; None if nothing is to start now (or another process is claiming)."""

        def work(conn: sa.Connection) -> Claimed | None:
            dep = (
                conn.execute(_locked(conn, sa.select(deployments).where(deployments.c.name == name), skip=True))
                .mappings()
                .first()
            )
            if dep is None:
                return None
            now = db_now(conn)
            due_rows = conn.execute(_locked(conn,
                sa.select(runs.c.id, runs.c.scheduled_time, runs.c.trigger, runs.c.parameters)
                .where(runs.c.deployment == name, runs.c.status == "scheduled", runs.c.scheduled_time <= now)
                .order_by(runs.c.scheduled_time), skip=True)
            ).mappings().all()  # fmt: skip
            if not due_rows:
                return None
            due = [DueTime(r["id"], r["scheduled_time"], r["trigger"] == "manual") for r in due_rows]
            if dep["paused"]:
                paused = [d for d in due if not d.manual]
                _settle_many(conn, [(d, "the deployment was paused") for d in paused], "skipped", now)
                due = [d for d in due if d.manual]
            active = conn.execute(
                sa.select(runs.c.scheduled_time).where(runs.c.deployment == name, runs.c.status.in_(ACTIVE))
                .order_by(runs.c.scheduled_time).limit(1)
            ).scalar()  # fmt: skip
            verdict = decide(due, now, dep["catchup"], dep["overlap"], active, late_seconds)
            _settle_many(conn, verdict.skipped, "skipped", now)
            _settle_many(conn, verdict.cancelled, "cancelled", now)
            if verdict.start is None:
                return None
            start = next(r for r in due_rows if r["id"] == verdict.start.id)
            conn.execute(
                sa.update(runs).where(runs.c.id == start["id"], runs.c.status == "scheduled")
                .values(status="claimed", claimed_by=owner.as_json(), claimed_at=now, lease=now)
            )  # fmt: skip
            parameters = {**json.loads(dep["parameters"] or "{}"), **json.loads(start["parameters"] or "{}")}
            return Claimed(
                start["id"], name, start["scheduled_time"], start["trigger"], dep["flow_name"], dep["entrypoint"],
                parameters, json.loads(dep["tags"] or "[]"),
            )  # fmt: skip

        return write(self.engine, work)

    def renew(self, owner: ProcessInfo) -> int:
        """Renew the lease of every run ``owner`` holds; how many."""

        def work(conn: sa.Connection) -> int:
            done = conn.execute(
                sa.update(runs)
                .where(runs.c.claimed_by == owner.as_json(), runs.c.status.in_(ACTIVE))
                .values(lease=db_now(conn))
            )
            return int(done.rowcount)

        return write(self.engine, work)

    # -- the run's child process ---------------------------------------------------------

    def begin_run(self, run_id: int, owner: ProcessInfo, child: ProcessInfo) -> bool:
        """Move a claimed run to ``running`` for ``child``, only if ``owner`` still holds the claim."""

        def work(conn: sa.Connection) -> bool:
            done = conn.execute(
                sa.update(runs).where(runs.c.id == run_id, runs.c.status == "claimed", runs.c.claimed_by == owner.as_json())
                .values(status="running", child_pid=child.pid, child_started=child.started, started=db_now(conn))
            )  # fmt: skip
            return done.rowcount == 1

        return write(self.engine, work)

    def set_flow_run(self, run_id: int, flow_run_id: str) -> None:
        write(
            self.engine,
            lambda conn: conn.execute(sa.update(runs).where(runs.c.id == run_id).values(flow_run_id=flow_run_id)),
        )

    def finish(self, run_id: int, state_type: str, state_name: str, child_pid: int, reason: str | None = None) -> bool:
        """Record how the run ended (by its child process); False if someone settled it first."""
        status = FINAL_STATES.get(state_type, "failed")

        def work(conn: sa.Connection) -> bool:
            done = conn.execute(
                sa.update(runs).where(runs.c.id == run_id, runs.c.status == "running", runs.c.child_pid == child_pid)
                .values(status=status, state_name=state_name, reason=reason, ended=db_now(conn))
            )  # fmt: skip
            return done.rowcount == 1

        return write(self.engine, work)

    # -- when a process is gone ----------------------------------------------------------

    def settle_ended_child(
        self, run_id: int, seen_by: str, spool_wait_seconds: float = SPOOL_WAIT_SECONDS
    ) -> ScheduledRun | None:
        """The serve process saw the run's child exit: record the run if the child did not, after
        writing the records the child left in its spool."""
        row = read(
            self.engine, lambda conn: conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
        )
        if row is None or row["status"] not in ACTIVE:
            return None
        if row["child_pid"] is not None:
            replay_spools_of(self.engine, [row["child_pid"]], spool_wait_seconds)

        def work(conn: sa.Connection) -> ScheduledRun | None:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
            if row is None or row["status"] not in ACTIVE:
                return None
            return _settle_gone(
                conn, row, db_now(conn), f"its process {row['child_pid']} ended before recording the run", seen_by
            )

        return write(self.engine, work)

    def recover(
        self,
        lease_seconds: float,
        seen_by: str,
        this_host: str | None = None,
        spool_wait_seconds: float = SPOOL_WAIT_SECONDS,
    ) -> list[ScheduledRun]:
        """Settle the runs whose serve process is gone (their spools on this host written first); the rows settled."""
        host = this_host or socket.gethostname()

        def gone(conn: sa.Connection, now: float) -> list[tuple[Any, str, bool]]:
            """The active rows whose serve process is gone: (row, why, whether it ran on this host)."""
            found = []
            for row in conn.execute(sa.select(runs).where(runs.c.status.in_(ACTIVE))).mappings().all():
                owner = ProcessInfo.from_json(row["claimed_by"])
                if owner is None:
                    continue
                if owner.host == host:
                    if process_alive(owner.pid, owner.started):
                        continue
                    if row["child_pid"] is not None and process_alive(row["child_pid"], row["child_started"]):
                        continue  # its child is going down with it (it dies with its serve process)
                    found.append((row, f"its serve process {owner.pid} on this host is gone", True))
                elif row["lease"] is None or now - row["lease"] > lease_seconds:
                    lapsed = now - (row["lease"] or now)
                    why = f"its serve process {owner.pid} on {owner.host} renewed no lease for {lapsed:.0f} s"
                    found.append((row, why, False))
            return found

        found = read(self.engine, lambda conn: gone(conn, db_now(conn)))
        here = [row["child_pid"] for row, _, local in found if local and row["child_pid"] is not None]
        if here:
            replay_spools_of(self.engine, here, spool_wait_seconds)

        def work(conn: sa.Connection) -> list[ScheduledRun]:
            now = db_now(conn)
            settled = []
            for row, why, _ in gone(conn, now):
                done = _settle_gone(conn, row, now, why, seen_by)
                if done is not None:
                    settled.append(done)
            return settled

        return write(self.engine, work)


def replay_spools_of(engine: sa.Engine, pids: Collection[int], wait_seconds: float) -> None:
    """Write the records dead processes of this host left in their spools (as a store open does),
    before a run is settled from the store. While a spool of one of ``pids`` is still written by its
    writer process (`_writer_process`), wait for it at most ``wait_seconds`` (later writes keep final states)."""
    location, wanted = StoreLocation.resolve(engine.url), set(pids)
    clock = get_clock()
    deadline, idle = clock.monotonic() + wait_seconds, threading.Event()
    while True:
        try:
            replay_into(location, engine)
            directory = spool_dir()
            left = any(_spool_pid(directory, s) in wanted for s in orphan_stems(store_key(engine.url), directory))
        except (OSError, ValueError) as exc:  # a spool that cannot be read: the next store open tries again
            log.warning("tether: could not write the spools of dead processes %s: %s", sorted(wanted), exc)
            return
        if not left or clock.monotonic() >= deadline:
            return
        clock.wait(idle, 0.05)


def _spool_pid(directory: Path, stem: str) -> int | None:
    header = next((read_header(path) for path in directory.glob(f"{glob_escape(stem)}-*.spool")), None)
    return None if header is None else header[2]


def _once_more_on_conflict(engine: sa.Engine, work: Callable[[sa.Connection], T]) -> T:
    """``write(engine, work)``, again if another process inserted the same key meanwhile: on PostgreSQL
    two transactions that both found no row (nothing to lock) both insert it; the second one, run
    again, finds the row."""
    try:
        return write(engine, work)
    except IntegrityError:
        return write(engine, work)


def _settle_many(conn: sa.Connection, verdicts: Sequence[tuple[DueTime, str]], status: str, now: float) -> None:
    for due, reason in verdicts:
        conn.execute(
            sa.update(runs)
            .where(runs.c.id == due.id, runs.c.status == "scheduled")
            .values(status=status, reason=reason, ended=now)
        )


def _settle_gone(conn: sa.Connection, row: Any, now: float, why: str, seen_by: str) -> ScheduledRun | None:
    """Settle a claimed or running row whose process is gone. A claim that never started is free
    again; a started run is never started again: it ends as its flow run did, or crashed."""
    where = sa.and_(runs.c.id == row["id"], runs.c.status == row["status"], runs.c.claimed_by == row["claimed_by"])
    if row["status"] == "claimed":
        conn.execute(sa.update(runs).where(where).values(status="scheduled", claimed_by=None, claimed_at=None, lease=None,
                                                         reason=f"claimed by a process that died before starting it ({why}); nothing ran"))  # fmt: skip
        return _run(conn.execute(sa.select(runs).where(runs.c.id == row["id"])).mappings().one())
    flow = None
    if row["flow_run_id"] is not None:
        flow = conn.execute(sa.select(flow_runs).where(flow_runs.c.id == row["flow_run_id"])).mappings().first()
    if flow is not None and flow["state_type"] in FINAL_STATES and flow["state_type"] != "CRASHED":
        values = {"status": FINAL_STATES[flow["state_type"]], "state_name": flow["state_name"],
                  "reason": f"recorded from its flow run by {seen_by}: {why} after the run ended"}  # fmt: skip
    else:
        if flow is not None and (flow["state_type"] is None or flow["state_type"] in UNFINISHED):
            _record(conn, flow, why, seen_by, now)
        values = {
            "status": "crashed",
            "state_name": "Crashed",
            "reason": f"{why} during the run; recorded by {seen_by}; it is not run again",
        }
    conn.execute(sa.update(runs).where(where).values(ended=now, **values))
    return _run(conn.execute(sa.select(runs).where(runs.c.id == row["id"])).mappings().one())


def _deployment(row: Any, last: ScheduledRun | None) -> StoredDeployment:
    return StoredDeployment(
        row["name"], row["flow_name"], row["entrypoint"], json.loads(row["parameters"] or "{}"), json.loads(row["tags"] or "[]"),
        row["description"], row["version"], json.loads(row["schedules"]), row["catchup"], row["overlap"], bool(row["paused"]),
        row["created"], row["updated"], last,
    )  # fmt: skip


def _run(row: Any) -> ScheduledRun:
    return ScheduledRun(
        row["id"], row["deployment"], row["scheduled_time"], row["trigger"], row["status"], row["state_name"], row["reason"],
        row["flow_run_id"], row["claimed_by"], None if row["parameters"] is None else json.loads(row["parameters"]),
        row["started"], row["ended"],
    )  # fmt: skip
