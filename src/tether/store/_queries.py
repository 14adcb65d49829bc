"""The dashboard's reads: a page of runs, one run as its timeline shows it, the limits, and a change token.

Each query reads only what its page shows. A flow run with 100,000 task runs is
summed up in SQL (counts by state, start times in buckets per task name) rather
than loaded, and its task runs are read a page at a time; below `LANE_LIMIT` task
runs every one is read with its state changes, for a lane of its own. Secrets are
redacted as in every query of the store (`Store`'s converters are reused). This
module renders nothing; its only writes are the slot readers' own (`SlotTable`
drops the rows of dead holders) and `set_deployment_paused`, an action of the dashboard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tether.store._changes import read_change_token
from tether.store._db import read
from tether.store._deployments import DeploymentTable, ScheduledRun, StoredDeployment, _run
from tether.store._errors import RunNotFound
from tether.store._records import LedgerEntry, StoredFlowRun, StoredLog, StoredStateChange, StoredTaskRun
from tether.store._redact import redact_text
from tether.store._schema import (
    artifacts,
    deployment_runs,
    deployments,
    flow_runs,
    logs,
    resources,
    state_changes,
    task_runs,
)
from tether.store._slots import LimitView, SlotTable
from tether.store._store import Store, _flow_run, _redacted, _task_counts, _task_run, matching_flow_run

#: Up to this many task runs a run's timeline has a lane per task run; beyond, bars per task name.
LANE_LIMIT = 2000
#: The time buckets of a bar per task name.
BUCKETS = 120


@dataclass(frozen=True)
class RunSummary:
    """A row of the runs page: the flow run, with its task counts, and how many resource copies it opened."""

    run: StoredFlowRun
    resources_opened: int
    #: The deployment whose scheduled (or requested) run this is, if it is one.
    deployment: str | None = None


@dataclass(frozen=True)
class RunsPage:
    runs: list[RunSummary]
    #: Whether older runs match the filters (ask again with ``before`` = the last run's ``created``).
    more: bool
    #: Every flow name and deployment name in the store, for the filters.
    flow_names: list[str]
    deployment_names: list[str]


@dataclass(frozen=True)
class Segment:
    """A stretch of a task run in one state: from ``start`` to ``end`` (None: it is still in it)."""

    state_type: str
    state_name: str
    start: float
    end: float | None
    attempt: int


@dataclass(frozen=True)
class TaskLane:
    task: StoredTaskRun
    segments: list[Segment]


@dataclass(frozen=True)
class StartBucket:
    """How many task runs named ``name`` started (or were created) in bucket ``index``, by state type."""

    name: str
    index: int
    state_type: str
    count: int


@dataclass(frozen=True)
class RunView:
    """One flow run as the run page shows it."""

    flow_run: StoredFlowRun
    task_total: int
    #: The time the timeline spans: the earliest and latest time recorded for the run (``end`` may be now).
    start: float
    end: float
    #: A lane per task run, in order of creation; None when there are more than `LANE_LIMIT`.
    lanes: list[TaskLane] | None
    #: Beyond `LANE_LIMIT`: task runs by name, bucket of start time and state; ``bucket_seconds`` wide.
    buckets: list[StartBucket]
    bucket_seconds: float
    #: One page of the task runs, in order of creation.
    task_page: list[StoredTaskRun]
    page: int
    page_size: int
    #: Task runs that failed or crashed (the first few), with their errors; how many there are in all.
    failures: list[StoredTaskRun]
    failure_total: int
    resources: list[LedgerEntry]
    subflows: list[StoredFlowRun]
    #: The first log lines of the run (flow and task runs); how many there are in all.
    logs: list[StoredLog]
    log_total: int
    #: Names of the task runs the logs and resources refer to, by id.
    task_names: dict[str, str]


@dataclass(frozen=True)
class TaskRunView:
    task: StoredTaskRun
    flow_run: StoredFlowRun
    changes: list[StoredStateChange]
    logs: list[StoredLog]
    #: The resource copies this task run used.
    resources: list[LedgerEntry]


@dataclass(frozen=True)
class DeploymentView:
    deployment: StoredDeployment
    #: Its next scheduled times, soonest first.
    upcoming: list[ScheduledRun]
    #: Its latest times that are not still to come: runs, and times skipped with their reasons.
    recent: list[ScheduledRun]



def runs_page(
    store: Store, state: str | None = None, flow: str | None = None, before: float | None = None, limit: int = 50,
    deployment: str | None = None, since: float | None = None,
) -> RunsPage:
    """Top-level and sub- flow runs, newest first; ``state`` is a state type or name, ``flow`` a flow name,
    ``deployment`` a deployment's name, ``since`` the earliest creation time (seconds since the epoch)."""
    query = sa.select(flow_runs).order_by(flow_runs.c.created.desc()).limit(limit + 1)
    if state:
        wanted = state.upper()
        query = query.where(
            sa.or_(sa.func.upper(flow_runs.c.state_type) == wanted, sa.func.upper(flow_runs.c.state_name) == wanted)
        )
    if flow:
        query = query.where(flow_runs.c.name == flow)
    if before is not None:
        query = query.where(flow_runs.c.created < before)
    if since is not None:
        query = query.where(flow_runs.c.created >= since)
    if deployment:
        of_it = sa.select(deployment_runs.c.flow_run_id).where(deployment_runs.c.deployment == deployment)
        query = query.where(flow_runs.c.id.in_(of_it))

    def work(conn: sa.Connection) -> RunsPage:
        rows = conn.execute(query).mappings().all()
        shown = rows[:limit]
        ids = [r["id"] for r in shown]
        counts = _task_counts(conn, ids)
        opened: dict[str, int] = dict(
            conn.execute(
                sa.select(resources.c.flow_run_id, sa.func.count())
                .where(resources.c.flow_run_id.in_(ids))
                .group_by(resources.c.flow_run_id)
            ).all()
        )
        served: dict[str, str] = dict(
            conn.execute(
                sa.select(deployment_runs.c.flow_run_id, deployment_runs.c.deployment)
                .where(deployment_runs.c.flow_run_id.in_(ids))
            ).all()
        )
        names = list(conn.execute(sa.select(flow_runs.c.name).distinct().order_by(flow_runs.c.name)).scalars())
        deployed = list(conn.execute(sa.select(deployments.c.name).order_by(deployments.c.name)).scalars())
        runs = [
            RunSummary(_flow_run(r, counts.get(r["id"], {})), opened.get(r["id"], 0), served.get(r["id"]))
            for r in shown
        ]
        return RunsPage(runs, len(rows) > limit, names, deployed)

    return read(store.engine, work)


