"""Concurrency slots in the store: leases that hold across processes and machines.

A slot is a row of ``limit_slots`` with an expiry; its holder renews it while it
lives, so the slots of a process that died come back once their lease expires.
Taking a slot is one write transaction that first drops expired leases, then
counts: SQLite serialises writers (``BEGIN IMMEDIATE``), PostgreSQL locks the
tag's ``limits`` row. ``limit_waiters`` says which processes wait for a tag and
where to wake them. This module only reads and writes rows; waiting and waking
are the engine's (`tether._leases`).
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from tether.store._engine import read, write
from tether.store._schema import limit_slots, limit_waiters, limits

_ids = itertools.count()
NOTIFY_CHANNEL = "tether_slots"
_PREFIX = os.urandom(8).hex()


@dataclass(frozen=True)
class Attempt:
    slot_id: str | None  # the slot taken, or None
    capacity: int | None  # None: the tag has no limit (any more)
    next_expiry: float | None  # when the earliest held lease runs out, if none was free


@dataclass(frozen=True)
class SlotHolder:
    tag: str
    run_id: str | None
    task: str | None
    host: str
    pid: int
    acquired: float
    expires: float


class SlotTable:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.host = socket.gethostname()
        self._lock_rows = engine.dialect.name == "postgresql"
        #: PostgreSQL tells every listening process of a released slot (LISTEN/NOTIFY).
        self.notifies = engine.dialect.name == "postgresql"

    def listen(self) -> Iterator[str]:
        """Yield the tag of every slot released anywhere (PostgreSQL only); blocks between them."""
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            for notice in conn.notifies():
                yield notice.payload

    def capacities(self) -> dict[str, int]:
        return read(self.engine, lambda c: {r.tag: r.capacity for r in c.execute(sa.select(limits))})

    def try_acquire(self, tag: str, run_id: str | None, task: str | None, now: float, lease: float) -> Attempt:
        def work(conn: sa.Connection) -> Attempt:
            query = sa.select(limits.c.capacity).where(limits.c.tag == tag)
            if self._lock_rows:
                query = query.with_for_update()
            capacity = conn.execute(query).scalar()
            if capacity is None:
                return Attempt(None, None, None)
            conn.execute(sa.delete(limit_slots).where(limit_slots.c.tag == tag, limit_slots.c.expires < now))
            held = conn.execute(
                sa.select(sa.func.count(), sa.func.min(limit_slots.c.expires)).where(limit_slots.c.tag == tag)
            ).one()
            if held[0] >= capacity:
                return Attempt(None, capacity, held[1])
            slot_id = f"{_PREFIX}{next(_ids):016x}"
            conn.execute(sa.insert(limit_slots).values(
                id=slot_id, tag=tag, run_id=run_id, task=task, host=self.host, pid=os.getpid(),
                acquired=now, expires=now + lease,
            ))
            return Attempt(slot_id, capacity, None)

        return write(self.engine, work)

    def hand_over(self, slot_id: str, run_id: str | None, task: str | None, now: float, lease: float) -> bool:
        """Give a held slot to another run of this process; False if the lease was lost meanwhile."""
        return write(self.engine, lambda c: c.execute(
            sa.update(limit_slots).where(limit_slots.c.id == slot_id)
            .values(run_id=run_id, task=task, acquired=now, expires=now + lease)
        ).rowcount == 1)

    def renew(self, slot_ids: list[str], expires: float) -> None:
        if slot_ids:
            write(self.engine, lambda c: c.execute(
                sa.update(limit_slots).where(limit_slots.c.id.in_(slot_ids)).values(expires=expires)
            ))

    def release(self, slot_id: str, tag: str) -> list[str]:
        """Free a slot; returns the wake-up channels of the processes waiting for its tag."""
        def work(conn: sa.Connection) -> list[str]:
            conn.execute(sa.delete(limit_slots).where(limit_slots.c.id == slot_id))
            if self.notifies:  # wakes waiters on every machine that listens
                conn.execute(sa.text("SELECT pg_notify(:channel, :tag)"), {"channel": NOTIFY_CHANNEL, "tag": tag})
            return [r.channel for r in conn.execute(sa.select(limit_waiters.c.channel).where(limit_waiters.c.tag == tag))]

        return write(self.engine, work)

    def set_waiting(self, tag: str, channel: str, count: int, now: float) -> None:
        def work(conn: sa.Connection) -> None:
            where = (limit_waiters.c.tag == tag, limit_waiters.c.channel == channel)
            conn.execute(sa.delete(limit_waiters).where(*where))
            if count:
                conn.execute(sa.insert(limit_waiters).values(
                    tag=tag, channel=channel, host=self.host, pid=os.getpid(), waiting=count, since=now))

        write(self.engine, work)

    def holders(self) -> list[SlotHolder]:
        return read(self.engine, lambda c: [
            SlotHolder(r.tag, r.run_id, r.task, r.host, r.pid, r.acquired, r.expires)
            for r in c.execute(sa.select(limit_slots).order_by(limit_slots.c.tag, limit_slots.c.acquired))
        ])

    def waiters(self) -> dict[str, int]:
        return read(self.engine, lambda c: {
            r.tag: int(r.total or 0) for r in c.execute(
                sa.select(limit_waiters.c.tag, sa.func.sum(limit_waiters.c.waiting).label("total")).group_by(limit_waiters.c.tag))
        })

    def free_all(self, tag: str) -> int:
        return write(self.engine, lambda c: c.execute(sa.delete(limit_slots).where(limit_slots.c.tag == tag)).rowcount)
