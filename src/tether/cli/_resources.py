"""``tether resources`` and ``tether reap``: the resource ledger, its orphans, and their reaping.

The reaping itself is `tether.store.reap_orphans`; this module asks for it and shows the outcome.
"""

from __future__ import annotations

import sys

import click
from rich.table import Table
from rich.text import Text

from tether._reaping import reaping_process
from tether.cli._main import Failure, out, print_json, store_or_exit
from tether.cli._render import crashed_text, handle_text, ledger_status, when
from tether.store import reap_orphans


@click.command("resources")
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
            ledger_status(e),
            e.flow_run_id or "-",
            f"{e.pid}@{e.host}",
            when(e.created),
            handle_text(e),
            e.reaper or "-",
        )
    out.print(table)


@click.command("reap")
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
        out.print(Text.assemble(("recorded Crashed ", "red"), crashed_text(run)))
    if not results:
        out.print("No orphaned resources.")
    for r in results:
        e = r.entry
        what = f"{e.name!r} (#{e.id}, flow run {e.flow_run_id or '-'}, {e.orphan}; handle {handle_text(e)})"
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