def find_flow_run(store: Store, run_id: str) -> StoredFlowRun:
    """The flow run whose id is ``run_id``, or starts or ends with it, with its task counts (as `Store.flow_run`
    finds it, without reading the rest); `RunNotFound` if none or several match."""

    def work(conn: sa.Connection) -> StoredFlowRun:
        row = matching_flow_run(conn, run_id, store.location.shown)
        return _flow_run(row, _task_counts(conn, [row["id"]]).get(row["id"], {}))

    return read(store.engine, work)


def run_view(store: Store, run_id: str, page: int = 0, page_size: int = 100, now: float | None = None,
             log_limit: int = 500, failure_limit: int = 20) -> RunView:
    """One flow run for the run page; ``run_id`` is the whole id (`find_flow_run` finds it from a part)."""

    def work(conn: sa.Connection) -> RunView:
        row = conn.execute(sa.select(flow_runs).where(flow_runs.c.id == run_id)).mappings().first()
        if row is None:
            raise RunNotFound(
                f"No flow run in the store {store.location.shown} has the id {run_id!r}. List the runs with: tether runs ls"
            )
        mine = task_runs.c.flow_run_id == run_id
        total = conn.execute(sa.select(sa.func.count()).where(mine)).scalar_one()
        ledger = store._ledger(conn, resources.c.flow_run_id == run_id)
        lanes: list[TaskLane] | None = None
        buckets: list[StartBucket] = []
        counts: dict[str, int] = {}
        if total <= LANE_LIMIT:
            lanes = _lanes(conn, run_id, now)
            for lane in lanes:
                state = lane.task.state_type or "UNKNOWN"
                counts[state] = counts.get(state, 0) + 1
            times = [t for lane in lanes for t in (lane.task.created, lane.task.start_time, lane.task.end_time) if t]
            unfinished = any(lane.task.end_time is None for lane in lanes)
            first, last = _span(row, ledger, times, unfinished, now)
        else:  # one pass over the task runs: the flow run's own times bound them
            first, last = _span(row, ledger, [], False, now)
            buckets = _buckets(conn, run_id, first, max(last - first, 1e-6) / BUCKETS)
            for b in buckets:
                counts[b.state_type] = counts.get(b.state_type, 0) + b.count
        width = max(last - first, 1e-6) / BUCKETS
        tasks = conn.execute(
            sa.select(task_runs).where(mine).order_by(task_runs.c.created, task_runs.c.id)
            .offset(page * page_size).limit(page_size)
        ).mappings().all()
        failure_total = sum(counts.get(t, 0) for t in ("FAILED", "CRASHED"))
        failed = task_runs.c.state_type.in_(("FAILED", "CRASHED"))
        failures = conn.execute(
            sa.select(task_runs).where(mine, failed).order_by(task_runs.c.created).limit(failure_limit)
        ).mappings().all() if failure_total else []
        lines = conn.execute(
            sa.select(logs).where(logs.c.flow_run_id == run_id).order_by(logs.c.id).limit(log_limit)
        ).mappings().all()
        log_total = conn.execute(sa.select(sa.func.count()).where(logs.c.flow_run_id == run_id)).scalar_one()
        subflows = conn.execute(
            sa.select(flow_runs).where(flow_runs.c.parent_id == run_id).order_by(flow_runs.c.created)
        ).mappings().all()
        named = {x["run_id"] for x in lines} | {t for entry in ledger for t in entry.used_by}
        return RunView(
            flow_run=_flow_run(row, counts),
            task_total=total,
            start=first,
            end=last,
            lanes=lanes,
            buckets=buckets,
            bucket_seconds=width,
            task_page=[_task_run(t) for t in tasks],
            page=page,
            page_size=page_size,
            failures=[_task_run(t) for t in failures],
            failure_total=failure_total,
            resources=ledger,
            subflows=[_flow_run(s, {}) for s in subflows],
            logs=[_log(x) for x in lines],
            log_total=log_total,
            task_names=_names_of(conn, named - {run_id}),
        )

    return read(store.engine, work)


