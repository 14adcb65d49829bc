"""From records (see `_encode`) to the rows that record them, with as little work as possible.

`Planner` folds records into rows cheaply, as tuples: a task run is inserted once,
with its final state, when it ends within `hold_seconds` of its creation (the
common case); a task run still going after that (or at a flush) is inserted as it
is and updated later. Every state change is a row of its own, as is every log
line and resource use. Flow runs and the resource ledger are few and always
written at once. Messages, log lines and errors lose their secrets here (`_redact`).

Planning does no I/O; `Batch.apply` writes one batch in one transaction. A row
inserted again takes what the new insert carries (`_upsert_task_runs`, `_insert_or_update`):
a writer killed between committing a batch and saying so in its spool leaves that batch
to be replayed by a planner that knows nothing of the rows already there, so its
inserts carry runs and ledger rows those rows hold in an earlier state.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tether._clock import Clock, SystemClock
from tether._core import FINAL_TYPES
from tether.store._encode import LOG, RESOURCE, RUN, RUN_1, STATE, Record, parameters_json
from tether.store._ledger import ProcessInfo
from tether.store._redact import redact_text
from tether.store._schema import flow_runs, resources

MAX_ERROR = 20_000
MAX_LOG = 65_536
HOLD_SECONDS = 1.0

ResourceKey = tuple[str, str, int]  # scope id, host, pid

TASK_COLUMNS = (
    "id", "flow_run_id", "name", "run_name", "parameters", "tags", "state_type", "state_name", "state_message",
    "error", "run_count", "created", "start_time", "end_time", "updated",
)  # fmt: skip
STATE_COLUMNS = ("run_id", "flow_run_id", "kind", "type", "name", "message", "timestamp", "run_count")
LOG_COLUMNS = ("run_id", "flow_run_id", "level", "message", "timestamp")
USE_COLUMNS = ("scope_id", "task_run_id", "timestamp")
# A task row is a list in TASK_COLUMNS order; where the items the planner changes are.
_TYPE, _NAME, _MESSAGE, _ERROR, _COUNT, _START, _END, _UPDATED = (
    TASK_COLUMNS.index(c)
    for c in ("state_type", "state_name", "state_message", "error", "run_count", "start_time", "end_time", "updated")
)
# An update of a task row already written: these values, then the start time, then the id.
_UPDATE_SET = ("state_type", "state_name", "state_message", "error", "run_count", "updated", "end_time")
_UPDATE_START = len(_UPDATE_SET)

# Where the items of each record are (the layouts are `_encode`'s). Read by index, not
# unpacked by position: a layout changes in one place.
_RUN_ITEMS = ("run_id", "kind", "name", "flow_run_id", "parent_id", "parameters", "tags", "timestamp")
_RUN_ID, _RUN_KIND, _RUN_NAME, _RUN_FLOW, _RUN_PARENT, _RUN_PARAMETERS, _RUN_TAGS, _RUN_TIME = (
    RUN.at(n) for n in _RUN_ITEMS
)
_RUN_RUN_NAME = RUN.at("run_name")
# An old spool's run records (`RUN_1`) are read with the same indices: they have no run_name.
if tuple(RUN_1.at(n) for n in _RUN_ITEMS) != tuple(RUN.at(n) for n in _RUN_ITEMS):
    raise RuntimeError(f"the old run layout {RUN_1.names} must be the start of the new one {RUN.names}")
_S_ID, _S_KIND, _S_FLOW, _S_TYPE, _S_NAME, _S_MESSAGE, _S_TIME, _S_COUNT, _S_ERROR = (
    STATE.at(n)
    for n in ("run_id", "kind", "flow_run_id", "type", "name", "message", "timestamp", "run_count", "error")
)
_LOG_ID, _LOG_FLOW, _LOG_LEVEL, _LOG_MESSAGE, _LOG_TIME = (
    LOG.at(n) for n in ("run_id", "flow_run_id", "level", "message", "timestamp")
)
_R_STEP, _R_SCOPE, _R_NAME, _R_FLOW, _R_TIME, _R_TASK, _R_ERROR, _R_OUTCOME = (
    RESOURCE.at(n) for n in ("step", "scope_id", "name", "flow_run_id", "timestamp", "task_run_id", "error", "outcome")
)
_R_HOST, _R_PID, _R_HANDLE, _R_REAPER, _R_REAPER_FILE, _R_SECONDS = (
    RESOURCE.at(n) for n in ("host", "pid", "handle", "reaper", "reaper_file", "seconds")
)
_FINAL = frozenset(t.value for t in FINAL_TYPES)
# An update applies unless it would take a run out of a final state: a process that saw the
# run's process die may have recorded it Crashed (`_crashed`) before a late write of its records.
_FINAL_LIST = ", ".join(f"'{t}'" for t in sorted(_FINAL))
_KEEPS_FINAL = f"({{now}} IS NULL OR {{now}} NOT IN ({_FINAL_LIST}) OR {{new}} IN ({_FINAL_LIST}))"


@dataclass
class Batch:
    """The rows of one write."""

    task_inserts: list[list[Any]] = field(default_factory=list)
    task_updates: list[list[Any]] = field(default_factory=list)
    states: list[tuple[Any, ...]] = field(default_factory=list)
    logs: list[tuple[Any, ...]] = field(default_factory=list)
    uses: list[tuple[Any, ...]] = field(default_factory=list)
    flow_inserts: dict[str, dict[str, Any]] = field(default_factory=dict)
    flow_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    resource_inserts: dict[ResourceKey, dict[str, Any]] = field(default_factory=dict)
    resource_updates: dict[ResourceKey, dict[str, Any]] = field(default_factory=dict)
    #: For heartbeats and messages: flow runs and ledger rows that opened or ended.
    flows_opened: dict[str, str] = field(default_factory=dict)
    flows_ended: set[str] = field(default_factory=set)
    scopes_opened: set[ResourceKey] = field(default_factory=set)
    scopes_ended: set[ResourceKey] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(
            self.task_inserts or self.task_updates or self.states or self.logs or self.uses or self.flow_inserts
            or self.flow_updates or self.resource_inserts or self.resource_updates
        )  # fmt: skip

    def apply(self, conn: sa.Connection) -> None:
        if self.flow_inserts:
            conn.execute(_insert_or_update(conn, flow_runs), list(self.flow_inserts.values()))
        if self.resource_inserts:
            conn.execute(_insert_or_update(conn, resources), list(self.resource_inserts.values()))
        if self.task_inserts:
            insert_rows(conn, "task_runs", TASK_COLUMNS, self.task_inserts, upsert=_upsert_task_runs(conn))
        if self.task_updates:
            mark = _mark(conn)
            assignments = ", ".join(f"{c} = {mark}" for c in _UPDATE_SET)
            conn.exec_driver_sql(
                f"UPDATE task_runs SET {assignments}, start_time = COALESCE(start_time, {mark}) WHERE id = {mark}"
                f" AND {_KEEPS_FINAL.format(now='state_type', new=mark)}",
                [(*r, r[0]) for r in self.task_updates],
            )
        if self.flow_updates:
            conn.execute(
                _flow_update(),
                [
                    {"b_id": run_id, "b_new_type": row.get("state_type"), **_bind(row)}
                    for run_id, row in self.flow_updates.items()
                ],
            )
        for keys, rows in _group_by_keys(self.resource_updates).items():
            statement = (
                sa.update(resources)
                .where(resources.c.scope_id == sa.bindparam("b_scope_id"))
                .where(resources.c.host == sa.bindparam("b_host"))
                .where(resources.c.pid == sa.bindparam("b_pid"))
                .values({k: sa.bindparam(f"b_{k}") for k in keys})
            )
            conn.execute(
                statement, [{"b_scope_id": s, "b_host": h, "b_pid": p, **_bind(row)} for (s, h, p), row in rows]
            )
        for table, columns, rows_list in (
            ("state_changes", STATE_COLUMNS, self.states),
            ("logs", LOG_COLUMNS, self.logs),
            ("resource_uses", USE_COLUMNS, self.uses),
        ):
            if rows_list:
                insert_rows(conn, table, columns, rows_list)

    @property
    def size(self) -> int:
        """How many rows this batch writes or changes."""
        return (
            len(self.task_inserts) + len(self.task_updates) + len(self.states) + len(self.logs) + len(self.uses)
            + len(self.flow_inserts) + len(self.flow_updates) + len(self.resource_inserts) + len(self.resource_updates)
        )  # fmt: skip

    def flow_run_names(self) -> dict[str, str]:
        names = {run_id: row["name"] for run_id, row in self.flow_inserts.items()}
        names.update(self.flows_opened)
        return names


class Planner:
    """Folds records into the rows of the next `Batch`; keeps young unfinished task runs back."""

    def __init__(self, process: ProcessInfo, hold_seconds: float = HOLD_SECONDS, clock: Clock | None = None) -> None:
        self.process = process
        self.hold_seconds = hold_seconds
        clock = clock or SystemClock()
        # Asked once per task run created: the real clock's function itself, not a method around it.
        self._now = time.monotonic if type(clock) is SystemClock else clock.monotonic
        self._batch = Batch()
        #: Task rows not written yet, oldest first, with when they were created (by the clock's monotonic time).
        self._held: OrderedDict[str, tuple[float, list[Any]]] = OrderedDict()
        #: Task runs written before they ended: their changes are updates, folded per batch.
        self._written: set[str] = set()
        self._updates: dict[str, list[Any]] = {}

    @property
    def held(self) -> int:
        return len(self._held)

    def add(self, records: Iterable[Record]) -> None:
        batch = self._batch
        for record in records:
            what = record[0]
            if what == "state":
                if record[_S_KIND] == "task":
                    self._task_state(record)
                else:
                    self._flow_state(record)
            elif what == "run2" or what == "run":  # "run": an old spool's record (`RUN_1`), no run_name
                run_name = record[_RUN_RUN_NAME] if what == "run2" else None
                if record[_RUN_KIND] == "task":
                    self._task_created(record, run_name)
                else:
                    self._flow_created(record, run_name)
            elif what == "log":
                message = redact_text(record[_LOG_MESSAGE])  # quick when the line names no secret
                if len(message) > MAX_LOG:
                    message = _clip(message, MAX_LOG)
                batch.logs.append((record[_LOG_ID], record[_LOG_FLOW], record[_LOG_LEVEL], message, record[_LOG_TIME]))
            elif what == "resource":
                self._resource(record)

    def take(self, everything: bool = False) -> Batch:
        """The rows to write now: all that is due, and with ``everything`` the held task runs too."""
        batch, self._batch = self._batch, Batch()
        held = self._held
        if held:
            limit = float("inf") if everything else self._now() - self.hold_seconds
            while held:
                run_id, (created, row) = next(iter(held.items()))
                if created > limit:
                    break
                del held[run_id]
                batch.task_inserts.append(row)
                self._written.add(run_id)
        if self._updates:
            batch.task_updates.extend(self._updates.values())
            self._updates = {}
        return batch

    # -- task runs -------------------------------------------------------------------

    def _task_created(self, record: Record, run_name: str | None) -> None:
        run_id, created = record[_RUN_ID], record[_RUN_TIME]
        if run_id in self._held or run_id in self._written:
            return
        # In TASK_COLUMNS order; run_name is NULL where the run has no name of its own.
        row = [
            run_id, record[_RUN_FLOW], record[_RUN_NAME], run_name, parameters_json(record[_RUN_PARAMETERS]),
            record[_RUN_TAGS],
            "PENDING", "Pending", None, None, 0, created, None, None, created,
        ]  # fmt: skip
        self._held[run_id] = (self._now(), row)

    def _task_state(self, record: Record) -> None:
        run_id, type_, name, message = record[_S_ID], record[_S_TYPE], record[_S_NAME], record[_S_MESSAGE]
        timestamp, run_count, error = record[_S_TIME], record[_S_COUNT], record[_S_ERROR]
        if message is not None:
            message = _message(message)
        self._batch.states.append((run_id, record[_S_FLOW], "task", type_, name, message, timestamp, run_count))
        final = type_ in _FINAL
        if error is not None:
            error = _message(error)
        entry = self._held.get(run_id)
        if entry is not None:
            row = entry[1]
            row[_TYPE], row[_NAME], row[_MESSAGE], row[_COUNT], row[_UPDATED] = (
                type_,
                name,
                message,
                run_count,
                timestamp,
            )
            if type_ == "RUNNING" and row[_START] is None:
                row[_START] = timestamp
            if final:
                row[_END], row[_ERROR] = timestamp, error
                del self._held[run_id]
                self._batch.task_inserts.append(row)
            return
        start = timestamp if type_ == "RUNNING" else None
        update = self._updates.get(run_id)
        if update is not None and update[_UPDATE_START] is not None:
            start = update[_UPDATE_START]
        end = timestamp if final else None
        self._updates[run_id] = [type_, name, message, error, run_count, timestamp, end, start, run_id]
        if final:
            self._written.discard(run_id)

    # -- flow runs -------------------------------------------------------------------

    def _flow_created(self, record: Record, run_name: str | None) -> None:
        run_id, name, created = record[_RUN_ID], record[_RUN_NAME], record[_RUN_TIME]
        self._batch.flow_inserts[run_id] = {
            "id": run_id,
            "name": name,
            "run_name": run_name,
            "parent_id": record[_RUN_PARENT],
            "parameters": parameters_json(record[_RUN_PARAMETERS]),
            "tags": record[_RUN_TAGS],
            "state_type": "PENDING",
            "state_name": "Pending",
            "state_message": None,
            "error": None,
            "run_count": 0,
            "created": created,
            "start_time": None,
            "end_time": None,
            "updated": created,
            "pid": self.process.pid,
            "host": self.process.host,
            "heartbeat": created,
        }
        self._batch.flows_opened[run_id] = name

    def _flow_state(self, record: Record) -> None:
        run_id, type_, timestamp, error = record[_S_ID], record[_S_TYPE], record[_S_TIME], record[_S_ERROR]
        name, message, run_count = record[_S_NAME], record[_S_MESSAGE], record[_S_COUNT]
        batch = self._batch
        message = _message(message) if message else None
        batch.states.append((run_id, record[_S_FLOW], record[_S_KIND], type_, name, message, timestamp, run_count))
        row = batch.flow_inserts.get(run_id)
        if row is None:
            row = batch.flow_updates.setdefault(run_id, {"start_time": None})
        final = type_ in _FINAL
        row.update(
            state_type=type_,
            state_name=name,
            state_message=message,
            run_count=run_count,
            updated=timestamp,
            end_time=timestamp if final else None,
            error=_message(error) if error else None,
        )
        if type_ == "RUNNING" and row.get("start_time") is None:
            row["start_time"] = timestamp
        if final:
            batch.flows_ended.add(run_id)

    # -- the ledger ------------------------------------------------------------------

    def _resource(self, record: Record) -> None:
        step, scope_id, timestamp, task_run_id = record[_R_STEP], record[_R_SCOPE], record[_R_TIME], record[_R_TASK]
        host, pid, handle, error = record[_R_HOST], record[_R_PID], record[_R_HANDLE], record[_R_ERROR]
        batch = self._batch
        key: ResourceKey = (scope_id, host, pid)
        if step == "used":
            if task_run_id is not None:
                batch.uses.append((scope_id, task_run_id, timestamp))
            return
        if step == "setup-started":
            batch.resource_inserts[key] = {
                "scope_id": scope_id,
                "name": record[_R_NAME],
                "flow_run_id": record[_R_FLOW],
                "host": host,
                "pid": pid,
                "pid_started": self.process.started if pid == self.process.pid and host == self.process.host else None,
                "created": timestamp,
                "setup_outcome": None,
                "setup_error": None,
                "setup_at": None,
                # Not redacted: the reaper needs the handle as setup remembered it (the CLI hides passwords).
                "handle": handle,
                "reaper": record[_R_REAPER],
                "reaper_file": record[_R_REAPER_FILE],
                "scope_outcome": None,
                "cleanup_outcome": None,
                "cleanup_error": None,
                "cleanup_seconds": None,
                "cleaned_at": None,
                "heartbeat": timestamp,
            }
            batch.scopes_opened.add(key)
            return
        changes: dict[str, Any]
        if step == "handle":
            changes = {"handle": handle}
        elif step == "setup":
            changes = {"setup_outcome": "succeeded", "setup_at": timestamp}
            if handle is not None:
                changes["handle"] = handle
        elif step == "setup-failed":
            changes = {"setup_outcome": "failed", "setup_error": _message(error or ""), "setup_at": timestamp}
            batch.scopes_ended.add(key)
        elif step in ("cleanup", "cleanup-failed"):
            changes = {
                "scope_outcome": record[_R_OUTCOME],
                "cleanup_outcome": "succeeded" if step == "cleanup" else "failed",
                "cleanup_error": _message(error) if error else None,
                "cleanup_seconds": record[_R_SECONDS],
                "cleaned_at": timestamp,
            }
            batch.scopes_ended.add(key)
        else:
            return
        row = batch.resource_inserts.get(key)
        if row is None:
            row = batch.resource_updates.setdefault(key, {})
        row.update(changes)


def _message(text: str) -> str:
    return _clip(redact_text(text), MAX_ERROR)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n...(truncated)"


def _mark(conn: sa.Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


#: Rows per INSERT statement on SQLite (under its limit of 32766 parameters).
SQLITE_ROWS_PER_INSERT = 500


def insert_rows(
    conn: sa.Connection, table: str, columns: tuple[str, ...], rows: Sequence[Sequence[Any]], upsert: str = ""
) -> None:
    """Insert ``rows`` (in ``columns`` order) with as few round trips as the driver allows;
    ``upsert`` ends each statement (what a row already there becomes).

    On SQLite, many rows go in one multi-row INSERT: ``executemany`` would release and
    retake the GIL once per row, and each retake can wait for the engine's threads.
    """
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql(_insert_sql(conn, table, columns, 1, upsert), [tuple(r) for r in rows])
        return
    start = 0
    while start < len(rows):
        count = _rows_per_statement(len(rows) - start)
        chunk = rows[start : start + count]
        conn.exec_driver_sql(
            _insert_sql(conn, table, columns, count, upsert), tuple(itertools.chain.from_iterable(chunk))
        )
        start += count


def _rows_per_statement(left: int) -> int:
    """`SQLITE_ROWS_PER_INSERT`, or the largest power of two up to ``left``: so there are few
    different statements. Each is prepared once and kept by the connection (a statement of
    500 rows is a few hundred kB): one for every row count would keep tens of MB."""
    if left >= SQLITE_ROWS_PER_INSERT:
        return SQLITE_ROWS_PER_INSERT
    return 1 << (left.bit_length() - 1)


def _insert_sql(conn: sa.Connection, table: str, columns: tuple[str, ...], count: int, upsert: str = "") -> str:
    one = "(" + ", ".join([_mark(conn)] * len(columns)) + ")"
    marks = ", ".join([one] * count)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {marks}{upsert}"


#: A task run inserted again takes the state the insert carries, unless that would take it out of
#: a final state (as `_KEEPS_FINAL` says of updates); it keeps the start time it had.
_TASK_UPSERT = (
    " ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _UPDATE_SET)
    + ", start_time = COALESCE(task_runs.start_time, excluded.start_time) WHERE "
    + _KEEPS_FINAL.format(now="task_runs.state_type", new="excluded.state_type")
)


def _upsert_task_runs(conn: sa.Connection) -> str:
    if conn.dialect.name in ("sqlite", "postgresql"):
        return _TASK_UPSERT
    # MySQL and MariaDB (not run stores tether supports) have no ON CONFLICT: the row is left as it was.
    return " ON DUPLICATE KEY UPDATE id = id" if conn.dialect.name in ("mysql", "mariadb") else ""


_FLOW_STATE_COLUMNS = ("state_type", "state_name", "state_message", "error", "run_count", "updated", "end_time")

#: What a ledger row inserted again takes from the insert: each step it records (a step the row
#: holds already, such as a reaper's, stays where the insert has none).
_LEDGER_STEP_COLUMNS = (
    "handle", "setup_outcome", "setup_error", "setup_at", "scope_outcome", "cleanup_outcome", "cleanup_error",
    "cleanup_seconds", "cleaned_at",
)  # fmt: skip


def _insert_or_update(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT of flow runs or ledger rows; a row already there takes what the insert carries."""
    dialect = conn.dialect.name
    if dialect in ("mysql", "mariadb"):
        return table.insert().prefix_with("IGNORE")
    if dialect not in ("sqlite", "postgresql"):
        return table.insert()
    insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)
    new = insert.excluded
    if table is flow_runs:
        set_: dict[str, Any] = {c: new[c] for c in _FLOW_STATE_COLUMNS}
        set_["start_time"] = sa.func.coalesce(table.c.start_time, new.start_time)
        where = _keeps_final(table.c.state_type, new.state_type)
        return insert.on_conflict_do_update(index_elements=[table.c.id], set_=set_, where=where)
    set_ = {c: sa.func.coalesce(new[c], table.c[c]) for c in _LEDGER_STEP_COLUMNS}
    return insert.on_conflict_do_update(index_elements=[table.c.scope_id, table.c.host, table.c.pid], set_=set_)


