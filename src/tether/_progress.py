"""The live view of `tether run`: a progress bar over the flow's task runs, and a summary.

`Progress` is a recorder on the event stream: it counts task runs by what they are
doing (running, waiting for a concurrency slot, retrying, failed), the resources
open, and remembers the failures as they happen, to draw them under the bar and in
the summary at the end. It counts; it decides nothing. Failures and retries are also
logged by the engine, so they show above the view as they happen.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from tether._context import events
from tether._core import ResourceEvent, RunCreated, State, StateChanged, StateType
from tether._logging import RunLogHandler, configure_logging, logger

#: Failures drawn under the bar while it runs (all of them are in the summary).
_SHOWN_FAILURES = 5


class Progress:
    """Task runs of one flow run (and its subflows) by what they are doing, from the events."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.ended: float | None = None
        self.names: dict[str, str] = {}
        self.states: dict[str, State] = {}
        self.failures: list[tuple[str, State]] = []
        self.open_resources = 0
        self.flow_run_id: str | None = None
        self._lock = threading.Lock()

    def record(self, event: Any) -> None:
        kind = type(event)
        if kind is StateChanged and event.kind == "task":
            self.states[event.run_id] = event.new
            if event.new.type in (StateType.FAILED, StateType.CRASHED):
                with self._lock:
                    self.failures.append((self.names.get(event.run_id, event.run_id), event.new))
        elif kind is RunCreated:
            if event.kind == "task":
                self.names[event.run_id] = event.run_name or event.name  # its own name (task_run_name=), if any
                self.states.setdefault(event.run_id, _PENDING)
            elif event.parent_id is None and self.flow_run_id is None:
                self.flow_run_id = event.run_id
        elif kind is ResourceEvent:
            with self._lock:
                if event.step == "setup":
                    self.open_resources += 1
                elif event.step in ("cleanup", "cleanup-failed"):
                    self.open_resources -= 1

    def counts(self) -> dict[str, int]:
        """How many task runs are in each of the view's groups."""
        counts = dict.fromkeys(("done", "running", "waiting for a slot", "retrying", "failed", "pending"), 0)
        for state in list(self.states.values()):
            counts[_group(state)] += 1
        return counts

    def elapsed(self) -> float:
        return (self.ended if self.ended is not None else self._clock()) - self.started

    def render(self) -> Group:
        counts = self.counts()
        total = len(self.states)
        finished = counts["done"] + counts["failed"]
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(total, 1), completed=finished, width=40),
            Text(f"{finished}/{total}", style="bold"),
            Text(f"{100 * finished / total:3.0f}%" if total else "  0%"),
            Text(_clock_text(self.elapsed()), style="dim"),
        )
        parts: list[Any] = []
        for group, style in (("running", "cyan"), ("waiting for a slot", "yellow"), ("retrying", "magenta"), ("failed", "red")):
            if counts[group] or group in ("running", "failed"):
                parts += [(f"{counts[group]} {group}", style if counts[group] else "dim"), "  "]
        parts += [("resources ", "bold"), f"{self.open_resources} open"]
        lines: list[Any] = [bar, Text.assemble(*parts)]
        with self._lock:
            shown = self.failures[-_SHOWN_FAILURES:]
        for name, state in shown:
            lines.append(Text.assemble(("  x ", "red"), (name, "bold"), f": {_first_line(state.message)}"))
        return Group(*lines)

    def summary(self, state: State) -> Group:
        """What the run came to: duration, counts, each failure's first line, where to look."""
        self.ended = self.ended if self.ended is not None else self._clock()
        counts = self.counts()
        style = "green" if state.is_completed() else "red"
        head = Text.assemble(
            ("Flow run ", "bold"), (state.name, style), f" in {_clock_text(self.elapsed())}: ",
            f"{len(self.states)} task runs, {counts['done']} done, ",
            (f"{counts['failed']} failed", "red" if counts["failed"] else ""),
        )  # fmt: skip
        lines: list[Any] = [head]
        with self._lock:
            failures = list(self.failures)
        for name, failed in failures[:20]:
            lines.append(Text.assemble(("  x ", "red"), (name, "bold"), f" {failed.name}: {_first_line(failed.message)}"))
        if len(failures) > 20:
            lines.append(Text(f"  ... and {len(failures) - 20} more failures", style="dim"))
        if self.flow_run_id is not None:
            lines.append(Text(f"Details: tether runs show {self.flow_run_id}", style="dim"))
        return Group(*lines)


_PENDING = State(StateType.PENDING)


def _group(state: State) -> str:
    kind = state.type
    if kind is StateType.COMPLETED:
        return "done"
    if kind in (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED):
        return "failed"
    if kind is StateType.RUNNING:
        return "retrying" if state.name == "Retrying" else "running"
    if state.name == "AwaitingConcurrencySlot":
        return "waiting for a slot"
    if state.name == "AwaitingRetry":
        return "retrying"
    return "pending"


def _first_line(message: str | None) -> str:
    return (message or "").strip().splitlines()[0] if (message or "").strip() else ""


def _clock_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def run_with_progress(call: Callable[[], Any], out: Console, err: Console | None = None) -> tuple[Any, str | None]:
    """Run ``call`` (a flow call returning its state) with the live view on ``out``, then
    print the summary (on ``err`` if the run did not complete); returns the state and
    the top flow run's id."""
    progress = Progress()
    run_events = events()
    run_events.subscribe(progress)
    try:
        if not out.is_terminal:
            state = _finish(call())
        else:
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
        (out if state.is_completed() or err is None else err).print(progress.summary(state))
        return state, progress.flow_run_id
    finally:
        run_events.unsubscribe(progress)


def _finish(result: Any) -> Any:
    return asyncio.run(result) if inspect.iscoroutine(result) else result
