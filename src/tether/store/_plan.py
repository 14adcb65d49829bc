"""From engine events to the rows that record them, with as little work as possible.

Recording must not slow a flow down, and on a busy flow the writer's Python time
is taken from the engine (they share the GIL). So `Planner` folds events into
rows cheaply, as tuples: a task run is inserted once, with its final state, when
it ends within `hold_seconds` of its creation (the common case); a task run
still going after that (or at a flush) is inserted as it is and updated later.
Every state change is a row of its own, as is every log line and resource use.
Flow runs and the resource ledger are few and always written at once.

Planning does no I/O; `Batch.apply` writes one batch in one transaction.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import sys
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _json_string  # type: ignore[attr-defined]
from types import TracebackType
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tether._core import FINAL_TYPES, LogEmitted, ResourceEvent, RunCreated, State, StateChanged, StateType
from tether.store._redact import is_secret_name, redact_parameters, redact_text, to_json
from tether.store._schema import flow_runs, resources

MAX_ERROR = 20_000
MAX_LOG = 65_536
HOLD_SECONDS = 1.0

ResourceKey = tuple[str, str, int]  # scope id, host, pid

TASK_COLUMNS = (
    "id", "flow_run_id", "name", "parameters", "tags", "state_type", "state_name", "state_message",
    "error", "run_count", "created", "start_time", "end_time", "updated",
)  # fmt: skip
STATE_COLUMNS = ("run_id", "flow_run_id", "kind", "type", "name", "message", "timestamp", "run_count")
LOG_COLUMNS = ("run_id", "flow_run_id", "level", "message", "timestamp")
USE_COLUMNS = ("scope_id", "task_run_id", "timestamp")
# A task row is a list in TASK_COLUMNS order; these are the indexes the planner changes.
_TYPE, _NAME, _MESSAGE, _ERROR, _COUNT, _START, _END, _UPDATED = 5, 6, 7, 8, 9, 11, 12, 13
# An update of a task row already written: these values, then the id.
_UPDATE_SET = ("state_type", "state_name", "state_message", "error", "run_count", "updated", "end_time")
_FINAL = frozenset(t.value for t in FINAL_TYPES)
_TYPE_VALUE = {t: t.value for t in StateType}  # a dict lookup is several times quicker than Enum.value


@dataclass(frozen=True)
class ProcessInfo:
    """The process whose events these are."""

    pid: int
    host: str
    started: str | None

    @classmethod
    def current(cls) -> ProcessInfo:
        return cls(os.getpid(), socket.gethostname(), process_started(os.getpid()))


def process_started(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


class WithTraceback(NamedTuple):
    """A state change to a failure, with the traceback its error had then.

    An exception's traceback grows as it propagates (a task's error re-raised in the
    flow body gains the flow's frames), so the recorder takes it when the event happens.
    """

    event: StateChanged
    traceback: TracebackType | None


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
            conn.execute(_insert_new(conn, flow_runs), list(self.flow_inserts.values()))
        if self.resource_inserts:
            conn.execute(_insert_new(conn, resources), list(self.resource_inserts.values()))
        if self.task_inserts:
            insert_rows(conn, "task_runs", TASK_COLUMNS, self.task_inserts, ignore=True)
        if self.task_updates:
            mark = _mark(conn)
            assignments = ", ".join(f"{c} = {mark}" for c in _UPDATE_SET)
            conn.exec_driver_sql(
                f"UPDATE task_runs SET {assignments}, start_time = COALESCE(start_time, {mark}) WHERE id = {mark}",
                [tuple(r) for r in self.task_updates],
            )
        if self.flow_updates:
            conn.execute(_flow_update(), [{"b_id": run_id, **_bind(row)} for run_id, row in self.flow_updates.items()])
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
    """Folds events into the rows of the next `Batch`; keeps young unfinished task runs back."""

    def __init__(
        self, process: ProcessInfo, hold_seconds: float = HOLD_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.process = process
        self.hold_seconds = hold_seconds
        self.clock = clock
        self._batch = Batch()
        #: Task rows not written yet, oldest first, with when they were created (by `clock`).
        self._held: OrderedDict[str, tuple[float, list[Any]]] = OrderedDict()
        #: Task runs written before they ended: their changes are updates, folded per batch.
        self._written: set[str] = set()
        self._updates: dict[str, list[Any]] = {}
        self._secret_keys: dict[str, bool] = {}

    @property
    def held(self) -> int:
        return len(self._held)

    def add(self, events: Iterable[Any]) -> None:
        batch = self._batch
        for event in events:
            kind = type(event)
            if kind is StateChanged:
                if event.kind == "task":
                    self._task_state(event, None)
                else:
                    self._flow_state(event, None)
            elif kind is WithTraceback:
                if event.event.kind == "task":
                    self._task_state(event.event, event.traceback)
                else:
                    self._flow_state(event.event, event.traceback)
            elif kind is LogEmitted:
                message = event.message if type(event.message) is str else str(event.message)
                if "://" in message:
                    message = redact_text(message)
                if len(message) > MAX_LOG:
                    message = _clip(message, MAX_LOG)
                batch.logs.append((event.run_id, event.flow_run_id, event.level, message, event.timestamp))
            elif kind is RunCreated:
                if event.kind == "task":
                    self._task_created(event)
                else:
                    self._flow_created(event)
            elif kind is ResourceEvent:
                self._resource_event(event)

    def take(self, everything: bool = False) -> Batch:
        """The rows to write now: all that is due, and with ``everything`` the held task runs too."""
        batch, self._batch = self._batch, Batch()
        held = self._held
        if held:
            limit = float("inf") if everything else self.clock() - self.hold_seconds
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

    def _task_created(self, event: RunCreated) -> None:
        if event.run_id in self._held or event.run_id in self._written:
            return
        created = event.timestamp
        row = [
            event.run_id, event.flow_run_id, event.name, self._parameters(event.parameters),
            json.dumps(sorted(event.tags)) if event.tags else "[]",
            "PENDING", "Pending", None, None, 0, created, None, None, created,
        ]  # fmt: skip
        self._held[event.run_id] = (self.clock(), row)

    def _task_state(self, event: StateChanged, tb: TracebackType | None) -> None:
        state = event.new
        type_ = _TYPE_VALUE[state.type]
        message = state.message
        if message is not None:
            message = _message(message)
        timestamp = state.timestamp
        self._batch.states.append(
            (event.run_id, event.flow_run_id, "task", type_, state.name, message, timestamp, event.run_count)
        )
        final = type_ in _FINAL
        error = error_text(state, tb) if final and type_ != "COMPLETED" else None
        entry = self._held.get(event.run_id)
        if entry is not None:
            row = entry[1]
            row[_TYPE], row[_NAME], row[_MESSAGE], row[_COUNT], row[_UPDATED] = (
                type_,
                state.name,
                message,
                event.run_count,
                timestamp,
            )
            if type_ == "RUNNING" and row[_START] is None:
                row[_START] = timestamp
            if final:
                row[_END], row[_ERROR] = timestamp, error
                del self._held[event.run_id]
                self._batch.task_inserts.append(row)
            return
        start = timestamp if type_ == "RUNNING" else None
        update = self._updates.get(event.run_id)
        if update is not None and update[7] is not None:
            start = update[7]
        self._updates[event.run_id] = [
            type_,
            state.name,
            message,
            error,
            event.run_count,
            timestamp,
            timestamp if final else None,
            start,
            event.run_id,
        ]
        if final:
            self._written.discard(event.run_id)

    def _parameters(self, parameters: dict[str, Any]) -> str:
        """The parameters as stored: JSON, secrets redacted. Plain ints and short strings take a quick path."""
        if not parameters:
            return "{}"
        secret = self._secret_keys
        parts = []
        for key, value in parameters.items():
            is_secret = secret.get(key)
            if is_secret is None:
                is_secret = secret[key] = is_secret_name(key) or type(key) is not str
            kind = type(value)
            if is_secret:
                break
            if kind is int:
                parts.append(f"{_json_string(key)}: {int.__repr__(value)}")
            elif kind is str and len(value) < 1000 and "://" not in value:
                parts.append(f"{_json_string(key)}: {_json_string(value)}")
            else:
                break
        else:
            return "{" + ", ".join(parts) + "}"
        return json.dumps(redact_parameters(parameters))

    # -- flow runs -------------------------------------------------------------------

    def _flow_created(self, event: RunCreated) -> None:
        self._batch.flow_inserts[event.run_id] = {
            "id": event.run_id,
            "name": event.name,
            "parent_id": event.parent_id,
            "parameters": json.dumps(redact_parameters(event.parameters)),
            "tags": json.dumps(sorted(event.tags)),
            "state_type": StateType.PENDING.value,
            "state_name": "Pending",
            "state_message": None,
            "error": None,
            "run_count": 0,
            "created": event.timestamp,
            "start_time": None,
            "end_time": None,
            "updated": event.timestamp,
            "pid": self.process.pid,
            "host": self.process.host,
            "heartbeat": event.timestamp,
        }
        self._batch.flows_opened[event.run_id] = event.name

    def _flow_state(self, event: StateChanged, tb: TracebackType | None) -> None:
        batch = self._batch
        state = event.new
        message = _message(state.message) if state.message else None
        batch.states.append(
            (
                event.run_id,
                event.flow_run_id,
                event.kind,
                state.type.value,
                state.name,
                message,
                state.timestamp,
                event.run_count,
            )
        )
        row = batch.flow_inserts.get(event.run_id)
        if row is None:
            row = batch.flow_updates.setdefault(event.run_id, {"start_time": None})
        final = state.type in FINAL_TYPES
        row.update(
            state_type=state.type.value,
            state_name=state.name,
            state_message=message,
            run_count=event.run_count,
            updated=state.timestamp,
            end_time=state.timestamp if final else None,
            error=error_text(state, tb) if final else None,
        )
        if state.type is StateType.RUNNING and row.get("start_time") is None:
            row["start_time"] = state.timestamp
        if final:
            batch.flows_ended.add(event.run_id)

    # -- the ledger ------------------------------------------------------------------

    def _resource_event(self, event: ResourceEvent) -> None:
        batch = self._batch
        process = self.process
        host = event.worker or process.host
        pid = event.pid if event.pid is not None else process.pid
        key: ResourceKey = (event.scope_id, host, pid)
        step = event.step
        if step == "used":
            if event.task_run_id is not None:
                batch.uses.append((event.scope_id, event.task_run_id, event.timestamp))
            return
        if step == "setup-started":
            batch.resource_inserts[key] = {
                "scope_id": event.scope_id,
                "name": event.name,
                "flow_run_id": event.flow_run_id,
                "host": host,
                "pid": pid,
                "pid_started": process.started if pid == process.pid else None,
                "created": event.timestamp,
                "setup_outcome": None,
                "setup_error": None,
                "setup_at": None,
                "handle": _handle(event.handle),
                "reaper": event.reaper,
                "reaper_file": reaper_file(event.reaper),
                "scope_outcome": None,
                "cleanup_outcome": None,
                "cleanup_error": None,
                "cleanup_seconds": None,
                "cleaned_at": None,
                "heartbeat": event.timestamp,
            }
            batch.scopes_opened.add(key)
            return
        changes: dict[str, Any]
        if step == "handle":
            changes = {"handle": _handle(event.handle)}
        elif step == "setup":
            changes = {"setup_outcome": "succeeded", "setup_at": event.timestamp}
            if event.handle is not None:
                changes["handle"] = _handle(event.handle)
        elif step == "setup-failed":
            changes = {
                "setup_outcome": "failed",
                "setup_error": _message(event.error or ""),
                "setup_at": event.timestamp,
            }
            batch.scopes_ended.add(key)
        elif step in ("cleanup", "cleanup-failed"):
            seconds = event.details.get("seconds")
            changes = {
                "scope_outcome": event.outcome,
                "cleanup_outcome": "succeeded" if step == "cleanup" else "failed",
                "cleanup_error": _message(event.error) if event.error else None,
                "cleanup_seconds": float(seconds) if isinstance(seconds, (int, float)) else None,
                "cleaned_at": event.timestamp,
            }
            batch.scopes_ended.add(key)
        else:
            return
        row = batch.resource_inserts.get(key)
        if row is None:
            row = batch.resource_updates.setdefault(key, {})
        row.update(changes)


def error_text(state: State, tb: TracebackType | None = None) -> str | None:
    """The traceback (or message) of a run that did not complete; None for a completed one.

    ``tb`` is the error's traceback as it was when the state changed (see `WithTraceback`).
    """
    if state.type is StateType.COMPLETED:
        return None
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        return _message(state.message) if state.message else None
    try:
        text = "".join(traceback.format_exception(type(error), error, tb if tb is not None else error.__traceback__))
    except Exception:  # noqa: BLE001 - a broken exception must not stop recording
        text = f"{type(error).__name__}: {state.message or ''}"
    return _message(text)


def reaper_file(reaper: str | None) -> str | None:
    """The file of the reaper's module, so `tether reap` can load a reaper defined in a script."""
    if not reaper or ":" not in reaper:
        return None
    module = sys.modules.get(reaper.split(":", 1)[0])
    path = getattr(module, "__file__", None)
    return os.path.abspath(path) if path else None


