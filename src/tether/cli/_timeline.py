"""``tether runs show``: one flow run as text, its task runs, resource copies and subflows on one time axis,
then its artifacts (`_artifacts`), errors and logs.

Each row is named as the run is (a task run by its run name, numbered when a task ran more than
once; a resource copy by its ledger row ``#N``, as ``tether resources`` and ``tether reap`` name
it), and its bar shows the attempts, the waits for a retry and the waits for a concurrency slot.
The table fits the console's width (80 columns too). Pure rendering over `RunDetail`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

from tether.cli._artifacts import render_artifacts
from tether.cli._main import out
from tether.cli._render import clock, ledger_status, seconds, short_id, state_text, when
from tether.store import (
    LedgerEntry,
    RunDetail,
    StoredArtifact,
    StoredFlowRun,
    StoredStateChange,
    StoredTaskRun,
    redact_text,
)

TIMELINE_ROWS = 200
#: The bar's characters by what the run did then: ran, waited for a concurrency slot, waited for a retry.
RAN, SLOT, RETRY = "█", "░", "·"
_FAILED = ("FAILED", "CRASHED")


@dataclass
class Row:
    """One line of the timeline."""

    name: str
    ident: str
    state: Text
    start: float
    stop: float | None
    #: (from, to, character): the stretches the bar shows; empty: one bar from start to stop.
    stretches: list[tuple[float, float | None, str]]
    note: str
    failed: bool = False


def render_run(detail: RunDetail, artifacts: list[StoredArtifact] | None = None) -> None:
    """The run's header, its timeline, then its artifacts, errors and logs."""
    run = detail.flow_run
    out.print(
        Text.assemble(
            ("Flow run ", "bold"), (repr(run.run_name), "bold"), flow_of(run), f"  {run.id}  ",
            state_text(run.state_type, run.state_name),
        )
    )
    out.print(
        f"  started {when(run.start_time or run.created)}, {seconds(run.duration)}; process {run.pid}@{run.host}"
    )
    if run.parameters:
        out.print("  parameters: " + redact_text(json.dumps(run.parameters, default=str)))
    if run.parent_id:
        out.print(f"  subflow of {run.parent_id}")
    out.print()
    names = task_run_names(detail.task_runs)
    rows = timeline_rows(detail, names)
    out.print(timeline(detail, rows[:TIMELINE_ROWS]))
    if len(rows) > TIMELINE_ROWS:  # below the table, so that its width is the rows' own
        failed = sum(1 for r in rows if r.failed)
        shown = f"failed ones first ({failed}), then " if failed else ""
        out.print(Text(f"  ... {len(rows) - TIMELINE_ROWS} more rows not shown ({shown}in start order); "
                       f"all of them: tether runs show {run.id} --json", style="dim"))
    render_artifacts(out, run.id, artifacts or [], names)
    errors: list[tuple[str, str, str, str | None]] = [
        ("task run", names[t.id], short_id(t.id), t.error) for t in detail.task_runs if t.error
    ]
    errors += [
        ("resource", r.name, f"#{r.id}", r.setup_error or r.cleanup_error)
        for r in detail.resources
        if r.setup_error or r.cleanup_error
    ]
    if run.error:
        errors.append(("flow run", run.run_name, run.id, run.error))
    if errors:
        out.print()
        out.print(Text("Errors", style="bold red"))
        for kind, name, ident, text in errors:
            out.print(Text(f"{kind} {name!r} ({ident}):", style="red"))
            out.print(Text(text or "", style="dim"))
    if detail.logs:
        out.print()
        out.print(Text("Logs", style="bold"))
        by_id = dict(names)
        by_id[run.id] = run.run_name
        for line in detail.logs[-TIMELINE_ROWS:]:
            level = logging.getLevelName(line.level)
            out.print(
                f"  {clock(line.timestamp)} {level:<7} {by_id.get(line.run_id, short_id(line.run_id))}: {line.message}"
            )


def task_run_names(task_runs: list[StoredTaskRun]) -> dict[str, str]:
    """Each task run's own name: a ``task_run_name`` template's as it rendered it; a run without one
    is named after its task, numbered in creation order when several runs share it (``add-0``,
    ``add-1``, as Prefect 2 names mapped runs)."""
    count: dict[str, int] = {}
    for t in task_runs:
        if t.run_name == t.name:
            count[t.name] = count.get(t.name, 0) + 1
    seen: dict[str, int] = {}
    names = {}
    for t in sorted(task_runs, key=lambda t: (t.created, t.id)):
        if t.run_name != t.name:  # a template's name wins, as given
            names[t.id] = t.run_name
        elif count[t.name] > 1:
            names[t.id] = f"{t.name}-{seen.get(t.name, 0)}"
            seen[t.name] = seen.get(t.name, 0) + 1
        else:
            names[t.id] = t.name
    return names


