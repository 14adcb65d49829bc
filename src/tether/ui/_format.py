"""How the dashboard writes times, durations, ids and states: one place, used by the templates and the timeline.

Times are shown in the dashboard's own time zone, always with its name, and carry
an ISO 8601 UTC value for the machine (``<time datetime=...>``). This module
only formats; it reads no store.
"""

from __future__ import annotations

import datetime

FINAL_TYPES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})


def local(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp).astimezone()


def when(timestamp: float | None) -> str:
    """``2026-12-01 20:04:03 UTC``: a date and time with its zone, or ``-``."""
    if timestamp is None:
        return "-"
    return local(timestamp).strftime("%Y-%m-%d %H:%M:%S %Z")


def clock(timestamp: float | None) -> str:
    """``20:04:03.631``: the time of day to the millisecond, for lines of one run."""
    if timestamp is None:
        return "-"
    return local(timestamp).strftime("%H:%M:%S.%f")[:-3]


def iso(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="milliseconds")


def zone() -> str:
    """The time zone the dashboard shows times in, by name and offset (``CET, UTC+01:00``)."""
    now = datetime.datetime.now().astimezone()
    offset = now.strftime("%z")
    if now.tzname() == "UTC" and offset == "+0000":
        return "UTC"
    return f"{now.tzname()}, UTC{offset[:3]}:{offset[3:]}"


def seconds(value: float | None) -> str:
    """A duration as a person reads it: ``42 ms``, ``1.25 s``, ``3 min 5 s``, ``2 h 10 min``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.2f} s"
    whole = int(value)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def short_id(run_id: str) -> str:
    return run_id if len(run_id) <= 12 else f"{run_id[:8]}…{run_id[-4:]}"


def state_class(state_type: str | None) -> str:
    """The CSS class of a state type (``s-COMPLETED``)."""
    return f"s-{state_type or 'UNKNOWN'}"
