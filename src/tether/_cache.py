"""Task result caching: ``cache_key_fn`` and ``cache_expiration``.

`ResultCache` maps a key to a value and its expiry, in this process. A durable
store can stand behind it later; resource values are never cached.
"""

from __future__ import annotations

import datetime
import hashlib
import threading
from typing import Any

import cloudpickle

from tether._clock import get_clock

_MISSING = object()


class ResultCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[Any, float | None]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The cached value, or `MISSING` when absent or expired."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return _MISSING
        value, expires = entry
        if expires is not None and get_clock().time() >= expires:
            with self._lock:
                self._entries.pop(key, None)
            return _MISSING
        return value

    def put(self, key: str, value: Any, expiration: datetime.timedelta | None) -> None:
        expires = None if expiration is None else get_clock().time() + expiration.total_seconds()
        with self._lock:
            self._entries[key] = (value, expires)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


MISSING = _MISSING
results = ResultCache()


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
