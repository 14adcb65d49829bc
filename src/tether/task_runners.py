"""Task runners, under Prefect's module path ``prefect.task_runners``.

Prefect 3's names (`ThreadPoolTaskRunner`, ...), Prefect 2's (`ConcurrentTaskRunner`,
`SequentialTaskRunner`) and those of the ``prefect_dask`` / ``prefect_ray``
collections (`DaskTaskRunner`, `RayTaskRunner`) are all tether's runners.
"""

from tether.runners import (
    DaskRunner,
    InlineRunner,
    ProcessPoolRunner,
    RayRunner,
    TaskRunner,
    ThreadPoolRunner,
)

ThreadPoolTaskRunner = ThreadPoolRunner
ConcurrentTaskRunner = ThreadPoolRunner  # Prefect 2's default: tasks run concurrently in threads
ProcessPoolTaskRunner = ProcessPoolRunner
SequentialTaskRunner = InlineRunner  # Prefect 2: one task at a time, in the flow's thread
DaskTaskRunner = DaskRunner
RayTaskRunner = RayRunner

__all__ = [
    "ConcurrentTaskRunner",
    "DaskRunner",
    "DaskTaskRunner",
    "InlineRunner",
    "ProcessPoolRunner",
    "ProcessPoolTaskRunner",
    "RayRunner",
    "RayTaskRunner",
    "SequentialTaskRunner",
    "TaskRunner",
    "ThreadPoolRunner",
    "ThreadPoolTaskRunner",
]
