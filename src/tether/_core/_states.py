"""Run states: the values a flow run or task run moves through.

A `State` is an immutable record: a type (one of six), a name that refines it
(``AwaitingRetry``, ``Cached``, ``TimedOut``...), a message, a timestamp and its
data (the run's return value, or the exception it failed with). This module only
describes states; `_machine` decides which changes are allowed.
"""

from __future__ import annotations

import datetime
import enum
import time
import types
from typing import Any


class StateType(str, enum.Enum):
    # Enum hashes in Python; each member equals its value, a str, so str's own (C) hash is
    # the same number, found without a call. The engine looks types up several times a run.
    __hash__ = str.__hash__

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"


FINAL_TYPES = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
)
_DEFAULT_NAMES = {t: t.value.capitalize() for t in StateType}


class UnfinishedRun(Exception):
    """`State.result()` was asked of a run that has not reached a final state."""


class State:
    """The state of one run at one moment. Compare Prefect's `State`."""

    #: ``time``: when, in seconds since the epoch (what the engine and the store use);
    #: `timestamp` is the same moment as a datetime in UTC, as Prefect's states have.
    __slots__ = ("data", "message", "name", "time", "type")

    def __init__(
        self,
        type: StateType,
        name: str | None = None,
        message: str | None = None,
        data: Any = None,
        timestamp: float | datetime.datetime | None = None,
    ) -> None:
        self.type = type
        self.name = name or _DEFAULT_NAMES[type]
        self.message = message
        self.data = data
        if timestamp is None:
            self.time = time.time()
        elif isinstance(timestamp, datetime.datetime):
            self.time = timestamp.timestamp()  # a naive datetime is local time, as datetime says
        else:
            self.time = float(timestamp)

    @property
    def timestamp(self) -> datetime.datetime:
        """When the run entered this state, in UTC (Prefect's ``State.timestamp``)."""
        return datetime.datetime.fromtimestamp(self.time, datetime.timezone.utc)

    def __class_getitem__(cls, item: Any) -> Any:
        """``State[int]`` in annotations, as Prefect's generic ``State[R]`` allows."""
        return types.GenericAlias(cls, item)

    def is_pending(self) -> bool:
        return self.type is StateType.PENDING

    def is_running(self) -> bool:
        return self.type is StateType.RUNNING

    def is_completed(self) -> bool:
        return self.type is StateType.COMPLETED

    def is_failed(self) -> bool:
        return self.type is StateType.FAILED

    def is_cancelled(self) -> bool:
        return self.type is StateType.CANCELLED

    def is_crashed(self) -> bool:
        return self.type is StateType.CRASHED

    def is_final(self) -> bool:
        return self.type in FINAL_TYPES

    def is_successful(self) -> bool:
        return self.type is StateType.COMPLETED

    def result(self, raise_on_failure: bool = True) -> Any:
        """The run's value; raises the run's error if it did not complete.

        With ``raise_on_failure=False`` the error is returned instead of raised.
        """
        if self.type is StateType.COMPLETED:
            return self.data
        if self.type not in FINAL_TYPES:
            raise UnfinishedRun(
                f"The run is {self.name}, so it has no result yet. "
                "Wait for it first (future.wait() or future.result())."
            )
        error = self.error()
        assert error is not None  # a final state that did not complete always has one
        if raise_on_failure:
            raise error
        return error

    def error(self) -> BaseException | None:
        """The exception behind a Failed, Crashed or Cancelled state, else None."""
        if self.type is StateType.COMPLETED or self.type not in FINAL_TYPES:
            return None
        if isinstance(self.data, BaseException):
            return self.data
        from_type = {
            StateType.FAILED: RunFailed,
            StateType.CANCELLED: RunCancelled,
            StateType.CRASHED: RunCrashed,
        }[self.type]
        return from_type(self.message or f"The run ended {self.name}.")

    def copy(self, **changes: Any) -> State:
        values: dict[str, Any] = {"type": self.type, "name": self.name, "message": self.message, "data": self.data, "timestamp": self.time}
        values.update(changes)
        return State(**values)

    def __repr__(self) -> str:
        shown = f"{self.name}" if self.name == _DEFAULT_NAMES[self.type] else (
            f"{self.name} ({self.type.value.capitalize()})"
        )
        return f"<{shown}: {self.message!r}>" if self.message else f"<{shown}>"


class RunFailed(Exception):
    """A run failed without an exception of its own (for example its upstream failed)."""


class RunCancelled(BaseException):
    """A run was cancelled. A BaseException, like `asyncio.CancelledError`."""


class RunCrashed(Exception):
    """A run ended because its process, worker or the engine failed."""


def Pending(name: str = "Pending", message: str | None = None) -> State:
    return State(StateType.PENDING, name, message)


def Running(name: str = "Running", message: str | None = None) -> State:
    return State(StateType.RUNNING, name, message)


def Completed(data: Any = None, name: str = "Completed", message: str | None = None) -> State:
    return State(StateType.COMPLETED, name, message, data)


def Failed(data: Any = None, name: str = "Failed", message: str | None = None) -> State:
    return State(StateType.FAILED, name, message, data)


def Cancelled(data: Any = None, name: str = "Cancelled", message: str | None = None) -> State:
    return State(StateType.CANCELLED, name, message, data)


def Crashed(data: Any = None, name: str = "Crashed", message: str | None = None) -> State:
    return State(StateType.CRASHED, name, message, data)


def AwaitingRetry(message: str | None = None) -> State:
    return State(StateType.PENDING, "AwaitingRetry", message)


def Retrying(message: str | None = None) -> State:
    return State(StateType.RUNNING, "Retrying", message)


def AwaitingConcurrencySlot(message: str | None = None) -> State:
    return State(StateType.PENDING, "AwaitingConcurrencySlot", message)


def TimedOut(data: Any = None, message: str | None = None) -> State:
    return State(StateType.FAILED, "TimedOut", message, data)


def Cached(data: Any = None, message: str | None = None) -> State:
    return State(StateType.COMPLETED, "Cached", message, data)
