"""The ``tether serve`` and ``tether deployments`` commands.

    tether serve FILE.py:FLOW --name NAME (--cron EXPR | --interval SECONDS | --rrule RULE)
                 [--timezone TZ] [-p NAME=VALUE ...] [--catchup latest|all|none]
                 [--overlap queue|skip|cancel-new] [--limit N]
    tether deployments ls [--json] | pause NAME | resume NAME | run NAME [-p NAME=VALUE ...]
    tether deployments runs NAME [--limit N] [--json]

Exit codes: ``serve`` 143 after SIGTERM, 130 after Ctrl-C; 2 bad input (a bad
schedule, time zone, parameter or name: nothing is written); 1 the store cannot be
used. This module parses, calls `tether._serve` or `tether.store`, and renders.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tether._core._catchup import CATCHUP, OVERLAP
from tether._deployment import Deployment
from tether._errors import UsageError
from tether._flow import FlowFunction
from tether._serve import serve
from tether.schedules import from_dict
from tether.store import (
    DeploymentNotFound,
    DeploymentTable,
    StoredDeployment,
    StoreError,
    open_store,
)

out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


class BadInput(click.ClickException):
    """Bad input on the command line: exit code 2, nothing written."""

    exit_code = 2


PARAM = click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A flow parameter; VALUE is JSON if it parses, else a string.",
)


@click.command("serve")
@click.argument("target", metavar="FILE.py:FLOW")
@click.option("--name", required=True, help="The deployment's name.")
@click.option("--cron", default=None, help="A cron expression, e.g. '0 2 * * *'.")
@click.option("--interval", type=float, default=None, help="Seconds between runs.")
@click.option("--rrule", default=None, help="An RRULE, e.g. 'FREQ=DAILY;BYHOUR=9'.")
@click.option("--timezone", default=None, help="The schedule's time zone, e.g. Europe/Berlin (default UTC).")
@PARAM
@click.option(
    "--catchup",
    type=click.Choice(CATCHUP),
    default="latest",
    show_default=True,
    help="Which missed times run after downtime.",
)
@click.option(
    "--overlap",
    type=click.Choice(OVERLAP),
    default="queue",
    show_default=True,
    help="What a due time does while a run is still going.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="At most this many runs at once in this process."
)
def serve_cmd(target: str, name: str, cron: str | None, interval: float | None, rrule: str | None, timezone: str | None,
              params: tuple[str, ...], catchup: str, overlap: str, limit: int | None) -> None:  # fmt: skip
    """Run FLOW from FILE.py on a schedule until SIGTERM or Ctrl-C (each scheduled time once)."""
    flow = load_flow(target)
    try:
        deployment = Deployment(flow, name, cron=cron, interval=interval, rrule=rrule, timezone=timezone,
                                parameters=parse_params(params), catchup=catchup, overlap=overlap,
                                entrypoint=f"{Path(target.rpartition(':')[0]).resolve()}:{target.rpartition(':')[2]}")  # fmt: skip
    except UsageError as exc:
        raise BadInput(str(exc)) from None
    sys.exit(serve(deployment, limit=limit))


@click.group("deployments")
def deployments_group() -> None:
    """Deployments in the run store: list, pause, resume, run now."""


@contextmanager
def _table() -> Iterator[DeploymentTable]:
    try:
        store = open_store()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield DeploymentTable(store.engine)
    except DeploymentNotFound as exc:
        raise BadInput(str(exc)) from None
    finally:
        store.close()


@deployments_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def deployments_ls(as_json: bool) -> None:
    """List deployments: name, flow, schedule, next time, last run, paused."""
    with _table() as table:
        found = table.deployments()
        now = table.now()
    rows = [
        {**d.as_dict(), "schedule": _schedule_text(d), "next_time": None if d.paused else _next(d, now)} for d in found
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        out.print("No deployments yet: tether serve FILE.py:FLOW --name NAME --cron '0 2 * * *' creates one.")
        return
    grid = Table(box=None, header_style="bold")
    for column in ("NAME", "FLOW", "SCHEDULE", "NEXT", "LAST RUN", "PAUSED"):
        grid.add_column(column)
    for row, d in zip(rows, found):
        last = "-" if d.last_run is None else f"{_when(d.last_run.scheduled_time)} {d.last_run.status}"
        grid.add_row(d.name, d.flow_name, row["schedule"], _when(row["next_time"]), last, "yes" if d.paused else "no")
    out.print(grid)


@deployments_group.command("pause")
@click.argument("name")
def deployments_pause(name: str) -> None:
    """Stop scheduling NAME's runs (its times are recorded skipped) until resumed."""
    with _table() as table:
        table.set_paused(name, True)
    out.print(f"Deployment {name!r} paused: its scheduled times are skipped until tether deployments resume {name}.")


