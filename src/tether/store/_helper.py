"""The helper process that writes a busy flow's records, so the flow's process does not have to.

A flow's engine and the store's writer share one GIL: planning and writing
thousands of rows a second in the flow's process slows the flow down. When the
stream stays heavy, the recorder starts this helper (a ``python`` running `main`),
which takes over this process's spool (`_spool`): the flow process keeps appending
records to it and tells the helper, over a pipe, how far it has spooled; the helper
reads them from the spool, plans and writes them (`RowWriter`), and keeps the
heartbeats. It ends when the pipe closes, after writing everything in the spool,
so a flow process killed with SIGKILL loses nothing it had spooled. Ctrl-C and
SIGTERM are for the flow process, not for it.

While records keep streaming in, the helper only notes how far they go: it writes
them once the stream pauses for `QUIET_SECONDS`, at the latest `DEFER_SECONDS` after
the oldest came, and at once when the flow process waits for them to be written.
So on a machine with few cores it does not compete with a busy flow for the CPU,
and it holds no records in memory: they wait in the spool.

Frames to the helper: a 4-byte length, a byte that says how the rest is encoded
(b"m": marshal, b"p": pickle), then a tuple:
    ("hello", url, ProcessInfo, heartbeat_seconds, spool_dir, spool_stem)   first
    ("adopt", open_flows, open_scopes)    take the spool over (the flow process let it go)
    ("upto", segment, offset, ack_id)     spooled up to there; with an ack id, answer once written
    ("beat", ack_id)                      write the heartbeats now
Lines from the helper: "ready", "ack <id>", "fail <reason>".
"""

from __future__ import annotations

import marshal
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from tether.store._ledger import ProcessInfo
from tether.store._migrate import open_engine
from tether.store._plan import ResourceKey
from tether.store._redact import redact_text
from tether.store._rows import RowWriter
from tether.store._spool import Drain, Position

_LENGTH = struct.Struct("!I")
_MARSHAL, _PICKLE = b"m", b"p"  # the first byte of a frame: how the rest is encoded
READY_SECONDS = 30.0
#: The helper writes what is spooled once no record came for this long (longer than the
#: flow process waits between its notices: see `_recorder.HELPER_TELL_SECONDS`)...
QUIET_SECONDS = 0.25
#: ... or once the oldest it has not written is this old.
DEFER_SECONDS = 1.0
#: The pipe's size, where the system lets us set it: a busy flow's writer seldom waits on it.
PIPE_BYTES = 1 << 20
#: How often the flow process looks for a failure the helper reported, while it sends records.
CHECK_SECONDS = 0.1


#: The helper's program: it imports the store's writing modules, not tether's engine (whose
#: package ``__init__`` would import everything, about 5 MB and a second of a loaded core more).
_START = """
import sys, types, os
for name in ("tether", "tether.store"):
    package = types.ModuleType(name)
    package.__path__ = [os.path.join(os.environ["TETHER_PACKAGE_ROOT"], *name.split("."))]
    sys.modules[name] = package
from tether.store._helper import main
main()
"""
#: At most this many bytes of records are read from the spool, planned and written at once.
READ_BYTES = 256 << 10


class HelperFailed(Exception):
    """The helper stopped writing; the message says why."""


