"""The ``tether`` command: run a flow, and look at what the run store recorded.

    tether run FILE.py:FLOW [-p NAME=VALUE ...] [--runner threads|processes|dask|ray]
    tether runs ls [--limit N] [--state S] [--json]
    tether runs show RUN_ID [--json]
    tether resources [--orphans] [--json]
    tether reap [--dry-run] [--mark-closed ID] [--json]
    tether limit set TAG N | ls [--json] | rm TAG
    tether ui [--host 127.0.0.1] [--port 8787] [--allow-actions]

Exit codes: 0 success; 1 the flow did not complete, a reaper failed, or the store
cannot be used; 2 bad input (a missing file or flow, a bad ``-p`` value).
This module only parses, calls `tether.store` and renders; it keeps no state.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

import tether.runners
from tether._cli_ui import ui as ui_command
from tether._cli_serve import deployments_group, serve_cmd
from tether._errors import ParameterError
from tether._flow import FlowFunction
from tether._progress import run_with_progress
from tether._reaping import reaping_process
from tether.store import (
    LedgerEntry,
    RunDetail,
    Store,
    StoreError,
    StoreLocation,
    StoredFlowRun,
    enable,
    open_store,
    reap_orphans,
    redact_text,
)
from tether.store import flush as flush_store
from tether.store._crashed import CrashedRun
from tether.store._deployments import DeploymentTable
from tether.store._ledger import flow_process_gone
from tether.store._migrate import unusable
from tether.store._redact import redact_value
from tether.store._sink import heartbeat_seconds
from tether.store._slots import SlotTable

# Piped output is not cut to 80 columns: wide tables stay whole, messages stay on one line.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
out = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STATE_STYLES = {
    "COMPLETED": "green",
    "FAILED": "red",
    "CRASHED": "red",
    "CANCELLED": "yellow",
    "RUNNING": "cyan",
    "PENDING": "dim",
}
RUNNERS = {"threads": "ThreadPoolRunner", "processes": "ProcessPoolRunner", "dask": "DaskRunner", "ray": "RayRunner"}
TIMELINE_ROWS = 200


class BadInput(click.ClickException):
    """Bad input on the command line: exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        err.print(Text.assemble(("Error: ", "red"), self.message))


class Failure(click.ClickException):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        err.print(Text.assemble(("Error: ", "red"), self.message))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tether")
def main() -> None:
    """tether: run flows, and see their runs and resources."""


main.add_command(ui_command)


main.add_command(serve_cmd)
main.add_command(deployments_group)


# -- the store -----------------------------------------------------------------------


@contextmanager
def store_or_exit() -> Iterator[Store]:
    """The run store, closed afterwards; a store that cannot be used ends the command with its reason."""
    try:
        location = StoreLocation.resolve()
        store = open_store(location.url)
    except StoreError as exc:
        raise Failure(str(exc)) from None
    try:
        yield store
    except SQLAlchemyError as exc:
        raise Failure(str(unusable(location, exc))) from None
    finally:
        store.close()


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


# -- runs ----------------------------------------------------------------------------


@main.group()
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
        state_text = _state(run.state_type, run.state_name)
        if run.state_type in ("RUNNING", "PENDING") and run.end_time is None and _gone(run):
            state_text.append(" (process gone)", style="red")
        tasks = ", ".join(f"{n} {t.lower()}" for t, n in sorted(run.task_counts.items())) or "-"
        table.add_row(run.id, run.name, state_text, _when(run.start_time or run.created), _seconds(run.duration), tasks)
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


