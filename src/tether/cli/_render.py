"""How the commands show what the store recorded: a run's timeline, states, ids, times.

Pure rendering over the store's records; nothing here reads the store or parses arguments.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from typing import Any

from rich.table import Table
from rich.text import Text

from tether.cli._main import out
from tether.store import (
    CrashedRun,
    LedgerEntry,
    RunDetail,
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
TIMELINE_ROWS = 200


def render_run(detail: RunDetail) -> None:
    run = detail.flow_run
    out.print(
        Text.assemble(
            ("Flow run ", "bold"), (repr(run.name), "bold"), f"  {run.id}  ", state_text(run.state_type, run.state_name)
        )
    )
    out.print(
        f"  started {when(run.start_time or run.created)}, {seconds(run.duration)}; process {run.pid} on {run.host}"
    )
    if run.parameters:
        out.print("  parameters: " + redact_text(json.dumps(run.parameters, default=str)))
    if run.parent_id:
        out.print(f"  subflow of {run.parent_id}")
    out.print()
    out.print(timeline(detail))
    errors: list[tuple[str, str, str, str | None]] = [
        ("task", t.name, t.id, t.error) for t in detail.task_runs if t.error
    ]
    errors += [
        ("resource", r.name, r.scope_id, r.setup_error or r.cleanup_error)
        for r in detail.resources
        if r.setup_error or r.cleanup_error
    ]
    if run.error:
        errors.append(("flow", run.name, run.id, run.error))
    if errors:
        out.print()
        out.print(Text("Errors", style="bold red"))
        for kind, name, ident, text in errors:
            out.print(Text(f"{kind} {name!r} ({short_id(ident)}):", style="red"))
            out.print(Text(text or "", style="dim"))
    if detail.logs:
        out.print()
        out.print(Text("Logs", style="bold"))
        names = {t.id: t.name for t in detail.task_runs}
        names[run.id] = run.name
        for line in detail.logs[-TIMELINE_ROWS:]:
            level = logging.getLevelName(line.level)
            out.print(
                f"  {clock(line.timestamp)} {level:<7} {names.get(line.run_id, short_id(line.run_id))}: {line.message}"
            )


def timeline(detail: RunDetail) -> Table:
    """Tasks, resources and subflows as bars on one time axis, in start order."""
    run = detail.flow_run
    rows: list[tuple[float, str, str, str, Text, float, float | None, str]] = []
    for t in detail.task_runs:
        rows.append(
            (
                t.start_time or t.created,
                "task",
                t.name,
                short_id(t.id),
                state_text(t.state_type, t.state_name),
                t.start_time or t.created,
                t.end_time,
                "",
            )
        )
    for r in detail.resources:
        note = f"{len(r.used_by)} task run(s)" + (f"; {r.orphan}" if r.orphan else "")
        rows.append(
            (r.created, "resource", r.name, short_id(r.scope_id), ledger_status(r), r.created, r.cleaned_at, note)
        )
    for f in detail.subflows:
        rows.append(
            (
                f.start_time or f.created,
                "subflow",
                f.name,
                short_id(f.id),
                state_text(f.state_type, f.state_name),
                f.start_time or f.created,
                f.end_time,
                "",
            )
        )
    rows.sort(key=lambda row: row[0])
    origin = run.start_time or run.created
    end = max([run.end_time or 0.0] + [r[6] or r[5] for r in rows] + [origin])
    span = max(end - origin, 1e-6)
    width = 30
    table = Table(box=None, header_style="bold")
    for column in ("KIND", "NAME", "ID", "STATE", "START", "TOOK", "TIMELINE", ""):
        table.add_column(column, no_wrap=column != "")
    for _, kind, name, ident, state, start, stop, note in rows[:TIMELINE_ROWS]:
        first = int((start - origin) / span * (width - 1))
        last = int(((stop if stop is not None else end) - origin) / span * (width - 1))
        bar = " " * max(first, 0) + ("█" if stop is not None else "▒") * max(last - first + 1, 1)
        took = seconds(stop - start) if stop is not None else "..."
        table.add_row(
            kind, name, ident, state, f"+{start - origin:.3f}s", took, Text(bar.ljust(width), style=state.style), note
        )
    if len(rows) > TIMELINE_ROWS:
        table.add_row(
            "",
            f"... {len(rows) - TIMELINE_ROWS} more (tether runs show {run.id} --json)",
            "",
            Text(""),
            "",
            "",
            Text(""),
            "",
        )
    return table


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
