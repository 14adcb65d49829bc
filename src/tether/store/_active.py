"""The process's store: switched on when a flow starts, flushed when a top-level flow ends.

`enable` is called by the engine at every flow start, so the common case (the
store is already on, for the same location) is two dictionary lookups. If the
store cannot be opened, the flow runs anyway and one warning says why
(once per location and process). ``TETHER_STORE=off`` switches recording off.
A forked child does not inherit its parent's recorder (whose thread did not
follow it); it enables its own if it runs a flow.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading

from tether import _settings as settings
from tether._context import events
from tether.store._errors import StoreError
from tether.store._location import configured_url
from tether.store._recorder import Until
from tether.store._store import Store, open_store

log = logging.getLogger("tether.store")

_lock = threading.Lock()
_active: Store | None = None
_active_url: str | None = None
_pinned = False
_failed: set[str] = set()


def recording_disabled() -> bool:
    return not settings.store_on()


def enable(url: str | None = None) -> Store | None:
    """Record this process's runs in the store; returns it, or None if it is off or unusable.

    Cheap and idempotent: call it at every flow start. Without ``url``, a changed
    ``TETHER_HOME`` or ``TETHER_DATABASE_URL`` switches to the store it names, unless
    a store was enabled with an explicit ``url``: that one stays until `disable`.
    """
    global _active, _active_url, _pinned
    if recording_disabled():
        if _active is not None:
            disable()
        return None
    if url is None and _pinned:
        return _active
    target = url or configured_url()
    if target == _active_url:
        return _active
    with _lock:
        if target == _active_url:
            return _active
        if target in _failed:
            return None
        if _active is not None:
            _active.close()
            _active, _active_url = None, None
        try:
            store = open_store(target)
        except StoreError as exc:
            _failed.add(target)
            log.error("tether: %s Runs in this process are not recorded.", exc)
            return None
        store.attach()
        _active, _active_url, _pinned = store, target, url is not None
        return store


def active_store() -> Store | None:
    """The store this process records to, if any."""
    return _active


def flush(timeout: float | None = 30.0, until: Until = "written") -> bool:
    """Wait until every event so far is written to the store, or (``until="safe"``, as a
    top-level flow run's end does) at least safe from this process's death."""
    store = _active
    return store.flush(timeout, until) if store is not None else True


def disable(timeout: float | None = 30.0) -> None:
    """Stop recording: write what is queued and close the store."""
    global _active, _active_url, _pinned
    with _lock:
        store, _active, _active_url, _pinned = _active, None, None, False
        _failed.clear()
    if store is not None:
        store.close(timeout)


def _forget_in_child() -> None:
    global _active, _active_url, _lock, _pinned
    _lock = threading.Lock()  # another thread may have held it at the fork
    store, _active, _active_url, _pinned = _active, None, None, False
    if store is not None:
        if store.recorder is not None:
            events.unsubscribe(store.recorder)
            store.recorder.abandon()
        store.engine.dispose(close=False)  # the parent's connections are the parent's


atexit.register(disable)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
