"""Test tools for users of tether (and for tether's own tests).

- `CountingResource`: a resource that records its setups, cleanups, outcomes and
  their order.
- `FakeClock`: time that moves only when told, for retries, expiries, leases, timeouts
  and grace periods.
- `RecordingStore`: an event recorder to subscribe for the length of a test.
- `fresh_runtime`: a block run on a new tether runtime (its own event stream, limits,
  result cache, resource values, watchdog, store...), closed after.
- `InlineRunner`: runs each task body at once in the submitting thread.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tether._clock import Alarms, Clock
from tether._context import events
from tether._core import Event, InMemoryRecorder, LogEmitted, ResourceEvent, RunCreated, StateChanged
from tether._resources import Resource, resource
from tether._runtime import Runtime, install_runtime, set_clock
from tether.runners import InlineRunner


@dataclass
class ResourceLog:
    """What happened to the copies of one `CountingResource`, in order."""

    steps: list[tuple[str, int, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, step: str, copy: int, detail: Any = None) -> None:
        with self.lock:
            self.steps.append((step, copy, detail))

    def count(self, step: str) -> int:
        return sum(1 for s in self.steps if s[0] == step)

    @property
    def setups(self) -> int:
        return self.count("setup")

    @property
    def cleanups(self) -> int:
        return self.count("cleanup")

    @property
    def open(self) -> int:
        return self.setups - self.cleanups

    def outcomes(self) -> list[Any]:
        """The error each cleanup saw (None when the scope succeeded), in order."""
        return [detail for step, _, detail in self.steps if step == "cleanup"]

    def order(self) -> list[str]:
        return [f"{step}:{copy}" for step, copy, _ in self.steps]


class CountingResource:
    """A resource whose every setup and cleanup is recorded in `log`.

    Its value is a `CountedValue` with ``.closed``; a task using a closed value
    records a ``used-after-close`` step. ``fail_setup`` / ``fail_cleanup`` make
    those steps raise.
    """

    def __init__(self, name: str = "counting", *, fail_setup: bool = False, fail_cleanup: bool = False,
                 max_concurrency: int | None = None) -> None:
        self.log = ResourceLog()
        self.fail_setup = fail_setup
        self.fail_cleanup = fail_cleanup
        self._ids = itertools.count(1)
        self.resource: Resource = resource(self._open, name=name, max_concurrency=max_concurrency)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resource(*args, **kwargs)

    def _open(self, label: str | None = None) -> Iterator[CountedValue]:
        copy = next(self._ids)
        if self.fail_setup:
            self.log.add("setup-failed", copy)
            raise RuntimeError(f"setup of copy {copy} failed")
        value = CountedValue(self.log, copy, label)
        self.log.add("setup", copy, label)
        error: BaseException | None = None
        try:
            yield value
        except BaseException as exc:
            error = exc
            raise
        finally:
            value.closed = True
            self.log.add("cleanup", copy, error)
            if self.fail_cleanup:
                raise RuntimeError(f"cleanup of copy {copy} failed")


class CountedValue:
    def __init__(self, log: ResourceLog, copy: int, label: str | None) -> None:
        self.log = log
        self.copy = copy
        self.label = label
        self.closed = False

    def use(self, what: Any = None) -> Any:
        """Record a use; records ``used-after-close`` if the copy was already cleaned up."""
        self.log.add("used-after-close" if self.closed else "used", self.copy, what)
        return what

    def __repr__(self) -> str:
        return f"<CountedValue copy={self.copy}{' closed' if self.closed else ''}>"


class FakeClock:
    """A clock that moves only by `advance` (or instantly, when something waits on it).

    Deadlines kept on it by a watchdog (task and flow timeouts, grace periods, remote
    retries) fire when time moves past them: `advance` returns once their callbacks have
    run, so a test can step through a timeout with no real time passing.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self.waits: list[float] = []
        self._lock = threading.Lock()
        self._alarms: list[Alarms] = []

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``; returns once the deadlines that came due have fired
        (on the watchdog's thread: call it holding no lock that their callbacks may need)."""
        with self._lock:
            self._now += seconds
            self._mono += seconds
            alarms = list(self._alarms)
        for each in alarms:  # outside the lock: a callback may read the time
            each.clock_moved(self)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Records the wait and returns at once, time moved forward by ``seconds``."""
        if event.is_set():
            return True
        with self._lock:
            self.waits.append(seconds)
        self.advance(seconds)
        return event.is_set()

    def drives(self, alarms: Alarms) -> bool:
        with self._lock:
            if all(each is not alarms for each in self._alarms):
                self._alarms.append(alarms)
        return True

    def __enter__(self) -> FakeClock:
        self._previous = set_clock(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        set_clock(self._previous)


@contextmanager
def fresh_runtime(clock: Clock | None = None) -> Iterator[Runtime]:
    """Run the block on a new tether runtime, on ``clock`` (the system's by default).

    Everything tether keeps for the process starts anew inside: the event stream, the
    limiter, the result cache, the registry of resource values, the watchdog, the book of
    worker copies, the store it records to, its slot brokers. At the end the runtime is
    closed (its store flushed and closed, its watchdog stopped) and the one before is back::

        with fresh_runtime(FakeClock()) as runtime:
            my_flow()
    """
    runtime = Runtime(clock)
    previous = install_runtime(runtime)
    try:
        yield runtime
    finally:
        install_runtime(previous)  # first: a thread the block left running then finds an open runtime
        runtime.close()


class RecordingStore(InMemoryRecorder):
    """Records every event while active: ``with RecordingStore() as store: ...``."""

    def __enter__(self) -> RecordingStore:
        self._stream = events()
        self._stream.subscribe(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stream.unsubscribe(self)

    def runs(self, kind: str | None = None) -> list[RunCreated]:
        return [e for e in self.events if isinstance(e, RunCreated) and (kind is None or e.kind == kind)]

    def state_changes(self, run_id: str | None = None) -> list[StateChanged]:
        return [e for e in self.events if isinstance(e, StateChanged) and (run_id is None or e.run_id == run_id)]

    def logs(self) -> list[LogEmitted]:
        return [e for e in self.events if isinstance(e, LogEmitted)]

    def resource_steps(self, name: str | None = None) -> list[ResourceEvent]:
        return [e for e in self.events if isinstance(e, ResourceEvent) and (name is None or e.name == name)]


__all__ = [
    "CountedValue",
    "CountingResource",
    "Event",
    "FakeClock",
    "InlineRunner",
    "RecordingStore",
    "ResourceLog",
    "fresh_runtime",
]
