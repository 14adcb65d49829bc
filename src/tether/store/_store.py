"""`Store`: one run store. Recording (`attach`) and the queries the CLI shows.

`open_store` finds the store (`TETHER_DATABASE_URL`, else ``$TETHER_HOME/tether.db``),
brings its schema up to date, records ``Crashed`` the flow runs of this host whose
process is gone (`_crashed`) and returns a `Store`. A flow's recording does not wait
for that: it begins with a `Store` not opened yet, whose first use opens it, and its
records go to the spool meanwhile (a one-shot flow's store is opened after the flow).
`attach` subscribes a `StoreRecorder` to the engine's event stream; the query methods
read with plain SQL and return the records of `_records`, secrets redacted (`_redact`)
except the handle a reaper needs. Process-wide switching on and off is in `_active`,
reaping in `_reap`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from tether._context import events
from tether._settings import heartbeat_seconds
from tether.store._changes import ChangeWaiter
from tether.store._crashed import OPEN_LOOKBACK_SECONDS, CrashedRun, record_crashed_runs
from tether.store._db import read, write
from tether.store._errors import RunNotFound, StoreError
from tether.store._ledger import ProcessInfo, heartbeat_stale, orphan_reason
from tether.store._location import StoreLocation
from tether.store._migrate import open_engine
from tether.store._recorder import StoreRecorder, Until
from tether.store._records import (
    LedgerEntry,
    RunDetail,
    StoredFlowRun,
    StoredLog,
    StoredStateChange,
    StoredTaskRun,
)
from tether.store._redact import redact_text, redact_value
from tether.store._rows import replay_into
from tether.store._schema import flow_runs, limits, logs, resource_uses, resources, state_changes, task_runs

log = logging.getLogger("tether.store")

#: How long a store open waits to record crashed runs while others hold the write lock.
OPEN_WRITE_SECONDS = 2.0


def open_store(url: str | sa.URL | None = None) -> Store:
    """Open the run store (creating or upgrading its schema); raises `StoreError` if it cannot be used.

    Flow runs of this host whose process is gone are recorded ``Crashed`` on the way
    (`Store.record_crashed_runs`); if that cannot be written now (a full disk, a long
    lock), the store opens anyway and a later open or `tether reap` records them.
    """
    store = Store(StoreLocation.resolve(url))
    store.open()
    return store


class Store:
    """A run store: opened by `open_store`, or (``Store(location)``, as a flow's recording
    begins) when it is first used (`open`); `attach` records to it meanwhile, in the spool."""

    def __init__(self, location: StoreLocation) -> None:
        self.location = location
        self.recorder: StoreRecorder | None = None
        #: The flow runs `open` recorded Crashed as it opened this store.
        self.crashed_at_open: list[CrashedRun] = []
        self._engine: sa.Engine | None = None
        self._failed: StoreError | None = None
        self._opening = threading.Lock()
        self._changes: ChangeWaiter | None = None

    def __repr__(self) -> str:
        return f"<Store {self.location.shown}>"

    @property
    def engine(self) -> sa.Engine:
        """The store's engine; the first use opens the store (see `open`)."""
        engine = self._engine
        return engine if engine is not None else self.open()

    @property
    def opened(self) -> bool:
        return self._engine is not None

    def open(self) -> sa.Engine:
        """Connect and bring the schema up to date, then replay the spools that dead processes
        of this host left and record their flow runs Crashed; raises `StoreError` if the store
        cannot be used (and again at every later use: it is not tried twice)."""
        with self._opening:
            if self._engine is not None:
                return self._engine
            if self._failed is not None:
                raise self._failed
            try:
                _, engine = open_engine(self.location.url)
            except StoreError as exc:
                self._failed = exc
                raise
            try:  # first the records a dead process of this host left in its spool, then what it left unfinished
                replay_into(self.location, engine)
            except (SQLAlchemyError, OSError, ValueError) as exc:
                log.debug("tether: could not replay the spools of dead processes into %s: %s", self.location.shown, exc)
            self._engine = engine
        try:
            self.crashed_at_open = self.record_crashed_runs(
                "a store open", deadline_seconds=OPEN_WRITE_SECONDS, created_after=time.time() - OPEN_LOOKBACK_SECONDS
            )
        except SQLAlchemyError as exc:
            log.debug("tether: could not record crashed flow runs in %s: %s", self.location.shown, exc)
        return engine

    # -- recording ---------------------------------------------------------------------

    def attach(self) -> StoreRecorder:
        """Record every event of this process from now on (idempotent). The records are spooled
        at once; the store is opened when they are written (or a resource step is)."""
        if self.recorder is None:
            self.recorder = StoreRecorder(self)
            self._stream = events()  # the runtime's, unsubscribed from at close whichever is current then
            self._stream.subscribe(self.recorder)
        return self.recorder

    def flush(self, timeout: float | None = None, until: Until = "written") -> bool:
        """Wait until everything recorded so far is written (or ``until="safe"``: see
        `StoreRecorder.flush`); False if ``timeout`` passed first."""
        return self.recorder.flush(timeout, until) if self.recorder is not None else True

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop recording, write what is queued, release connections."""
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            self._stream.unsubscribe(recorder)
            recorder.close(timeout)
        if self._changes is not None:
            self._changes.close()
        if self._engine is not None:
            self._engine.dispose()

    def abandon(self) -> None:
        """In a forked child: stop using what the parent process owns (its recorder's thread did not follow)."""
        if self.recorder is not None:
            self._stream.unsubscribe(self.recorder)
            self.recorder.abandon()
        if self._engine is not None:
            self._engine.dispose(close=False)  # the parent's connections are the parent's

    # -- readers -----------------------------------------------------------------------

    def wait_for_change(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a change to runs, logs or the ledger; True once one is
        committed, False if none came in time (or the store was closed).

        Reports what was committed since the previous call returned (or, the first time, since it
        began), so a reader that reads the store again after each True misses nothing. On
        PostgreSQL it wakes at the commit (LISTEN on ``tether_changes``, which every batch of
        records NOTIFYs); on SQLite it asks for the `change_token` every half second.
        """
        changes = self._changes
        if changes is None:
            engine = self.engine
            with self._opening:
                changes = self._changes = self._changes or ChangeWaiter(engine)
        return changes.wait(timeout)

    # -- runs --------------------------------------------------------------------------

    def flow_runs(self, limit: int | None = 20, state: str | None = None) -> list[StoredFlowRun]:
        """The latest flow runs, newest first; ``state`` matches a state type or name (any case)."""
        query = sa.select(flow_runs).order_by(flow_runs.c.created.desc())
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

    def flow_run(self, run_id: str) -> RunDetail:
        """Everything about one flow run; ``run_id`` may be the start or the end of the id, if unique."""

        def work(conn: sa.Connection) -> RunDetail:
            row = matching_flow_run(conn, run_id, self.location.shown)
            rid = row["id"]
            counts = _task_counts(conn, [rid])
            tasks = (
                conn.execute(sa.select(task_runs).where(task_runs.c.flow_run_id == rid).order_by(task_runs.c.created))
                .mappings()
                .all()
            )
            changes = (
                conn.execute(
                    sa.select(state_changes)
                    .where(state_changes.c.flow_run_id == rid)
                    .order_by(state_changes.c.timestamp, state_changes.c.id)
                )
                .mappings()
                .all()
            )
            lines = (
                conn.execute(sa.select(logs).where(logs.c.flow_run_id == rid).order_by(logs.c.timestamp, logs.c.id))
                .mappings()
                .all()
            )
            subflows = (
                conn.execute(sa.select(flow_runs).where(flow_runs.c.parent_id == rid).order_by(flow_runs.c.created))
                .mappings()
                .all()
            )
            ledger = self._ledger(conn, resources.c.flow_run_id == rid)
            return RunDetail(
                flow_run=_flow_run(row, counts.get(rid, {})),
                task_runs=[_task_run(t) for t in tasks],
                state_changes=[
                    StoredStateChange(
                        c["run_id"],
                        c["kind"],
                        c["type"],
                        c["name"],
                        _redacted(c["message"]),
                        c["timestamp"],
                        c["run_count"],
                    )
                    for c in changes
                ],
                logs=[StoredLog(x["run_id"], x["level"], redact_text(x["message"]), x["timestamp"]) for x in lines],
                resources=ledger,
                subflows=[_flow_run(s, {}) for s in subflows],
            )

        return read(self.engine, work)

    def record_crashed_runs(
        self,
        seen_by: str,
        other_hosts: bool = False,
        now: float | None = None,
        stale_after: float | None = None,
        deadline_seconds: float = 120.0,
        created_after: float | None = None,
    ) -> list[CrashedRun]:
        """Record ``Crashed`` the unfinished flow runs whose process is gone, and their unfinished task runs.

        Runs of this host are judged by their pid; with ``other_hosts`` (as `tether reap`
        does) runs of other hosts are judged by a stale heartbeat too. ``created_after``
        limits the search to runs created since then.
        """
        stale = 6 * heartbeat_seconds() if stale_after is None else stale_after
        return record_crashed_runs(
            self.engine,
            seen_by,
            other_hosts,
            now,
            stale,
            deadline_seconds=deadline_seconds,
            created_after=created_after,
        )

    # -- the ledger --------------------------------------------------------------------

    def resources(self, limit: int | None = None) -> list[LedgerEntry]:
        """Ledger rows, newest first, each with its orphan reason if it is one."""
        return read(self.engine, lambda conn: self._ledger(conn, None, limit))

    def orphans(self, now: float | None = None, stale_after: float | None = None) -> list[LedgerEntry]:
        """Resources not cleaned up whose process is gone (dead pid on this host, or stale heartbeat),
        those whose reaping failed, and those whose reaper died before it finished.

        A row whose cleanup is recorded (``succeeded``/``failed``, by whichever process
        ran it) is never an orphan: its cleanup ran.
        """
        not_closed = sa.and_(
            sa.or_(resources.c.cleanup_outcome.is_(None), resources.c.cleanup_outcome.in_(REAPABLE)),
            sa.or_(resources.c.setup_outcome.is_(None), resources.c.setup_outcome != "failed"),
        )
        rows = read(self.engine, lambda conn: self._ledger(conn, not_closed, None, now, stale_after))
        return [r for r in rows if r.orphan is not None]

    def _ledger(
        self,
        conn: sa.Connection,
        where: Any,
        limit: int | None = None,
        now: float | None = None,
        stale_after: float | None = None,
    ) -> list[LedgerEntry]:
        query = sa.select(resources).order_by(resources.c.created.desc(), resources.c.id.desc())
        if where is not None:
            query = query.where(where)
        if limit is not None:
            query = query.limit(limit)
        rows = conn.execute(query).mappings().all()
        users: dict[str, list[str]] = {}
        scope_ids = sorted({r["scope_id"] for r in rows})
        for chunk in _chunks(scope_ids, 500):
            uses = conn.execute(
                sa.select(resource_uses.c.scope_id, resource_uses.c.task_run_id)
                .where(resource_uses.c.scope_id.in_(chunk))
                .order_by(resource_uses.c.timestamp, resource_uses.c.id)
            ).all()
            for scope_id, task_run_id in uses:
                users.setdefault(scope_id, []).append(task_run_id)
        now = time.time() if now is None else now
        stale = 6 * heartbeat_seconds() if stale_after is None else stale_after
        entries = []
        for r in rows:
            orphan = None if r["setup_outcome"] == "failed" else _orphan(r, now, stale)
            values = dict(r)
            values["handle"] = _json(values["handle"])
            values["setup_error"] = _redacted(values["setup_error"])
            if values["cleanup_outcome"] != "reaping":  # then it is the claim, which names a process
                values["cleanup_error"] = _redacted(values["cleanup_error"])
            entries.append(LedgerEntry(**values, used_by=users.get(r["scope_id"], []), orphan=orphan))
        return entries

    def claim_for_reaping(self, entry: LedgerEntry | int, claimer: ProcessInfo | None = None) -> str | None:
        """Claim an orphan for reaping: the claim (for `record_reap`), or None if it was closed or claimed meanwhile.

        The claim names the reaping process (host, pid, start time), so a later reap can
        tell that it died and take the row over: pass the `LedgerEntry` of a row left
        ``reaping``; it is taken only if that same claim still holds it.
        """
        claim = (claimer or ProcessInfo.current()).as_json()
        entry_id = entry if isinstance(entry, int) else entry.id
        if isinstance(entry, LedgerEntry) and entry.cleanup_outcome == "reaping":
            held = entry.raw_claim
            still_held = resources.c.cleanup_error.is_(None) if held is None else resources.c.cleanup_error == held
            claimable: Any = sa.and_(resources.c.cleanup_outcome == "reaping", still_held)
        else:
            claimable = sa.or_(resources.c.cleanup_outcome.is_(None), resources.c.cleanup_outcome == "reap-failed")

        def work(conn: sa.Connection) -> bool:
            result = conn.execute(
                sa.update(resources)
                .where(resources.c.id == entry_id)
                .where(claimable)
                .where(sa.or_(resources.c.setup_outcome.is_(None), resources.c.setup_outcome != "failed"))
                .values(cleanup_outcome="reaping", cleanup_error=claim, heartbeat=time.time())
            )
            return result.rowcount == 1

        return claim if write(self.engine, work, changes=True) else None

    def beat_reaping(self, entry_id: int, claim: str) -> bool:
        """Renew the heartbeat of a row this claim is reaping (so other hosts see its reaper alive)."""
        return write(
            self.engine,
            lambda conn: (
                conn.execute(
                    sa.update(resources)
                    .where(resources.c.id == entry_id)
                    .where(resources.c.cleanup_outcome == "reaping")
                    .where(resources.c.cleanup_error == claim)
                    .values(heartbeat=time.time())
                ).rowcount
                == 1
            ),
        )

    def record_reap(
        self, entry_id: int, error: str | None, seconds: float, outcome: str | None = None, claim: str | None = None
    ) -> bool:
        """Record a reaper's outcome: ``reaped``, or ``reap-failed`` with its error.

        With ``claim``, only while that claim still holds the row: a cleanup its own
        process recorded meanwhile, or a reap that took over, is not overwritten
        (False then).
        """
        values = {
            "cleanup_outcome": outcome or ("reaped" if error is None else "reap-failed"),
            "cleanup_error": error,
            "cleanup_seconds": seconds,
            "cleaned_at": time.time(),
        }
        statement = sa.update(resources).where(resources.c.id == entry_id)
        if claim is not None:
            statement = statement.where(resources.c.cleanup_outcome == "reaping").where(
                resources.c.cleanup_error == claim
            )
        return write(self.engine, lambda conn: conn.execute(statement.values(values)).rowcount == 1, changes=True)

    def mark_reaped(self, entry_id: int) -> bool:
        """Record that a person closed the resource by hand; False if there is no such open row."""

        def work(conn: sa.Connection) -> bool:
            result = conn.execute(
                sa.update(resources)
                .where(resources.c.id == entry_id)
                .where(
                    sa.or_(
                        resources.c.cleanup_outcome.is_(None),
                        resources.c.cleanup_outcome.in_(["reap-failed", "reaping"]),
                    )
                )
                .values(cleanup_outcome="closed-by-hand", cleaned_at=time.time())
            )
            return result.rowcount == 1

        return write(self.engine, work, changes=True)

    # -- limits ------------------------------------------------------------------------

    def set_limit(self, tag: str, capacity: int) -> None:
        if not tag or not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
            raise ValueError(f"A limit needs a tag and a whole number >= 0; got tag={tag!r}, capacity={capacity!r}.")

        def work(conn: sa.Connection) -> None:
            done = conn.execute(
                sa.update(limits).where(limits.c.tag == tag).values(capacity=capacity, updated=time.time())
            )
            if done.rowcount == 0:
                conn.execute(sa.insert(limits).values(tag=tag, capacity=capacity, updated=time.time()))

        write(self.engine, work)

    def limits(self) -> dict[str, int]:
        return read(
            self.engine,
            lambda conn: {
                t: c for t, c in conn.execute(sa.select(limits.c.tag, limits.c.capacity).order_by(limits.c.tag))
            },
        )

    def remove_limit(self, tag: str) -> bool:
        return write(self.engine, lambda conn: conn.execute(sa.delete(limits).where(limits.c.tag == tag)).rowcount == 1)

    # -- for tests and tools -----------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        tables = (flow_runs, task_runs, state_changes, logs, resources, resource_uses, limits)
        return read(
            self.engine,
            lambda conn: {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in tables},
        )


#: Cleanup outcomes of rows reaping may take: a failed reap (to try again), a reap whose reaper may be gone.
REAPABLE = ("reap-failed", "reaping")


def matching_flow_run(conn: sa.Connection, run_id: str, shown: str) -> Any:
    """The row of the one flow run whose id is ``run_id``, or starts or ends with it; `RunNotFound` otherwise.

    ``shown`` names the store in the message."""
    matches = conn.execute(sa.select(flow_runs).where(flow_runs.c.id == run_id)).mappings().all()
    if not matches and run_id:
        pattern = _escape_like(run_id)
        either_end = sa.or_(
            flow_runs.c.id.like(pattern + "%", escape="\\"), flow_runs.c.id.like("%" + pattern, escape="\\")
        )
        matches = conn.execute(sa.select(flow_runs).where(either_end).limit(6)).mappings().all()
    if len(matches) != 1:
        if not matches:
            problem = f"No flow run in the store {shown} has an id starting or ending with {run_id!r}."
        else:
            listed = ", ".join(f"{m['id']} ({m['name']})" for m in matches[:5])
            problem = f"{run_id!r} matches more than one flow run: {listed}. Give more of the id."
        raise RunNotFound(problem + " List the runs with: tether runs ls")
    return matches[0]


def _orphan(r: Any, now: float, stale_after: float) -> str | None:
    """Why a ledger row is an orphan now, or None."""
    cleanup = r["cleanup_outcome"]
    if cleanup is None:
        return orphan_reason(r["host"], r["pid"], r["pid_started"], r["heartbeat"], now, stale_after)
    if cleanup == "reap-failed":
        return "an earlier reap failed"
    if cleanup != "reaping":
        return None  # its cleanup is recorded: closed for good
    claimer = ProcessInfo.from_json(r["cleanup_error"])
    if claimer is None:  # claimed by a tether that did not say who: judged by the heartbeat alone
        silent = heartbeat_stale(r["heartbeat"], now, stale_after)
        return None if silent is None else f"a reap of it stopped before it finished (no heartbeat for {silent})"
    gone = orphan_reason(claimer.host, claimer.pid, claimer.started, r["heartbeat"], now, stale_after)
    return None if gone is None else f"its reaper stopped before it finished ({gone})"


def _redacted(text: str | None) -> str | None:
    return None if text is None else redact_text(text)


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _task_counts(conn: sa.Connection, run_ids: list[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for chunk in _chunks(run_ids, 500):
        rows = conn.execute(
            sa.select(task_runs.c.flow_run_id, task_runs.c.state_type, sa.func.count())
            .where(task_runs.c.flow_run_id.in_(chunk))
            .group_by(task_runs.c.flow_run_id, task_runs.c.state_type)
        ).all()
        for run_id, state_type, n in rows:
            counts.setdefault(run_id, {})[state_type or "UNKNOWN"] = n
    return counts


def _flow_run(r: Any, counts: dict[str, int]) -> StoredFlowRun:
    return StoredFlowRun(
        id=r["id"],
        name=r["name"],
        parent_id=r["parent_id"],
        state_type=r["state_type"],
        state_name=r["state_name"],
        state_message=_redacted(r["state_message"]),
        error=_redacted(r["error"]),
        run_count=r["run_count"],
        created=r["created"],
        start_time=r["start_time"],
        end_time=r["end_time"],
        parameters=redact_value(_json(r["parameters"])),
        tags=_json(r["tags"]),
        pid=r["pid"],
        host=r["host"],
        heartbeat=r["heartbeat"],
        task_counts=counts,
        run_name=r["run_name"] or r["name"],
    )


def _task_run(r: Any) -> StoredTaskRun:
    return StoredTaskRun(
        id=r["id"],
        flow_run_id=r["flow_run_id"],
        name=r["name"],
        state_type=r["state_type"],
        state_name=r["state_name"],
        state_message=_redacted(r["state_message"]),
        error=_redacted(r["error"]),
        run_count=r["run_count"],
        created=r["created"],
        start_time=r["start_time"],
        end_time=r["end_time"],
        parameters=redact_value(_json(r["parameters"])),
        tags=_json(r["tags"]),
        run_name=r["run_name"] or r["name"],
    )
