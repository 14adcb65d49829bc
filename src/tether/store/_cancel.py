"""Cancelling a flow run from another process: find the process running it, check it, send it SIGTERM.

A flow run is cancelled by its own process: the engine turns SIGTERM into
cancellation (task runs not started are cancelled, running ones interrupted,
every resource copy cleaned up and told the scope failed), and the run ends
``Cancelled``, recorded by that process. So `cancel_flow_run` only finds the
process the store names for the run (its host and pid), makes sure the pid is
still that process (a pid is reused once its process is gone: the process must
have started before the run was created, and at the very start time the ledger
recorded for the run's resources, when it recorded one), that the process
catches SIGTERM (a process that does not would die with nothing cleaned up: a
flow run started outside its process's main thread), and sends the signal.

Like Prefect, where a subflow run "can only be cancelled by cancelling the parent
flow run", a subflow run is not cancelled alone: it runs inside its parent's
process, and the error names the top-level run to cancel. A run on another host
cannot be signalled from here; the error says where to run the command.

This module records no state and waits for nothing: the caller watches the run
end (`tether runs cancel` and the dashboard do).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from tether._errors import CannotCancel
from tether.store._db import read
from tether.store._ledger import REUSED_AFTER_SECONDS, process_alive, process_started, process_started_at
from tether.store._schema import flow_runs, resources
from tether.store._store import Store, matching_flow_run

FINAL = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
#: How many parents up a subflow's top-level run is looked for (a cycle in bad data must not hang).
MAX_DEPTH = 100




@dataclass(frozen=True)
class CancelSent:
    """SIGTERM was sent to the process running the flow run."""

    id: str
    name: str
    host: str
    pid: int
    #: The run's state when the signal was sent (``Running``, ``Pending``...).
    state_name: str
    sent_at: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def process_running(self) -> bool:
        """Whether the signalled process is still there (not yet exited, or not yet reaped by its parent)."""
        return process_alive(self.pid, None)


def cancel_flow_run(
    store: Store,
    run_id: str,
    this_host: str | None = None,
    send: Callable[[int, int], None] = os.kill,
    now: float | None = None,
) -> CancelSent:
    """Send SIGTERM to the process of flow run ``run_id`` (a whole id, or its start or end if unique).

    Raises `RunNotFound` if no run (or several) match, and `CannotCancel` when the run
    is final, a subflow, on another host, or its process is gone, reused, or does not
    handle SIGTERM.
    """
    host = this_host or socket.gethostname()
    run, chain, started_ticks = read(store.engine, lambda conn: _look_up(conn, run_id, store.location.shown))
    rid, name = run["id"], run["name"]
    shown = f"Flow run {name!r} ({rid})"
    state = run["state_name"] or "Pending"
    if run["state_type"] in FINAL:
        ended = f" at {_when(run['end_time'])}" if run["end_time"] else ""
        raise CannotCancel(f"{shown} already ended {state}{ended}: there is nothing left to cancel.", rid, "final")
    if run["parent_id"] is not None:
        raise CannotCancel(_subflow_message(shown, run, chain), rid, "subflow")
    pid, run_host = run["pid"], run["host"]
    if pid is None or run_host is None:
        raise CannotCancel(
            f"{shown} is {state}, but the store recorded no process for it (no host or pid), so there is "
            "nothing to signal. If it is still running, stop it where it runs (Ctrl-C in its terminal); "
            "if not, `tether reap` records it Crashed.",
            rid,
            "no-process",
        )
    if run_host != host:
        beat = run["heartbeat"]
        age = f" Its last heartbeat was {(now or time.time()) - beat:.0f} s ago." if beat is not None else ""
        raise CannotCancel(
            f"{shown} runs on host {run_host!r} (process {pid}), not on this host ({host!r}): tether cancels a "
            f"run by signalling its process, which it can do only on the same machine.{age} Run this command "
            f"on {run_host}: tether runs cancel {rid} (if that host is gone, `tether reap` records the run Crashed "
            "once its heartbeat is stale, and reaps its resources).",
            rid,
            "other-host",
        )
    if not process_alive(pid, None):
        raise CannotCancel(
            f"{shown} is recorded {state}, but its process {pid} on this host is gone (killed, or the machine "
            "restarted) and never recorded the run's end. Nothing is left to cancel: run `tether reap` to record "
            "it Crashed and clean up the resources it left open.",
            rid,
            "gone",
        )
    reused = _reused(pid, run["created"], started_ticks)
    if reused is not None:
        raise CannotCancel(
            f"{shown} is recorded {state}, but pid {pid} is now another process ({reused}): the run's own "
            "process is gone, so tether sends no signal to it. Run `tether reap` to record the run Crashed and "
            "clean up the resources it left open.",
            rid,
            "reused",
        )
    if catches_signal(pid, signal.SIGTERM) is False:
        # Ctrl-C may still cancel it, if its process handles SIGINT.
        interrupt = f"`kill -INT {pid}`" if catches_signal(pid, signal.SIGINT) else "Ctrl-C in its terminal"
        raise CannotCancel(
            f"{shown} runs in process {pid}, which does not handle SIGTERM (a flow run started outside its "
            "process's main thread gets no SIGTERM handler from tether): the signal would "
            f"kill it with nothing cleaned up, so it was not sent. Stop it with {interrupt}, which cancels it "
            "and cleans up its resources.",
            rid,
            "no-handler",
        )
    try:
        send(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise CannotCancel(
            f"{shown}: its process {pid} ended just now, before the signal was sent. See how the run ended with: "
            f"tether runs show {rid}",
            rid,
            "gone",
        ) from None
    except PermissionError:
        raise CannotCancel(
            f"{shown} runs in process {pid}, which belongs to another user, so this user may not signal it. "
            f"Run the command as that user: tether runs cancel {rid}",
            rid,
            "not-permitted",
        ) from None
    return CancelSent(rid, name, run_host, pid, state, time.time() if now is None else now)


def catches_signal(pid: int, signum: int) -> bool | None:
    """Whether process ``pid`` has a handler for ``signum`` (Linux's ``/proc/<pid>/status``); None where unknown."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _look_up(conn: sa.Connection, run_id: str, shown: str) -> tuple[Any, list[Any], str | None]:
    """The run's row, its parents up to the top-level run (nearest first), and its process's recorded start."""
    row = matching_flow_run(conn, run_id, shown)
    chain: list[Any] = []
    parent_id = row["parent_id"]
    while parent_id is not None and len(chain) < MAX_DEPTH:
        parent = conn.execute(sa.select(flow_runs).where(flow_runs.c.id == parent_id)).mappings().first()
        if parent is None:
            break
        chain.append(parent)
        parent_id = parent["parent_id"]
    started = None
    if row["pid"] is not None and row["host"] is not None:
        # A resource copy of this run set up in the run's own process recorded when that process started.
        started = conn.execute(
            sa.select(resources.c.pid_started)
            .where(resources.c.flow_run_id == row["id"])
            .where(resources.c.host == row["host"])
            .where(resources.c.pid == row["pid"])
            .where(resources.c.pid_started.is_not(None))
            .limit(1)
        ).scalar()
    return row, chain, started


def _reused(pid: int, created: float, started_ticks: str | None) -> str | None:
    """Why live ``pid`` is not the process that created the run at ``created``, or None if it is."""
    if started_ticks is not None:
        now_ticks = process_started(pid)
        if now_ticks is not None and now_ticks != started_ticks:
            return "it started at another time than the process that set up the run's resources"
        return None
    started = process_started_at(pid)
    if started is not None and started > created + REUSED_AFTER_SECONDS:
        return f"it started at {_when(started)}, after the flow run was created at {_when(created)}"
    return None


def _subflow_message(shown: str, run: Any, chain: list[Any]) -> str:
    top = chain[-1] if chain else None
    said = (
        f"{shown} is a subflow run: it runs inside its parent's process, and, as in Prefect, a subflow run is "
        "cancelled only by cancelling the run it belongs to (which cancels it too, its resources cleaned up)."
    )
    if top is None:
        return said + f" Its parent {run['parent_id']} is not in the store; see the runs with: tether runs ls"
    if top["state_type"] in FINAL:
        return said + (
            f" Its top-level run {top['name']!r} ({top['id']}) already ended {top['state_name']}, so this subflow "
            "is not running either (its own end was never recorded); once its process is gone, `tether reap` "
            "records it Crashed."
        )
    return said + f" Cancel its top-level run {top['name']!r}: tether runs cancel {top['id']}"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))
