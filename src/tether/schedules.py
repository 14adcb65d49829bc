"""Schedules: `Cron`, `Interval` and `RRule`, and the times each one gives.

    from tether.schedules import Cron, Interval, RRule
    Cron("30 1 * * *", timezone="Europe/London")
    Interval(3600)                       # anchored at 2020-01-01 00:00 in its time zone
    RRule("FREQ=WEEKLY;BYDAY=MO;BYHOUR=9", timezone="America/New_York")

A schedule is a frozen value checked when it is made (a bad expression, an unknown
time zone, an interval of 0 or less, under a second or over 100 years raises
`ScheduleError` naming the value and showing a good one). `times(after, until)` gives the scheduled times in
``(after, until]`` as seconds since the epoch; every process computes the same
ones, since each depends only on the schedule (an interval and a rule without
DTSTART are anchored at a fixed date, not at "now").

Daylight saving follows cron (through cronsim, which implements Debian cron's
rules): a time that falls in the hour the clocks skip runs once, at the end of the
gap; a time with a fixed hour in the repeated hour runs once, the first time;
a wildcard hour (``0 * * * *``) runs in both copies of the repeated hour.
Intervals shorter than a day count real seconds; intervals of whole days keep the
wall-clock time (a daily interval at 09:00 stays at 09:00). An RRULE keeps its
wall-clock time, as python-dateutil computes it.

This module computes times; it stores nothing and starts nothing (that is
`tether.deployments` and ``tether serve``). ``CronSchedule``, ``IntervalSchedule``
and ``RRuleSchedule`` are Prefect's names for the same classes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from dateutil import rrule as _dateutil_rrule
from dateutil.rrule import rrulestr

from tether._errors import ScheduleError

__all__ = [
    "Cron",
    "CronSchedule",
    "Interval",
    "IntervalSchedule",
    "RRule",
    "RRuleSchedule",
    "Schedule",
    "ScheduleError",
    "from_dict",
]

#: Where intervals and rules without a DTSTART start counting, in the schedule's time zone (Prefect's default too).
DEFAULT_ANCHOR = dt.datetime(2020, 1, 1)
#: At most this many times are computed in one call; a caller asking for more gets the latest ones.
MAX_TIMES = 10_000
#: The longest interval: times further apart would soon pass the last date a datetime can hold (9999).
MAX_INTERVAL_SECONDS = 100 * 366 * 86400.0
#: The shortest interval: each run starts a process of its own, and serve looks at the store 4 times a second.
MIN_INTERVAL_SECONDS = 1.0
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}




def check_timezone(owner: str, name: Any) -> str:
    """The time zone name ``name``, checked; ``UTC`` for None."""
    if name is None:
        return "UTC"
    if not isinstance(name, str) or not name:
        raise ScheduleError(f"{owner}: timezone={name!r} is not a time zone name. Example: timezone='Europe/Berlin'.")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"{owner}: timezone={name!r} is not a time zone tether knows (IANA names, like 'Europe/Berlin', "
            "'America/New_York', 'UTC'). Example: timezone='Europe/Berlin'."
        ) from None
    return name


class Schedule:
    """What every schedule has: a time zone, and the times it gives."""

    timezone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def times(self, after: float, until: float) -> list[float]:
        """The scheduled times ``t`` with ``after < t <= until``, oldest first (at most `MAX_TIMES`, the latest)."""
        found: list[float] = []
        for t in self._iter_after(after):
            if t > until:
                break
            found.append(t)
            if len(found) > MAX_TIMES:
                del found[0]
        return found

    def next_time(self, after: float) -> float | None:
        """The first scheduled time after ``after``, or None if there is none (a rule that ended)."""
        return next(iter(self._iter_after(after)), None)

    def _iter_after(self, after: float) -> Iterator[float]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def key(self) -> str:
        """A short digest of what decides the times: equal for equal schedules in every process."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, init=False)
class Cron(Schedule):
    """A cron expression (five fields, or ``@daily``, ``@hourly``...) in a time zone."""

    cron: str
    timezone: str = "UTC"
    day_or: bool = True

    def __init__(self, cron: str, timezone: str | None = None, day_or: bool = True) -> None:
        owner = f"Cron({cron!r})"
        if not isinstance(cron, str) or not cron.strip():
            raise ScheduleError(
                f"cron={cron!r} is not a cron expression. Example: cron='30 1 * * *' (every day at 01:30)."
            )
        expr = " ".join(cron.split())
        if day_or is not True:
            raise ScheduleError(
                f"{owner}: day_or={day_or!r} is not supported: a day of the month and a day of the week both match, "
                "as in cron. Leave day_or out, or express the rule as an RRULE (rrule='FREQ=MONTHLY;BYDAY=MO;BYMONTHDAY=1,2,3,4,5,6,7')."
            )
        object.__setattr__(self, "cron", expr)
        object.__setattr__(self, "timezone", check_timezone(owner, timezone))
        object.__setattr__(self, "day_or", True)
        try:
            CronSim(self._expression, dt.datetime(2020, 1, 1, tzinfo=self.zone))
        except CronSimError as exc:
            raise ScheduleError(
                f"cron={cron!r} is not a valid cron expression ({exc}). It needs five fields: minute hour "
                "day-of-month month day-of-week. Example: cron='30 1 * * *' (every day at 01:30), '*/15 * * * *'."
            ) from None

    @property
    def _expression(self) -> str:
        return _NICKNAMES.get(self.cron.lower(), self.cron)

    def _iter_after(self, after: float) -> Iterator[float]:
        start = dt.datetime.fromtimestamp(after, self.zone)
        for moment in CronSim(self._expression, start):
            yield moment.timestamp()

    def describe(self) -> str:
        return f"cron {self.cron} ({self.timezone})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "cron", "cron": self.cron, "timezone": self.timezone}


