"""Concurrency slots in the store: locks that die with their holder, and rows that say who holds them.

A slot is a lock (`tether.store._slot_locks`: a file lock beside a SQLite store, an
advisory lock on PostgreSQL), so a holder keeps it however long it is paused, and
a dead holder's slot is free as soon as it is gone. ``limit_slots`` says who holds
which slot (run, task, host, pid), for ``tether limit ls``; the row is written
after the lock is taken and deleted before it is let go, so a row whose lock is
free was left by a dead process: readers drop it. ``limit_waiters`` has a row per
tag and waiting process, with how many of its runs wait and where to wake it; the
row goes when its last run stops waiting, and readers drop the rows of processes
whose process lock is free (dead). This module reads and writes rows and takes
locks; waiting and waking are the engine's (`tether._leases`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from tether.store._db import read, write
from tether.store._errors import StoreError
from tether.store._schema import limit_slots, limit_waiters, limits
from tether.store._slot_locks import AdvisoryLocks, SlotLocks, blind_in_children, locks_for

NOTIFY_CHANNEL = "tether_slots"


@dataclass(frozen=True)
class SlotHolder:
    tag: str
    slot: int
    run_id: str | None
    task: str | None
    host: str
    pid: int
    acquired: float


@dataclass(frozen=True)
class Waiter:
    tag: str
    channel: str
    host: str
    pid: int
    waiting: int
    process: str


@dataclass(frozen=True)
class LimitView:
    """A limit with the live holders of its slots and the live processes waiting for one."""

    tag: str
    capacity: int
    holders: list[SlotHolder]
    waiters: list[Waiter]

    @property
    def waiting(self) -> int:
        """How many runs wait for a slot, in every live process."""
        return sum(w.waiting for w in self.waiters)


class SlotTable:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.host = socket.gethostname()
        #: PostgreSQL tells every listening process of a released slot (LISTEN/NOTIFY).
        self.notifies = engine.dialect.name == "postgresql"
        try:
            self._locks: SlotLocks | None = locks_for(engine)
            #: Why this store cannot hold slots (a database without such locks), or None.
            self.unsupported: str | None = None
        except StoreError as exc:
            self._locks, self.unsupported = None, str(exc)

    @property
    def locks(self) -> SlotLocks:
        if self._locks is None:
            raise StoreError(f"This store cannot hold concurrency slots: {self.unsupported}")
        return self._locks

    def listen(self, listening: Callable[[], None]) -> Iterator[str]:
        """Yield the tag of every slot released anywhere (PostgreSQL only); blocks between them.

        Calls ``listening`` once notices are on their way (from then on, none is missed).
        """
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True) as conn:
            blind_in_children(conn)  # a forked child must not say goodbye on its socket
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            listening()
            for notice in conn.notifies():
                yield notice.payload

    def capacities(self) -> dict[str, int]:
        return read(self.engine, lambda c: {r.tag: r.capacity for r in c.execute(sa.select(limits))})

    def capacity(self, tag: str) -> int | None:
        return read(self.engine, lambda c: c.execute(sa.select(limits.c.capacity).where(limits.c.tag == tag)).scalar())

    def take(self, tag: str, capacity: int, run_id: str | None, task: str | None, now: float,
             waiting: tuple[str, int] | None = None) -> int | None:
        """Take a free slot of ``tag`` for a run of this process and say so; None if all are held.

        ``waiting`` = (channel, count): also say, in the same transaction, that ``count`` runs of
        this process still wait for the tag afterwards.
        """
        slot = self.locks.try_take(tag, capacity)
        if slot is None:
            return None
        try:
            write(self.engine, lambda c: self._hold(c, tag, slot, run_id, task, now, waiting))
        except BaseException:
            self.locks.let_go(tag, slot)
            raise
        return slot

    def hand_over(self, tag: str, slot: int, run_id: str | None, task: str | None, now: float,
                  waiting: tuple[str, int] | None = None) -> None:
        """A slot this process holds goes to another of its runs (the lock stays taken)."""
        def work(conn: sa.Connection) -> None:
            moved = conn.execute(sa.update(limit_slots).where(*self._mine(tag, slot))
                                 .values(run_id=run_id, task=task, acquired=now)).rowcount
            if not moved:  # its row was dropped (tether limit rm, or a failed write): write it again
                self._hold(conn, tag, slot, run_id, task, now, None)
            if waiting is not None:
                self._set_waiting(conn, tag, self.locks.token, waiting[0], waiting[1], now)

        write(self.engine, work)

    def release(self, tag: str, slot: int) -> list[Waiter]:
        """Let go of a slot; returns the other processes on this host that wait for its tag, to wake."""
        def work(conn: sa.Connection) -> list[Waiter]:
            conn.execute(sa.delete(limit_slots).where(*self._mine(tag, slot)))
            return self._rows_of_waiters(conn, tag)

        try:
            waiters = write(self.engine, work)
        finally:  # the lock goes even if the store cannot be written
            if isinstance(self.locks, AdvisoryLocks):  # and wakes the waiters of every machine that listens
                self.locks.let_go(tag, slot, notify=(NOTIFY_CHANNEL, tag))
            else:
                self.locks.let_go(tag, slot)
        return [w for w in waiters if w.host == self.host and w.process != self.locks.token]

    def set_waiting(self, tag: str, channel: str, count: int, now: float) -> None:
        """Say that ``count`` runs of this process wait for ``tag`` (0: none; the row goes)."""
        write(self.engine, lambda c: self._set_waiting(c, tag, self.locks.token, channel, count, now))

    def holders(self) -> list[SlotHolder]:
        """Who holds the slots, read from the rows whose lock is taken; drops the others."""
        if self._locks is None:
            return []  # nobody can hold a slot in this store
        rows = read(self.engine, lambda c: list(c.execute(sa.select(limit_slots).order_by(limit_slots.c.tag, limit_slots.c.slot))))
        taken = self.locks.taken([(r.tag, r.slot) for r in rows])
        stale = [r for r in rows if (r.tag, r.slot) not in taken]
        if stale:
            write(self.engine, lambda c: [
                c.execute(sa.delete(limit_slots).where(
                    limit_slots.c.tag == r.tag, limit_slots.c.slot == r.slot, limit_slots.c.process == r.process))
                for r in stale
            ])
        return [SlotHolder(r.tag, r.slot, r.run_id, r.task, r.host, r.pid, r.acquired) for r in rows if (r.tag, r.slot) in taken]

    def waiters(self) -> dict[str, int]:
        """How many runs wait for each tag, in live processes."""
        totals: dict[str, int] = {}
        for w in self.live_waiters():
            totals[w.tag] = totals.get(w.tag, 0) + w.waiting
        return totals

    def live_waiters(self) -> list[Waiter]:
        """The waiter rows of live processes (tag, host, pid, how many runs); drops the others."""
        return self.live(read(self.engine, lambda c: self._rows_of_waiters(c, None)))

    def live(self, waiters: list[Waiter]) -> list[Waiter]:
        """Those of ``waiters`` whose process lives; deletes the rows of the others."""
        if not waiters or self._locks is None:
            return waiters
        processes = {w.process for w in waiters}
        dead = processes - self.locks.alive(processes)
        if dead:
            write(self.engine, lambda c: c.execute(sa.delete(limit_waiters).where(limit_waiters.c.process.in_(dead))))
        return [w for w in waiters if w.process not in dead]

    def limit_views(self) -> list[LimitView]:
        """Each limit, by tag, with who holds its slots and who waits for one (live processes only)."""
        capacities = self.capacities()
        holders = self.holders()
        waiters = self.live_waiters()
        return [
            LimitView(tag, capacity, [h for h in holders if h.tag == tag], [w for w in waiters if w.tag == tag])
            for tag, capacity in sorted(capacities.items())
        ]

    def drop_limit(self, tag: str) -> int | None:
        """Remove the limit on ``tag`` and free every slot held under it: how many live holders
        there were, or None if there was no such limit (its slots are freed all the same)."""
        existed = write(self.engine, lambda c: c.execute(sa.delete(limits).where(limits.c.tag == tag)).rowcount == 1)
        freed = self.free_all(tag)
        return freed if existed else None

    def free_all(self, tag: str) -> int:
        """Forget who holds ``tag``'s slots (its limit is gone); how many live holders there were."""
        if self._locks is None:
            return 0
        rows = read(self.engine, lambda c: list(c.execute(sa.select(limit_slots).where(limit_slots.c.tag == tag))))
        held = len(self.locks.taken([(r.tag, r.slot) for r in rows]))
        write(self.engine, lambda c: c.execute(sa.delete(limit_slots).where(limit_slots.c.tag == tag)))
        return held

    # -- in a transaction --------------------------------------------------------------

    def _hold(self, conn: sa.Connection, tag: str, slot: int, run_id: str | None, task: str | None,
              now: float, waiting: tuple[str, int] | None) -> None:
        process = self.locks.token
        # The row of a dead holder of this slot may still be there.
        conn.execute(sa.delete(limit_slots).where(limit_slots.c.tag == tag, limit_slots.c.slot == slot))
        conn.execute(sa.insert(limit_slots).values(
            tag=tag, slot=slot, process=process, run_id=run_id, task=task, host=self.host, pid=os.getpid(), acquired=now))
        if waiting is not None:
            self._set_waiting(conn, tag, process, waiting[0], waiting[1], now)

    def _set_waiting(self, conn: sa.Connection, tag: str, process: str, channel: str, count: int, now: float) -> None:
        where = (limit_waiters.c.tag == tag, limit_waiters.c.process == process)
        if count == 0:
            conn.execute(sa.delete(limit_waiters).where(*where))
        elif conn.execute(sa.update(limit_waiters).where(*where).values(waiting=count)).rowcount == 0:
            self.locks.keep_alive()  # before the row exists: readers must never take us for dead
            conn.execute(sa.insert(limit_waiters).values(
                tag=tag, process=process, channel=channel, host=self.host, pid=os.getpid(), waiting=count, since=now))

    @staticmethod
    def _rows_of_waiters(conn: sa.Connection, tag: str | None) -> list[Waiter]:
        query = sa.select(limit_waiters)
        if tag is not None:
            query = query.where(limit_waiters.c.tag == tag)
        return [Waiter(r.tag, r.channel, r.host, r.pid, r.waiting, r.process) for r in conn.execute(query)]

    def _mine(self, tag: str, slot: int) -> tuple[sa.ColumnElement[bool], ...]:
        return (limit_slots.c.tag == tag, limit_slots.c.slot == slot, limit_slots.c.process == self.locks.token)
