"""A flow run's timeline as one SVG, laid out here on the server: a band per resource copy, a lane per task run.

Time runs left to right on one scale for the whole run (``data-t0``, ``data-x0`` and
``data-px-per-second`` on the ``<svg>`` say which), so a reader sees which task runs
held which copy of a resource and when it closed. Each resource copy (a ledger
row) is a ``<g data-resource-id>`` spanning its setup to its cleanup, darker while
setting up and cleaning up, with its worker and outcome (commit, or rollback
with the error). Each task run is a ``<g data-task-run-id data-state>`` of
stretches, one per state it was in: waiting for a concurrency slot, running
(attempt by attempt), awaiting a retry, and its final state as a tick (a cache
hit is one too). Beyond `LANE_LIMIT` task runs the run gets a lane per task
name instead, with bars of how many started in each slice of time, by state:
the page stays small however large the run. This module only lays out; the
store reads (`tether.store.run_view`) and the template places the SVG.
"""

from __future__ import annotations

import time
from collections import defaultdict
from html import escape

from markupsafe import Markup

from tether.store import LedgerEntry, RunView, TaskLane
from tether.ui._format import FINAL_TYPES, seconds, short_id

WIDTH = 1100
LABEL = 230  # the left column of names
X0 = LABEL + 10
PLOT = WIDTH - X0 - 20
AXIS = 28
LANE = 16
BAND = 20
AGGREGATE_LANE = 30
GAP = 10


def outcome(entry: LedgerEntry) -> str:
    """What a resource copy's cleanup was told (``commit`` or ``rollback``), or where it stands if not closed."""
    if entry.scope_outcome == "succeeded":
        return "commit"
    if entry.scope_outcome == "failed":
        return "rollback"
    return entry.status


def worker(entry: LedgerEntry) -> str:
    return f"{entry.host}:{entry.pid}"


class _Scale:
    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.per_second = PLOT / max(end - start, 1e-6)

    def x(self, t: float) -> float:
        return X0 + (t - self.start) * self.per_second

    def width(self, a: float, b: float) -> float:
        return max((b - a) * self.per_second, 0.0)


def render(view: RunView, now: float | None = None, task_href: str = "") -> Markup:
    """The run's timeline; ``task_href`` + a task run id links a lane to its page."""
    now = time.time() if now is None else now
    scale = _Scale(view.start, view.end)
    parts: list[str] = []
    y = AXIS
    parts.append(_flow_lane(view, scale, y, now))
    y += BAND + GAP
    task_resources: dict[str, list[str]] = defaultdict(list)
    for entry in sorted(view.resources, key=lambda e: (e.created, e.id)):
        parts.append(_band(entry, view, scale, y, now))
        for task_run_id in entry.used_by:
            task_resources[task_run_id].append(entry.name)
        y += BAND
    if view.resources:
        y += GAP
    if view.lanes is not None:
        for lane in view.lanes:
            parts.append(_lane(lane, scale, y, task_resources.get(lane.task.id, []), task_href))
            y += LANE
    else:
        y = _aggregate(view, scale, y, parts)
    height = y + 8
    axis = _axis(view, scale, height)
    return Markup(
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" data-t0="{view.start!r}" data-x0="{X0}" '
        f'data-px-per-second="{scale.per_second!r}" role="img" aria-label="Timeline of the flow run">'
        + axis + "".join(parts) + "</svg>"
    )


def _axis(view: RunView, scale: _Scale, height: int) -> str:
    span = max(view.end - view.start, 1e-6)
    step = _tick_step(span)
    parts = [f'<line class="axis" x1="{X0}" y1="{AXIS - 6}" x2="{X0 + PLOT}" y2="{AXIS - 6}"/>']
    k = 0
    while k * step <= span * 1.0001:
        x = scale.x(view.start + k * step)
        parts.append(f'<line class="tick" x1="{x:.2f}" y1="{AXIS - 10}" x2="{x:.2f}" y2="{height}"/>')
        parts.append(f'<text class="tick-label" x="{x:.2f}" y="{AXIS - 12}">+{seconds(k * step)}</text>')
        k += 1
    return "".join(parts)


