"""``concurrency(names)`` and ``rate_limit(names)``: a limit's slots taken inside any code.

The slots are those of task tags (``tether.limits.set("db", 2)``): a block holding
``concurrency("db")`` and a task run tagged ``db`` share them, across processes when the
limit is in the run store. A name with no limit set limits nothing, as in Prefect.
``rate_limit`` spaces calls by the limit's ``slot_decay_per_second``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tether._errors import UsageError
from tether._leases import use_store
from tether._limits import limiter
from tether._runtime import Part, get_clock
from tether.store import enable as enable_store


class _Holder:
    """The owner of slots taken by a block; named in messages and the slot table."""

    record = None

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def __str__(self) -> str:
        return f"The concurrency({', '.join(self.names)}) block"


def _names(names: str | list[str], occupy: int) -> list[str]:
    listed = [names] if isinstance(names, str) else list(names)
    if not listed or not all(isinstance(n, str) and n for n in listed):
        raise UsageError(f"concurrency() needs limit names (a string or a list of strings), not {names!r}.")
    if not isinstance(occupy, int) or isinstance(occupy, bool) or occupy < 1:
        raise UsageError(f"concurrency({names!r}) needs occupy= a whole number >= 1, not {occupy!r}.")
    return sorted(set(listed))


def _limited(names: list[str]) -> list[str]:
    store = enable_store()
    if store is not None:
        use_store(store, limiter())
    return limiter().limited_keys(frozenset(f"tag:{n}" for n in names))


def _take(keys: list[str], holder: _Holder, timeout: float | None) -> None:
    granted = threading.Event()
    request = limiter().acquire(holder, keys, granted.set)
    if request is None:
        return
    if not granted.wait(timeout):
        limiter().withdraw(request)
        raise TimeoutError(
            f"{holder} waited {timeout} s for a slot of {', '.join(k[4:] for k in keys)} and got none: the "
            "slots are held by other runs. Raise the limit (tether limit set NAME N) or the timeout_seconds."
        )


@contextmanager
def concurrency(names: str | list[str], occupy: int = 1, timeout_seconds: float | None = None,
                **_: Any) -> Iterator[None]:
    """Hold ``occupy`` slots of each named limit for the block; wait for them first."""
    listed = _names(names, occupy)
    keys = _limited(listed)
    holders = [_Holder(listed) for _ in range(occupy)]
    taken: list[_Holder] = []
    try:
        for holder in holders:
            if keys:
                _take(keys, holder, timeout_seconds)
            taken.append(holder)
        yield
    finally:
        for holder in reversed(taken):
            if keys:
                limiter().release(keys, holder)


class _Pace:
    """When each rate-limited name next lets a call through (on the runtime's clock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_call: dict[str, float] = {}


_pace = Part("rate limit pace", lambda runtime: _Pace())


def rate_limit(names: str | list[str], occupy: int = 1, timeout_seconds: float | None = None, **_: Any) -> None:
    """Wait until each named limit lets ``occupy`` more calls through at its ``slot_decay_per_second``.

    A name without a limit, or whose limit has no decay, does not wait (as in Prefect).
    """
    from tether.limits import decay_of

    listed = _names(names, occupy)
    wait = 0.0
    pace, clock = _pace(), get_clock()
    with pace.lock:
        now = clock.monotonic()
        for name in listed:
            decay = decay_of(name)
            if not decay:
                continue
            start = max(now, pace.next_call.get(name, now))
            pace.next_call[name] = start + occupy / decay
            wait = max(wait, start - now)
    if timeout_seconds is not None and wait > timeout_seconds:
        raise TimeoutError(f"rate_limit({names!r}) would wait {wait:.2f} s, more than timeout_seconds={timeout_seconds}.")
    if wait > 0:
        clock.wait(threading.Event(), wait)
