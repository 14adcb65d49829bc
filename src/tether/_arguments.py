"""Walking a call's arguments: finding futures and resource values, and resolving futures.

Futures and resource values may sit inside lists, tuples, dicts, sets and
frozensets, at any depth. Containers are rebuilt only when something inside
them changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tether._futures import TaskFuture

_CONTAINERS = (list, tuple, dict, set, frozenset)


def find(value: Any, on_future: Callable[[TaskFuture], None], on_other: Callable[[Any], None] | None) -> None:
    """Call ``on_future`` for each future, ``on_other`` for each other leaf, inside ``value``."""
    kind = type(value)
    if kind is TaskFuture:
        on_future(value)
    elif kind in _CONTAINERS or isinstance(value, _CONTAINERS):
        items = value.items() if isinstance(value, dict) else value
        for item in items:
            if isinstance(value, dict):
                find(item[0], on_future, on_other)
                find(item[1], on_future, on_other)
            else:
                find(item, on_future, on_other)
    elif on_other is not None:
        on_other(value)


def resolve(value: Any) -> Any:
    """``value`` with every future replaced by its run's result."""
    kind = type(value)
    if kind is TaskFuture:
        return value._run.record.state.data
    if isinstance(value, dict):
        return type(value)((resolve(k), resolve(v)) for k, v in value.items()) if _holds_future(value) else value
    if isinstance(value, (list, tuple, set, frozenset)):
        if not _holds_future(value):
            return value
        resolved = [resolve(v) for v in value]
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
            return type(value)(*resolved)
        return type(value)(resolved)
    return value


def _holds_future(value: Any) -> bool:
    found = False

    def seen(_: TaskFuture) -> None:
        nonlocal found
        found = True

    find(value, seen, None)
    return found


def map_leaves(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with ``fn`` applied to every non-container leaf (futures included)."""
    if isinstance(value, dict):
        return type(value)((map_leaves(k, fn), map_leaves(v, fn)) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        mapped = [map_leaves(v, fn) for v in value]
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            return type(value)(*mapped)
        return type(value)(mapped)
    return fn(value)
