"""The helper process that writes a busy flow's records, so the flow's process does not have to.

A flow's engine and the store's writer share one GIL: planning and writing
thousands of rows a second in the flow's process slows the flow down. When the
stream is heavy, the recorder starts this helper (a ``python`` running `main`)
and sends it records, marshalled, over a pipe; the helper plans and writes them
(`RowWriter`) and keeps the heartbeats. It ends when the pipe closes, after
writing all it received, so a flow process killed with SIGKILL loses nothing it
had handed over. Ctrl-C and SIGTERM are for the flow process, not for it.

While records keep streaming in, the helper only keeps them (`Backlog`): it plans
and writes them once the stream pauses for `QUIET_SECONDS`, at the latest
`DEFER_SECONDS` after the oldest came, and at once when the flow process waits
for them to be written. So on a machine with few cores it does not compete with
a busy flow for the CPU, and writes the burst in one go after it.

Frames to the helper: a 4-byte length, a byte that says what follows, then:
    b"r": records: a flags byte (1: answer once written), a 4-byte ack id, and the
          records laid flat (see `split_records`), marshalled (or pickled, for b"R");
    b"m" or b"p": a tuple, marshalled or pickled:
    ("hello", url, ProcessInfo, heartbeat_seconds)   first
    ("adopt", open_flows, open_scopes)               what the flow process had opened before
    ("beat", ack_id)                                 write the heartbeats now
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

from tether.store._encode import split_records
from tether.store._ledger import ProcessInfo
from tether.store._migrate import open_engine
from tether.store._plan import ResourceKey
from tether.store._redact import redact_text
from tether.store._sink import RowWriter

_LENGTH = struct.Struct("!I")
_RECORDS_HEAD = struct.Struct("!BI")  # flags, ack id
_MARSHAL, _PICKLE = b"m", b"p"  # the first byte of a control frame: how the rest is encoded
_RECORDS, _RECORDS_PICKLED = b"r", b"R"
_WRITTEN = 1  # flag: answer "ack <id>" once the records are written
READY_SECONDS = 30.0
#: The helper writes what it keeps once no record came for this long (longer than the
#: flow process gathers a burst for: see `_writer.HELPER_WINDOW_SECONDS`)...
QUIET_SECONDS = 0.25
#: ... or once the oldest it keeps is this old, or they are this many bytes.
DEFER_SECONDS = 1.0
DEFER_BYTES = 64 << 20
#: The pipe's size, where the system lets us set it: a busy flow's writer seldom waits on it.
PIPE_BYTES = 1 << 20
#: How often the flow process looks for a failure the helper reported, while it sends records.
CHECK_SECONDS = 0.1


def pack_records(items: list[Any]) -> tuple[bytes, bytes]:
    """Records laid flat, as the helper receives them."""
    try:  # records hold strings and numbers: marshal is about twice as quick as pickle
        return _RECORDS, marshal.dumps(items)
    except ValueError:
        return _RECORDS_PICKLED, pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_records(packed: tuple[bytes, bytes | memoryview]) -> list[Any]:
    how, data = packed
    items: list[Any] = marshal.loads(data) if how == _RECORDS else pickle.loads(data)
    return items


class HelperFailed(Exception):
    """The helper stopped writing; the message says why."""


class HelperClient:
    """The flow process's end of the pipe. Used by the recorder's writer thread only."""

    def __init__(self, url: str, process: ProcessInfo, heartbeat_every: float) -> None:
        package_root = str(Path(__file__).resolve().parents[2])  # so the helper imports this very tether
        env = dict(os.environ)
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from tether.store._helper import main; main()"],
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
        self._send(("hello", url, process, heartbeat_every))

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

    def send(self, packed: tuple[bytes, bytes], everything: bool = False) -> None:
        """Hand records (`pack_records`) to the helper; with ``everything``, wait until it wrote them all."""
        ack = self._ack_id() if everything else None
        how, data = packed
        self._write(how + _RECORDS_HEAD.pack(_WRITTEN if everything else 0, ack or 0), data)
        if ack is not None:
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


class Backlog:
    """Records received and not written yet, kept as they came (marshalled) until written."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.frames: list[tuple[bytes, memoryview]] = []
        self.size = 0
        self.since = 0.0

    def add(self, how: bytes, data: memoryview) -> None:
        if not self.frames:
            self.since = self.clock()
        self.frames.append((how, data))
        self.size += len(data)

    def due(self) -> bool:
        """Whether what is kept must be written now, though records still come."""
        return bool(self.frames) and (self.size >= DEFER_BYTES or self.clock() - self.since >= DEFER_SECONDS)

    def wait(self) -> float | None:
        """How long to wait for more records before writing what is kept; None if nothing is kept."""
        if not self.frames:
            return None
        return max(min(QUIET_SECONDS, self.since + DEFER_SECONDS - self.clock()), 0.0)

    def write(self, writer: RowWriter, everything: bool = False) -> None:
        frames, self.frames, self.size = self.frames, [], 0
        items: list[Any] = []
        for frame in frames:
            items.extend(unpack_records(frame))
        writer.send(split_records(items), everything=everything)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the flow process; we end when it does
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    incoming = sys.stdin.fileno()
    answer = sys.stdout
    frame = _read(incoming)
    hello = _decode(*frame) if frame is not None and frame[0] in (_MARSHAL, _PICKLE) else None
    if hello is None or hello[0] != "hello":
        return
    _, url, process, heartbeat_every = hello
    failed = False
    try:
        _, engine = open_engine(url)
        writer = RowWriter(engine, process, heartbeat_every)
    except Exception as exc:  # noqa: BLE001 - reported to the flow process, which says it once, loudly
        _say(answer, "fail " + _reason(exc))
        failed = True
    else:
        _say(answer, "ready")
    backlog = Backlog()
    while True:
        if not failed:
            waits = [w for w in (writer.due_in(), backlog.wait()) if w is not None]
            ready, _, _ = select.select([incoming], [], [], min(waits) if waits else None)
            if not ready:  # the stream paused, or something came due
                try:
                    if backlog.frames:
                        backlog.write(writer)
                    writer.tick()
                except Exception as exc:  # noqa: BLE001
                    _say(answer, "fail " + _reason(exc))
                    failed = True
                continue
        frame = _read(incoming)
        if frame is None:  # the flow process closed the pipe or died: write what is left, end
            if not failed:
                try:
                    backlog.write(writer, everything=True)
                except Exception:  # noqa: BLE001, S110 - nobody is left to tell
                    pass
            return
        how, data = frame
        ack = None
        try:
            if how in (_RECORDS, _RECORDS_PICKLED):
                flags, ack = _RECORDS_HEAD.unpack_from(data)
                if not failed:
                    backlog.add(how, data[_RECORDS_HEAD.size :])
                    if flags & _WRITTEN or backlog.due():
                        backlog.write(writer, everything=bool(flags & _WRITTEN))
            else:
                what, *rest = _decode(how, data)
                if what == "beat":
                    ack = rest[0]
                    if not failed:
                        writer.next_heartbeat = 0.0
                        writer.tick()
                elif what == "adopt" and not failed:
                    writer.open_flows.update(rest[0])
                    writer.open_scopes.update(rest[1])
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
