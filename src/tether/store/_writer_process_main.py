"""The writer process itself: a ``python`` that writes a busy flow process's spool to the store.

The flow process starts it (`_writer_process.WriterProcess`) when its stream of
records stays heavy, so that planning and writing rows stop competing with the
flow for the GIL. This process takes the flow process's spool (`_spool`) over: the
flow process keeps appending records to it and says, over a connection, how far it
has spooled; this process reads them back, plans and writes them (`_rows.RowWriter`)
and keeps the heartbeats. It ends when the connection closes, after writing
everything in the spool, so a flow process killed with SIGKILL loses nothing it had
spooled. Ctrl-C and SIGTERM are for the flow process, not for it.

While records keep streaming in, it only notes how far they go (`Backlog`): it writes
them once the stream pauses for `QUIET_SECONDS`, at the latest `DEFER_SECONDS` after
the oldest came, and at once when the flow process waits for them to be written. So
on a machine with few cores it does not compete with a busy flow for the CPU, and it
holds no records in memory: they wait in the spool.

Messages (pickled tuples, framed by `multiprocessing.connection.Connection`), to this process:
    ("hello", url, ProcessInfo, heartbeat_seconds, spool_dir, spool_stem)   first
    ("adopt", open_flows, open_scopes)    take the spool over (the flow process let it go)
    ("upto", segment, offset, ack_id)     spooled up to there; with an ack id, answer once written
    ("beat", ack_id)                      write the heartbeats now
and from it: ("ready",), ("ack", id), ("fail", reason).

This module runs in the writer process only: it does not decide when a flow process
needs one (`_recorder` does) and imports nothing of tether's engine.
"""

from __future__ import annotations

import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tether._clock import Clock, SystemClock
from tether.store._migrate import open_engine
from tether.store._redact import redact_text
from tether.store._rows import RowWriter
from tether.store._spool import Drain, Position

#: The writer process writes what is spooled once no record came for this long (longer than
#: the flow process waits between its notices: see `_recorder.WRITER_PROCESS_TELL_SECONDS`)...
QUIET_SECONDS = 0.25
#: ... or once the oldest it has not written is this old.
DEFER_SECONDS = 1.0
#: At most this many bytes of records are read from the spool, planned and written at once.
READ_BYTES = 256 << 10


class Backlog:
    """How far the flow process has spooled past what is written, and since when."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._now = (clock or SystemClock()).monotonic
        self.end: Position | None = None
        self.since = 0.0
        self.last = 0.0

    def add(self, end: Position) -> None:
        now = self._now()
        if self.end is None:
            self.since = now
        self.end, self.last = end, now

    def due(self) -> bool:
        """Whether what is spooled must be written now, though records still come."""
        return self.end is not None and self._now() - self.since >= DEFER_SECONDS

    def wait(self) -> float | None:
        """How long to wait for more before writing what is spooled; None if nothing is."""
        if self.end is None:
            return None
        return max(min(self.last + QUIET_SECONDS, self.since + DEFER_SECONDS) - self._now(), 0.0)

    def write(self, drain: Drain) -> None:
        end, self.end = self.end, None
        while drain.write_some(end, READ_BYTES):
            pass


def main(fd: int) -> None:
    """Serve the flow process at the other end of connection ``fd`` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the flow process; we end when it does
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(fd)
    hello = _receive(conn)
    if hello is None or hello[0] != "hello":
        return
    _, url, process, heartbeat_every, spool_directory, spool_stem = hello
    failed = False
    drain: Drain | None = None
    try:
        _, engine = open_engine(url)
        writer = RowWriter(engine, process, heartbeat_every)
    except Exception as exc:  # noqa: BLE001 - reported to the flow process, which says it once, loudly
        _answer(conn, "fail", _reason(exc))
        failed = True
    else:
        if not _answer(conn, "ready"):
            return  # the flow process is gone before it could use us: the spool is left for a store open
    backlog = Backlog()
    while True:
        if not failed:
            waits = [w for w in (writer.due_in(), backlog.wait()) if w is not None]
            if not conn.poll(min(waits) if waits else None):  # the stream paused, or something came due
                try:
                    if drain is not None and backlog.end is not None:
                        backlog.write(drain)
                    writer.tick()
                except Exception as exc:  # noqa: BLE001
                    _answer(conn, "fail", _reason(exc))
                    failed = True
                continue
        message = _receive(conn)
        if message is None:  # the flow process closed the connection or died: write what is spooled, end
            if drain is not None:
                _finish(drain, write=not failed)
            return
        ack = None
        try:
            what, *rest = message
            if what == "upto":
                seq, offset, ack = rest
                if not failed and drain is not None:
                    backlog.add((seq, offset))
                    if ack or backlog.due():
                        backlog.write(drain)
            elif what == "beat":
                ack = rest[0]
                if not failed:
                    writer.next_heartbeat = 0.0
                    writer.tick()
            elif what == "adopt" and not failed:
                writer.open_flows.update(rest[0])
                writer.open_scopes.update(rest[1])
                drain = Drain(Path(spool_directory), spool_stem, lambda records: writer.send(records, everything=True))
                drain.take_lock()  # the flow process let it go before it sent this
        except Exception as exc:  # noqa: BLE001
            _answer(conn, "fail", _reason(exc))
            failed = True
        if ack:
            _answer(conn, "ack", ack)


def _finish(drain: Drain, write: bool) -> None:
    """At the connection's end: write the spool to its end (records spooled after the last
    "upto" too) and delete it; whatever fails, the next store open replays what is left."""
    try:
        if write:
            while drain.write_some(None, READ_BYTES):
                pass
            drain.remove()
    except Exception:  # noqa: BLE001, S110 - nobody is left to tell; the next store open replays it
        pass
    drain.release()


def _receive(conn: Connection) -> tuple[Any, ...] | None:
    """The next message; None once the flow process closed the connection or died."""
    try:
        message: tuple[Any, ...] = conn.recv()
    except (EOFError, OSError):
        return None
    return message


def _answer(conn: Connection, *message: Any) -> bool:
    """Send ``message``; False if the flow process is gone (its end of the connection is closed)."""
    try:
        conn.send(message)
    except OSError:
        return False
    return True


def _reason(exc: BaseException) -> str:
    return redact_text(f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}".splitlines()[0])
