"""When a ledger row is an orphan: a resource not cleaned up whose process is gone.

On this host the process is checked directly (a pid that is dead, a zombie, or
reused by a process that started at another time); a process on another host
is judged by its heartbeat. Pure functions, with the clock passed in.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessInfo:
    """A process, as the ledger names it: pid, host, and when it started (to tell a reused pid apart)."""

    pid: int
    host: str
    started: str | None

    @classmethod
    def current(cls) -> ProcessInfo:
        return cls(os.getpid(), socket.gethostname(), process_started(os.getpid()))


def process_started(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux); None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


#: Cleanup outcomes that leave the resource possibly open (reaping may be tried again).
NOT_CLOSED = (None, "reap-failed")


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
    if heartbeat is None or now - heartbeat > stale_after:
        since = "ever" if heartbeat is None else f"{now - heartbeat:.0f} s"
        return f"no heartbeat from process {pid} on {host} for {since}"
    return None
