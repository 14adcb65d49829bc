"""Prefect's other state constructors and state functions, on tether's six state types.

tether's kernel has six state types; Prefect has a few more that a single-machine run
never enters on its own but that user code builds or tests for (``Scheduled``,
``Late``, ``Paused``, ``Suspended``, ``Cancelling``). They are named states of the
nearest type here (``Scheduled`` is a Pending state named "Scheduled"), so
``state.name`` and ``state.is_pending()`` answer as in Prefect. The functions are
the ones scripts call: `get_state_exception`, `raise_state_exception`,
`exception_to_failed_state`, `return_value_to_state`, `is_state`, `is_state_iterable`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tether._core import Completed, Failed, State, StateType


def Scheduled(data: Any = None, name: str = "Scheduled", message: str | None = None) -> State:
    return State(StateType.PENDING, name, message, data)


def Late(data: Any = None, name: str = "Late", message: str | None = None) -> State:
    return State(StateType.PENDING, name, message, data)


def Paused(data: Any = None, name: str = "Paused", message: str | None = None) -> State:
    return State(StateType.PENDING, name, message, data)


def Suspended(data: Any = None, name: str = "Suspended", message: str | None = None) -> State:
    return State(StateType.PENDING, name, message, data)


def Cancelling(data: Any = None, name: str = "Cancelling", message: str | None = None) -> State:
    return State(StateType.RUNNING, name, message, data)


def is_state(value: Any) -> bool:
    return isinstance(value, State)


def is_state_iterable(value: Any) -> bool:
    """True for a non-empty list, tuple or set made only of states (what a flow may return)."""
    return isinstance(value, (list, tuple, set, frozenset)) and bool(value) and all(isinstance(v, State) for v in value)


def get_state_exception(state: State) -> BaseException:
    """The exception of a Failed, Crashed or Cancelled state; ValueError for any other."""
    error = state.error()
    if error is None:
        raise ValueError(f"Expected a failed, crashed or cancelled state, got {state!r}: it has no exception.")
    return error


def raise_state_exception(state: State | Iterable[State]) -> None:
    """Raise the exception of the state (or the first such state of several), if any."""
    for one in [state] if isinstance(state, State) else state:
        error = one.error()
        if error is not None:
            raise error


def exception_to_failed_state(exc: BaseException | None = None, message: str | None = None) -> State:
    """A Failed state holding ``exc`` (the one being handled, if none is given)."""
    if exc is None:
        exc = sys.exc_info()[1]
    return Failed(exc, message=message or (f"{type(exc).__name__}: {exc}" if exc is not None else None))


def return_value_to_state(value: Any) -> State:
    """A flow's return value as a state: a state stays itself; states in a list decide
    (failed if any failed); anything else is Completed with it."""
    if isinstance(value, State):
        return value
    if is_state_iterable(value):
        bad = [s for s in value if not s.is_completed()]
        if bad:
            return Failed(message=f"{len(bad)}/{len(value)} states are not final COMPLETED.")
        return Completed(value, message=f"All {len(value)} states are COMPLETED.")
    return Completed(value)
