"""Locks that the operating system or the database server drops when their holder dies.

Slot ``i`` of a tag (``0 <= i < capacity``) is held by whoever holds the lock of
``(tag, i)``. Nothing expires: a holder paused for an hour (SIGSTOP, a frozen
container, a long C call that keeps the GIL) keeps its slots, and the slots of a
process that dies are free the moment the kernel or the server notices.

- `FileLocks`, for a SQLite store (one host): one file per slot under
  ``<store file>-slots/``, locked with ``flock(LOCK_EX | LOCK_NB)``. The kernel
  drops a flock when the last descriptor of its open file is closed, which the
  death of the process does. flock and not fcntl's POSIX locks: those belong to
  the process, so two runs of one process could both take the same slot, and
  closing any descriptor of the file would drop them all. Lock files are never
  deleted (deleting a lock file races with a process about to lock it).
- `AdvisoryLocks`, for PostgreSQL: ``pg_try_advisory_lock`` on a key derived
  from (schema, tag, slot), on one connection per process kept only for them.
  The server drops a session's locks when the session ends: a process that dies
  has its socket closed by its kernel and its backend exits. A paused process
  keeps its TCP session, so its locks stay held. What no lock can promise: a
  holder cut off from the server long enough for TCP keepalive to end its session
  loses its slots while its tasks may still run; that is logged when noticed. (And
  the server's keepalive also decides how soon the slots of a machine that vanished
  come back.)

A SQLite store has a limit of its own: a process paused inside a write transaction
stops every other process's writes (SQLite has one writer), slot rows included,
until it resumes. Nothing is overbooked, but nothing moves meanwhile.

Each process names itself in the rows it writes by a random token, and holds a
lock of its own on that token (its *process lock*) once it lists itself as
waiting, so that readers can tell the waiter rows of live processes from those of
dead ones (`alive`).

A forked child shares its parent's open files and sockets: at fork it lets go of
its copies, so that its exit neither keeps the parent's slots held (a flock lives
while any copy of its descriptor is open) nor ends the parent's session (libpq
says goodbye on the socket when a connection is closed).

This module takes and tests locks; the rows that say who holds what are
`tether.store._slots`'.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import logging
import os
import re
import threading
import uuid
import weakref
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tether.store._db import read
from tether.store._errors import StoreError

log = logging.getLogger("tether")

_after_fork: weakref.WeakSet[Any] = weakref.WeakSet()
#: Connections a forked child must never close (their objects live on, their sockets point at /dev/null).
_abandoned: list[Any] = []


def forget_in_children(owner: Any) -> None:
    """Call ``owner.forget_after_fork()`` in every child forked from now on."""
    _after_fork.add(owner)


_blind_in_children: weakref.WeakSet[Any] = weakref.WeakSet()


def blind_in_children(dbapi_connection: Any) -> None:
    """In every child forked from now on, make ``dbapi_connection`` unable to reach its server."""
    _blind_in_children.add(dbapi_connection)


def _in_child() -> None:
    for owner in list(_after_fork):
        owner.forget_after_fork()
    for connection in list(_blind_in_children):
        blind_socket(connection)


os.register_at_fork(after_in_child=_in_child)


def blind_socket(dbapi_connection: Any) -> None:
    """In a forked child: point the connection's socket at /dev/null, so nothing it sends reaches the server."""
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:
        return
    try:
        fd = fileno()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, fd)
        os.close(devnull)
    except Exception:  # noqa: BLE001 - a closed connection has nothing left to protect
        return
    _abandoned.append(dbapi_connection)


