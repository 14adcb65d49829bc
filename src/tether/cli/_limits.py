"""``tether limit set|ls|rm``: concurrency limits on task tags, kept in the store for every process.

Shows and changes the store's limits through the store's face (`tether.store.limit_views`,
`drop_limit`: what `tether.limits.ls` and `remove` use too); the waiting for a slot is the
engine's, not this module's.
"""

from __future__ import annotations

import datetime
from typing import Any

import click
from rich.table import Table

from tether.cli._main import Failure, out, print_json, store_or_exit
from tether.cli._render import short_id
from tether.store import drop_limit, limit_views


@click.group("limit")
def limit_group() -> None:
    """Concurrency limits on task tags, kept in the store for every process."""


# Not ParamType[int]: ParamType is generic only in recent click releases, and tether supports click 8.1.
class Capacity(click.ParamType):  # type: ignore[type-arg]
    """A limit's capacity: a whole number >= 0 (0 holds every task run with the tag)."""

    name = "N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            capacity = int(value)
        except (TypeError, ValueError):
            capacity = -1
        if capacity < 0:
            self.fail(
                f"{value!r} is not a limit: a limit is a whole number >= 0, how many task runs with the tag "
                "may run at once (0 holds them all). Example: tether limit set mysql 3",
                param,
                ctx,
            )
        return capacity


# ignore_unknown_options: "-1" is the capacity the user meant (and is refused as one), not an unknown option.
@limit_group.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("tag")
@click.argument("capacity", type=Capacity())
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
        views = limit_views(store)
    if as_json:
        print_json([
            {"tag": view.tag, "limit": view.capacity, "waiting": view.waiting,
             "holders": [{"run_id": h.run_id, "task": h.task, "host": h.host, "pid": h.pid,
                          "since": h.acquired, "slot": h.slot} for h in view.holders]}
            for view in views
        ])  # fmt: skip
        return
    if not views:
        out.print("No limits set.")
        return
    table = Table("TAG", "LIMIT", "HELD", "WAITING", box=None, header_style="bold")
    for view in views:
        table.add_row(view.tag, str(view.capacity), str(len(view.holders)), str(view.waiting))
    out.print(table)
    holders = [h for view in views for h in view.holders]
    if holders:
        # A holder is a task run: named and identified as tether runs show shows it.
        held = Table("TAG", "TASK RUN", "ID", "PROCESS", "SINCE", box=None, header_style="bold")
        for h in holders:
            since = datetime.datetime.fromtimestamp(h.acquired).strftime("%H:%M:%S")
            held.add_row(h.tag, h.task or "-", short_id(h.run_id) if h.run_id else "-", f"{h.pid}@{h.host}", since)
        out.print(held)


@limit_group.command("rm")
@click.argument("tag")
def limit_rm(tag: str) -> None:
    """Remove the limit on TAG and free every slot held under it."""
    with store_or_exit() as store:
        freed = drop_limit(store, tag)
    if freed is None:
        raise Failure(f"There is no limit on tag {tag!r}. See: tether limit ls")
    out.print(f"Limit for tag {tag!r} removed; {freed} held slot(s) freed.")
