"""Runners: where task bodies run. Prefect's names are aliases of ours.

`DaskRunner` and `RayRunner` import Dask and Ray only when they start.
"""

from tether.runners._base import RemoteRunner, TaskRunner
from tether.runners._dask import DaskRunner
from tether.runners._local import InlineRunner, ThreadPoolRunner
from tether.runners._process import ProcessPoolRunner
from tether.runners._ray import RayRunner

DaskTaskRunner = DaskRunner
ProcessPoolTaskRunner = ProcessPoolRunner
RayTaskRunner = RayRunner
ThreadPoolTaskRunner = ThreadPoolRunner

__all__ = [
    "DaskRunner",
    "DaskTaskRunner",
    "InlineRunner",
    "ProcessPoolRunner",
    "ProcessPoolTaskRunner",
    "RayRunner",
    "RayTaskRunner",
    "RemoteRunner",
    "TaskRunner",
    "ThreadPoolRunner",
    "ThreadPoolTaskRunner",
]