def render_run(detail: RunDetail) -> None:
    run = detail.flow_run
    out.print(
        Text.assemble(
            ("Flow run ", "bold"), (repr(run.name), "bold"), f"  {run.id}  ", _state(run.state_type, run.state_name)
        )
    )
    out.print(
        f"  started {_when(run.start_time or run.created)}, {_seconds(run.duration)}; process {run.pid} on {run.host}"
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
                f"  {_clock(line.timestamp)} {level:<7} {names.get(line.run_id, short_id(line.run_id))}: {line.message}"
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
                _state(t.state_type, t.state_name),
                t.start_time or t.created,
                t.end_time,
                "",
            )
        )
    for r in detail.resources:
        note = f"{len(r.used_by)} task run(s)" + (f"; {r.orphan}" if r.orphan else "")
        rows.append((r.created, "resource", r.name, short_id(r.scope_id), _status(r), r.created, r.cleaned_at, note))
    for f in detail.subflows:
        rows.append(
            (
                f.start_time or f.created,
                "subflow",
                f.name,
                short_id(f.id),
                _state(f.state_type, f.state_name),
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
        took = _seconds(stop - start) if stop is not None else "..."
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


# -- resources -----------------------------------------------------------------------


@main.command("resources")
@click.option("--orphans", is_flag=True, help="Only resources whose process died before their cleanup.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="How many rows, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def resources_cmd(orphans: bool, limit: int, as_json: bool) -> None:
    """The resource ledger: every setup and cleanup, and the orphans."""
    with store_or_exit() as store:
        entries = store.orphans() if orphans else store.resources(limit=limit)
    if as_json:
        print_json([e.as_dict() for e in entries])
        return
    if not entries:
        out.print("No orphaned resources." if orphans else "No resources recorded.")
        return
    table = Table(box=None, header_style="bold")
    for column in ("#", "RESOURCE", "STATUS", "FLOW RUN", "PROCESS", "CREATED", "HANDLE", "REAPER"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            str(e.id),
            e.name,
            _status(e),
            e.flow_run_id or "-",
            f"{e.pid}@{e.host}",
            _when(e.created),
            _handle(e),
            e.reaper or "-",
        )
    out.print(table)


@main.command("reap")
@click.option("--dry-run", is_flag=True, help="Show what would be reaped; change nothing.")
@click.option(
    "--mark-closed", "mark", type=int, multiple=True, metavar="ID", help="Record that you closed ledger row ID by hand."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def reap_cmd(dry_run: bool, mark: tuple[int, ...], as_json: bool) -> None:
    """Run the reaper of every orphaned resource, with the handle its setup remembered.

    Flow runs whose process is gone are recorded Crashed first (on another host: whose
    heartbeat is stale), with their unfinished task runs.
    """
    with store_or_exit() as store:
        if mark:
            for entry_id in mark:
                if not store.mark_reaped(entry_id):
                    raise Failure(f"Ledger row #{entry_id} is not an open resource. See: tether resources")
                out.print(f"Ledger row #{entry_id} recorded as closed by hand.")
            return
        crashed = list(store.crashed_at_open)
        if not dry_run:
            crashed += store.record_crashed_runs("tether reap", other_hosts=True)
        with reaping_process("tether reap ran"):  # whatever a reaper's script starts, no flow runs
            results = reap_orphans(store, dry_run=dry_run)
    if as_json:
        print_json([r.as_dict() for r in results])
        return
    for run in crashed:
        out.print(Text.assemble(("recorded Crashed ", "red"), _crashed(run)))
    if not results:
        out.print("No orphaned resources.")
    for r in results:
        e = r.entry
        what = f"{e.name!r} (#{e.id}, flow run {e.flow_run_id or '-'}, {e.orphan}; handle {_handle(e)})"
        if r.outcome == "reaped":
            out.print(Text.assemble(("reaped ", "green"), what, f" with {e.reaper} in {r.seconds:.3f}s"))
        elif r.outcome == "would-reap":
            out.print(Text.assemble(("would reap ", "cyan"), what, f" with {e.reaper}"))
        elif r.outcome == "no-reaper":
            out.print(Text.assemble(("no reaper ", "yellow"), what))
            out.print(f"  Close it by hand using its handle, then: tether reap --mark-closed {e.id}")
        elif r.outcome == "taken":
            out.print(Text.assemble(("skipped ", "dim"), what, ": another process is reaping it or closed it"))
        elif r.outcome == "closed-meanwhile":
            meanwhile = ", but meanwhile another process recorded it closed (its own, by hand, or a reap that took it)"
            out.print(Text.assemble(("reaped ", "yellow"), what, meanwhile))
        else:
            out.print(Text.assemble(("FAILED ", "bold red"), what, f": its reaper {e.reaper} raised:"))
            out.print(Text(r.error or "", style="red"))
    if any(r.outcome == "failed" for r in results):
        sys.exit(1)


# -- limits --------------------------------------------------------------------------


@main.group("limit")
def limit_group() -> None:
    """Concurrency limits on task tags, kept in the store for every process."""


@limit_group.command("set")
@click.argument("tag")
@click.argument("capacity", type=click.IntRange(min=0))
def limit_set(tag: str, capacity: int) -> None:
    """At most CAPACITY task runs tagged TAG run at once."""
    with store_or_exit() as store:
        store.set_limit(tag, capacity)
    out.print(f"Limit for tag {tag!r} set to {capacity}.")


@limit_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def limit_ls(as_json: bool) -> None:
    """List the limits, who holds their slots (run, task, host, pid, since) and who waits."""
    with store_or_exit() as store:
        found = store.limits()
        table_of_slots = SlotTable(store.engine)
        holders = table_of_slots.holders()
        waiting = table_of_slots.waiters()
    if as_json:
        print_json([
            {"tag": tag, "limit": capacity, "waiting": waiting.get(tag, 0),
             "holders": [{"run_id": h.run_id, "task": h.task, "host": h.host, "pid": h.pid,
                          "since": h.acquired, "slot": h.slot} for h in holders if h.tag == tag]}
            for tag, capacity in found.items()
        ])
        return
    if not found:
        out.print("No limits set.")
        return
    table = Table("TAG", "LIMIT", "HELD", "WAITING", box=None, header_style="bold")
    for tag, capacity in found.items():
        table.add_row(tag, str(capacity), str(sum(1 for h in holders if h.tag == tag)), str(waiting.get(tag, 0)))
    out.print(table)
    if holders:
        held = Table("TAG", "RUN", "TASK", "HOST", "PID", "SINCE", box=None, header_style="bold")
        for h in holders:
            since = datetime.datetime.fromtimestamp(h.acquired).strftime("%H:%M:%S")
            held.add_row(h.tag, h.run_id or "", h.task or "", h.host, str(h.pid), since)
        out.print(held)


@limit_group.command("rm")
@click.argument("tag")
def limit_rm(tag: str) -> None:
    """Remove the limit on TAG and free every slot held under it."""
    with store_or_exit() as store:
        if not store.remove_limit(tag):
            raise Failure(f"There is no limit on tag {tag!r}. See: tether limit ls")
        freed = SlotTable(store.engine).free_all(tag)
    out.print(f"Limit for tag {tag!r} removed; {freed} held slot(s) freed.")


# -- run -----------------------------------------------------------------------------


@main.command("run")
@click.argument("target", metavar="FILE.py:FLOW")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A flow parameter; VALUE is JSON if it parses, else a string.",
)
@click.option("--runner", type=click.Choice(sorted(RUNNERS)), default=None, help="Where task bodies run.")
def run_cmd(target: str, params: tuple[str, ...], runner: str | None) -> None:
    """Run the flow FLOW defined in FILE.py, with a live view of its task runs."""
    flow = load_flow(target)
    values = parse_params(params)
    try:
        flow.bind((), values)
    except ParameterError as exc:
        raise BadInput(str(exc)) from None
    if runner is not None:
        runner_class = getattr(tether.runners, RUNNERS[runner], None)
        if runner_class is None:
            raise BadInput(f"--runner {runner}: this version of tether has no {RUNNERS[runner]}.")
        flow = flow.with_options(task_runner=runner_class())
    enable()
    state, flow_run_id = run_with_progress(lambda: flow(**values, return_state=True), out, err)
    flush_store()
    summary = f"Flow run {flow.name!r}" + (f" ({flow_run_id})" if flow_run_id else "")
    if state.is_completed():
        out.print(Text.assemble(summary + " ", ("Completed", "green"), f". Result: {_short(state.data)}"))
        return
    err.print(Text.assemble(summary + " ended ", (state.name, "red"), f": {redact_text(state.message or '')}"))
    sys.exit(1)


def load_flow(target: str) -> FlowFunction[Any]:
    """Import FILE.py and find FLOW in it (by variable name, then by flow name)."""
    file, sep, name = target.rpartition(":")
    if not sep or not file or not name:
        raise BadInput(f"{target!r} is not FILE.py:FLOW. Example: tether run flows/etl.py:main_flow")
    path = Path(file)
    if not path.is_file():
        raise BadInput(f"No such file: {file} (looked in {Path.cwd()}).")
    module = _import_file(path)
    found = getattr(module, name, None)
    if not isinstance(found, FlowFunction):
        flows = {v.name: v for v in vars(module).values() if isinstance(v, FlowFunction)}
        if name in flows:
            return flows[name]
        available = ", ".join(sorted({k for k, v in vars(module).items() if isinstance(v, FlowFunction)})) or "none"
        what = "is not a @flow" if found is not None else "is not defined"
        raise BadInput(f"{name!r} {what} in {file}. Flows in that file: {available}.")
    return found


def _import_file(path: Path) -> Any:
    stem = path.stem
    module_name = (
        stem if stem.isidentifier() and stem not in sys.modules else f"tether_run_{abs(hash(str(path.resolve())))}"
    )
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BadInput(f"Cannot import {path}: not a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any error in the user's file is reported the same way
        del sys.modules[module_name]
        err.print_exception()
        raise BadInput(f"Importing {path} failed: {type(exc).__name__}: {exc}") from None
    return module


def parse_params(params: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in params:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise BadInput(f"-p {item!r} is not NAME=VALUE. Example: -p rows=1000 -p db=mytestdb")
        try:
            values[name] = json.loads(raw)
        except ValueError:
            values[name] = raw
    return values


# -- rendering helpers -----------------------------------------------------------------


def short_id(run_id: str) -> str:
    """Enough of a task run's or scope's id to tell it from the others of its flow run.

    Run ids of one process share their start (a per-process prefix and a counter), so the end is what differs.
    """
    return run_id[-8:]


def _state(state_type: str | None, name: str | None) -> Text:
    return Text(name or state_type or "?", style=STATE_STYLES.get(state_type or "", ""))


def _status(entry: LedgerEntry) -> Text:
    if entry.orphan:
        return Text("orphan", style="bold red")
    style = {"closed": "green", "reaped": "green", "closed-by-hand": "green", "open": "cyan", "setting-up": "cyan"}.get(
        entry.status, "red"
    )
    return Text(entry.status, style=style)


def _handle(entry: LedgerEntry) -> str:
    return "-" if entry.handle is None else json.dumps(redact_value(entry.handle), default=str)


def _crashed(run: CrashedRun) -> str:
    tasks = f"; {run.task_runs} unfinished task run(s) with it" if run.task_runs else ""
    return f"flow run {run.name!r} ({run.id}): {run.reason}{tasks}"


def _gone(run: StoredFlowRun) -> bool:
    """A run its process can no longer end, not recorded Crashed yet (the store could not be written)."""
    stale = 6 * heartbeat_seconds()
    return flow_process_gone(run.host, run.pid, run.created, run.heartbeat, time.time(), stale) is not None


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _clock(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%H:%M:%S.%f")[:-3]


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def _short(value: Any) -> str:
    text = redact_text(repr(value))
    return text if len(text) <= 200 else text[:200] + "..."


if __name__ == "__main__":
    main()
