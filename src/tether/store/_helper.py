"""The helper process that writes a busy flow's records, so the flow's process does not have to.

A flow's engine and the store's writer share one GIL: planning and writing
thousands of rows a second in the flow's process slows the flow down. When the
stream is heavy, the recorder starts this helper (a ``python`` running `main`)
and sends it records, pickled, over a pipe; the helper plans and writes them
(`RowWriter`) and keeps the heartbeats. It ends when the pipe closes, after
writing all it received, so a flow process killed with SIGKILL loses nothing it
had handed over. Ctrl-C and SIGTERM are for the flow process, not for it.

Frames to the helper: a 4-byte length, then a tuple, marshalled (b"m" first) when it
holds only strings and numbers, as records do, else pickled (b"p" first):
    ("hello", url, ProcessInfo, heartbeat_seconds)   first
    ("adopt", open_flows, open_scopes)               what the flow process had opened before
    ("records", records, everything, ack_id)         ack_id: answer "ack <id>" once written
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

from tether.store._encode import Record
from tether.store._ledger import ProcessInfo
from tether.store._migrate import open_engine
from tether.store._plan import ResourceKey
from tether.store._redact import redact_text
from tether.store._sink import RowWriter

_LENGTH = struct.Struct("!I")
_MARSHAL, _PICKLE = b"m", b"p"  # the first byte of a frame: how the rest is encoded
READY_SECONDS = 30.0


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
        self._to: IO[bytes] = self._proc.stdin
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

    def send(self, records: list[Record], everything: bool = False) -> None:
        ack = self._ack_id() if everything else None
        self._send(("records", records, everything, ack))
        if ack is not None:
            self._wait_for(ack)
        else:
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
        """Close the pipe (the helper writes what it has, then ends) and wait for it."""
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
        try:  # records are tuples of strings and numbers: marshal is about twice as quick as pickle
            how, data = _MARSHAL, marshal.dumps(message)
        except ValueError:  # something else inside (a ProcessInfo, a set)
            how, data = _PICKLE, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._to.write(_LENGTH.pack(len(data) + 1) + how)
            self._to.write(data)
            self._to.flush()
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


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the flow process; we end when it does
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    incoming = sys.stdin.fileno()
    answer = sys.stdout
    hello = _read(incoming)
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
    while True:
        if not failed:
            wait = writer.due_in()
            ready, _, _ = select.select([incoming], [], [], wait)
            if not ready:
                try:
                    writer.tick()
                except Exception as exc:  # noqa: BLE001
                    _say(answer, "fail " + _reason(exc))
                    failed = True
                continue
        message = _read(incoming)
        if message is None:  # the flow process closed the pipe or died: write what is left, end
            if not failed:
                try:
                    writer.send([], everything=True)
                except Exception:  # noqa: BLE001, S110 - nobody is left to tell
                    pass
            return
        what = message[0]
        try:
            if failed:
                pass
            elif what == "records":
                writer.send(message[1], everything=message[2])
            elif what == "adopt":
                writer.open_flows.update(message[1])
                writer.open_scopes.update(message[2])
            elif what == "beat":
                writer.next_heartbeat = 0.0
                writer.tick()
        except Exception as exc:  # noqa: BLE001
            _say(answer, "fail " + _reason(exc))
            failed = True
        ack = message[3] if what == "records" else message[1] if what == "beat" else None
        if ack is not None:
            _say(answer, f"ack {ack}")


def _read(fd: int) -> tuple[Any, ...] | None:
    """One frame from the pipe (unbuffered, so `select` on the pipe tells the truth); None at its end."""
    header = _read_exactly(fd, _LENGTH.size)
    if header is None:
        return None
    (length,) = _LENGTH.unpack(header)
    data = _read_exactly(fd, length)
    if data is None:
        return None
    body = memoryview(data)[1:]
    message: tuple[Any, ...] = marshal.loads(body) if data[:1] == _MARSHAL else pickle.loads(body)
    return message


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
