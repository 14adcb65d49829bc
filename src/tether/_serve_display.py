"""What ``tether serve`` shows while it serves: each deployment's next time, the runs in progress
and the scheduled times it skipped (catch-up, overlap, a pause), with why.

On a terminal it is a live table redrawn after every look at the store; piped, it
prints one line when a run starts, one when it ends, and one for skipped times. It reads what a serve
process shows of itself (`Served`: `tether._serve.Server` is one) and the store's
rows; it changes nothing.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tether._deployment import Deployment
from tether.store import Claimed, DeploymentTable, ScheduledRun

#: The skipped times the live table keeps; piped, this many in a row are printed one by one, more summed up.
SHOWN_SKIPS = 5


class ShownChild(Protocol):
    """A run in progress: what it was claimed as, and its process."""

    @property
    def claimed(self) -> Claimed: ...

    @property
    def pid(self) -> int | None: ...


class Served(Protocol):
    """What the display reads of a serve process."""

    @property
    def deployments(self) -> Mapping[str, Deployment]: ...

    @property
    def children(self) -> Mapping[int, ShownChild]: ...

    @property
    def table(self) -> DeploymentTable: ...

    @property
    def started_at(self) -> float:
        """When it registered its deployments (the database's clock): skips from then on are shown."""
        ...


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


class ServeDisplay:
    """Call `update` after each tick (``Server(on_tick=display.update)``); `close` at the end."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = (
            Live(console=console, auto_refresh=False, transient=False) if console.is_terminal else None
        )
        self._running: dict[int, Any] = {}
        self._skipped_since: float | None = None
        self._skipped: list[ScheduledRun] = []  # the latest, newest last
        if self.live is not None:
            self.live.start()

    def update(self, server: Served) -> None:
        now = server.table.now()
        current = {run_id: child.claimed for run_id, child in server.children.items()}
        if self.live is None:
            for run_id, claimed in current.items():
                if run_id not in self._running:
                    self.console.print(
                        f"Deployment {claimed.deployment!r}: run {run_id} (scheduled {_when(claimed.scheduled_time)}) started."
                    )
            ended = [run_id for run_id in self._running if run_id not in current]
            if ended:
                by_id = {r.id: r for name in server.deployments for r in server.table.runs(name, limit=20)}
                for run_id in ended:
                    row = by_id.get(run_id)
                    status = row.status if row is not None else "ended"
                    self.console.print(f"Deployment {self._running[run_id].deployment!r}: run {run_id} {status}.")
        self._running = current
        self._show_skips(server)
        if self.live is not None:
            self.live.update(self.render(server, now), refresh=True)

    def _show_skips(self, server: Served) -> None:
        since = server.started_at if self._skipped_since is None else self._skipped_since
        newest = since
        for name in server.deployments:
            found = sorted(
                (
                    r
                    for r in server.table.runs(name, limit=100, statuses=("skipped", "cancelled"))
                    if (r.ended or 0) > since
                ),
                key=lambda r: r.scheduled_time,
            )
            if not found:
                continue
            newest = max([newest, *(r.ended or 0 for r in found)])
            self._skipped = (self._skipped + found)[-SHOWN_SKIPS:]
            if self.live is None:
                self._print_skips(name, found)
        self._skipped_since = newest

    def _print_skips(self, name: str, found: list[ScheduledRun]) -> None:
        if len(found) <= SHOWN_SKIPS:
            for r in found:
                self.console.print(
                    f"Deployment {name!r}: the time scheduled at {_when(r.scheduled_time)} was {r.status}: {r.reason}."
                )
            return
        more = " or more" if len(found) == 100 else ""
        self.console.print(
            f"Deployment {name!r}: {len(found)}{more} times scheduled from {_when(found[0].scheduled_time)} to "
            f"{_when(found[-1].scheduled_time)} were {found[-1].status}; the last: {found[-1].reason}. "
            f"See: tether deployments runs {name}"
        )

    def render(self, server: Served, now: float) -> Group:
        schedules = Table(box=None, header_style="bold", title=None)
        for column in ("DEPLOYMENT", "FLOW", "SCHEDULE", "NEXT"):
            schedules.add_column(column)
        for name, deployment in server.deployments.items():
            described = ", ".join(s.describe() for s in deployment.schedules) or "on request"
            schedules.add_row(name, deployment.flow.name, described, _when(deployment.next_time(now)))
        running = Table(box=None, header_style="bold")
        for column in ("RUN", "DEPLOYMENT", "SCHEDULED", "PROCESS", "FOR"):
            running.add_column(column)
        for run_id, child in server.children.items():
            claimed = child.claimed
            running.add_row(
                str(run_id),
                claimed.deployment,
                _when(claimed.scheduled_time),
                str(child.pid),
                f"{now - claimed.scheduled_time:.0f}s",
            )
        parts: list[Any] = [schedules, Text("")]
        parts.append(running if server.children else Text("No runs in progress.", style="dim"))
        if self._skipped:
            skipped = Table(box=None, header_style="bold")
            for column in ("SKIPPED", "DEPLOYMENT", "STATUS", "WHY"):
                skipped.add_column(column)
            for r in self._skipped:
                skipped.add_row(_when(r.scheduled_time), r.deployment, r.status, r.reason or "")
            parts += [Text(""), skipped]
        return Group(*parts)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
