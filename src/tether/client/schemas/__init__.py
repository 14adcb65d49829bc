"""Prefect's ``prefect.client.schemas``: the object types hooks and annotations name, and the
schedule types (`objects`, `schedules`)."""

from tether.client.schemas import objects, schedules
from tether.client.schemas.objects import FlowRun, State, StateType, TaskRun

__all__ = ["FlowRun", "State", "StateType", "TaskRun"]