@dataclass(frozen=True, init=False)
class Interval(Schedule):
    """Every ``interval`` (seconds or a timedelta), counted from ``anchor_date``."""

    interval: float
    anchor_date: dt.datetime = field(default=DEFAULT_ANCHOR)
    timezone: str = "UTC"

    def __init__(
        self, interval: float | dt.timedelta, anchor_date: dt.datetime | None = None, timezone: str | None = None
    ) -> None:
        seconds = interval.total_seconds() if isinstance(interval, dt.timedelta) else interval
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            raise ScheduleError(
                f"interval={interval!r} is not a positive number of seconds (or a positive timedelta): a schedule "
                "needs time between runs. Example: interval=3600 (hourly) or interval=timedelta(minutes=5)."
            )
        if seconds < MIN_INTERVAL_SECONDS:
            raise ScheduleError(
                f"interval={interval!r} is shorter than a second: each scheduled run starts a process of its own, "
                "and a serve process looks for due times a few times a second. Example: interval=1, or "
                "interval=timedelta(minutes=5)."
            )
        if seconds > MAX_INTERVAL_SECONDS:
            raise ScheduleError(
                f"interval={interval!r} is longer than 100 years ({seconds:g} s): tether computes dates up to the "
                "year 9999 only. For a rare run use a cron or an RRULE, e.g. cron='0 0 1 1 *' (yearly), or "
                "interval=timedelta(days=365)."
            )
        owner = f"Interval({interval!r})"
        if anchor_date is not None and not isinstance(anchor_date, dt.datetime):
            raise ScheduleError(
                f"{owner}: anchor_date={anchor_date!r} is not a datetime. Example: anchor_date=datetime(2024, 1, 1, 9, 0)."
            )
        if timezone is None and anchor_date is not None and isinstance(anchor_date.tzinfo, ZoneInfo):
            timezone = anchor_date.tzinfo.key
        zone_name = check_timezone(owner, timezone)
        anchor = DEFAULT_ANCHOR if anchor_date is None else anchor_date
        if anchor.tzinfo is not None:  # kept as wall-clock time in the schedule's zone
            anchor = anchor.astimezone(ZoneInfo(zone_name)).replace(tzinfo=None)
        object.__setattr__(self, "interval", float(seconds))
        object.__setattr__(self, "anchor_date", anchor)
        object.__setattr__(self, "timezone", zone_name)

    @property
    def _whole_days(self) -> bool:
        return self.interval >= 86400 and self.interval % 86400 == 0

    def _iter_after(self, after: float) -> Iterator[float]:
        zone = self.zone
        if not self._whole_days:
            origin = self.anchor_date.replace(tzinfo=zone).timestamp()
            k = max(0, math.floor((after - origin) / self.interval) + 1)
            while True:
                t = origin + k * self.interval
                if t > after:
                    yield t
                k += 1
        # Whole days: step in wall-clock time, so 09:00 stays 09:00 through daylight saving.
        step = dt.timedelta(seconds=self.interval)
        local_after = dt.datetime.fromtimestamp(after, zone).replace(tzinfo=None)
        k = max(0, math.floor((local_after - self.anchor_date) / step) - 1)
        last = -math.inf
        while True:
            t = _wall_to_timestamp(self.anchor_date + k * step, zone)
            if t > after and t > last:
                last = t
                yield t
            k += 1

    def describe(self) -> str:
        return f"every {_seconds_text(self.interval)} from {self.anchor_date.isoformat(' ')} ({self.timezone})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "interval",
            "interval": self.interval,
            "anchor_date": self.anchor_date.isoformat(),
            "timezone": self.timezone,
        }


