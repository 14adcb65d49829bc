"""Futures, under Prefect's module path ``prefect.futures``.

`PrefectFuture` (and Prefect 3's concrete names for it) is tether's `TaskFuture`;
`PrefectFutureList` is the list ``task.map`` returns; `resolve_futures_to_states` and
`resolve_futures_to_results` replace the futures inside a value. Nothing is implemented here.
"""

from tether._futures import DoneAndNotDoneFutures, TaskFuture, TaskFutureList, as_completed, wait
from tether._resolving import resolve_futures_to_results, resolve_futures_to_states

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
    "resolve_futures_to_results",
    "resolve_futures_to_states",
    "wait",
]
