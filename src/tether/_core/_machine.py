"""The run-state machine: the only place a run's state changes.

`RunRecord` is what the engine knows about one run (a flow run or a task run);
`transition` checks a proposed state against the run's current one, applies it,
appends it to the run's history and returns the `StateChanged` event that
describes the change. It does no I/O, takes no locks and starts no threads, so
it can be tested alone; the engine serialises calls for one run.

It does not decide *what* happens next (retry, cleanup, ...): the engine does,
and asks this module whether the step is allowed.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from tether._core._events import StateChanged
from tether._core._states import FINAL_TYPES, State, StateType


class InvalidTransition(RuntimeError):
    """A run was asked to move to a state its current state does not allow.

    It carries the run's id, the two states and the run's story (its states so far),
    and pickles with them, so a worker's report of one reads the same in the flow."""

    def __init__(self, message: str, run_id: str = "", old: State | None = None, new: State | None = None, story: str = "") -> None:
        super().__init__(message)
        self.run_id, self.old, self.new, self.story = run_id, old, new, story

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.run_id, self.old, self.new, self.story)


#: The state types each state type may move to (the state names are checked by `_names_allow`).
_ALLOWED: dict[StateType, frozenset[StateType]] = {
    StateType.PENDING: frozenset(StateType),
    StateType.RUNNING: frozenset(
        {
            StateType.PENDING,  # AwaitingRetry only: checked below
            StateType.COMPLETED,
            StateType.FAILED,
            StateType.CANCELLED,
            StateType.CRASHED,
        }
    ),
}


# Run ids: a random per-process prefix and a counter. uuid4() reads os.urandom on every
# call, which costs tens of microseconds on some virtual machines: too much per task.
_ID_PREFIX = os.urandom(10).hex()
_id_counter = itertools.count()


def _new_prefix() -> None:
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(10).hex()


# A forked process (tether serve's runs, a fork-started pool) would otherwise repeat its parent's ids.
os.register_at_fork(after_in_child=_new_prefix)


def new_run_id() -> str:
    """A 32-hex-digit id, unique across processes."""
    return f"{_ID_PREFIX}{next(_id_counter):012x}"


class RunRecord:
    """One flow run or task run as the state machine sees it."""

    __slots__ = (
        "flow_run_id",
        "history",
        "id",
        "kind",
        "name",
        "parent_id",
        "run_count",
        "state",
        "tags",
    )

    def __init__(
        self,
        kind: str,
        name: str,
        flow_run_id: str | None = None,
        parent_id: str | None = None,
        tags: frozenset[str] = frozenset(),
        run_id: str | None = None,
        initial: State | None = None,
    ) -> None:
        self.id = run_id or new_run_id()
        self.kind = kind
        self.name = name
        self.flow_run_id = flow_run_id
        self.parent_id = parent_id
        self.tags = tags
        self.state = initial if initial is not None else State(StateType.PENDING)
        self.history: list[State] = [self.state]
        self.run_count = 0

    def story(self) -> str:
        """The run's states so far, oldest first, for error messages."""
        steps = " -> ".join(s.name for s in self.history)
        return f"{self.kind} run {self.name!r} ({self.id[:8]}): {steps}"


def transition(run: RunRecord, new: State) -> StateChanged:
    """Move ``run`` to ``new`` if allowed, and return the event describing the change.

    Raises `InvalidTransition` naming the run and its story otherwise.
    """
    old = run.state
    allowed = _ALLOWED.get(old.type)
    if allowed is None or new.type not in allowed or (
        # Only a retry's states are told apart by name (from Running back to Pending, and on to Running).
        (new.name == "Retrying" or (old.type is StateType.RUNNING and new.type is StateType.PENDING))
        and not _names_allow(old, new)
    ):
        story = run.story()
        raise InvalidTransition(
            f"Cannot move {run.kind} run {run.name!r} from {old.name} to {new.name}: {_why(old, new)} Story so far: {story}.",
            run.id, old, new, story,
        )
    if new.type is StateType.RUNNING:
        run.run_count += 1
    run.state = new
    run.history.append(new)
    # Positional: this runs twice or more per task run.
    return StateChanged(run.id, run.kind, run.name, run.flow_run_id, run.parent_id, old, new, run.run_count)


def _names_allow(old: State, new: State) -> bool:
    if old.type is StateType.RUNNING and new.type is StateType.PENDING:
        return new.name == "AwaitingRetry"
    if new.type is StateType.RUNNING and new.name == "Retrying":
        return old.name == "AwaitingRetry"
    return True


def _why(old: State, new: State) -> str:
    if old.type in FINAL_TYPES:
        return f"{old.name} is final."
    if old.type is StateType.RUNNING and new.type is StateType.RUNNING:
        return "the run is already running."
    if new.name == "Retrying":
        return "only a run AwaitingRetry can be retried."
    return "a running run can only go back to Pending to await a retry."


def is_final(run: RunRecord) -> bool:
    return run.state.type in FINAL_TYPES


__all__: list[str] = ["InvalidTransition", "RunRecord", "is_final", "new_run_id", "transition"]
