"""What ``tether serve`` shows while it serves: each deployment's next time and the runs in progress.

On a terminal it is a live table redrawn after every look at the store; piped, it
prints one line when a run starts and one when it ends. It reads what a serve
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
from tether.store import Claimed, DeploymentTable


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
        if self.live is not None:
            self.live.update(self.render(server, now), refresh=True)

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
        return Group(*parts)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