def _tick_step(span: float) -> float:
    """A round step giving 4 to 10 ticks over ``span`` seconds."""
    step = 1e-3
    for factor in (2, 2.5, 2) * 12:
        if span / step <= 10:
            return step
        step *= factor
    return step


def _flow_lane(view: RunView, scale: _Scale, y: int, now: float) -> str:
    run = view.flow_run
    begin = run.start_time or run.created
    end = run.end_time if run.end_time is not None else now
    label = f"flow {run.run_name}"
    return (
        f'<g class="flow-lane" data-flow-run-id="{escape(run.id)}" data-state="{escape(run.state_type or "")}">'
        f"<title>{escape(label)}: {escape(run.state_name or '')}, {seconds(end - begin)}</title>"
        f'<text class="label" x="{LABEL}" y="{y + 14}">{escape(label)}</text>'
        f'<rect class="bar s-{escape(run.state_type or "UNKNOWN")}" x="{scale.x(begin):.2f}" y="{y + 3}" '
        f'width="{max(scale.width(begin, end), 1):.2f}" height="{BAND - 6}"/></g>'
    )


def _band(entry: LedgerEntry, view: RunView, scale: _Scale, y: int, now: float) -> str:
    end = entry.cleaned_at if entry.cleaned_at is not None else max(now, entry.created)
    setup_end = entry.setup_at if entry.setup_at is not None else end
    what = outcome(entry)
    users = ", ".join(f"{view.task_names.get(t, 'task')} {short_id(t)}" for t in entry.used_by[:20])
    if len(entry.used_by) > 20:
        users += f" and {len(entry.used_by) - 20} more"
    error = entry.setup_error or entry.cleanup_error or ""
    title = (
        f"resource {entry.name} (copy {entry.id}) on {worker(entry)}: {what}, status {entry.status}; "
        f"open {seconds(end - entry.created)}" + (f"; used by {users}" if users else "") + (f"; {error}" if error else "")
    )
    x, w = scale.x(entry.created), max(scale.width(entry.created, end), 1)
    parts = [
        (f'<g class="band o-{escape(what)}" data-resource-id="{entry.id}" data-scope-id="{escape(entry.scope_id)}" '
        f'data-resource-name="{escape(entry.name)}" data-worker="{escape(worker(entry))}" '
        f'data-outcome="{escape(what)}" data-status="{escape(entry.status)}" '
        f'data-used-by="{escape(" ".join(entry.used_by))}">'),
        f"<title>{escape(title)}</title>",
        f'<text class="label" x="{LABEL}" y="{y + 14}">{escape(entry.name)} · {escape(worker(entry))}</text>',
        f'<rect class="copy" x="{x:.2f}" y="{y + 2}" width="{w:.2f}" height="{BAND - 4}"/>',
        (f'<rect class="setup" x="{x:.2f}" y="{y + 2}" width="{scale.width(entry.created, setup_end):.2f}" '
        f'height="{BAND - 4}"/>'),
    ]
    if entry.cleaned_at is not None and entry.cleanup_seconds:
        begin = entry.cleaned_at - entry.cleanup_seconds
        parts.append(
            f'<rect class="cleanup" x="{scale.x(begin):.2f}" y="{y + 2}" '
            f'width="{scale.width(begin, entry.cleaned_at):.2f}" height="{BAND - 4}"/>'
        )
    parts.append(f'<text class="outcome" x="{x + w + 4:.2f}" y="{y + 14}">{escape(what)}</text></g>')
    return "".join(parts)


