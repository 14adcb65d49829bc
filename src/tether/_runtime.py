"""The process's tether state, in one object that tests can replace.

Everything tether keeps for the whole process hangs off the current `Runtime`: its clock,
and its parts, each made the first time it is asked for: the event stream, the limiter,
the result cache, the registry of resource values, the watchdog, the book of worker
copies, the store the process records to and its slot brokers. A part is declared by the
module that owns it, as a `contextvars.ContextVar` is (or trio's ``RunVar``)::

    limiter = Part("limiter", lambda runtime: Limiter())
    ...
    limiter().acquire(owner, keys, granted)

so this module knows none of them, and a module of any layer can declare its own.
`tether.testing.fresh_runtime()` installs a new runtime and closes it after: every part
starts anew, and nothing one test left behind is seen by the next.

This module starts no thread and does no I/O; a part that does is stopped by its ``close``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from tether._clock import Clock, SystemClock

T = TypeVar("T")

log = logging.getLogger("tether")


class Runtime:
    """One process's tether state: a clock, and the parts made on it so far."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._parts: dict[Part[Any], Any] = {}
        self._made: list[Part[Any]] = []  # in the order they were made: closed the other way
        self._lock = threading.Lock()
        self.closed = False

    def part(self, part: Part[T]) -> T:
        """This runtime's ``part``, made now if it was not yet."""
        try:
            return self._parts[part]  # type: ignore[no-any-return]
        except KeyError:
            pass
        with self._lock:
            if part not in self._parts:
                if self.closed:
                    raise RuntimeError(
                        f"The tether runtime {self!r} is closed, so its part {part.name!r} cannot be made; "
                        "code that outlived a tether.testing.fresh_runtime() block ran after it ended."
                    )
                self._parts[part] = part.make(self)
                self._made.append(part)
            return self._parts[part]  # type: ignore[no-any-return]

    def made(self, part: Part[T]) -> T | None:
        """This runtime's ``part`` if it was made, without making it."""
        return self._parts.get(part)

    def close(self) -> None:
        """Close every part made, the last made first; a part that fails to close is logged."""
        with self._lock:
            self.closed = True
            made, self._made = self._made, []
        for part in reversed(made):
            value = self._parts.pop(part)
            if part.close is None:
                continue
            try:
                part.close(value)
            except Exception:  # noqa: BLE001 - the other parts still close
                log.exception("tether: closing the runtime's %s failed", part.name)

    def __repr__(self) -> str:
        return f"<Runtime parts={[p.name for p in self._made]} clock={type(self.clock).__name__}>"


class Part(Generic[T]):
    """A piece of process state, declared by the module that owns it; calling it returns
    the current runtime's (made by ``make`` the first time)."""

    __slots__ = ("close", "make", "name")

    def __init__(
        self, name: str, make: Callable[[Runtime], T], close: Callable[[T], None] | None = None
    ) -> None:
        self.name = name
        self.make = make
        self.close = close

    def __call__(self) -> T:
        runtime = _current
        try:
            return runtime._parts[self]  # type: ignore[no-any-return]
        except KeyError:
            return runtime.part(self)

    def __repr__(self) -> str:
        return f"<Part {self.name}>"


_current = Runtime()


def current_runtime() -> Runtime:
    return _current


def install_runtime(runtime: Runtime) -> Runtime:
    """Make ``runtime`` the process's; returns the one it replaces (which stays open)."""
    global _current
    previous, _current = _current, runtime
    return previous


def get_clock() -> Clock:
    """The clock of the process's runtime: everything in tether that waits or measures time asks it."""
    return _current.clock


def set_clock(clock: Clock) -> Clock:
    """Put the process's runtime on ``clock``; returns the previous clock."""
    runtime = _current
    previous, runtime.clock = runtime.clock, clock
    return previous
