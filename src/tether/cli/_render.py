"""How the commands show what the store recorded: states, ids, times, ledger rows, values.

Pure rendering over the store's records; nothing here reads the store or parses arguments.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

from rich.text import Text

from tether.store import (
    CrashedRun,
    LedgerEntry,
    StoredFlowRun,
    flow_process_gone,
    heartbeat_seconds,
    redact_text,
    redact_value,
)

STATE_STYLES = {
    "COMPLETED": "green",
    "FAILED": "red",
    "CRASHED": "red",
    "CANCELLED": "yellow",
    "RUNNING": "cyan",
    "PENDING": "dim",
}


def short_id(run_id: str) -> str:
    """Enough of a task run's or scope's id to tell it from the others of its flow run.

    Run ids of one process share their start (a per-process prefix and a counter), so the end is what differs.
    """
    return run_id[-8:]


def state_text(state_type: str | None, name: str | None) -> Text:
    return Text(name or state_type or "?", style=STATE_STYLES.get(state_type or "", ""))


def ledger_status(entry: LedgerEntry) -> Text:
    if entry.orphan:
        return Text("orphan", style="bold red")
    style = {"closed": "green", "reaped": "green", "closed-by-hand": "green", "open": "cyan", "setting-up": "cyan"}.get(
        entry.status, "red"
    )
    return Text(entry.status, style=style)


def handle_text(entry: LedgerEntry) -> str:
    return "-" if entry.handle is None else json.dumps(redact_value(entry.handle), default=str)


def crashed_text(run: CrashedRun) -> str:
    tasks = f"; {run.task_runs} unfinished task run(s) with it" if run.task_runs else ""
    return f"flow run {run.name!r} ({run.id}): {run.reason}{tasks}"


def process_gone(run: StoredFlowRun) -> bool:
    """A run its process can no longer end, not recorded Crashed yet (the store could not be written)."""
    stale = 6 * heartbeat_seconds()
    return flow_process_gone(run.host, run.pid, run.created, run.heartbeat, time.time(), stale) is not None


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def clock(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%H:%M:%S.%f")[:-3]


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def short_value(value: Any) -> str:
    text = redact_text(repr(value))
    return text if len(text) <= 200 else text[:200] + "..."