class FileLocks:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._held: dict[tuple[str, int], int] = {}  # (tag, slot) -> the descriptor holding its flock
        #: Names this process in the rows it writes.
        self.token = uuid.uuid4().hex
        self._life_fd: int | None = None  # holds this process's process lock, once taken
        forget_in_children(self)

    def try_take(self, tag: str, capacity: int) -> int | None:
        """Take a free slot of ``tag`` (its index), or None if all ``capacity`` slots are held."""
        # One thread at a time, so that this process never tries a slot it holds, whatever the
        # file system makes of flock between two descriptors of one process.
        with self._lock:
            for slot in range(capacity):
                if (tag, slot) in self._held:
                    continue
                fd = self._open(self._slot_path(tag, slot))
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                except BaseException:
                    os.close(fd)
                    raise
                self._held[(tag, slot)] = fd
                return slot
            return None

    def let_go(self, tag: str, slot: int) -> None:
        with self._lock:
            fd = self._held.pop((tag, slot), None)
        if fd is not None:
            os.close(fd)  # drops the flock

    def taken(self, slots: list[tuple[str, int]]) -> set[tuple[str, int]]:
        """Which of ``slots`` some live process holds."""
        with self._lock:
            mine = set(self._held)
        return {s for s in slots if s in mine or self._locked(self._slot_path(*s))}

    def keep_alive(self) -> None:
        """Take this process's process lock (once), so that readers count its rows as live."""
        with self._lock:
            if self._life_fd is None:
                fd = self._open(self._life_path(self.token))
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._life_fd = fd
                atexit.register(self._end_life)

    def _end_life(self) -> None:
        if self._life_fd is not None:  # not in a forked child, which has a life of its own
            self._life_path(self.token).unlink(missing_ok=True)

    def alive(self, tokens: set[str]) -> set[str]:
        """Which of ``tokens`` name a live process; deletes the process files of the dead."""
        live = set()
        for token in tokens:
            if (token == self.token and self._life_fd is not None) or self._locked(self._life_path(token)):
                live.add(token)
            else:
                self._life_path(token).unlink(missing_ok=True)
        return live

    def forget_after_fork(self) -> None:
        fds = [*self._held.values(), *([self._life_fd] if self._life_fd is not None else [])]
        self._held, self._life_fd, self.token = {}, None, uuid.uuid4().hex
        self._lock = threading.Lock()  # another thread may have held it at the fork
        for fd in fds:
            os.close(fd)  # the child's copy only: the parent keeps its locks

    def _life_path(self, token: str) -> Path:
        return self.directory / "processes" / f"{token}.lock"

    def _slot_path(self, tag: str, slot: int) -> Path:
        readable = re.sub(r"[^A-Za-z0-9_.-]", "_", tag)[:40]
        digest = hashlib.blake2b(tag.encode(), digest_size=8).hexdigest()
        return self.directory / f"{readable}-{digest}" / f"{slot}.lock"

    def _open(self, path: Path) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            return os.open(path, flags, 0o600)
        except FileNotFoundError:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return os.open(path, flags, 0o600)

    @staticmethod
    def _locked(path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops the shared lock, if we got it
        return False


class AdvisoryLocks:
    """PostgreSQL session-level advisory locks on one connection that this process keeps for them.

    Only taking and letting go need that connection; telling which locks are held (from
    ``pg_locks``) is a read on any pooled connection, so readers never open one.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._fairy: Any = None  # SQLAlchemy's wrapper of the connection, detached from the pool
        self._schema: str | None = None
        self._held: set[tuple[str, int]] = set()
        #: Names this process in the rows it writes.
        self.token = uuid.uuid4().hex
        self._alive = False  # whether the lock session holds the process lock
        forget_in_children(self)

    def try_take(self, tag: str, capacity: int) -> int | None:
        with self._lock:
            keys = {self._key("slot", tag, s): s for s in range(capacity) if (tag, s) not in self._held}
            busy = self._busy(list(keys))
            cursor = None
            for key, slot in keys.items():
                if key in busy:
                    continue
                cursor = cursor or self._cursor()
                if self._call(cursor, "SELECT pg_try_advisory_lock(%s)", (key,)):
                    self._held.add((tag, slot))
                    return slot
            return None

    def let_go(self, tag: str, slot: int, notify: tuple[str, str] | None = None) -> None:
        """Unlock, and then (in the same statement) send ``notify`` = (channel, payload) to listeners."""
        with self._lock:
            if (tag, slot) not in self._held:
                return  # the session that held it is gone, and the lock with it
            self._held.discard((tag, slot))
            cursor = self._cursor()
            if notify is None:
                self._call(cursor, "SELECT pg_advisory_unlock(%s)", (self._key("slot", tag, slot),))
            else:
                self._call(cursor, "SELECT pg_advisory_unlock(%s), pg_notify(%s, %s)",
                           (self._key("slot", tag, slot), *notify))

    def taken(self, slots: list[tuple[str, int]]) -> set[tuple[str, int]]:
        keys = {self._key("slot", tag, s): (tag, s) for tag, s in slots}
        busy = self._busy(list(keys))
        with self._lock:
            return {keys[k] for k in busy} | (self._held & set(slots))

    def keep_alive(self) -> None:
        with self._lock:
            if not self._alive:
                cursor = self._cursor()
                if not self._call(cursor, "SELECT pg_try_advisory_lock(%s)", (self._key("process", self.token),)):
                    raise StoreError(f"Another session holds the process lock of this process ({self.token}).")
                self._alive = True

    def alive(self, tokens: set[str]) -> set[str]:
        keys = {self._key("process", t): t for t in tokens}
        busy = self._busy(list(keys))
        return {keys[k] for k in busy} | ({self.token} & tokens if self._alive else set())

    def forget_after_fork(self) -> None:
        if self._fairy is not None:
            blind_socket(self._fairy.dbapi_connection)
            _abandoned.append(self._fairy)
        self._fairy, self._held, self._alive, self.token = None, set(), False, uuid.uuid4().hex
        self._lock = threading.Lock()

    # -- the connection ---------------------------------------------------------------

    def _cursor(self) -> Any:
        """Under the lock: a cursor on the lock connection, connecting first if needed."""
        if self._fairy is None:
            fairy = self.engine.raw_connection()
            fairy.detach()  # this connection is never handed to anyone else
            connection = fairy.dbapi_connection
            assert connection is not None
            connection.rollback()
            connection.autocommit = True
            self._fairy = fairy
        return self._fairy.cursor()

    def _call(self, cursor: Any, sql: str, params: tuple[Any, ...]) -> Any:
        try:
            cursor.execute(sql, params)
            return cursor.fetchone()[0]
        except Exception:
            self._lost()
            raise

    def _busy(self, keys: list[int]) -> set[int]:
        """Which of the advisory lock ``keys`` some session holds."""
        if not keys:
            return set()
        query = sa.text(
            "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks "
            "WHERE locktype = 'advisory' AND objsubid = 1 AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((classid::bigint << 32) | objid::bigint) = ANY(CAST(:keys AS bigint[]))"
        )
        return read(self.engine, lambda c: {int(k) for k in c.execute(query, {"keys": keys}).scalars()})

    def _lost(self) -> None:
        """The lock connection failed: whatever it held, the server has dropped or will drop."""
        if self._held:
            log.error(
                "The connection to the store that held %d concurrency slot(s) (%s) failed: the server "
                "drops their locks, so other processes may take those slots while their task runs still run.",
                len(self._held), ", ".join(sorted({tag for tag, _ in self._held})),
            )
        fairy, self._fairy = self._fairy, None
        self._held.clear()
        self._alive = False
        if fairy is not None:
            try:
                fairy.invalidate()
            except Exception as exc:  # noqa: BLE001 - it is broken already
                log.debug("Closing the broken slot lock connection failed: %s", exc)

    def _key(self, kind: str, *parts: object) -> int:
        """The advisory lock key of a slot or a process: a hash that includes the store's schema,
        since advisory locks are per database and two tether stores may share one."""
        if self._schema is None:
            self._schema = str(read(self.engine, lambda c: c.exec_driver_sql("SELECT current_schema()").scalar()))
        text = "\0".join(str(p) for p in ("tether", self._schema, kind, *parts))
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") & 0x7FFF_FFFF_FFFF_FFFF


SlotLocks = FileLocks | AdvisoryLocks


def locks_for(engine: sa.Engine) -> SlotLocks:
    """The kind of lock ``engine``'s store can offer; raises `StoreError` for a database that has none."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        database = engine.url.database
        assert database
        path = Path(database)
        return FileLocks(path.with_name(path.name + "-slots"))
    if dialect == "postgresql":
        return AdvisoryLocks(engine)
    raise StoreError(
        f"concurrency limits need locks that are dropped when their holder dies, which tether takes from "
        f"SQLite (file locks) or PostgreSQL (advisory locks), and the store at {engine.url.render_as_string()} "
        f"is {dialect}. Use a PostgreSQL or SQLite store (TETHER_DATABASE_URL) for concurrency limits."
    )