def flow_of(run: StoredFlowRun) -> str:
    """`` (flow etl)`` after a run named by a ``flow_run_name`` template; nothing when it is the flow's name."""
    return f" (flow {run.name})" if run.run_name != run.name else ""


def timeline_rows(detail: RunDetail, names: dict[str, str]) -> list[Row]:
    """The rows in start order; past `TIMELINE_ROWS`, the failed ones come first so none is hidden."""
    run = detail.flow_run
    changes: dict[str, list[StoredStateChange]] = {}
    for change in sorted(detail.state_changes, key=lambda c: c.timestamp):
        if change.kind == "task":
            changes.setdefault(change.run_id, []).append(change)
    rows = [_task_row(t, names[t.id], changes.get(t.id, [])) for t in detail.task_runs]
    rows += [_resource_row(r, (run.pid, run.host)) for r in detail.resources]
    rows += [
        Row(f.run_name, short_id(f.id), state_text(f.state_type, f.state_name), f.start_time or f.created, f.end_time,
            [], "subflow", f.state_type in _FAILED)
        for f in detail.subflows
    ]
    rows.sort(key=lambda row: row.start)
    if len(rows) > TIMELINE_ROWS:
        rows.sort(key=lambda row: not row.failed)  # stable: start order within each part
    return rows


def _task_row(t: StoredTaskRun, name: str, changes: list[StoredStateChange]) -> Row:
    stretches: list[tuple[float, float | None, str]] = []
    waited = 0.0
    for i, change in enumerate(changes):
        until = changes[i + 1].timestamp if i + 1 < len(changes) else None
        if change.type in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED"):
            continue
        char = RAN if change.type == "RUNNING" else SLOT if change.name == "AwaitingConcurrencySlot" else RETRY
        if change.name == "AwaitingConcurrencySlot":
            waited += (until if until is not None else (t.end_time or change.timestamp)) - change.timestamp
        if change.type == "PENDING" and change.name not in ("AwaitingConcurrencySlot", "AwaitingRetry"):
            continue  # created, not started yet: no bar
        stretches.append((change.timestamp, until if until is not None else t.end_time, char))
    notes = []
    if t.run_count > 1:
        notes.append(f"{t.run_count} attempts")
    if waited > 0:
        notes.append(f"slot wait {seconds(waited)}")
    start = stretches[0][0] if stretches else t.start_time or t.created
    return Row(name, short_id(t.id), state_text(t.state_type, t.state_name), start, t.end_time, stretches,
               ", ".join(notes), t.state_type in _FAILED)


def _resource_row(r: LedgerEntry, flow_process: tuple[int | None, str | None]) -> Row:
    notes = [f"resource of {len(r.used_by)} task run(s)"]
    if (r.pid, r.host) != flow_process:
        notes.append(f"on worker {r.pid}@{r.host}")
    if r.orphan:
        notes.append(r.orphan)
    return Row(r.name, f"#{r.id}", ledger_status(r), r.created, r.cleaned_at, [], "; ".join(notes),
               r.status in ("setup-failed", "cleanup-failed") or r.orphan is not None)


def timeline(detail: RunDetail, rows: list[Row]) -> Table:
    """The rows as bars on one time axis; the bar takes what the console's width leaves."""
    run = detail.flow_run
    origin = run.start_time or run.created
    end = max([run.end_time or 0.0, origin] + [r.stop or r.start for r in rows])
    span = max(end - origin, 1e-6)
    width = max(10, min(40, out.width - 66))
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("NAME", max_width=22, overflow="fold")  # a longer name folds: shown whole
    table.add_column("ID", no_wrap=True)
    table.add_column("STATE", no_wrap=True, max_width=11)
    table.add_column("TOOK", no_wrap=True, justify="right")
    table.add_column("TIMELINE", no_wrap=True, width=width)
    table.add_column("", min_width=10, overflow="fold")

    def cell(t: float) -> int:
        return min(width - 1, max(0, int((t - origin) / span * (width - 1))))

    for row in rows:
        bar = [" "] * width
        stretches = row.stretches or [(row.start, row.stop, RAN if row.stop is not None else "▒")]
        for start, stop, char in stretches:
            for i in range(cell(start), cell(stop if stop is not None else end) + 1):
                bar[i] = char if stop is not None or char != RAN else "▒"
        took = seconds(row.stop - row.start) if row.stop is not None else "..."
        table.add_row(row.name, row.ident, row.state, took, Text("".join(bar), style=row.state.style), row.note)
    return table
