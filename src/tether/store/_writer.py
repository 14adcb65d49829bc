"""`StoreRecorder`: the engine's events, written to the store by a thread of its own.

On the engine's hot path `record` only appends to a queue. The writer thread
waits a few milliseconds for a burst to gather, then writes it as one batch
(see `_plan`) in one transaction. Two kinds of event are waited for: a resource's
``setup-started``, ``handle`` and cleanup steps are committed before `record`
returns, so the ledger holds the intent before setup acts and a killed
process leaves a true record. While this process has open resources or flow
runs, the writer also refreshes their heartbeat.

If the store fails (disk full, server gone), the writer says so once, loudly,
naming what is not recorded, and drops events from then on: a flow never fails
or waits because of its record.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any

import sqlalchemy as sa

from tether._core import Event, ResourceEvent, StateChanged
from tether.store._engine import write
from tether.store._location import StoreLocation
from tether.store._plan import Batch, Planner, ProcessInfo, ResourceKey, WithTraceback
from tether.store._redact import redact_text
from tether.store._schema import flow_runs, resources

log = logging.getLogger("tether.store")

#: Resource steps committed before `record` returns: the ledger must not lag behind the act.
DURABLE_STEPS = frozenset({"setup-started", "handle", "cleanup", "cleanup-failed"})
DURABLE_TIMEOUT = 10.0


def heartbeat_seconds() -> float:
    raw = os.environ.get("TETHER_HEARTBEAT_SECONDS", "")
    try:
        return max(float(raw), 0.05) if raw else 10.0
    except ValueError:
        return 10.0


class StoreRecorder:
    """A `Recorder` that writes every event to the store, in batches, from a background thread."""

    def __init__(
        self,
        engine: sa.Engine,
        location: StoreLocation,
        batch_size: int = 1000,
        window_seconds: float = 0.005,
        heartbeat_every: float | None = None,
    ) -> None:
        self.location = location
        self.dropped = 0
        #: The warning given when the store failed, or None while it works.
        self.failure: str | None = None
        self._engine = engine
        self._batch_size = batch_size
        self._window = window_seconds
        self._heartbeat_every = heartbeat_every if heartbeat_every is not None else heartbeat_seconds()
        self._next_heartbeat = time.monotonic() + self._heartbeat_every
        self._process = ProcessInfo.current()
        self._planner = Planner(self._process)
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._idle = False
        self._accepting = True
        self._stopping = False
        self._open_flows: dict[str, str] = {}
        self._open_scopes: set[ResourceKey] = set()
        self._thread = threading.Thread(target=self._run, name="tether-store-writer", daemon=True)
        self._thread.start()

    # -- the engine's side ---------------------------------------------------------------

    def record(self, event: Event) -> None:
        if not self._accepting:
            self.dropped += 1
            return
        queue = self._queue
        if type(event) is StateChanged and isinstance(event.new.data, BaseException):
            queue.append(WithTraceback(event, event.new.data.__traceback__))
        else:
            queue.append(event)
        if self._idle or len(queue) >= self._batch_size:
            self._wake.set()
        if type(event) is ResourceEvent and event.step in DURABLE_STEPS:
            self.flush(DURABLE_TIMEOUT)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event recorded so far is written (or dropped); False on timeout."""
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return not self._queue
        marker = threading.Event()
        self._queue.append(marker)
        self._wake.set()
        return marker.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then stop the writer thread. Later events are dropped."""
        self._stopping = True
        self.flush(timeout)
        self._accepting = False
        self._wake.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._accepting and self._thread.is_alive()

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug in the writer: stop recording, but never leave a flush waiting
            self._give_up(exc, len(self._queue), None)
            self._stopping = True
            while self._queue:
                item = self._queue.popleft()
                if type(item) is threading.Event:
                    item.set()

    def _loop(self) -> None:
        queue = self._queue
        planner = self._planner
        while True:
            if not queue:
                if self._stopping:
                    return
                self._idle = True
                if not queue:  # checked after announcing idleness, so a record() in between wakes us
                    self._wake.wait(self._until_due())
                self._idle = False
                self._wake.clear()
                if not queue:
                    self._write(planner.take())
                    self._heartbeat_if_due()
                continue
            if len(queue) < self._batch_size and type(queue[-1]) is not threading.Event and not self._stopping:
                self._wake.wait(self._window)  # let the burst gather into one batch
                self._wake.clear()
            events: list[Any] = []
            markers: list[threading.Event] = []
            while queue and len(events) < 5 * self._batch_size:
                item = queue.popleft()
                if type(item) is threading.Event:
                    markers.append(item)
                else:
                    events.append(item)
            if self.failure is None:
                try:
                    planner.add(events)
                except Exception as exc:  # noqa: BLE001 - a bug here must not reach the flow
                    self._give_up(exc, len(events), None)
                self._write(planner.take(everything=bool(markers) or self._stopping))
                self._heartbeat_if_due()
            else:
                self.dropped += len(events)
            for marker in markers:
                marker.set()

    def _write(self, batch: Batch) -> None:
        if not batch or self.failure is not None:
            return
        try:
            write(self._engine, batch.apply)
        except Exception as exc:  # noqa: BLE001 - whatever the store's failure, the flow goes on
            self._give_up(exc, batch.size, batch)
            return
        self._open_flows.update(batch.flows_opened)
        for run_id in batch.flows_ended:
            self._open_flows.pop(run_id, None)
        own = self._process
        self._open_scopes.update(k for k in batch.scopes_opened if k[1] == own.host and k[2] == own.pid)
        self._open_scopes.difference_update(batch.scopes_ended)

    def _until_due(self) -> float | None:
        """How long the writer may sleep: until a held task row or a heartbeat is due."""
        waits = []
        if self._planner.held:
            waits.append(self._planner.hold_seconds)
        if self._open_flows or self._open_scopes:
            waits.append(max(self._next_heartbeat - time.monotonic(), 0.0))
        return min(waits) if waits else None

    def _heartbeat_if_due(self) -> None:
        if time.monotonic() < self._next_heartbeat or self.failure is not None:
            return
        self._next_heartbeat = time.monotonic() + self._heartbeat_every
        if not self._open_flows and not self._open_scopes:
            return
        now = time.time()
        flows = [{"b_id": run_id, "b_now": now} for run_id in self._open_flows]
        scopes = [{"b_scope_id": s, "b_host": h, "b_pid": p, "b_now": now} for s, h, p in self._open_scopes]

        def beat(conn: sa.Connection) -> None:
            if flows:
                conn.execute(
                    sa.update(flow_runs)
                    .where(flow_runs.c.id == sa.bindparam("b_id"))
                    .values(heartbeat=sa.bindparam("b_now")),
                    flows,
                )
            if scopes:
                statement = (
                    sa.update(resources)
                    .where(resources.c.scope_id == sa.bindparam("b_scope_id"))
                    .where(resources.c.host == sa.bindparam("b_host"))
                    .where(resources.c.pid == sa.bindparam("b_pid"))
                    .values(heartbeat=sa.bindparam("b_now"))
                )
                conn.execute(statement, scopes)

        try:
            write(self._engine, beat)
        except Exception as exc:  # noqa: BLE001
            self._give_up(exc, 0, None)

    def _give_up(self, exc: BaseException, lost: int, batch: Batch | None) -> None:
        """Stop recording, and say once, loudly, what is not recorded and how to fix it."""
        self._accepting = False
        self.dropped += lost
        flows = dict(self._open_flows)
        if batch is not None:
            flows.update(batch.flow_run_names())
        if flows:
            shown = ", ".join(f"{name!r} ({run_id[:8]})" for run_id, name in list(flows.items())[:5])
            more = f" and {len(flows) - 5} more" if len(flows) > 5 else ""
            what = f"flow run(s) {shown}{more} and every later run in this process"
        else:
            what = "every run in this process from now on"
        reason = redact_text(f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}".splitlines()[0])
        where = self.location.shown
        fix = (
            f"check that {where} is writable and its disk is not full"
            if self.location.is_sqlite
            else "check that the database server is up and TETHER_DATABASE_URL is right"
        )
        self.failure = (
            f"tether: the run store {where} failed ({reason}). The flow keeps running, but {what} will be "
            f"missing from the store: states, logs and resource ledger rows are not recorded "
            f"({lost} records lost so far). To fix: {fix}, then run again."
        )
        self._open_flows.clear()
        self._open_scopes.clear()
        log.error(self.failure)
