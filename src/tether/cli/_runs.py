"""``tether runs ls`` and ``tether runs show``: the flow runs the store recorded.

Reads through `tether.store` and hands the records to `_render`; changes nothing.
"""

from __future__ import annotations

import click
from rich.table import Table

from tether.cli._main import BadInput, Failure, out, print_json, store_or_exit
from tether.cli._render import process_gone, seconds, state_text, when
from tether.cli._timeline import render_run
from tether.states import (
    AwaitingConcurrencySlot,
    AwaitingRetry,
    Cached,
    Cancelling,
    Late,
    Paused,
    Retrying,
    Scheduled,
    StateType,
    Suspended,
    TimedOut,
)
from tether.store import DeploymentTable

#: The state types, then the names tether gives states of those types (a run's own names are matched too).
KNOWN_STATES = tuple(t.value.lower() for t in StateType) + tuple(
    make().name
    for make in (AwaitingConcurrencySlot, AwaitingRetry, Cached, Cancelling, Late, Paused, Retrying, Scheduled,
                 Suspended, TimedOut)
)


@click.group()
def runs() -> None:
    """Flow runs recorded in the store."""


@runs.command("ls")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="How many runs, newest first.")
@click.option("--state", default=None, help="Only runs in this state (type or name: failed, completed, TimedOut...).")
@click.option("--deployment", default=None, help="Only runs of this deployment (tether serve).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def runs_ls(limit: int, state: str | None, deployment: str | None, as_json: bool) -> None:
    """List the latest flow runs."""
    with store_or_exit() as store:
        if deployment is None:
            found = store.flow_runs(limit=limit, state=state)
        else:
            found = DeploymentTable(store.engine).flow_runs(deployment, limit=limit, state=state)
    if state and not found and state.upper() not in {s.upper() for s in KNOWN_STATES}:
        # Nothing matched and tether gives no state that name: a typo, not an empty list.
        raise BadInput(
            f"--state {state}: no run is in that state, and tether has no state of that name. "
            f"States: {', '.join(KNOWN_STATES)} (any case). Example: tether runs ls --state failed"
        )
    if as_json:
        print_json([r.as_dict() for r in found])
        return
    if not found:
        out.print("No flow runs recorded" + (f" in state {state!r}." if state else "."))
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "FLOW", "STATE", "STARTED", "DURATION", "TASKS"):
        table.add_column(column)
    for run in found:
        shown = state_text(run.state_type, run.state_name)
        if run.state_type in ("RUNNING", "PENDING") and run.end_time is None and process_gone(run):
            shown.append(" (process gone)", style="red")
        tasks = ", ".join(f"{n} {t.lower()}" for t, n in sorted(run.task_counts.items())) or "-"
        table.add_row(run.id, run.name, shown, when(run.start_time or run.created), seconds(run.duration), tasks)
    out.print(table)


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the timeline.")
def runs_show(run_id: str, as_json: bool) -> None:
    """Show one flow run: its tasks and resources on one timeline, errors and logs."""
    with store_or_exit() as store:
        try:
            detail = store.flow_run(run_id)
        except LookupError as exc:
            raise Failure(str(exc)) from None
    if as_json:
        print_json(detail.as_dict())
        return
    render_run(detail)
