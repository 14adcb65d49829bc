"""Connections to the store: engine settings per database, and write transactions that retry.

SQLite: WAL journal (readers never block the writer), ``synchronous=NORMAL``
(a committed batch survives a killed process), a 30 s busy timeout, and write
transactions opened with ``BEGIN IMMEDIATE`` so that the lock is taken at the
start, where the busy timeout applies, instead of failing half-way. A write
that still meets "database is locked" is retried until its deadline.

PostgreSQL: a write that changes what readers show (runs, the ledger) says so with
``NOTIFY tether_changes`` in its transaction, which PostgreSQL delivers to the
listeners (`_changes`) when, and only if, it commits.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, OperationalError

from tether.store._location import StoreLocation, prepare_sqlite_file

T = TypeVar("T")

SQLITE_BUSY_SECONDS = 30.0
#: How long a write keeps retrying while the database is locked by others.
WRITE_DEADLINE_SECONDS = 120.0
_WRITE = "tether_write"
#: The PostgreSQL channel told of every committed write of runs or ledger rows (no payload).
CHANGES_CHANNEL = "tether_changes"


def make_engine(location: StoreLocation) -> sa.Engine:
    if location.is_sqlite:
        assert location.path is not None
        prepare_sqlite_file(location.path)
        engine = sa.create_engine(
            location.url,
            connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False},
            pool_size=2,
            max_overflow=8,
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    connect_args: dict[str, Any] = {}
    if location.url.get_backend_name() == "postgresql":
        connect_args = {"connect_timeout": 5, "application_name": "tether-store"}
    return sa.create_engine(location.url, pool_pre_ping=True, pool_size=2, max_overflow=8, connect_args=connect_args)


def _sqlite_connect(dbapi_connection: Any, record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is always DEFERRED).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_SECONDS * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_begin(connection: sa.Connection) -> None:
    mode = "IMMEDIATE" if connection.get_execution_options().get(_WRITE) else "DEFERRED"
    connection.exec_driver_sql(f"BEGIN {mode}")


def is_locked_error(exc: BaseException) -> bool:
    """SQLite's "database is locked"/"busy": another process holds the write lock; try again."""
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return "locked" in text or "busy" in text


def is_disconnect(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def write(
    engine: sa.Engine,
    work: Callable[[sa.Connection], T],
    deadline_seconds: float = WRITE_DEADLINE_SECONDS,
    changes: bool = False,
) -> T:
    """Run ``work`` in one write transaction; retry it while the database is locked or was reconnected.

    ``changes``: the write changes runs or the ledger: on PostgreSQL, listeners are told
    when it commits (see `CHANGES_CHANNEL`); one notification per transaction, no payload.
    """
    notify = changes and engine.dialect.name == "postgresql"
    deadline = time.monotonic() + deadline_seconds
    delay = 0.005
    reconnects = 0
    while True:
        try:
            with engine.connect() as conn:
                conn = conn.execution_options(**{_WRITE: True})
                with conn.begin():
                    result = work(conn)
                    if notify:
                        conn.exec_driver_sql(f"NOTIFY {CHANGES_CHANNEL}")
                    return result
        except OperationalError as exc:
            if is_disconnect(exc) and reconnects < 2:
                reconnects += 1  # a pooled connection the server had closed: once more with a new one
                continue
            if not is_locked_error(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 0.25)


def read(engine: sa.Engine, work: Callable[[sa.Connection], T]) -> T:
    with engine.connect() as conn:
        return work(conn)