def _flow_update() -> Any:
    values: dict[str, Any] = {c: sa.bindparam(f"b_{c}") for c in _FLOW_STATE_COLUMNS}
    values["start_time"] = sa.func.coalesce(flow_runs.c.start_time, sa.bindparam("b_start_time"))
    keeps_final = _keeps_final(flow_runs.c.state_type, sa.bindparam("b_new_type"))
    return sa.update(flow_runs).where(flow_runs.c.id == sa.bindparam("b_id")).where(keeps_final).values(values)


def _keeps_final(now: Any, new: Any) -> Any:
    """`_KEEPS_FINAL` as an expression: the final types are in the SQL, the same for every row."""
    finals: list[Any] = [sa.literal_column(f"'{t}'") for t in sorted(_FINAL)]
    return sa.or_(now.is_(None), now.not_in(finals), new.in_(finals))


def _bind(row: dict[str, Any]) -> dict[str, Any]:
    return {f"b_{k}": v for k, v in row.items()}


def _group_by_keys(
    updates: dict[ResourceKey, dict[str, Any]],
) -> dict[tuple[str, ...], list[tuple[ResourceKey, dict[str, Any]]]]:
    groups: dict[tuple[str, ...], list[tuple[ResourceKey, dict[str, Any]]]] = {}
    for key, row in updates.items():
        groups.setdefault(tuple(sorted(row)), []).append((key, row))
    return groups
