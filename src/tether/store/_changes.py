"""Waiting for the store to change, for live pages: LISTEN on PostgreSQL, a cheap poll on SQLite.

Every write of runs or ledger rows on PostgreSQL sends ``NOTIFY tether_changes`` in its
transaction (`_db.write` with ``changes=True``: once per committed batch of records,
crashed runs, reaps), which PostgreSQL delivers when it commits. `ChangeWaiter` keeps
one connection of its own listening on that channel, in a thread started at the first
wait, and counts the notifications; a wait returns as soon as the count moves. On
SQLite (or while PostgreSQL cannot be listened to) it asks for the `change_token`,
the newest ids and a few maxima, every `POLL_SECONDS` instead.

A wait reports the changes committed since the previous wait returned (or, the first
time, since it began), so a reader that reads the store again after each ``True``
misses nothing. This module reads only; it does not decide what a change means.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import sqlalchemy as sa

from tether._clock import Clock, SystemClock
from tether.store._db import CHANGES_CHANNEL, read
from tether.store._schema import (
    deployment_runs,
    deployments,
    flow_runs,
    limit_slots,
    limit_waiters,
    limits,
    logs,
    resources,
    state_changes,
)

log = logging.getLogger("tether.store")

#: Without notifications, how often a wait asks the store whether it changed.
POLL_SECONDS = 0.5
#: How long the listening thread waits for notifications before it looks whether it should stop.
LISTEN_SLICE_SECONDS = 0.5
#: After its connection broke, the listening thread connects again after this long.
RECONNECT_SECONDS = 1.0
#: How long the first wait gives the listening connection to open before it polls instead.
CONNECT_SECONDS = 5.0


def read_change_token(engine: sa.Engine) -> str:
    """A short text that changes whenever a run, a log, the ledger or a limit changes; cheap to ask for.

    The autoincrement ids only grow, so their maxima stand for every insert; the ledger's
    and the flow runs' updates and the slot tables (small) are summed up by their times.
    """
    parts = [
        sa.select(sa.func.max(state_changes.c.id)),
        sa.select(sa.func.max(logs.c.id)),
        sa.select(sa.func.count()).select_from(flow_runs),
        sa.select(sa.func.max(flow_runs.c.updated)),
        sa.select(sa.func.max(resources.c.id)),
        sa.select(sa.func.max(resources.c.setup_at)),
        sa.select(sa.func.max(resources.c.cleaned_at)),
        sa.select(sa.func.count()).select_from(resources).where(resources.c.cleanup_outcome.is_(None)),
        sa.select(sa.func.count(), sa.func.max(limit_slots.c.acquired)).select_from(limit_slots),
        sa.select(sa.func.coalesce(sa.func.sum(limit_waiters.c.waiting), 0)),
        sa.select(sa.func.count(), sa.func.sum(limits.c.capacity)).select_from(limits),
        sa.select(sa.func.count(), sa.func.max(deployments.c.updated)).select_from(deployments),
        sa.select(
            sa.func.max(deployment_runs.c.id),
            sa.func.max(deployment_runs.c.started),
            sa.func.max(deployment_runs.c.ended),
            sa.func.max(deployment_runs.c.claimed_at),
        ),
    ]

    def work(conn: sa.Connection) -> str:
        values = [v for part in parts for v in conn.execute(part).one()]
        return "-".join("" if v is None else f"{v:.6f}" if isinstance(v, float) else str(v) for v in values)

    return read(engine, work)


class ChangeWaiter:
    """`Store.wait_for_change`: one per store, safe to use from any thread."""

    def __init__(self, engine: sa.Engine, clock: Clock | None = None, poll_seconds: float = POLL_SECONDS) -> None:
        self.engine = engine
        self.clock = clock or SystemClock()
        self.poll_seconds = poll_seconds
        self._notifies = engine.dialect.name == "postgresql"
        self._cond = threading.Condition()
        #: Notifications counted so far, and the count the last wait returned at.
        self._count = 0
        self._seen = 0
        self._listening = False
        #: The last try to connect for listening failed: waits poll until one succeeds.
        self._unreachable = False
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        #: For polling: the change token the last wait returned at.
        self._token: str | None = None

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a change; True once one was committed."""
        if self._notifies and self._start_listening():
            return self._wait_notified(timeout)
        return self._wait_polled(timeout)

    def close(self) -> None:
        """Stop listening (the thread ends within `LISTEN_SLICE_SECONDS`) and wake every wait."""
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(LISTEN_SLICE_SECONDS * 4)

    # -- PostgreSQL ------------------------------------------------------------------

    def _start_listening(self) -> bool:
        """Whether notifications are coming (the first call starts the thread that listens)."""
        with self._cond:
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._listen, name="tether-store-changes", daemon=True)
                self._thread.start()
            if not self._listening and not self._unreachable:
                self._cond.wait_for(
                    lambda: self._listening or self._unreachable or self._closed.is_set(), CONNECT_SECONDS
                )
            return self._listening

    def _wait_notified(self, timeout: float) -> bool:
        with self._cond:
            start = self._seen
            changed = self._cond.wait_for(
                lambda: self._count != start or self._closed.is_set() or not self._listening, timeout
            )
            if self._count != start:
                self._seen = max(self._seen, self._count)
                return True
            # The connection broke while we waited: a change may have been missed.
            return changed and not self._listening and not self._closed.is_set()

    def _listen(self) -> None:
        while not self._closed.is_set():
            try:
                conn = self._connect()
            except Exception as exc:  # noqa: BLE001 - waits poll meanwhile
                log.debug("tether: cannot listen for the store's changes (%s); polling instead.", exc)
                with self._cond:
                    self._unreachable = True
                    self._cond.notify_all()  # a first wait stops waiting for us and polls
                self._closed.wait(RECONNECT_SECONDS)
                continue
            try:
                with self._cond:
                    self._listening, self._unreachable = True, False
                    self._cond.notify_all()
                while not self._closed.is_set():
                    came = sum(1 for _ in conn.notifies(timeout=LISTEN_SLICE_SECONDS))
                    if came:
                        with self._cond:
                            self._count += came
                            self._cond.notify_all()
            except Exception as exc:  # noqa: BLE001 - connect again; waits meanwhile poll
                log.debug("tether: listening for the store's changes stopped (%s); connecting again.", exc)
            finally:
                with self._cond:
                    self._listening = False
                    self._cond.notify_all()
                try:
                    conn.close()
                except Exception:  # noqa: BLE001, S110 - it is broken already
                    pass
            self._closed.wait(RECONNECT_SECONDS)

    def _connect(self) -> Any:
        import psycopg  # the PostgreSQL driver: installed with tether's postgres extra, not by SQLite users

        # libpq's own URL (with the query's options, such as a search_path), whatever SQLAlchemy driver the store uses.
        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=5, application_name="tether-store-changes")
        conn.execute(f"LISTEN {CHANGES_CHANNEL}")
        return conn

    # -- SQLite, or PostgreSQL not listened to ---------------------------------------

    def _wait_polled(self, timeout: float) -> bool:
        clock = self.clock
        last = self._token
        token = read_change_token(self.engine)
        if last is None:
            last = token  # the first wait: changes from now on
        deadline = clock.monotonic() + timeout
        while token == last:
            left = deadline - clock.monotonic()
            if left <= 0 or self._closed.is_set():
                self._token = token
                return False
            clock.wait(self._closed, min(self.poll_seconds, left))
            token = read_change_token(self.engine)
        self._token = token
        return True
