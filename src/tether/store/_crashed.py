"""Flow runs whose process died: found, and recorded ``Crashed`` with their unfinished task runs.

A flow run's process records its final state; if it dies first (SIGKILL, power loss,
a full disk), nothing else would, and the run would stay ``Running`` for ever. Every
store open looks for unfinished flow runs of this host (created in the last
`OPEN_LOOKBACK_SECONDS`, so that the search stays an index range on a store of
millions of runs) whose process is gone, and
`tether reap` also for those of other hosts whose heartbeat is stale (see
`_ledger.flow_process_gone`). Each is recorded ``Crashed``, with a state change that
says why and who saw it, and so is every task run of it that had not finished.

The updates are conditional: a run that reached a final state meanwhile keeps it,
and two processes that see the same dead run record it once. A dead flow process's
writer process (`_writer_process_main`) may still write task runs it held for a moment after the run was
recorded Crashed; for `LATE_WRITE_SECONDS` the search also ends those. This module writes
only those rows; it decides nothing about resources (that is `_reap`).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from tether.store._db import read, write
from tether.store._ledger import flow_process_gone
from tether.store._schema import flow_runs, state_changes, task_runs

UNFINISHED = ("PENDING", "RUNNING")
#: How far back a store open looks for crashed runs; `tether reap` looks at every run.
OPEN_LOOKBACK_SECONDS = 7 * 24 * 3600.0
#: How long after a flow run was recorded Crashed its late-written unfinished task runs are looked for.
LATE_WRITE_SECONDS = 600.0
CRASHED, CRASHED_NAME = "CRASHED", "Crashed"


@dataclass(frozen=True)
class CrashedRun:
    """A flow run recorded ``Crashed`` because its process was gone."""

    id: str
    name: str
    host: str
    pid: int
    reason: str
    #: Its task runs that were still pending or running, recorded ``Crashed`` with it.
    task_runs: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_crashed_runs(
    engine: sa.Engine,
    seen_by: str,
    other_hosts: bool = False,
    now: float | None = None,
    stale_after: float = 60.0,
    this_host: str | None = None,
    deadline_seconds: float = 120.0,
    created_after: float | None = None,
) -> list[CrashedRun]:
    """Record ``Crashed`` every unfinished flow run whose process is gone; the runs recorded.

    ``seen_by`` says who noticed, for the state message (``"tether reap"``). Without
    ``other_hosts`` only runs of this host are judged, by their pid: that is what a
    store open does, since a heartbeat that merely paused must not end a live run.
    ``created_after`` bounds the search to recent runs through the index on
    ``created`` (flow_runs has none on the state), as a store open does.
    """
    host = this_host or socket.gethostname()
    now = time.time() if now is None else now
    query = _search_query(other_hosts, created_after is not None)
    bounds: dict[str, Any] = {"late": now - LATE_WRITE_SECONDS}
    if not other_hosts:
        bounds["host"] = host
    if created_after is not None:
        bounds["created_after"] = created_after

    def judge(conn: sa.Connection) -> list[tuple[Any, str]]:
        gone = []
        for row in conn.execute(query, bounds).mappings().all():
            reason = flow_process_gone(
                row["host"], row["pid"], row["created"], row["heartbeat"], now, stale_after, host, other_hosts
            )
            if reason is None:
                continue
            if row["state_type"] == CRASHED and not conn.execute(_unfinished_tasks(row["id"]).limit(1)).first():
                continue  # recorded Crashed already, and nothing of it was written late
            gone.append((row, reason))
        return gone

    gone = read(engine, judge)
    if not gone:
        return []
    who = f"{seen_by} (process {os.getpid()} on {host})"

    def record(conn: sa.Connection) -> list[CrashedRun]:
        recorded = (_record(conn, row, reason, who, now) for row, reason in gone)
        return [run for run in recorded if run is not None]

    return write(engine, record, deadline_seconds, changes=True)


def _search_query(other_hosts: bool, bounded: bool) -> sa.TextClause:
    """The unfinished flow runs (and those recorded Crashed lately), of this host unless ``other_hosts``,
    created after ``:created_after`` if ``bounded``. Plain SQL: every store open runs it, and compiling
    the same query from SQLAlchemy's expression language costs more than running it on a small store."""
    unfinished = ", ".join(f"'{t}'" for t in UNFINISHED)
    sql = (
        "SELECT id, name, host, pid, created, start_time, end_time, updated, heartbeat, run_count, state_type "
        f"FROM flow_runs WHERE (state_type IS NULL OR state_type IN ({unfinished}) "
        f"OR (state_type = '{CRASHED}' AND updated > :late))"
    )
    if not other_hosts:
        sql += " AND host = :host"
    if bounded:
        sql += " AND created > :created_after"
    return sa.text(sql)


