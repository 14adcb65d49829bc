"""Prefect's ``prefect.client.schemas.schedules``: the schedule types (see `tether.schedules`)."""

from tether.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

__all__ = ["CronSchedule", "IntervalSchedule", "RRuleSchedule"]
