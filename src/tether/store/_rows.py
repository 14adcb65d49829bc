"""`RowWriter`: plans records into rows and writes them, keeping heartbeats; used in one thread.

Whoever writes a spool's rows (`_spool.Drain`) uses it: the recorder's writer thread,
the writer process (`_writer_process_main`) when the stream is heavy, or a store open
replaying the spools of dead processes (`replay_into`). It raises whatever the database
raises; deciding what a failure means is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import sqlalchemy as sa

from tether._clock import Clock, SystemClock
from tether._settings import heartbeat_seconds
from tether.store._db import write
from tether.store._encode import Record
from tether.store._ledger import ProcessInfo
from tether.store._location import StoreLocation
from tether.store._plan import Batch, Planner, ResourceKey
from tether.store._schema import flow_runs, resources
from tether.store._spool import replay_orphans, store_key


class EngineSource(Protocol):
    """An engine, or a `Store`, whose first use of `engine` opens it (an engine's ``engine`` is itself)."""

    @property
    def engine(self) -> sa.Engine: ...


class RowWriter:
    def __init__(
        self, store: EngineSource, process: ProcessInfo, heartbeat_every: float | None = None, clock: Clock | None = None
    ) -> None:
        self._store = store
        self.process = process
        self._clock = clock or SystemClock()
        self.planner = Planner(process, clock=self._clock)
        #: Flow runs of this process not ended yet (id -> name): their heartbeat, and failure messages.
        self.open_flows: dict[str, str] = {}
        self.open_scopes: set[ResourceKey] = set()
        self.heartbeat_every = heartbeat_every if heartbeat_every is not None else heartbeat_seconds()
        self.next_heartbeat = self._clock.monotonic() + self.heartbeat_every

    def send(self, records: list[Record], everything: bool = False) -> None:
        """Plan ``records`` and write what is due (with ``everything``, all of it)."""
        self.planner.add(records)
        self._write(self.planner.take(everything))
        self.tick()

    def tick(self) -> None:
        """Write held rows that came due, and the heartbeat if it is time."""
        if self.planner.held:
            self._write(self.planner.take())
        now = self._clock.monotonic()
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.heartbeat_every
            self._heartbeat()

    def due_in(self) -> float | None:
        """Seconds until `tick` has something to do; None if nothing will come due."""
        waits = []
        if self.planner.held:
            waits.append(self.planner.hold_seconds)
        if self.open_flows or self.open_scopes:
            waits.append(max(self.next_heartbeat - self._clock.monotonic(), 0.0))
        return min(waits) if waits else None

    def _write(self, batch: Batch) -> None:
        if not batch:
            return
        write(self._store.engine, batch.apply, changes=True)
        self.open_flows.update(batch.flows_opened)
        for run_id in batch.flows_ended:
            self.open_flows.pop(run_id, None)
        own = self.process
        self.open_scopes.update(k for k in batch.scopes_opened if k[1] == own.host and k[2] == own.pid)
        self.open_scopes.difference_update(batch.scopes_ended)

    def _heartbeat(self) -> None:
        if not self.open_flows and not self.open_scopes:
            return
        now = self._clock.time()
        flows = [{"b_id": run_id, "b_now": now} for run_id in self.open_flows]
        scopes = [{"b_scope_id": s, "b_host": h, "b_pid": p, "b_now": now} for s, h, p in self.open_scopes]

        def beat(conn: sa.Connection) -> None:
            if flows:
                statement = (
                    sa.update(flow_runs)
                    .where(flow_runs.c.id == sa.bindparam("b_id"))
                    .values(heartbeat=sa.bindparam("b_now"))
                )
                conn.execute(statement, flows)
            if scopes:
                statement = (
                    sa.update(resources)
                    .where(resources.c.scope_id == sa.bindparam("b_scope_id"))
                    .where(resources.c.host == sa.bindparam("b_host"))
                    .where(resources.c.pid == sa.bindparam("b_pid"))
                    .values(heartbeat=sa.bindparam("b_now"))
                )
                conn.execute(statement, scopes)

        write(self._store.engine, beat)


def replay_into(location: StoreLocation, engine: sa.Engine) -> int:
    """`replay_orphans` into this store (as its open does): the rows of spools whose process died."""

    def make_writer(process: ProcessInfo) -> Callable[[list[Any]], None]:
        rows = RowWriter(engine, process)
        return lambda records: rows.send(records, everything=True)

    return replay_orphans(store_key(location.url), make_writer)
