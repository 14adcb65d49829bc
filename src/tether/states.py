"""Run states, as in `prefect.states`."""

from tether._core import (
    AwaitingConcurrencySlot,
    AwaitingRetry,
    Cached,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    Pending,
    Retrying,
    Running,
    State,
    StateType,
    TimedOut,
)

__all__ = [
    "AwaitingConcurrencySlot",
    "AwaitingRetry",
    "Cached",
    "Cancelled",
    "Completed",
    "Crashed",
    "Failed",
    "Pending",
    "Retrying",
    "Running",
    "State",
    "StateType",
    "TimedOut",
]
