"""Concurrency slots, taken before a run is handed to a runner.

One `Limiter` serves tag limits (``tether.limits.set("mysql", 3)``) and resource
limits (``@resource(max_concurrency=N)``). A run asks for all its keys at once;
they are taken in sorted order, so two runs cannot deadlock. A run that must
wait holds no thread: `acquire` returns at once and calls ``granted`` later,
from the thread that released the slot. Waiters on a key are served in order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from tether._errors import LimitIsZeroError, UsageError
from tether._runtime import Part


class Limiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._capacity: dict[str, int] = {}
        self._held: dict[str, int] = {}
        self._waiters: dict[str, deque[_Request]] = {}
        #: Takes the slots of tags whose limit lives in the run store (`tether._leases`).
        self.backend: Any = None

    def set_limit(self, key: str, capacity: int) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
            raise UsageError(f"The limit for {key!r} must be a whole number >= 0, not {capacity!r}.")
        grants: list[_Request] = []
        with self._lock:
            self._capacity[key] = capacity
            grants = self._serve(key)
        for request in grants:
            request.advance(self)

    def remove_limit(self, key: str) -> None:
        with self._lock:
            self._capacity.pop(key, None)
            waiters = self._waiters.pop(key, deque())
            self._held.pop(key, None)
        for request in waiters:
            request.taken.append(key)  # no limit any more: it is free
            request.advance(self)

    def limit(self, key: str) -> int | None:
        return self._capacity.get(key)

    def limits(self) -> dict[str, tuple[int, int, int]]:
        """Each limited key with (capacity, held, waiting)."""
        with self._lock:
            return {
                k: (c, self._held.get(k, 0), len(self._waiters.get(k, ())))
                for k, c in sorted(self._capacity.items())
            }

    def limited_keys(self, keys: frozenset[str]) -> list[str]:
        capacity, backend = self._capacity, self.backend
        if not capacity and backend is None:
            return []
        return sorted(k for k in keys if k in capacity or (backend is not None and backend.manages(k)))

    def _capacity_of(self, key: str) -> int | None:
        if self.backend is not None and self.backend.manages(key):
            return self.backend.capacity(key)  # type: ignore[no-any-return]
        return self._capacity.get(key)

    def acquire(self, owner: Any, keys: Sequence[str], granted: Callable[[], None]) -> _Request | None:
        """Take a slot of every key in ``keys`` (sorted); call ``granted`` once all are held.

        Returns None when granted at once (``granted`` already called), else the waiting
        request, which `withdraw` can cancel. Raises `LimitIsZeroError` for a zero limit.
        """
        for key in keys:
            if self._capacity_of(key) == 0:
                raise LimitIsZeroError(
                    f"{_named(owner)} needs a slot of {key!r}, whose concurrency limit is 0, so it "
                    f"can never run. Raise the limit (tether limit set {key.removeprefix('tag:')} N, "
                    "or tether.limits.set(...)) or remove the tag."
                )
        request = _Request(owner, keys, granted)
        return None if request.advance(self) else request

    def release(self, keys: Sequence[str], owner: Any = None) -> None:
        grants: list[_Request] = []
        distributed = []
        with self._lock:
            for key in keys:
                if key in self._held:
                    self._held[key] -= 1
                    grants.extend(self._serve(key))
                elif self.backend is not None and key.startswith("tag:"):
                    distributed.append(key)
        for key in distributed:
            self.backend.release(key, owner)
        for request in grants:
            request.advance(self)

    def withdraw(self, request: _Request) -> None:
        """Give up a waiting request (its run was cancelled); releases what it took."""
        with self._lock:
            for queue in self._waiters.values():
                if request in queue:
                    queue.remove(request)
            taken, request.taken = request.taken, []
            request.cancelled = True
        if self.backend is not None:
            self.backend.withdraw(request)
        self.release(taken, request.owner)

    def _try_take(self, key: str, request: _Request) -> bool:
        """Under the lock: take one slot of ``key`` or queue ``request`` on it."""
        capacity = self._capacity.get(key)
        if capacity is None:
            return True
        waiters = self._waiters.get(key)
        if self._held.get(key, 0) < capacity and not waiters:
            self._held[key] = self._held.get(key, 0) + 1
            return True
        self._waiters.setdefault(key, deque()).append(request)
        return False

    def _serve(self, key: str) -> list[_Request]:
        """Under the lock: hand free slots of ``key`` to its first waiters."""
        served = []
        waiters = self._waiters.get(key)
        capacity = self._capacity.get(key, 0)
        while waiters and self._held.get(key, 0) < capacity:
            request = waiters.popleft()
            self._held[key] = self._held.get(key, 0) + 1
            request.taken.append(key)
            served.append(request)
        return served


class _Request:
    __slots__ = ("cancelled", "granted", "keys", "owner", "taken")

    def __init__(self, owner: Any, keys: Sequence[str], granted: Callable[[], None]) -> None:
        self.owner = owner
        self.keys = keys
        self.granted = granted
        self.taken: list[str] = []
        self.cancelled = False

    def advance(self, limiter: Limiter) -> bool:
        """Take the next keys in order; True (and ``granted`` called) once all are held."""
        while True:
            with limiter._lock:
                if self.cancelled:
                    return False
                if len(self.taken) == len(self.keys):
                    break
                key = self.keys[len(self.taken)]
                backend = limiter.backend
                if backend is None or not backend.manages(key):
                    if not limiter._try_take(key, self):
                        return False
                    self.taken.append(key)
                    continue
            # A store-backed key: taken outside the lock, since it may wait on the database.
            if not backend.acquire(key, self):
                return False  # queued: the backend appends the key and advances us later
            with limiter._lock:
                self.taken.append(key)
        self.granted()
        return True


#: The process's limiter (the runtime's).
limiter = Part("limiter", lambda runtime: Limiter())


def _named(owner: Any) -> str:
    """A waiter as a message names it: a task run by its run name, anything else as it prints."""
    record = getattr(owner, "record", None)
    return f"Task run {record.name!r}" if record is not None else str(owner)
