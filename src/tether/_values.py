"""Which resource scope a value belongs to: an identity registry that outlives flow runs.

Every walker asks `ValueRegistry.scope_of` about each argument, container or not. A value
is known by identity, never by equality, so for identity to mean something an immutable
value (a str, a number, a tuple) is registered as a fresh object equal to it
(`distinct`): an equal literal elsewhere in the flow is another object and never joins
the scope. The values Python shares and cannot copy (None, True, False, small ints,
one-character strings, the empty tuple) carry nothing to close and are not registered.

A value stays known after its scope closed, for as long as it lives: weakly where it
can be weakly referenced, else kept alive (within a bound), so that its id is not given
to an unrelated object meanwhile. This module knows nothing of scopes beyond that they
are objects to hand back.
"""

from __future__ import annotations

import collections
import threading
import weakref
from typing import Any, Generic, TypeVar

S = TypeVar("S")

_NEVER = (type(None), bool)


def distinct(value: Any) -> Any:
    """``value``, or an equal object that nobody else holds, where Python may share one
    object between equal values (interned strings, cached numbers, constant tuples)."""
    kind = type(value)
    if kind is str or kind is bytes:
        return value[:1] + value[1:] if len(value) > 1 else value
    if kind is int:
        return int(str(value)) if not -5 <= value <= 256 else value
    if kind is float:
        return float(repr(value))
    if kind is complex:
        return complex(value.real, value.imag)
    if kind is tuple:
        return tuple(list(value)) if value else value
    if kind is frozenset:
        return frozenset(list(value)) if value else value
    return value


def shared(value: Any) -> bool:
    """True for the values Python shares between all equal ones and `distinct` cannot copy."""
    kind = type(value)
    if kind in _NEVER:
        return True
    if kind is int:
        return bool(-5 <= value <= 256)
    if kind is str or kind is bytes:
        return len(value) <= 1
    if kind is tuple or kind is frozenset:
        return not value
    return False


class ValueRegistry(Generic[S]):
    """id(value) -> the scope it belongs to, open or closed, while the value lives."""

    def __init__(self, keep_closed: int = 10_000) -> None:
        self._scopes: dict[int, S] = {}
        # Closed values that cannot be weakly referenced (a dict, a str) are kept alive
        # here, so that their id is not reused while they are known; the oldest go first.
        self._kept: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._keep_closed = keep_closed
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._scopes)

    def scope_of(self, value: Any) -> S | None:
        """The scope whose value ``value`` is, if any (by identity; it may be closed)."""
        if not self._scopes or isinstance(value, _NEVER):
            return None
        return self._scopes.get(id(value))

    def track(self, value: Any, scope: S) -> None:
        if not shared(value):
            with self._lock:
                self._scopes[id(value)] = scope

    def untrack(self, value: Any, scope: S) -> None:
        self._forget(id(value), scope)

    def retire(self, value: Any, scope: S) -> None:
        """``scope`` is over: keep ``value`` known as its value while it lives."""
        if self.scope_of(value) is not scope:
            return
        try:
            weakref.finalize(value, self._forget, id(value), scope)
        except TypeError:  # not weakly referable: keep it, within the bound
            with self._lock:
                self._kept[id(value)] = value
                while len(self._kept) > self._keep_closed:
                    old, _ = self._kept.popitem(last=False)
                    self._scopes.pop(old, None)

    def _forget(self, key: int, scope: S) -> None:
        with self._lock:
            if self._scopes.get(key) is scope:
                del self._scopes[key]
                self._kept.pop(key, None)
