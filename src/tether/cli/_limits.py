"""``tether limit set|ls|rm``: concurrency limits on task tags, kept in the store for every process.

Sets and reads the store's limits and slots; the waiting for a slot is the engine's, not this module's.
"""

from __future__ import annotations

import datetime

import click
from rich.table import Table

from tether.cli._main import Failure, main, out, print_json, store_or_exit
from tether.store import SlotTable


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
