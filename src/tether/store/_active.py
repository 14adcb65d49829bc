"""The process's store: switched on when a flow starts, flushed when a top-level flow ends.

`enable` is called by the engine at every flow start, so the common case (the
store is already on, for the same location) is a few lookups: the runtime's part,
the environment's settings. The engine does not wait for the store to open: its
records are spooled meanwhile (see `Store.open`). If the store cannot be opened, the
flow runs anyway and one warning says why (once per location and process).
``TETHER_STORE=off`` switches recording off. A forked child does not inherit its parent's recorder (whose thread did not
follow it); it enables its own if it runs a flow. Which store is on is the process
runtime's (`tether._runtime`): a fresh runtime starts with none, and closing it
closes its store.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading

from tether import _settings as settings
from tether._runtime import Part, current_runtime
from tether.store._errors import StoreError
from tether.store._location import StoreLocation, configured_url
from tether.store._recorder import Until
from tether.store._store import Store

log = logging.getLogger("tether.store")


class ActiveStore:
    """Which store a runtime records to (at most one at a time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.store: Store | None = None
        self.url: str | None = None
        self.pinned = False  # enabled with an explicit url: it stays until disabled
        self.failed: set[str] = set()  # locations that could not be opened (warned once)

    def enable(self, url: str | None, open_now: bool) -> Store | None:
        if recording_disabled():
            if self.store is not None:
                self.disable()
            return None
        if url is None and self.pinned:
            return self._ready(self.store, open_now)
        target = url or configured_url()
        if target == self.url:
            return self._ready(self.store, open_now)
        with self.lock:
            if target == self.url:
                return self._ready(self.store, open_now)
            if target in self.failed:
                return None
            if self.store is not None:
                self.store.close()
                self.store, self.url = None, None
            try:
                store = Store(StoreLocation.resolve(target))
                if open_now:
                    store.open()
            except StoreError as exc:
                self.failed.add(target)
                log.error("tether: %s Runs in this process are not recorded.", exc)
                return None
            store.attach()
            self.store, self.url, self.pinned = store, target, url is not None
            return store

    @staticmethod
    def _ready(store: Store | None, open_now: bool) -> Store | None:
        """``store``, opened first if asked; None if it cannot be (its recorder says why, once, as
        it finds it out writing the records it spooled)."""
        if store is None or not open_now or store.opened:
            return store
        try:
            store.open()
        except StoreError:
            return None
        return store

    def disable(self, timeout: float | None = 30.0) -> None:
        with self.lock:
            store, self.store, self.url, self.pinned = self.store, None, None, False
            self.failed.clear()
        if store is not None:
            store.close(timeout)

    def forget_in_child(self) -> None:
        """In a forked child: the parent's store is the parent's (its recorder's thread did not follow)."""
        self.lock = threading.Lock()  # another thread may have held it at the fork
        store, self.store, self.url, self.pinned = self.store, None, None, False
        if store is not None:
            store.abandon()


_active = Part("active store", lambda runtime: ActiveStore(), close=ActiveStore.disable)


def recording_disabled() -> bool:
    return not settings.store_on()


def enable(url: str | None = None, open_now: bool = True) -> Store | None:
    """Record this process's runs in the store; returns it, or None if it is off or unusable.

    Cheap and idempotent: call it at every flow start. Without ``url``, a changed
    ``TETHER_HOME`` or ``TETHER_DATABASE_URL`` switches to the store it names, unless
    a store was enabled with an explicit ``url``: that one stays until `disable`.
    With ``open_now=False`` (what a flow's start does) the store is opened when it is
    first used, usually to write the records spooled meanwhile (after a one-shot flow);
    if it cannot be, the recorder says so then, naming the flow runs not recorded.
    """
    return _active().enable(url, open_now)


def active_store() -> Store | None:
    """The store this process records to, if any."""
    return _active().store


def flush(timeout: float | None = 30.0, until: Until = "written") -> bool:
    """Wait until every event so far is written to the store, or (``until="safe"``, as a
    top-level flow run's end does) at least safe from this process's death."""
    store = _active().store
    return store.flush(timeout, until) if store is not None else True


def disable(timeout: float | None = 30.0) -> None:
    """Stop recording: write what is queued and close the store."""
    _active().disable(timeout)


def _disable_at_exit() -> None:
    active = current_runtime().made(_active)
    if active is not None:
        active.disable()


def _forget_in_child() -> None:
    active = current_runtime().made(_active)
    if active is not None:
        active.forget_in_child()


atexit.register(_disable_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