def task_run_view(store: Store, task_run_id: str) -> TaskRunView:
    """One task run: its state changes (attempts, waits), its logs and the resource copies it used."""

    def work(conn: sa.Connection) -> TaskRunView:
        row = conn.execute(sa.select(task_runs).where(task_runs.c.id == task_run_id)).mappings().first()
        if row is None:
            raise RunNotFound(f"No task run in the store {store.location.shown} has the id {task_run_id!r}.")
        if row["flow_run_id"] is None:
            raise RunNotFound(
                f"Task run {task_run_id!r} ran outside any flow (a task called on its own), so it has no flow "
                "run's page. Its states and logs are in the store: tether runs ls --json lists the flow runs only."
            )
        parent = conn.execute(sa.select(flow_runs).where(flow_runs.c.id == row["flow_run_id"])).mappings().first()
        if parent is None:
            raise RunNotFound(f"Task run {task_run_id!r} names flow run {row['flow_run_id']!r}, which is not stored.")
        changes = conn.execute(
            sa.select(state_changes).where(state_changes.c.run_id == task_run_id)
            .order_by(state_changes.c.timestamp, state_changes.c.id)
        ).mappings().all()
        lines = conn.execute(
            sa.select(logs).where(logs.c.flow_run_id == row["flow_run_id"], logs.c.run_id == task_run_id)
            .order_by(logs.c.id)
        ).mappings().all()
        ledger = store._ledger(conn, resources.c.flow_run_id == row["flow_run_id"])
        return TaskRunView(
            task=_task_run(row),
            flow_run=_flow_run(parent, {}),
            changes=[_change(c) for c in changes],
            logs=[_log(x) for x in lines],
            resources=[entry for entry in ledger if task_run_id in entry.used_by],
        )

    return read(store.engine, work)


