"""Events: what the engine reports, and the recorder interface that receives them.

Every state change, log line and resource step is an event. Recorders (the
in-memory one here, the durable store elsewhere) subscribe to an `EventStream`.
A recorder must be quick: the engine calls it on the hot path, so durable
recorders queue the event and write it from a thread of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tether._core._states import State


@dataclass(slots=True)
class RunCreated:
    run_id: str
    kind: str  # "flow" or "task"
    #: The flow's or task's name (what filters and groups runs).
    name: str
    flow_run_id: str | None
    parent_id: str | None
    tags: frozenset[str]
    parameters: dict[str, Any]
    timestamp: float
    #: The run's own name (``flow_run_name=``/``task_run_name=`` rendered); None, or ``name`` itself,
    #: when it has none of its own (recorders store it only where it differs).
    run_name: str | None = None


@dataclass(slots=True)
class StateChanged:
    run_id: str
    kind: str
    name: str
    flow_run_id: str | None
    parent_id: str | None
    old: State
    new: State
    run_count: int


@dataclass(slots=True)
class LogEmitted:
    run_id: str
    flow_run_id: str | None
    level: int
    message: str
    timestamp: float


@dataclass(slots=True)
class ResourceEvent:
    """A step in a resource's life: ``setup-started``, ``setup``, ``setup-failed``,
    ``used``, ``cleanup`` or ``cleanup-failed``."""

    step: str
    scope_id: str
    name: str
    flow_run_id: str | None
    timestamp: float
    task_run_id: str | None = None
    error: str | None = None
    outcome: str | None = None
    worker: str | None = None
    pid: int | None = None
    handle: Any = None
    reaper: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


Event = RunCreated | StateChanged | LogEmitted | ResourceEvent


class Recorder(Protocol):
    """Receives every event. Must not block; must not raise."""

    def record(self, event: Event) -> None: ...


class InMemoryRecorder:
    """Keeps every event in a list, in order. For tests and small scripts."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def record(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def states_of(self, run_id: str) -> list[str]:
        """The names of the states one run went through, in order."""
        with self._lock:
            names = [e.new.name for e in self.events if isinstance(e, StateChanged) and e.run_id == run_id]
        return names


class EventStream:
    """Fans each event out to the subscribed recorders.

    ``emit`` is the hot path: with one recorder that declares ``never_raises``, it is
    that recorder's ``record`` itself, without a loop or a ``try`` around it.
    """

    def __init__(self) -> None:
        self._recorders: tuple[Recorder, ...] = ()
        self._lock = threading.Lock()
        #: Whether anything records events: the engine builds some only then.
        self.active = False
        self.emit: Callable[[Event], None] = self._fan_out

    def subscribe(self, recorder: Recorder) -> None:
        with self._lock:
            self._recorders = self._recorders + (recorder,)
            self._refresh()

    def unsubscribe(self, recorder: Recorder) -> None:
        with self._lock:
            self._recorders = tuple(r for r in self._recorders if r is not recorder)
            self._refresh()

    def _refresh(self) -> None:
        recorders = self._recorders
        self.active = bool(recorders)
        trusted = len(recorders) == 1 and getattr(recorders[0], "never_raises", False)
        self.emit = recorders[0].record if trusted else self._fan_out

    def _fan_out(self, event: Event) -> None:
        for recorder in self._recorders:
            try:
                recorder.record(event)
            except Exception:  # a recorder must never take a run down
                pass