class HelperClient:
    """The flow process's end of the pipe. Used by the recorder's writer thread only."""

    def __init__(
        self, url: str, process: ProcessInfo, heartbeat_every: float, spool_dir: Path, spool_stem: str
    ) -> None:
        package_root = str(Path(__file__).resolve().parents[2])  # so the helper imports this very tether
        env = dict(os.environ)
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["TETHER_PACKAGE_ROOT"] = package_root
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _START],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        _widen_pipe(self._proc.stdin.fileno())
        self._to: IO[bytes] = self._proc.stdin
        self._to_fd = self._to.fileno()  # written with os.writev: one system call (and one wait for the GIL) a frame
        self._checked = 0.0
        self._from = self._proc.stdout.fileno()
        self._buffer = b""
        self._next_ack = 0
        self._started = time.monotonic()
        self.ready = False
        self._send(("hello", url, process, heartbeat_every, str(spool_dir), spool_stem))

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll_ready(self) -> bool:
        """Whether the helper has opened the store; raises `HelperFailed` if it could not start."""
        if not self.ready:
            for line in self._lines(0.0):
                self._handle(line)
            if not self.ready and (self._proc.poll() is not None or time.monotonic() - self._started > READY_SECONDS):
                raise HelperFailed(f"the store's helper process did not start (exit code {self._proc.poll()})")
        return self.ready

    def wait_ready(self) -> None:
        """Block until the helper has opened the store; raises `HelperFailed` if it could not."""
        while not self.poll_ready():
            for line in self._lines(0.1):
                self._handle(line)

    def adopt(self, open_flows: dict[str, str], open_scopes: set[ResourceKey]) -> None:
        self._send(("adopt", open_flows, open_scopes))

    def upto(self, end: Position, written: bool = False) -> None:
        """Tell the helper the records are spooled up to ``end``; with ``written``, wait until it wrote them."""
        ack = self._ack_id() if written else 0
        self._send(("upto", end[0], end[1], ack))
        if ack:
            self._wait_for(ack)
        elif time.monotonic() - self._checked > CHECK_SECONDS:  # not at every frame: each look is a system call
            self._checked = time.monotonic()
            for line in self._lines(0.0):
                self._handle(line)

    def check(self) -> None:
        """Raise `HelperFailed` if the helper has reported a failure or ended; never waits."""
        self._check_exit()

    def beat(self) -> None:
        ack = self._ack_id()
        self._send(("beat", ack))
        self._wait_for(ack)

    def close(self, timeout: float | None) -> None:
        """Close the pipe (the helper writes what it has, then ends) and wait for it; after
        ``timeout`` seconds, kill it."""
        try:
            self._to.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def abandon(self) -> None:
        """In a forked child: let go of the pipe without closing the helper (the parent owns it)."""
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                if stream is not None:
                    os.close(stream.fileno())
            except OSError:
                pass

    # -- the pipe ----------------------------------------------------------------------

    def _ack_id(self) -> int:
        self._next_ack += 1
        return self._next_ack

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            how, data = _MARSHAL, marshal.dumps(message)
        except ValueError:  # something else inside (a ProcessInfo, a set)
            how, data = _PICKLE, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._write(how, data)

    def _write(self, head: bytes, data: bytes) -> None:
        parts: list[bytes | memoryview] = [_LENGTH.pack(len(head) + len(data)) + head, data]
        try:
            while parts:
                sent = os.writev(self._to_fd, parts)
                while parts and sent >= len(parts[0]):
                    sent -= len(parts.pop(0))
                if sent:
                    parts[0] = memoryview(parts[0])[sent:]
        except (BrokenPipeError, ValueError, OSError):
            self._check_exit()
            raise HelperFailed("the store's helper process ended unexpectedly") from None

    def _wait_for(self, ack: int) -> None:
        while True:
            for line in self._lines(1.0):
                if self._handle(line) == ack:
                    return
            self._check_exit()

    def _check_exit(self) -> None:
        for line in self._lines(0.0):
            self._handle(line)
        code = self._proc.poll()
        if code is not None:
            raise HelperFailed(f"the store's helper process ended unexpectedly (exit code {code})")

    def _handle(self, line: str) -> int | None:
        what, _, rest = line.partition(" ")
        if what == "ack":
            return int(rest)
        if what == "ready":
            self.ready = True
        elif what == "fail":
            raise HelperFailed(rest)
        return None

    def _lines(self, timeout: float) -> list[str]:
        readable, _, _ = select.select([self._from], [], [], timeout)
        if readable:
            chunk = os.read(self._from, 65536)
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [line.decode(errors="replace") for line in lines]


# -- the helper itself -------------------------------------------------------------------


