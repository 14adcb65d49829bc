"""Task result caching: ``cache_key_fn`` and ``cache_expiration``.

`ResultCache` maps a key to a value and its expiry. Hits are looked up in memory,
then on disk under ``$TETHER_HOME/cache`` (cloudpickle), so a new process reuses a
result an earlier one stored. A value that cannot be pickled is cached in memory
only; a resource's value is never cached at all.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import cloudpickle

from tether import _settings as settings
from tether._resources import scope_of
from tether._runtime import Part, get_clock

_MISSING = object()
MISSING = _MISSING
_log = logging.getLogger("tether")


def cache_dir() -> Path:
    return settings.home() / "cache"


class ResultCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[Any, float | None]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The cached value, or `MISSING` when absent or expired."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            entry = self._load(key)
            if entry is None:
                return _MISSING
        value, expires = entry
        if expires is not None and get_clock().time() >= expires:
            with self._lock:
                self._entries.pop(key, None)
            return _MISSING
        return value

    def put(self, key: str, value: Any, expiration: datetime.timedelta | None) -> None:
        if scope_of(value) is not None:
            return  # a resource's value lives and dies with its scope
        expires = None if expiration is None else get_clock().time() + expiration.total_seconds()
        with self._lock:
            self._entries[key] = (value, expires)
        self._store(key, value, expires)

    def discard(self, key: str) -> None:
        """Forget the result cached under ``key``, here and on disk (a task run whose
        transaction rolled back: Prefect never persists it)."""
        with self._lock:
            self._entries.pop(key, None)
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            _log.warning("Could not remove the cached result for key %s: %s", key[:16], exc)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _path(self, key: str) -> Path:
        return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()}.pkl"

    def _store(self, key: str, value: Any, expires: float | None) -> None:
        try:
            payload = cloudpickle.dumps((key, value, expires))
        except Exception:  # noqa: BLE001 - unpicklable results stay in memory only
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
                tmp.write(payload)
            os.replace(tmp.name, path)  # atomic: a reader never sees half a file
        except OSError as exc:
            _log.warning("Could not store the cached result for key %s in %s: %s", key[:16], path.parent, exc)

    def _load(self, key: str) -> tuple[Any, float | None] | None:
        path = self._path(key)
        try:
            stored_key, value, expires = cloudpickle.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - a corrupt entry is a miss, not a failure
            _log.warning("Ignoring the unreadable cached result %s: %s", path, exc)
            return None
        if stored_key != key:
            return None
        with self._lock:
            self._entries[key] = (value, expires)
        return value, expires


#: The process's cache of task results (the runtime's).
results = Part("result cache", lambda runtime: ResultCache())


def task_input_hash(context: Any, parameters: dict[str, Any]) -> str | None:
    """A cache key from the task's name and its inputs (resource values are left out).

    Returns None (no caching) when an input cannot be pickled.
    """
    task_name = context.task_run.task.name if context is not None and context.task_run else ""
    try:
        payload = cloudpickle.dumps((task_name, sorted(parameters.items())))
    except Exception:
        return None
    return hashlib.sha256(payload).hexdigest()
