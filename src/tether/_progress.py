"""The live progress view of `tether run`: task runs by state and open resources.

`Progress` is a recorder on the event stream; it counts, it does not decide anything.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from tether._context import events
from tether._core import ResourceEvent, RunCreated, StateChanged
from tether._logging import RunLogHandler, configure_logging, logger


class Progress:
    """Counts task runs by state and open resources, from the event stream, for the live view."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.open_resources = 0
        self.flow_run_id: str | None = None
        self._lock = threading.Lock()

    def record(self, event: Any) -> None:
        kind = type(event)
        if kind is StateChanged and event.kind == "task":
            self.states[event.run_id] = event.new.type.value
        elif kind is RunCreated:
            if event.kind == "task":
                self.states.setdefault(event.run_id, "PENDING")
            elif event.parent_id is None and self.flow_run_id is None:
                self.flow_run_id = event.run_id
        elif kind is ResourceEvent:
            with self._lock:
                if event.step == "setup":
                    self.open_resources += 1
                elif event.step in ("cleanup", "cleanup-failed"):
                    self.open_resources -= 1

    def render(self) -> Text:
        counts: dict[str, int] = {}
        for value in list(self.states.values()):
            counts[value] = counts.get(value, 0) + 1
        failed = counts.get("FAILED", 0) + counts.get("CRASHED", 0) + counts.get("CANCELLED", 0)
        return Text.assemble(
            ("tasks ", "bold"),
            (f"{counts.get('COMPLETED', 0)} done", "green"), "  ",
            (f"{counts.get('RUNNING', 0)} running", "cyan"), "  ",
            (f"{failed} failed", "red" if failed else ""), "  ",
            (f"{counts.get('PENDING', 0)} waiting", "dim"), "   ",
            ("resources ", "bold"), f"{self.open_resources} open",
        )  # fmt: skip


def run_with_progress(call: Callable[[], Any], out: Console) -> tuple[Any, str | None]:
    progress = Progress()
    events.subscribe(progress)
    try:
        if not out.is_terminal:
            return _finish(call()), progress.flow_run_id
        configure_logging()
        consoles = [
            h for h in logger.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, RunLogHandler)
        ]
        with Live(progress.render(), console=out, refresh_per_second=4, transient=True, get_renderable=progress.render):
            old = [h.setStream(sys.stderr) for h in consoles]  # through Live, so logs print above the view
            try:
                state = _finish(call())
            finally:
                for handler, stream in zip(consoles, old):
                    if stream is not None:
                        handler.setStream(stream)
        out.print(progress.render())
        return state, progress.flow_run_id
    finally:
        events.unsubscribe(progress)


def _finish(result: Any) -> Any:
    return asyncio.run(result) if inspect.iscoroutine(result) else result
