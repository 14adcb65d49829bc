"""The flow process's side of the writer process: start it, tell it how far the spool goes, hear back.

A flow's engine and the store's writer share one GIL: planning and writing thousands
of rows a second in the flow's process slows the flow down. When the stream stays
heavy, the recorder (`_recorder`) starts a writer process, which takes this
process's spool over (its own side is `_writer_process_main`, where the messages
are listed). `WriterProcess` is this process's end of the connection to it: the
recorder's writer thread tells it how far records are spooled, asks it for the
heartbeats, and waits for its answer when someone waits for rows to be written.

This module does not decide when to start a writer process or what to do when it
fails (`_recorder` does), and writes no rows itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tether.store._ledger import ProcessInfo
from tether.store._plan import ResourceKey
from tether.store._spool import Position

READY_SECONDS = 30.0
#: How often the flow process looks for a failure the writer process reported, while it sends records.
CHECK_SECONDS = 0.1

#: The writer process's program: it imports the store's writing modules, not tether's engine
#: (whose package ``__init__`` would import everything, about 5 MB and a second of a loaded
#: core more). Its one argument is the file descriptor of its end of the connection.
_START = """
import sys, types, os
for name in ("tether", "tether.store"):
    package = types.ModuleType(name)
    package.__path__ = [os.path.join(os.environ["TETHER_PACKAGE_ROOT"], *name.split("."))]
    sys.modules[name] = package
from tether.store._writer_process_main import main
main(int(sys.argv[1]))
"""


class WriterProcessFailed(Exception):
    """The writer process stopped writing; the message says why."""


class WriterProcess:
    """The flow process's end of the connection. Used by the recorder's writer thread only."""

    def __init__(
        self, url: str, process: ProcessInfo, heartbeat_every: float, spool_dir: Path, spool_stem: str
    ) -> None:
        package_root = str(Path(__file__).resolve().parents[2])  # so the writer process imports this very tether
        env = dict(os.environ)
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["TETHER_PACKAGE_ROOT"] = package_root
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _START, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the child's now: its end closes when it dies, which this end then sees
        self._conn = Connection(ours.detach())
        self._ended = False
        self._checked = 0.0
        self._next_ack = 0
        self._started = time.monotonic()
        self.ready = False
        self._send(("hello", url, process, heartbeat_every, str(spool_dir), spool_stem))

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll_ready(self) -> bool:
        """Whether the writer process has opened the store; raises `WriterProcessFailed` if it could not start."""
        if not self.ready:
            for message in self._messages(0.0):
                self._handle(message)
            if not self.ready and (
                self._ended or self._proc.poll() is not None or time.monotonic() - self._started > READY_SECONDS
            ):
                raise WriterProcessFailed(f"the store's writer process did not start (exit code {self._proc.poll()})")
        return self.ready

    def wait_ready(self) -> None:
        """Block until the writer process has opened the store; raises `WriterProcessFailed` if it could not."""
        while not self.poll_ready():
            for message in self._messages(0.1):
                self._handle(message)

    def adopt(self, open_flows: dict[str, str], open_scopes: set[ResourceKey]) -> None:
        self._send(("adopt", open_flows, open_scopes))

    def upto(self, end: Position, written: bool = False) -> None:
        """Say the records are spooled up to ``end``; with ``written``, wait until they are written."""
        ack = self._ack_id() if written else 0
        self._send(("upto", end[0], end[1], ack))
        if ack:
            self._wait_for(ack)
        elif time.monotonic() - self._checked > CHECK_SECONDS:  # not at every message: each look is a system call
            self._checked = time.monotonic()
            for message in self._messages(0.0):
                self._handle(message)

    def check(self) -> None:
        """Raise `WriterProcessFailed` if the writer process has reported a failure or ended; never waits."""
        self._check_exit()

    def beat(self) -> None:
        ack = self._ack_id()
        self._send(("beat", ack))
        self._wait_for(ack)

    def close(self, timeout: float | None) -> None:
        """Close the connection (the writer process writes what is spooled, then ends) and wait
        for it; after ``timeout`` seconds, kill it."""
        self._conn.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def abandon(self) -> None:
        """In a forked child: let go of the connection without ending the writer process (the parent owns it)."""
        try:
            self._conn.close()
        except OSError:
            pass

    # -- the connection ----------------------------------------------------------------

    def _ack_id(self) -> int:
        self._next_ack += 1
        return self._next_ack

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self._conn.send(message)
        except (OSError, ValueError):  # its end is closed (it died), or ours is
            self._check_exit()
            raise WriterProcessFailed("the store's writer process ended unexpectedly") from None

    def _wait_for(self, ack: int) -> None:
        while True:
            for message in self._messages(1.0):
                if self._handle(message) == ack:
                    return
            self._check_exit()

    def _check_exit(self) -> None:
        for message in self._messages(0.0):
            self._handle(message)
        if self._ended:  # its end of the connection is closed: it is ending, if not gone yet
            try:
                self._proc.wait(5.0)
            except subprocess.TimeoutExpired:
                pass
        code = self._proc.poll()
        if self._ended or code is not None:
            raise WriterProcessFailed(f"the store's writer process ended unexpectedly (exit code {code})")

    def _handle(self, message: tuple[Any, ...]) -> int | None:
        what = message[0]
        if what == "ack":
            ack: int = message[1]
            return ack
        if what == "ready":
            self.ready = True
        elif what == "fail":
            raise WriterProcessFailed(message[1])
        return None

    def _messages(self, timeout: float) -> Iterator[tuple[Any, ...]]:
        """The messages that came, waiting up to ``timeout`` for the first."""
        try:
            while not self._ended and self._conn.poll(timeout):
                message: tuple[Any, ...] = self._conn.recv()
                yield message
                timeout = 0.0
        except (EOFError, OSError):
            self._ended = True