def run_log_lines(store: Store, run_id: str, batch: int = 5000) -> Iterator[tuple[StoredLog, str]]:
    """Every log line of a flow run, oldest first, with the name of the run that logged it; read in batches."""
    names: dict[str, str] = {}
    after = 0
    while True:
        def work(conn: sa.Connection, after: int = after) -> list[Any]:
            rows = conn.execute(
                sa.select(logs).where(logs.c.flow_run_id == run_id, logs.c.id > after).order_by(logs.c.id).limit(batch)
            ).mappings().all()
            unknown = {r["run_id"] for r in rows} - names.keys()
            names.update(_names_of(conn, unknown))
            return list(rows)

        rows = read(store.engine, work)
        for r in rows:
            yield _log(r), names.get(r["run_id"], "")
        if len(rows) < batch:
            return
        after = rows[-1]["id"]


def limit_views(store: Store) -> list[LimitView]:
    """Each limit with the live holders of its slots and the live processes waiting for one."""
    return SlotTable(store.engine).limit_views()


def drop_limit(store: Store, tag: str) -> int | None:
    """Remove the limit on ``tag`` and free its slots: how many were held, or None if there was no such limit."""
    return SlotTable(store.engine).drop_limit(tag)


def deployment_views(store: Store, upcoming: int = 3, recent: int = 10) -> list[DeploymentView]:
    """Each deployment (from ``tether serve``) with its next times and its latest runs and skipped times."""
    found = DeploymentTable(store.engine).deployments()

    def work(conn: sa.Connection) -> list[DeploymentView]:
        views = []
        for d in found:
            mine = deployment_runs.c.deployment == d.name
            soon = conn.execute(
                sa.select(deployment_runs).where(mine, deployment_runs.c.status == "scheduled")
                .order_by(deployment_runs.c.scheduled_time).limit(upcoming)
            ).mappings().all()
            latest = conn.execute(
                sa.select(deployment_runs).where(mine, deployment_runs.c.status != "scheduled")
                .order_by(deployment_runs.c.scheduled_time.desc(), deployment_runs.c.id.desc()).limit(recent)
            ).mappings().all()
            views.append(DeploymentView(d, [_run(r) for r in soon], [_run(r) for r in latest]))
        return views

    return read(store.engine, work)


def set_deployment_paused(store: Store, name: str, paused: bool) -> None:
    """Pause or resume deployment ``name``, as ``tether deployments pause|resume`` does; a `LookupError` if
    there is no such deployment."""
    DeploymentTable(store.engine).set_paused(name, paused)


def change_token(store: Store) -> str:
    """A short text that changes whenever a run, a log, the ledger, a limit or an artifact changes; cheap
    to ask for (see `_changes.read_change_token`). To wait for it to change, use `Store.wait_for_change`."""
    return read_change_token(store.engine) + "-" + read(store.engine, _artifacts_token)


def _artifacts_token(conn: sa.Connection) -> str:
    """Artifacts are created and updated in place (a progress artifact's percentage): their count and
    newest update time move with either."""
    count, updated = conn.execute(sa.select(sa.func.count(), sa.func.max(artifacts.c.updated))).one()
    return f"{count}-{'' if updated is None else f'{updated:.6f}'}"


# -- pieces ------------------------------------------------------------------------------


