"""Runners: where task bodies run. Prefect's names are aliases of ours."""

from tether.runners._base import TaskRunner
from tether.runners._local import InlineRunner, ThreadPoolRunner

ThreadPoolTaskRunner = ThreadPoolRunner

__all__ = [
    "InlineRunner",
    "TaskRunner",
    "ThreadPoolRunner",
    "ThreadPoolTaskRunner",
]
