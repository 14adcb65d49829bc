"""The kernel: run states, the state machine, events and resource-scope bookkeeping.

Nothing here imports the rest of tether, starts a thread or does I/O.
"""

from tether._core._events import (
    Event,
    EventStream,
    InMemoryRecorder,
    LogEmitted,
    Recorder,
    ResourceEvent,
    RunCreated,
    StateChanged,
)
from tether._core._machine import InvalidTransition, RunRecord, is_final, new_run_id, transition
from tether._core._scope import ScopeBook, ScopeClosed
from tether._core._states import (
    FINAL_TYPES,
    AwaitingConcurrencySlot,
    AwaitingRetry,
    Cached,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    Pending,
    Retrying,
    RunCancelled,
    RunCrashed,
    RunFailed,
    Running,
    State,
    StateType,
    TimedOut,
    UnfinishedRun,
)

__all__ = [
    "FINAL_TYPES",
    "AwaitingConcurrencySlot",
    "AwaitingRetry",
    "Cached",
    "Cancelled",
    "Completed",
    "Crashed",
    "Event",
    "EventStream",
    "Failed",
    "InMemoryRecorder",
    "InvalidTransition",
    "LogEmitted",
    "Pending",
    "Recorder",
    "ResourceEvent",
    "Retrying",
    "RunCancelled",
    "RunCrashed",
    "RunCreated",
    "RunFailed",
    "RunRecord",
    "Running",
    "ScopeBook",
    "ScopeClosed",
    "State",
    "StateChanged",
    "StateType",
    "TimedOut",
    "UnfinishedRun",
    "is_final",
    "new_run_id",
    "transition",
]