@deployments_group.command("resume")
@click.argument("name")
def deployments_resume(name: str) -> None:
    """Schedule NAME's runs again."""
    with _table() as table:
        table.set_paused(name, False)
    out.print(f"Deployment {name!r} resumed.")


@deployments_group.command("run")
@click.argument("name")
@PARAM
def deployments_run(name: str, params: tuple[str, ...]) -> None:
    """Ask for a run of NAME now; a serve process of NAME picks it up."""
    values = parse_params(params)
    with _table() as table:
        deployment = table.get(name)
        merged = {**deployment.parameters, **values}
        _check_run_parameters(deployment, merged)
        run_id = table.request_run(name, values)
    out.print(f"Run {run_id} of deployment {name!r} requested; a serve process of it will start it.")


@deployments_group.command("runs")
@click.argument("name")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def deployments_runs(name: str, limit: int, as_json: bool) -> None:
    """NAME's scheduled times and what became of each (run, skipped and why, crashed...)."""
    with _table() as table:
        table.get(name)
        found = table.runs(name, limit=limit)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in found], indent=2, default=str))
        return
    grid = Table(box=None, header_style="bold")
    for column in ("SCHEDULED", "TRIGGER", "STATUS", "FLOW RUN", "REASON"):
        grid.add_column(column)
    for r in found:
        grid.add_row(_when(r.scheduled_time), r.trigger, r.status, r.flow_run_id or "-", r.reason or "")
    out.print(grid)


def _check_run_parameters(deployment: StoredDeployment, parameters: dict[str, Any]) -> None:
    """Check the parameters against the flow's signature where its file can be imported here."""
    file = deployment.entrypoint.rpartition(":")[0]
    if not Path(file).is_file():
        return  # served from another machine: its serve process checks them
    flow = load_flow(deployment.entrypoint)
    try:
        flow.check_parameters(parameters)
    except UsageError as exc:
        raise BadInput(f"Deployment {deployment.name!r}: {exc}") from None


def load_flow(target: str) -> FlowFunction[Any]:
    """Import FILE.py and find FLOW in it (by variable name, then by flow name)."""
    file, sep, name = target.rpartition(":")
    if not sep or not file or not name:
        raise BadInput(
            f"{target!r} is not FILE.py:FLOW. Example: tether serve flows/etl.py:main_flow --name nightly --cron '0 2 * * *'"
        )
    path = Path(file)
    if not path.is_file():
        raise BadInput(f"No such file: {file} (looked in {Path.cwd()}).")
    stem = path.stem
    module_name = (
        stem if stem.isidentifier() and stem not in sys.modules else f"tether_serve_{abs(hash(str(path.resolve())))}"
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
        raise BadInput(f"Importing {path} failed: {type(exc).__name__}: {exc}") from None
    found = getattr(module, name, None)
    if isinstance(found, FlowFunction):
        return found
    flows = {v.name: v for v in vars(module).values() if isinstance(v, FlowFunction)}
    if name in flows:
        return flows[name]
    what = "is not a @flow" if found is not None else "is not defined"
    raise BadInput(f"{name!r} {what} in {file}. Flows in that file: {', '.join(sorted(flows)) or 'none'}.")


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


def _schedule_text(d: StoredDeployment) -> str:
    return ", ".join(from_dict(s).describe() for s in d.schedules) or "none (runs on request)"


def _next(d: StoredDeployment, now: float) -> float | None:
    upcoming = [t for t in (from_dict(s).next_time(now) for s in d.schedules) if t is not None]
    return min(upcoming) if upcoming else None


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