def _unfinished_tasks(flow_run_id: str) -> sa.Select[Any]:
    return (
        sa.select(
            task_runs.c.id, task_runs.c.state_name, task_runs.c.start_time, task_runs.c.created, task_runs.c.run_count
        )
        .where(task_runs.c.flow_run_id == flow_run_id)
        .where(sa.or_(task_runs.c.state_type.is_(None), task_runs.c.state_type.in_(UNFINISHED)))
    )


def _record(conn: sa.Connection, row: Any, reason: str, who: str, now: float) -> CrashedRun | None:
    """Record the flow run Crashed (unless it was already) and its unfinished task runs; the run, if it was new."""
    run_id = row["id"]
    changes = []
    if row["state_type"] == CRASHED:
        ended = row["end_time"] or now
    else:
        # The run's end is the last moment its process was known alive, not when someone noticed.
        ended = max(t for t in (row["created"], row["start_time"], row["updated"], row["heartbeat"]) if t is not None)
        message = (
            f"The flow run's {reason}, and the run's end was never recorded (its process was killed, or could "
            f"not write to the store). Recorded Crashed by {who}."
        )
        done = conn.execute(
            sa.update(flow_runs)
            .where(flow_runs.c.id == run_id)
            .where(sa.or_(flow_runs.c.state_type.is_(None), flow_runs.c.state_type.in_(UNFINISHED)))
            .values(state_type=CRASHED, state_name=CRASHED_NAME, state_message=message, end_time=ended, updated=now)
        )
        if done.rowcount != 1:
            return None  # it ended meanwhile, or another process recorded it first
        changes.append(_change(run_id, run_id, "flow", message, ended, row["run_count"]))
    unfinished_task = sa.or_(task_runs.c.state_type.is_(None), task_runs.c.state_type.in_(UNFINISHED))
    tasks = conn.execute(_unfinished_tasks(run_id)).all()
    for task_id, state_name, start_time, created, run_count in tasks:
        task_message = f"Its flow run's {reason} while the task run was {(state_name or 'pending').lower()}."
        task_end = max(ended, start_time or created)
        conn.execute(
            sa.update(task_runs)
            .where(task_runs.c.id == task_id)
            .where(unfinished_task)
            .values(
                state_type=CRASHED, state_name=CRASHED_NAME, state_message=task_message, end_time=task_end, updated=now
            )
        )
        changes.append(_change(task_id, run_id, "task", task_message, task_end, run_count))
    if changes:
        conn.execute(sa.insert(state_changes), changes)
    if row["state_type"] == CRASHED:
        return None  # not news: only its late task runs were ended
    return CrashedRun(run_id, row["name"], row["host"], row["pid"], reason, len(tasks))


def _change(run_id: str, flow_run_id: str, kind: str, message: str, timestamp: float, run_count: int) -> dict[str, Any]:
    return {
        "run_id": run_id, "flow_run_id": flow_run_id, "kind": kind, "type": CRASHED, "name": CRASHED_NAME,
        "message": message, "timestamp": timestamp, "run_count": run_count or 0,
    }  # fmt: skip
