"""When a process the store names is gone: the owner of a ledger row, of a flow run, or of a reap claim.

On this host the process is checked directly (a pid that is dead, a zombie, or
reused by a process that started at another time); a process on another host
is judged by its heartbeat. Pure functions, with the clock passed in; they read
``/proc`` and call ``kill(pid, 0)``, nothing else. Deciding what to do about a
gone process is the store's (`_crashed`, `_reap`).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProcessInfo:
    """A process, as the ledger names it: pid, host, and when it started (to tell a reused pid apart)."""

    pid: int
    host: str
    started: str | None

    @classmethod
    def current(cls) -> ProcessInfo:
        return cls(os.getpid(), socket.gethostname(), process_started(os.getpid()))

    def as_json(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "started": self.started}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> ProcessInfo | None:
        """The process ``as_json`` wrote; None for any other text."""
        try:
            found: Any = json.loads(text or "")
            return cls(int(found["pid"]), str(found["host"]), found["started"])
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self, this_host: str | None = None) -> str:
        where = "this host" if self.host == (this_host or socket.gethostname()) else self.host
        return f"process {self.pid} on {where}"


def process_started(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux); None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def process_started_at(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch (Linux); None where unknown."""
    ticks = process_started(pid)
    if ticks is None:
        return None
    try:
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return boot + int(ticks) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration):
        return None


#: Cleanup outcomes that leave the resource possibly open (reaping may be tried again).
NOT_CLOSED = (None, "reap-failed")
#: A live pid whose process started this long after the run was created is another process
#: (the margin covers the boot time's rounding to a second, and a small clock step).
REUSED_AFTER_SECONDS = 2.0


def process_alive(pid: int, started: str | None) -> bool:
    """Whether ``pid`` is a live process on this host, and the same one that started at ``started``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    if stat[stat.rfind(")") + 2 :][:1] in ("Z", "X"):
        return False  # killed, waiting to be reaped by its parent: it will not clean up
    return started is None or process_started(pid) == started


def orphan_reason(
    host: str,
    pid: int,
    pid_started: str | None,
    heartbeat: float | None,
    now: float,
    stale_after: float,
    this_host: str | None = None,
) -> str | None:
    """Why a not-closed ledger row is an orphan, or None if its process may still close it."""
    if host == (this_host or socket.gethostname()):
        if process_alive(pid, pid_started):
            return None
        return f"process {pid} on this host is gone"
    silent = heartbeat_stale(heartbeat, now, stale_after)
    return None if silent is None else f"no heartbeat from process {pid} on {host} for {silent}"


def heartbeat_stale(heartbeat: float | None, now: float, stale_after: float) -> str | None:
    """How long there has been no heartbeat (``"ever"``, ``"75 s"``) if longer than ``stale_after``, else None."""
    if heartbeat is None:
        return "ever"
    return f"{now - heartbeat:.0f} s" if now - heartbeat > stale_after else None


def flow_process_gone(
    host: str | None,
    pid: int | None,
    created: float,
    heartbeat: float | None,
    now: float,
    stale_after: float,
    this_host: str | None = None,
    other_hosts: bool = False,
) -> str | None:
    """Why the process of an unfinished flow run is gone, or None if it may still be running it.

    The flow run row keeps no start time of its process, so a live pid is taken for
    another process only with two pieces of evidence: it started after the run was
    created, and the run's heartbeat (which its process renews) is stale. A process on
    another host is judged by the heartbeat alone, and only with ``other_hosts``.
    """
    if pid is None or host is None:
        return None
    if host != (this_host or socket.gethostname()):
        return orphan_reason(host, pid, None, heartbeat, now, stale_after, this_host) if other_hosts else None
    if not process_alive(pid, None):
        return f"process {pid} on this host is gone"
    started = process_started_at(pid)
    stale = heartbeat is None or now - heartbeat > stale_after
    if started is not None and started > created + REUSED_AFTER_SECONDS and stale:
        return f"process {pid} on this host is another process (it started after the flow run was created)"
    return None