class Pending:
    """How far the flow process has spooled past what is written, and since when."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.end: Position | None = None
        self.since = 0.0
        self.last = 0.0

    def add(self, end: Position) -> None:
        now = self.clock()
        if self.end is None:
            self.since = now
        self.end, self.last = end, now

    def due(self) -> bool:
        """Whether what is spooled must be written now, though records still come."""
        return self.end is not None and self.clock() - self.since >= DEFER_SECONDS

    def wait(self) -> float | None:
        """How long to wait for more before writing what is spooled; None if nothing is."""
        if self.end is None:
            return None
        return max(min(self.last + QUIET_SECONDS, self.since + DEFER_SECONDS) - self.clock(), 0.0)

    def write(self, drain: Drain) -> None:
        end, self.end = self.end, None
        while drain.write_some(end, READ_BYTES):
            pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the flow process; we end when it does
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    incoming = sys.stdin.fileno()
    answer = sys.stdout
    frame = _read(incoming)
    hello = _decode(*frame) if frame is not None else None
    if hello is None or hello[0] != "hello":
        return
    _, url, process, heartbeat_every, spool_directory, spool_stem = hello
    failed = False
    drain: Drain | None = None
    try:
        _, engine = open_engine(url)
        writer = RowWriter(engine, process, heartbeat_every)
    except Exception as exc:  # noqa: BLE001 - reported to the flow process, which says it once, loudly
        _say(answer, "fail " + _reason(exc))
        failed = True
    else:
        try:
            _say(answer, "ready")
        except OSError:  # the flow process is gone before it could use us: the spool is left for a store open
            return
    pending = Pending()
    while True:
        if not failed:
            waits = [w for w in (writer.due_in(), pending.wait()) if w is not None]
            ready, _, _ = select.select([incoming], [], [], min(waits) if waits else None)
            if not ready:  # the stream paused, or something came due
                try:
                    if drain is not None and pending.end is not None:
                        pending.write(drain)
                    writer.tick()
                except Exception as exc:  # noqa: BLE001
                    _say(answer, "fail " + _reason(exc))
                    failed = True
                continue
        frame = _read(incoming)
        if frame is None:  # the flow process closed the pipe or died: write what is spooled, end
            if drain is not None:
                try:
                    if not failed:
                        while drain.write_some(
                            None, READ_BYTES
                        ):  # to the end: records spooled after the last "upto" too
                            pass
                        drain.remove()
                except Exception:  # noqa: BLE001, S110 - nobody is left to tell; the next store open replays it
                    pass
                drain.release()
            return
        ack = None
        try:
            what, *rest = _decode(*frame)
            if what == "upto":
                seq, offset, ack = rest
                if not failed and drain is not None:
                    pending.add((seq, offset))
                    if ack or pending.due():
                        pending.write(drain)
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
            _say(answer, "fail " + _reason(exc))
            failed = True
        if ack:
            _say(answer, f"ack {ack}")


def _read(fd: int) -> tuple[bytes, memoryview] | None:
    """One frame from the pipe, as (what, the rest); None at the pipe's end. Unbuffered, so
    `select` on the pipe tells the truth."""
    header = _read_exactly(fd, _LENGTH.size)
    if header is None:
        return None
    (length,) = _LENGTH.unpack(header)
    data = _read_exactly(fd, length)
    if data is None:
        return None
    return data[:1], memoryview(data)[1:]


def _decode(how: bytes, data: memoryview) -> tuple[Any, ...]:
    message: tuple[Any, ...] = marshal.loads(data) if how == _MARSHAL else pickle.loads(data)
    return message


def _widen_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[attr-defined]
    except (ImportError, AttributeError, OSError):  # not Linux, or above the system's limit: the default will do
        pass


def _read_exactly(fd: int, size: int) -> bytes | None:
    parts = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def _say(stream: Any, line: str) -> None:
    stream.write(line.replace("\n", " ") + "\n")
    stream.flush()


def _reason(exc: BaseException) -> str:
    return redact_text(f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}".splitlines()[0])