def _span(row: Any, ledger: list[LedgerEntry], task_times: list[float], unfinished: bool,
          now: float | None) -> tuple[float, float]:
    """The earliest and latest time recorded for a flow run, its resource copies and the task run times given;
    ``now`` ends the span of a run, task run or copy that has not ended."""
    starts = [t for t in (row["created"], row["start_time"]) if t is not None]
    starts += [entry.created for entry in ledger] + task_times
    ends = [t for t in (row["end_time"],) if t is not None] + task_times
    ends += [t for entry in ledger for t in (entry.setup_at, entry.cleaned_at) if t is not None]
    if (row["end_time"] is None or unfinished or any(e.cleaned_at is None for e in ledger)) and now is not None:
        ends.append(now)
    start = min(starts)
    return start, max([start, *ends])


def _lanes(conn: sa.Connection, run_id: str, now: float | None) -> list[TaskLane]:
    tasks = conn.execute(
        sa.select(task_runs).where(task_runs.c.flow_run_id == run_id).order_by(task_runs.c.created, task_runs.c.id)
    ).mappings().all()
    changes: dict[str, list[Any]] = {}
    for c in conn.execute(
        sa.select(state_changes.c.run_id, state_changes.c.type, state_changes.c.name, state_changes.c.timestamp,
                  state_changes.c.run_count)
        .where(state_changes.c.flow_run_id == run_id, state_changes.c.kind == "task")
        .order_by(state_changes.c.timestamp, state_changes.c.id)
    ):
        changes.setdefault(c.run_id, []).append(c)
    return [TaskLane(_task_run(t), segments(t["created"], changes.get(t["id"], []), now)) for t in tasks]


def segments(created: float, changes: list[Any], now: float | None) -> list[Segment]:
    """A task run's stretches: Pending from its creation to its first change, then one per change.

    A final state is a stretch of no length at its time; the last stretch of a run that
    has not ended lasts until ``now`` (None: open).
    """
    stretches = [Segment("PENDING", "Pending", created, None, 0)]
    for c in changes:
        last = stretches[-1]
        stretches[-1] = Segment(last.state_type, last.state_name, last.start, c.timestamp, last.attempt)
        stretches.append(Segment(c.type, c.name, c.timestamp, None, c.run_count))
    last = stretches[-1]
    if last.state_type in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED"):
        stretches[-1] = Segment(last.state_type, last.state_name, last.start, last.start, last.attempt)
    elif now is not None:
        stretches[-1] = Segment(last.state_type, last.state_name, last.start, max(now, last.start), last.attempt)
    if len(stretches) > 1 and stretches[0].end == stretches[0].start:
        stretches.pop(0)  # created and started at once: no pending time to show
    return stretches


def _buckets(conn: sa.Connection, run_id: str, first: float, width: float) -> list[StartBucket]:
    began = sa.func.coalesce(task_runs.c.start_time, task_runs.c.created)
    offset = (began - first) / width
    # PostgreSQL's cast rounds, SQLite's truncates (and SQLite may lack floor()).
    whole = sa.func.floor(offset) if conn.dialect.name == "postgresql" else offset
    index = sa.cast(whole, sa.Integer).label("bucket")
    state = sa.func.coalesce(task_runs.c.state_type, "UNKNOWN").label("state")
    rows = conn.execute(
        sa.select(task_runs.c.name, index, state, sa.func.count())
        .where(task_runs.c.flow_run_id == run_id)
        .group_by(task_runs.c.name, index, state)
    ).all()
    return [StartBucket(name, min(max(int(b), 0), BUCKETS - 1), s, n) for name, b, s, n in rows]


def _names_of(conn: sa.Connection, run_ids: set[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    wanted = sorted(run_ids)
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        for table in (task_runs, flow_runs):
            shown = sa.func.coalesce(table.c.run_name, table.c.name)  # the run's own name where it has one
            names.update(conn.execute(sa.select(table.c.id, shown).where(table.c.id.in_(chunk))).all())
    return names


def _log(x: Any) -> StoredLog:
    return StoredLog(x["run_id"], x["level"], redact_text(x["message"]), x["timestamp"])


def _change(c: Any) -> StoredStateChange:
    return StoredStateChange(
        c["run_id"], c["kind"], c["type"], c["name"], _redacted(c["message"]), c["timestamp"], c["run_count"]
    )