def _lane(lane: TaskLane, scale: _Scale, y: int, used: list[str], task_href: str) -> str:
    task, stretches = lane.task, lane.segments
    state = task.state_type or "UNKNOWN"
    begin = stretches[0].start if stretches else task.created
    end = stretches[-1].end if stretches and stretches[-1].end is not None else begin
    attempts = max((s.attempt for s in stretches), default=0)
    title = f"{task.run_name} {short_id(task.id)}: {task.state_name or state}"
    if task.run_name != task.name:
        title += f" (task {task.name})"
    if task.start_time is not None and task.end_time is not None:
        title += f", {seconds(task.end_time - task.start_time)}"
    if attempts > 1:
        title += f", {attempts} attempts"
    if used:
        title += f"; used {', '.join(sorted(set(used)))}"
    if task.state_message and state != "COMPLETED":
        title += f"; {task.state_message}"
    parts = [
        (f'<a href="{escape(task_href + task.id)}"><g class="lane" data-task-run-id="{escape(task.id)}" '
        f'data-state="{escape(state)}" data-state-name="{escape(task.state_name or "")}" data-attempts="{attempts}">'),
        f"<title>{escape(title)}</title>",
        f'<text class="label" x="{LABEL}" y="{y + 12}">{escape(task.run_name)} {escape(short_id(task.id))}</text>',
        (f'<rect class="bar" x="{scale.x(begin):.2f}" y="{y + 2}" width="{scale.width(begin, end):.2f}" '
        f'height="{LANE - 4}"/>'),
    ]
    for s in stretches:
        if s.end is None:
            continue
        final = s.state_type in FINAL_TYPES
        x = scale.x(s.start)
        w = 2.0 if final else max(scale.width(s.start, s.end), 0.5)
        if final:
            x -= 1.0
        parts.append(
            f'<rect class="seg s-{escape(s.state_type)} n-{escape(s.state_name)}{" final" if final else ""}" '
            f'data-state="{escape(s.state_type)}" data-state-name="{escape(s.state_name)}" data-attempt="{s.attempt}" '
            f'data-start="{s.start!r}" data-end="{s.end!r}" x="{x:.2f}" y="{y + 2}" width="{w:.2f}" '
            f'height="{LANE - 4}"/>'
        )
        if s.state_type == "RUNNING" and s.attempt > 1 and w > 18:
            parts.append(f'<text class="attempt" x="{x + 3:.2f}" y="{y + 11}">#{s.attempt}</text>')
    parts.append("</g></a>")
    return "".join(parts)


def _aggregate(view: RunView, scale: _Scale, y: int, parts: list[str]) -> int:
    """A lane per task name: how many of its task runs started in each time bucket, stacked by state."""
    by_name: dict[str, dict[int, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for b in view.buckets:
        by_name[b.name][b.index][b.state_type] = b.count
    tallest = max((sum(states.values()) for lanes in by_name.values() for states in lanes.values()), default=1)
    width = view.bucket_seconds * scale.per_second
    order = ("COMPLETED", "RUNNING", "PENDING", "CANCELLED", "FAILED", "CRASHED")
    for name in sorted(by_name):
        buckets = by_name[name]
        total = sum(n for states in buckets.values() for n in states.values())
        parts.append(f'<g class="aggregate" data-task-name="{escape(name)}" data-count="{total}">')
        parts.append(f'<text class="label" x="{LABEL}" y="{y + 18}">{escape(name)} ×{total}</text>')
        for index in sorted(buckets):
            states = buckets[index]
            x = X0 + index * width
            bottom = float(y + AGGREGATE_LANE - 2)
            for state in sorted(states, key=lambda s: order.index(s) if s in order else len(order)):
                h = (AGGREGATE_LANE - 4) * states[state] / tallest
                bottom -= h
                parts.append(
                    f'<rect class="agg s-{escape(state)}" x="{x:.2f}" y="{bottom:.2f}" '
                    f'width="{max(width - 0.5, 0.5):.2f}" height="{h:.2f}">'
                    f"<title>{escape(name)}: {states[state]} {escape(state.lower())}</title></rect>"
                )
        parts.append("</g>")
        y += AGGREGATE_LANE
    return y
