"""Prefect's ``prefect.client.schemas.schedules``: the schedule classes under Prefect's names."""

from tether.schedules import Cron, CronSchedule, Interval, IntervalSchedule, RRule, RRuleSchedule

__all__ = ["Cron", "CronSchedule", "Interval", "IntervalSchedule", "RRule", "RRuleSchedule"]