@dataclass(frozen=True, init=False)
class RRule(Schedule):
    """An iCalendar RRULE (``FREQ=DAILY;BYHOUR=9``), read by python-dateutil, in a time zone."""

    rrule: str
    timezone: str = "UTC"

    def __init__(self, rrule: str, timezone: str | None = None) -> None:
        owner = f"RRule({rrule!r})"
        if not isinstance(rrule, str) or not rrule.strip():
            raise ScheduleError(f"rrule={rrule!r} is not an RRULE. Example: rrule='FREQ=DAILY;BYHOUR=9;BYMINUTE=0'.")
        object.__setattr__(self, "rrule", rrule.strip())
        object.__setattr__(self, "timezone", check_timezone(owner, timezone))
        try:
            self._rule()
        except (ValueError, TypeError) as exc:
            raise ScheduleError(
                f"rrule={rrule!r} is not a valid RRULE ({exc}). Example: rrule='FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9;BYMINUTE=0'."
            ) from None

    def _rule(self) -> _dateutil_rrule.rrule | _dateutil_rrule.rruleset:
        text = self.rrule if ":" in self.rrule.split(";")[0] or "\n" in self.rrule else f"RRULE:{self.rrule}"
        rule: _dateutil_rrule.rrule | _dateutil_rrule.rruleset = rrulestr(
            text, dtstart=DEFAULT_ANCHOR.replace(tzinfo=self.zone)
        )
        return rule

    def _iter_after(self, after: float) -> Iterator[float]:
        zone = self.zone
        rule = self._rule()
        tz = _tzinfo_of(rule, zone)
        moment = dt.datetime.fromtimestamp(after, zone)
        probe = moment.replace(tzinfo=None) if tz is None else moment.astimezone(tz)
        rule = _started_near(rule, probe)
        last = -math.inf
        for found in rule.xafter(probe, inc=False):
            local = found.tzinfo is None or found.tzinfo is zone
            t = _wall_to_timestamp(found.replace(tzinfo=None), zone) if local else found.timestamp()
            if t > after and t > last:
                last = t
                yield t

    def describe(self) -> str:
        return f"rrule {self.rrule} ({self.timezone})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "rrule", "rrule": self.rrule, "timezone": self.timezone}


def _tzinfo_of(rule: _dateutil_rrule.rrule | _dateutil_rrule.rruleset, zone: ZoneInfo) -> dt.tzinfo | None:
    """The tzinfo the rule's times carry (a DTSTART in the text may be naive or UTC)."""
    rules = getattr(rule, "_rrule", None)
    first = rules[0] if rules else rule
    start = getattr(first, "_dtstart", None)  # dateutil keeps no public accessor
    return start.tzinfo if start is not None else zone


#: dateutil's frequencies finer than a day (HOURLY, MINUTELY, SECONDLY): counted from 2020 they cost
#: a step per period, so such a rule starts counting at a point of its own lattice near the time asked.
_FINE = {_dateutil_rrule.HOURLY: 3600, _dateutil_rrule.MINUTELY: 60, _dateutil_rrule.SECONDLY: 1}


def _started_near(rule: Any, probe: dt.datetime) -> Any:
    """``rule`` with its DTSTART moved forward by whole periods to just before ``probe`` (the same times
    after ``probe``), when that is exact: one rule, no COUNT, a frequency finer than a day."""
    if not isinstance(rule, _dateutil_rrule.rrule) or rule._count is not None or rule._freq not in _FINE:
        return rule
    start = rule._dtstart
    if (start.tzinfo is None) != (probe.tzinfo is None):
        return rule
    period = dt.timedelta(seconds=_FINE[rule._freq] * rule._interval)
    wall = probe.replace(tzinfo=None) if probe.tzinfo is None else probe.astimezone(start.tzinfo).replace(tzinfo=None)
    steps = math.floor((wall - start.replace(tzinfo=None)) / period) - 2
    return rule.replace(dtstart=start + steps * period) if steps > 0 else rule


def _wall_to_timestamp(wall: dt.datetime, zone: ZoneInfo) -> float:
    """A wall-clock time in ``zone`` as a timestamp, as cron reads it: a time the clocks skipped
    runs at the end of the gap; a time in the repeated hour is its first occurrence."""
    first = wall.replace(tzinfo=zone, fold=0)
    if first.astimezone(dt.timezone.utc).astimezone(zone).replace(tzinfo=None) == wall:
        return first.timestamp()
    # In the gap: the clocks jumped over it. The jump is between the two readings of the wall time.
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = int(first.timestamp())
    for t in range(low - low % 60, high + 60, 60):  # zones change on whole minutes
        if dt.datetime.fromtimestamp(t, zone).replace(tzinfo=None) >= wall:
            return float(t)
    return float(high)


def _seconds_text(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} s"


AnySchedule = Cron | Interval | RRule


def from_dict(data: dict[str, Any]) -> AnySchedule:
    """The schedule `to_dict` described."""
    kind = data.get("kind")
    if kind == "cron":
        return Cron(data["cron"], timezone=data.get("timezone"))
    if kind == "interval":
        return Interval(
            data["interval"], anchor_date=dt.datetime.fromisoformat(data["anchor_date"]), timezone=data.get("timezone")
        )
    if kind == "rrule":
        return RRule(data["rrule"], timezone=data.get("timezone"))
    raise ScheduleError(f"Unknown schedule kind {kind!r} in {data!r}: expected cron, interval or rrule.")


# Prefect's names (prefect.client.schemas.schedules, prefect.server.schemas.schedules).
CronSchedule = Cron
IntervalSchedule = Interval
RRuleSchedule = RRule
