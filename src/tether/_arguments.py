"""Rewriting a call's arguments: resolving futures, mapping leaves.

Futures and resource values may sit inside lists, tuples, dicts, sets and
frozensets, at any depth. (Finding them is `FlowRun._scan`'s job.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tether._futures import TaskFuture


def rewrite(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with ``fn`` applied to it and, where ``fn`` leaves a container as it is,
    to everything inside it. A container is rebuilt only when something inside changed,
    so an argument without futures or resources comes back as the very same object."""
    new = fn(value)
    if new is not value:
        return new
    if isinstance(value, dict):
        pairs = [(rewrite(k, fn), rewrite(v, fn)) for k, v in value.items()]
        if all(nk is k and nv is v for (nk, nv), (k, v) in zip(pairs, value.items())):
            return value
        return _rebuild(value, pairs)
    if isinstance(value, (list, tuple, set, frozenset)):
        members = [rewrite(v, fn) for v in value]
        if all(new is old for new, old in zip(members, value)):
            return value
        return _rebuild(value, members)
    return value


def resolve(value: Any) -> Any:
    """``value`` with every future replaced by its run's result."""
    return rewrite(value, _result_of)


def _result_of(value: Any) -> Any:
    return value._run.record.state.data if type(value) is TaskFuture else value


def map_leaves(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with ``fn`` applied to every non-container leaf (futures included)."""
    if isinstance(value, dict):
        return type(value)((map_leaves(k, fn), map_leaves(v, fn)) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return _rebuild(value, [map_leaves(v, fn) for v in value])
    return fn(value)


def _rebuild(container: Any, members: list[Any]) -> Any:
    kind = type(container)
    if isinstance(container, tuple) and hasattr(container, "_fields"):  # a namedtuple
        return kind(*members)
    try:
        return kind(members)
    except Exception:  # noqa: BLE001 - a subclass with another constructor: its builtin base will do
        return next(base for base in (dict, list, tuple, set, frozenset) if isinstance(container, base))(members)
