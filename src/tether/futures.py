"""Futures, under Prefect's module path ``prefect.futures``.

`PrefectFuture` (and Prefect 3's concrete names for it) is tether's `TaskFuture`;
`PrefectFutureList` is the list ``task.map`` returns. Nothing is implemented here.
"""

from tether._futures import DoneAndNotDoneFutures, TaskFuture, TaskFutureList, as_completed, wait

PrefectFuture = TaskFuture
PrefectConcurrentFuture = TaskFuture
PrefectDistributedFuture = TaskFuture
PrefectFutureList = TaskFutureList

__all__ = [
    "DoneAndNotDoneFutures",
    "PrefectConcurrentFuture",
    "PrefectDistributedFuture",
    "PrefectFuture",
    "PrefectFutureList",
    "TaskFuture",
    "TaskFutureList",
    "as_completed",
    "wait",
]