def _handle(handle: Any) -> str | None:
    # Not redacted: the reaper needs it as setup remembered it. The CLI hides URL passwords when showing it.
    return None if handle is None else json.dumps(to_json(handle, redact=False))


def _message(text: str) -> str:
    return _clip(redact_text(text), MAX_ERROR)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n...(truncated)"


def _mark(conn: sa.Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


#: Rows per INSERT statement on SQLite (under its limit of 32766 parameters).
SQLITE_ROWS_PER_INSERT = 500


def insert_rows(
    conn: sa.Connection, table: str, columns: tuple[str, ...], rows: Sequence[Sequence[Any]], ignore: bool = False
) -> None:
    """Insert ``rows`` (in ``columns`` order) with as few round trips as the driver allows.

    On SQLite, many rows go in one multi-row INSERT: ``executemany`` would release and
    retake the GIL once per row, and each retake can wait for the engine's threads.
    """
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql(_insert_sql(conn, table, columns, 1, ignore), [tuple(r) for r in rows])
        return
    step = SQLITE_ROWS_PER_INSERT
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        conn.exec_driver_sql(
            _insert_sql(conn, table, columns, len(chunk), ignore), tuple(itertools.chain.from_iterable(chunk))
        )


def _insert_sql(conn: sa.Connection, table: str, columns: tuple[str, ...], count: int, ignore: bool = False) -> str:
    one = "(" + ", ".join([_mark(conn)] * len(columns)) + ")"
    marks = ", ".join([one] * count)
    head, tail = "INSERT INTO", ""
    if ignore:
        dialect = conn.dialect.name
        if dialect == "sqlite":
            head = "INSERT OR IGNORE INTO"
        elif dialect == "postgresql":
            tail = " ON CONFLICT DO NOTHING"
        elif dialect in ("mysql", "mariadb"):
            head = "INSERT IGNORE INTO"
    return f"{head} {table} ({', '.join(columns)}) VALUES {marks}{tail}"


def _insert_new(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT that skips rows already there (a run recorded twice must not fail the batch)."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect in ("mysql", "mariadb"):
        return table.insert().prefix_with("IGNORE")
    return table.insert()


_FLOW_STATE_COLUMNS = ("state_type", "state_name", "state_message", "error", "run_count", "updated", "end_time")


def _flow_update() -> Any:
    values: dict[str, Any] = {c: sa.bindparam(f"b_{c}") for c in _FLOW_STATE_COLUMNS}
    values["start_time"] = sa.func.coalesce(flow_runs.c.start_time, sa.bindparam("b_start_time"))
    return sa.update(flow_runs).where(flow_runs.c.id == sa.bindparam("b_id")).values(values)


def _bind(row: dict[str, Any]) -> dict[str, Any]:
    return {f"b_{k}": v for k, v in row.items()}


def _group_by_keys(
    updates: dict[ResourceKey, dict[str, Any]],
) -> dict[tuple[str, ...], list[tuple[ResourceKey, dict[str, Any]]]]:
    groups: dict[tuple[str, ...], list[tuple[ResourceKey, dict[str, Any]]]] = {}
    for key, row in updates.items():
        groups.setdefault(tuple(sorted(row)), []).append((key, row))
    return groups
