"""``tether runs ls``, ``tether runs show`` and ``tether runs cancel``: the flow runs the store recorded.

``ls`` and ``show`` read through `tether.store` and hand the records to `_render`
(``show``: to `_timeline`, and its artifacts to `_artifacts`).
``cancel`` has `tether.store.cancel_flow_run` send SIGTERM to the run's process
(which cancels the run and cleans up its resources), then watches the store until
the run ends. Nothing here writes a run's state: its own process does.
"""

from __future__ import annotations

import time

import click
from rich.table import Table

from tether.cli._artifacts import artifact_dict
from tether.cli._main import BadInput, Failure, out, print_json, store_or_exit
from tether.cli._render import process_gone, seconds, state_text, when
from tether.cli._timeline import render_run, task_run_names
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
from tether.store import (
    CancelSent,
    CannotCancel,
    DeploymentTable,
    RunNotFound,
    Store,
    StoredFlowRun,
    cancel_flow_run,
    find_flow_run,
    open_store,
    run_artifacts,
)

#: The state types, then the names tether gives states of those types (a run's own names are matched too).
#: The flow run states after which nothing runs any more.
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
#: How often ``tether runs cancel``, waiting for the run to end, looks whether its process is gone.
CANCEL_LOOK_SECONDS = 1.0

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
        # A run that a flow_run_name template named: its own name, then its flow's (which it is grouped by).
        name = run.name if run.run_name == run.name else f"{run.run_name} ({run.name})"
        table.add_row(run.id, name, shown, when(run.start_time or run.created), seconds(run.duration), tasks)
    out.print(table)


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the timeline.")
def runs_show(run_id: str, as_json: bool) -> None:
    """Show one flow run: its tasks and resources on one timeline, its artifacts, errors and logs."""
    with store_or_exit() as store:
        try:
            detail = store.flow_run(run_id)
        except LookupError as exc:
            raise Failure(str(exc)) from None
        artifacts = run_artifacts(store, detail.flow_run.id)
    if as_json:
        names = task_run_names(detail.task_runs)
        print_json(detail.as_dict() | {"artifacts": [artifact_dict(a, names) for a in artifacts]})
        return
    render_run(detail, artifacts)


@runs.command("cancel")
@click.argument("run_id")
@click.option(
    "--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0),
    help="How long to wait for the run to end Cancelled (its cleanups included).",
)
@click.option("--no-wait", is_flag=True, help="Send the signal and return, without waiting for the run to end.")
def runs_cancel(run_id: str, timeout: float, no_wait: bool) -> None:
    """Cancel a running flow run, as prefect flow-run cancel does.

    The run's process gets SIGTERM: it cancels the run's task runs, cleans up its
    resources and records the run Cancelled. A subflow run is cancelled with its
    top-level run. Exits 0 once the run ended Cancelled (or, with --no-wait, once the signal is sent),
    1 if it cannot be cancelled (already ended, a subflow, on another host, its process
    gone), or if it ended otherwise or not within --timeout.
    """
    with store_or_exit() as store:
        try:
            sent = cancel_flow_run(store, run_id)
        except (RunNotFound, CannotCancel) as exc:
            raise Failure(str(exc)) from None
        out.print(
            f"Sent SIGTERM to process {sent.pid} on this host, which runs flow run {sent.name!r} ({sent.id}, "
            f"{sent.state_name}): it cancels its task runs and cleans up its resources."
        )
        if no_wait:
            out.print(f"Not waiting for it to end; see it with: tether runs show {sent.id}")
            return
        ended = wait_for_end(store, sent, timeout)
    if ended is None:
        raise Failure(
            f"Flow run {sent.name!r} ({sent.id}) has not ended within {timeout:g} s of the signal: a resource's "
            "cleanup or a task stuck outside Python may still be running (the run ends Cancelled when they "
            f"return). Watch it with: tether runs show {sent.id}"
        )
    message = f": {ended.state_message}" if ended.state_message else ""
    if ended.state_type != "CANCELLED":
        raise Failure(
            f"Flow run {sent.name!r} ({sent.id}) ended {ended.state_name}, not Cancelled{message} (it ended "
            "before the signal could cancel it, or its process handled SIGTERM in its own way)."
        )
    out.print(f"Flow run {sent.name!r} ({sent.id}) ended {ended.state_name}{message}")


def wait_for_end(store: Store, sent: CancelSent, timeout: float) -> StoredFlowRun | None:
    """The run once the store shows it final, or None after ``timeout`` seconds.

    It reads the run again at each change of the store (`Store.wait_for_change`: at the
    commit on PostgreSQL, a cheap poll on SQLite). Once the signalled process is gone, the
    records it left in its spool are written by opening the store again (as any store open
    does for a dead process's spool)."""
    deadline = time.monotonic() + timeout
    reopened = False
    store.wait_for_change(0)  # from here on: a change committed while the run is read below is not missed
    while True:
        run = find_flow_run(store, sent.id)
        if run.state_type in FINAL_STATES:
            return run
        if not reopened and not sent.process_running():
            reopened = True
            open_store(store.location.url).close()
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        # A bounded wait: the process's exit, which changes nothing in the store, is looked at in between.
        store.wait_for_change(min(left, CANCEL_LOOK_SECONDS))
