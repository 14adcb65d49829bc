"""Schedules: the times each one gives (a table across daylight-saving changes in several zones),
bad input, and the catch-up and overlap rules, all without a clock: times are passed in."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from tether._core._catchup import DueTime, decide
from tether.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
from tether.schedules import Cron, Interval, RRule, ScheduleError, from_dict


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


def local_day(schedule, day: str) -> list[str]:
    """The schedule's times during one local calendar day, as UTC 'MM-DD HH:MM'."""
    zone = ZoneInfo(schedule.timezone)
    start = dt.datetime.fromisoformat(day).replace(tzinfo=zone)
    end = (start.replace(tzinfo=None) + dt.timedelta(days=1)).replace(tzinfo=zone)
    times = schedule.times(start.timestamp() - 1, end.timestamp() - 1)
    return [dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%m-%d %H:%M") for t in times]


# zone, expression, local day, the UTC times that day. "Skipped hour": the clocks jump forward over
# the time: it runs once, at the end of the gap. "Repeated hour": it runs once, the first time.
DST_TABLE = [
    # London: 01:00 GMT -> 02:00 BST (01:30 skipped); 02:00 BST -> 01:00 GMT (01:30 repeated)
    ("Europe/London", "30 1 * * *", "2026-03-28", ["03-28 01:30"]),
    ("Europe/London", "30 1 * * *", "2026-03-29", ["03-29 01:00"]),  # 02:00 BST, the end of the gap
    ("Europe/London", "30 1 * * *", "2026-03-30", ["03-30 00:30"]),
    ("Europe/London", "30 1 * * *", "2026-10-25", ["10-25 00:30"]),  # 01:30 BST, the first of two
    ("Europe/London", "30 1 * * *", "2026-10-26", ["10-26 01:30"]),
    # New York: 02:00 EST -> 03:00 EDT; 02:00 EDT -> 01:00 EST
    ("America/New_York", "30 1 * * *", "2026-03-08", ["03-08 06:30"]),
    ("America/New_York", "30 1 * * *", "2026-11-01", ["11-01 05:30"]),  # 01:30 EDT only
    ("America/New_York", "30 2 * * *", "2026-03-08", ["03-08 07:00"]),  # 03:00 EDT
    ("America/New_York", "30 2 * * *", "2026-11-01", ["11-01 07:30"]),
    # Berlin: 02:00 CET -> 03:00 CEST; 03:00 CEST -> 02:00 CET
    ("Europe/Berlin", "30 2 * * *", "2026-03-29", ["03-29 01:00"]),  # 03:00 CEST
    ("Europe/Berlin", "30 2 * * *", "2026-10-25", ["10-25 00:30"]),  # 02:30 CEST, the first
    # Sydney (southern hemisphere): 03:00 AEDT -> 02:00 AEST in April; 02:00 AEST -> 03:00 AEDT in October
    ("Australia/Sydney", "30 2 * * *", "2026-04-05", ["04-04 15:30"]),  # 02:30 AEDT, the first
    ("Australia/Sydney", "30 2 * * *", "2026-10-04", ["10-03 16:00"]),  # 03:00 AEDT
    # A wildcard hour runs in both copies of the repeated hour, and not in the skipped one.
    ("Europe/London", "0 * * * *", "2026-10-25", ["10-24 23:00", *[f"10-25 {h:02d}:00" for h in range(24)]]),
    ("Europe/London", "0 * * * *", "2026-03-29", [f"03-29 {h:02d}:00" for h in range(23)]),
]


@pytest.mark.parametrize(
    ("zone", "expr", "day", "expected"), DST_TABLE, ids=[f"{z}-{e}-{d}" for z, e, d, _ in DST_TABLE]
)
def test_cron_times_across_daylight_saving_changes(zone, expr, day, expected):
    assert local_day(Cron(expr, timezone=zone), day) == expected


@pytest.mark.parametrize("day", ["2026-03-29", "2026-10-25"])
def test_a_daily_interval_and_a_daily_rrule_keep_the_wall_clock_as_cron_does(day):
    cron = local_day(Cron("30 1 * * *", timezone="Europe/London"), day)
    interval = local_day(Interval(86400, anchor_date=dt.datetime(2020, 1, 1, 1, 30), timezone="Europe/London"), day)
    rrule = local_day(RRule("FREQ=DAILY;BYHOUR=1;BYMINUTE=30;BYSECOND=0", timezone="Europe/London"), day)
    assert len(cron) == 1 and interval == cron and rrule == cron


def test_an_interval_is_anchored_so_every_process_computes_the_same_times():
    every = Interval(1)
    assert every.times(utc("2026-01-01T00:00:00.4"), utc("2026-01-01T00:00:03")) == [
        utc("2026-01-01T00:00:01"), utc("2026-01-01T00:00:02"), utc("2026-01-01T00:00:03"),
    ]  # fmt: skip
    hourly = Interval(dt.timedelta(hours=1), anchor_date=dt.datetime(2024, 1, 1, 0, 15))
    assert hourly.next_time(utc("2026-05-01T10:20:00")) == utc("2026-05-01T11:15:00")
    # Shorter than a day: real seconds, so the clock change shows in local time.
    six = Interval(6 * 3600, timezone="Europe/London")
    assert local_day(six, "2026-03-29") == ["03-29 00:00", "03-29 06:00", "03-29 12:00", "03-29 18:00"]


def test_schedules_round_trip_and_prefects_names_are_ours():
    for schedule in (Cron("0 2 * * *", timezone="Europe/Berlin"), Interval(90), RRule("FREQ=WEEKLY;BYDAY=MO")):
        assert from_dict(schedule.to_dict()) == schedule
        assert from_dict(schedule.to_dict()).key() == schedule.key()
    assert Cron("0 2 * * *").key() != Cron("0 3 * * *").key()
    assert (CronSchedule, IntervalSchedule, RRuleSchedule) == (Cron, Interval, RRule)
    assert Cron("@daily").next_time(utc("2026-05-01T10:00:00")) == utc("2026-05-02T00:00:00")


@pytest.mark.parametrize(
    ("make", "named", "example"),
    [
        (lambda: Cron("61 * * * *"), "cron='61 * * * *'", "cron='30 1 * * *'"),
        (lambda: Cron("* * *"), "cron='* * *'", "cron='30 1 * * *'"),
        (lambda: RRule("FREQ=DALY"), "rrule='FREQ=DALY'", "rrule='FREQ=WEEKLY"),
        (lambda: Cron("0 2 * * *", timezone="Europe/Berln"), "timezone='Europe/Berln'", "timezone='Europe/Berlin'"),
        (lambda: Interval(0), "interval=0", "interval=3600"),
        (lambda: Interval(-5), "interval=-5", "interval=3600"),
        (lambda: Interval(dt.timedelta(0)), "interval=datetime.timedelta(0)", "interval=3600"),
        (lambda: Interval(1e300), "interval=1e+300 is longer than 100 years", "cron='0 0 1 1 *'"),
        (lambda: Interval(float("nan")), "interval=nan", "interval=3600"),
        (lambda: Interval(1e-9), "interval=1e-09 is shorter than a second", "interval=1"),
        (lambda: Interval(dt.timedelta(milliseconds=500)), "shorter than a second", "interval=timedelta(minutes=5)"),
    ],
)
def test_bad_schedules_name_the_value_and_show_a_good_one(make, named, example):
    with pytest.raises(ScheduleError) as caught:
        make()
    assert named in str(caught.value) and example in str(caught.value)


# -- catch-up and overlap -------------------------------------------------------------------

NOW = 10_000.0


def due(*offsets: float, manual: tuple[int, ...] = ()) -> list[DueTime]:
    return [DueTime(i, NOW - off, i in manual) for i, off in enumerate(offsets)]


def test_catchup_latest_runs_only_the_newest_missed_time_and_says_why_of_the_others():
    verdict = decide(due(300, 200, 100), NOW, "latest", "queue", None, late_seconds=30)
    assert verdict.start is not None and verdict.start.id == 2
    assert [d.id for d, _ in verdict.skipped] == [0, 1]
    assert all("catchup=latest" in why for _, why in verdict.skipped)


def test_catchup_all_runs_every_missed_time_oldest_first():
    verdict = decide(due(300, 200, 100), NOW, "all", "queue", None, late_seconds=30)
    assert verdict.start is not None and verdict.start.id == 0 and verdict.skipped == []


def test_catchup_none_skips_every_missed_time_but_runs_one_on_time():
    verdict = decide(due(300, 200, 1), NOW, "none", "queue", None, late_seconds=30)
    assert verdict.start is not None and verdict.start.id == 2
    assert [d.id for d, _ in verdict.skipped] == [0, 1] and "catchup=none" in verdict.skipped[0][1]
    assert decide(due(300), NOW, "none", "queue", None, 30).start is None


def test_times_due_within_the_lateness_allowance_all_run_under_latest():
    verdict = decide(due(2, 1), NOW, "latest", "queue", None, late_seconds=30)
    assert verdict.start is not None and verdict.start.id == 0 and verdict.skipped == []


def test_a_run_asked_for_by_hand_is_never_skipped_for_being_late():
    verdict = decide(due(300, 200, manual=(0,)), NOW, "none", "queue", None, late_seconds=30)
    assert verdict.start is not None and verdict.start.id == 0 and [d.id for d, _ in verdict.skipped] == [1]


@pytest.mark.parametrize(
    ("overlap", "started", "skipped", "cancelled"),
    [("queue", None, [], []), ("skip", None, [0], []), ("cancel-new", None, [], [0])],
)
def test_overlap_while_a_run_is_going(overlap, started, skipped, cancelled):
    verdict = decide(due(1), NOW, "latest", overlap, running_since=NOW - 60, late_seconds=30)
    assert verdict.start == started
    assert [d.id for d, _ in verdict.skipped] == skipped and [d.id for d, _ in verdict.cancelled] == cancelled
    for _, why in verdict.skipped + verdict.cancelled:
        assert f"overlap={overlap}" in why and "was still going" in why


def test_a_rule_finer_than_a_day_gives_the_same_times_as_cron_without_counting_from_2020():
    after = utc("2026-05-01T10:02:00")
    rule = RRule("FREQ=MINUTELY;INTERVAL=5")
    assert rule.times(after, after + 86400) == Cron("*/5 * * * *").times(after, after + 86400)
    assert RRule("FREQ=SECONDLY;INTERVAL=2").times(after, after + 6) == [after + 2, after + 4, after + 6]
    assert RRule("FREQ=DAILY;COUNT=3").next_time(after) is None  # a rule that ended gives no time
